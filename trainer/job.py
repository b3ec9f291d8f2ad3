"""Training as a child process, so the daemon can time it out and kill it as a whole tree.

    python -m zpd.trainer.job JOB.json

The child prints one JSON line per event on stdout (``{"event": "start", "pid"}`` first, then
``{"event": "step", "step", "total", "loss", "tokens"}``), writes ``result_path`` (the TrainResult as
JSON) atomically at the end and exits 0; on any exception it prints the traceback on stderr and
exits 1. ``run_job`` is the daemon side: it starts the child in a new session, streams its events,
and kills the whole tree on stop, timeout or any error of its own, so no process outlives it.

GRPO reward: the row's task is rebuilt from ``task_json`` (the ``Task`` fields) and graded by its
domain, built by name with the default config (graders do not depend on the config). A row without
``task_json`` is graded by exact match: ``1.0 if completion.strip() == answer else 0.0``.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .result import TrainResult

TERM_GRACE_SECONDS = 5.0
POLL_SECONDS = 0.2


@dataclass
class TrainJob:
    backend: Literal["embedded-sft", "embedded-grpo", "embedded-grpo-groups"]
    learner_dir: str
    out_dir: str
    data_path: str
    """JSONL. sft rows: {"prompt", "response"}; grpo rows: {"prompt", "answer", "domain", "task_json"};
    grpo-groups rows (already sampled and scored): {"group", "prompt", "completion", "ended", "reward"}, and
    optionally {"format": true, "prompt", "response"} rows fine-tuned on first (params["format"]: train_sft's)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of train_sft / train_grpo (epochs, batch_size, learning_rate, ..., seed, device)."""
    result_path: str = ""
    pretrain: dict[str, Any] = field(default_factory=dict)
    """Continued pre-training first (``trainer/cpt.py``): {"data_path": JSONL of {"text"}, "params": train_cpt
    keyword arguments}; the main step then starts from its model. Empty: none."""
    threads: int = 0
    """torch's intra-op threads in the child (``trainer/threads.py``); 0: torch's default."""
    checkpoint_dir: str = ""
    """Where each training step of the job keeps its resumable checkpoint (``main.pt``, ``cpt.pt``,
    ``format.pt``; ``trainer/checkpoint.py``); a rerun of the same job resumes from them. Empty: none."""
    checkpoint_seconds: float = 60.0
    """At most this long between two checkpoints."""


class TrainJobFailed(RuntimeError):
    """The child exited non-zero, timed out, or was killed. ``log_tail`` holds its last output lines."""

    def __init__(self, message: str, log_tail: str = "", pid: int | None = None) -> None:
        super().__init__(message)
        self.log_tail = log_tail
        self.pid = pid


class TrainJobStopped(RuntimeError):
    """``should_stop`` asked to stop; the child tree was killed."""

    def __init__(self, message: str = "training stopped on request", pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


# -- child side ------------------------------------------------------------------------------------
def _emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_rows(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _grpo_reward(rows: list[dict]) -> Callable[[int, str], float]:
    """reward(i, text): 1.0 when the row's domain grades ``text`` correct, else 0.0.

    Rows carry their task (``task_json``); it is graded by its domain's own grader
    (``zpd.loop.domains.registry.grader_for``), so a worked answer ("...>125") or a dataset item's
    numeric tolerance is judged exactly as calibration judged it."""
    from zpd.loop.domains.base import Task
    from zpd.loop.domains.registry import grader_for

    graders: dict[str, Callable[[Task, str], bool]] = {}
    tasks: list[Task | None] = []
    for row in rows:
        spec = row.get("task_json")
        if spec is None:
            tasks.append(None)
            continue
        task = Task(**(json.loads(spec) if isinstance(spec, str) else spec))
        if task.domain not in graders:  # graded in the prompt style the learner was prompted in
            graders[task.domain] = grader_for(task.domain, row.get("prompt_style", "bare"))
        tasks.append(task)

    def reward(index: int, text: str) -> float:
        task = tasks[index]
        if task is None:
            return 1.0 if text.strip() == str(rows[index]["answer"]).strip() else 0.0
        return 1.0 if graders[task.domain](task, text) else 0.0

    return reward


def _resume_args(job: TrainJob, name: str) -> dict[str, Any]:
    """The checkpoint arguments of one training step of ``job`` (none without ``checkpoint_dir``); a resume
    is reported as a "resumed" event (step, total, seconds_saved: training time not redone)."""
    if not job.checkpoint_dir:
        return {}

    def on_resume(step: int, total: int, seconds: float) -> None:
        _emit({"event": "resumed", "part": name, "step": step, "total": total, "seconds_saved": round(seconds, 3)})

    return {"checkpoint": str(Path(job.checkpoint_dir) / f"{name}.pt"),
            "checkpoint_seconds": job.checkpoint_seconds, "on_resume": on_resume}


def _pretrained(job: TrainJob) -> TrainJob:
    """``job`` itself, or with ``job.pretrain``: CPT into ``<out_dir>.cpt`` (its result beside
    ``result_path`` as ``.cpt.json``, its steps as "cpt-step" events) and the job starting from there."""
    if not job.pretrain:
        return job
    import shutil

    from .cpt import train_cpt

    def on_step(step: int, total: int, loss: float, tokens: int) -> None:
        _emit({"event": "cpt-step", "step": step, "total": total, "loss": loss, "tokens": tokens})

    out = Path(f"{job.out_dir}.cpt")
    shutil.rmtree(out, ignore_errors=True)
    texts = [r["text"] for r in _read_rows(job.pretrain["data_path"])]
    result = train_cpt(Path(job.learner_dir), texts, out, on_step=on_step, **job.pretrain["params"],
                       **_resume_args(job, "cpt"))
    if job.result_path:
        _atomic_write_text(Path(f"{job.result_path}.cpt.json"), json.dumps(asdict(result)))
    return replace(job, learner_dir=str(out), pretrain={})


def _run(job: TrainJob) -> TrainResult:
    if job.threads:
        from .threads import apply_threads

        apply_threads(job.threads)
    job = _pretrained(job)
    resume = _resume_args(job, "main")
    def on_step(step: int, total: int, loss: float, tokens: int) -> None:
        _emit({"event": "step", "step": step, "total": total, "loss": loss, "tokens": tokens})

    rows = _read_rows(job.data_path)
    if job.backend == "embedded-sft":
        from .sft import SFTExample, train_sft

        examples = [SFTExample(r["prompt"], r["response"]) for r in rows]
        return train_sft(Path(job.learner_dir), examples, Path(job.out_dir), on_step=on_step, **job.params,
                         **resume)
    if job.backend == "embedded-grpo":
        from .grpo import train_grpo

        return train_grpo(Path(job.learner_dir), [r["prompt"] for r in rows], _grpo_reward(rows),
                          Path(job.out_dir), on_step=on_step, **job.params, **resume)
    if job.backend == "embedded-grpo-groups":
        from .grpo import train_grpo_groups

        params = dict(job.params)
        start, format_tokens = Path(job.learner_dir), 0
        fmt = [r for r in rows if r.get("format")]
        if fmt:  # a format fine-tune first (loop/selfplay.py: the proposer's cold start), its steps as "format-step"
            import shutil

            from .sft import SFTExample, train_sft

            def on_format_step(step: int, total: int, loss: float, tokens: int) -> None:
                _emit({"event": "format-step", "step": step, "total": total, "loss": loss, "tokens": tokens})

            start = Path(f"{job.out_dir}.format")
            shutil.rmtree(start, ignore_errors=True)
            format_tokens = train_sft(Path(job.learner_dir), [SFTExample(r["prompt"], r["response"]) for r in fmt],
                                      start, on_step=on_format_step, **params.pop("format"),
                                      **_resume_args(job, "format")).num_tokens
        params.pop("format", None)
        groups: dict[object, list[tuple[str, str, bool, float]]] = {}
        for r in rows:
            if not r.get("format"):
                groups.setdefault(r["group"], []).append(
                    (r["prompt"], r["completion"], bool(r["ended"]), float(r["reward"])))
        result = train_grpo_groups(start, list(groups.values()), Path(job.out_dir), on_step=on_step, **params,
                                   **resume)
        result.num_tokens += format_tokens  # every token the job trained on
        return result
    raise ValueError(f"unknown trainer backend {job.backend!r}")


def execute_job(job_path: Path) -> None:
    """Run the job described in ``job_path`` and write its result atomically (a child per job and the
    persistent worker both run jobs through this; each reports failures its own way)."""
    job = TrainJob(**json.loads(Path(job_path).read_text()))
    result = _run(job)
    _atomic_write_text(Path(job.result_path), json.dumps(asdict(result)))


def run_job_child(job_path: Path) -> int:
    """Run the job described in ``job_path``; 0 on success (result written), 1 on any error."""
    _emit({"event": "start", "pid": os.getpid()})
    try:
        execute_job(job_path)
    except BaseException as exc:  # noqa: BLE001  (the parent only sees the exit code and the log)
        import traceback

        traceback.print_exc(file=sys.stderr)
        sys.stderr.write(f"training job failed: {type(exc).__name__}: {exc}\n")
        sys.stderr.flush()
        return 1
    _emit({"event": "done"})
    return 0


# -- daemon side -----------------------------------------------------------------------------------
def kill_tree(pid: int, grace_seconds: float = TERM_GRACE_SECONDS) -> None:
    """TERM the process and all its descendants, wait ``grace_seconds``, KILL what is left."""
    import psutil

    try:
        parent = psutil.Process(pid)
        procs = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_seconds)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_seconds)
    # The child leads its own session: anything it spawned that escaped the tree walk is still in it.
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel SIGKILLs it when the daemon dies, even by SIGKILL, so a
    killed daemon never leaves a trainer writing into a directory its restarted self will reuse."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _pump(stream, lines: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line.rstrip("\n"))
    lines.put(None)


def supervise(argv: list[str], *, what: str, timeout_seconds: float, on_line: Callable[[str], None],
              tail: collections.deque, should_stop: Callable[[], bool] | None = None,
              cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Run ``argv`` to its end as a child that leads its own session and dies with the daemon, feeding
    every output line to ``on_line``. Returns the finished process (check ``returncode``).

    Raises TrainJobStopped when ``should_stop()``, TrainJobFailed on a timeout or when it cannot start
    (with ``tail``, which ``on_line`` fills, as the log tail). In every outcome, exceptions from the
    callbacks included, the child tree is gone on return."""
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=dict(os.environ, **(env or {}), PYTHONUNBUFFERED="1"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            start_new_session=True, preexec_fn=_die_with_parent,
        )
    except OSError as exc:
        raise TrainJobFailed(f"{what} could not be started ({argv[0]}): {exc}") from None
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout_seconds
    finished = False
    try:
        eof = False
        while not (eof and proc.poll() is not None):
            try:
                line = lines.get(timeout=POLL_SECONDS)
            except queue.Empty:
                line = ""
            if line is None:
                eof = True
            elif line:
                on_line(line)
            if should_stop is not None and should_stop():
                raise TrainJobStopped(pid=proc.pid)
            if time.monotonic() > deadline:
                raise TrainJobFailed(f"{what} timed out after {timeout_seconds:g} s", "\n".join(tail), proc.pid)
        finished = True
    finally:
        if not finished:
            kill_tree(proc.pid)
            proc.wait()
        reader.join(timeout=1.0)
        if proc.stdout is not None:
            proc.stdout.close()
    return proc


def child_argv(module: str, *args: str) -> list[str]:
    """The command line of a trainer child: this interpreter with ``-P``, so neither the working directory
    nor the script's folder goes on ``sys.path`` (a repository checkout's ``zpd/`` folder would otherwise
    shadow an installed zpd), and the child is started in its work directory (``supervise``'s ``cwd``)."""
    return [sys.executable, "-P", "-m", module, *args]


def run_job(
    job: TrainJob,
    *,
    timeout_seconds: float,
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    log_tail_lines: int = 50,
) -> TrainResult:
    """Run ``job`` in a child process (``supervise``) and return its result.

    Raises TrainJobFailed (non-zero exit, missing result, timeout) or TrainJobStopped (should_stop).
    """
    result_path = Path(job.result_path)
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.unlink(missing_ok=True)
    job_path = result_path.with_name(result_path.name + ".job.json")
    _atomic_write_text(job_path, json.dumps(asdict(job)))
    tail: collections.deque[str] = collections.deque(maxlen=log_tail_lines)

    def on_line(line: str) -> None:
        event = _parse_event(line)
        if event is None:
            tail.append(line)
        elif on_progress is not None:
            on_progress(event)

    proc = supervise(child_argv("zpd.trainer.job", str(job_path)), what="training", cwd=job_path.parent,
                     timeout_seconds=timeout_seconds, on_line=on_line, tail=tail, should_stop=should_stop)
    if proc.returncode != 0:
        raise TrainJobFailed(f"training exited with status {proc.returncode}", "\n".join(tail), proc.pid)
    if not result_path.exists():
        raise TrainJobFailed("training exited 0 without writing its result", "\n".join(tail), proc.pid)
    return TrainResult(**json.loads(result_path.read_text()))


def _parse_event(line: str) -> dict | None:
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m zpd.trainer.job JOB.json\n")
        sys.exit(2)
    sys.exit(run_job_child(Path(sys.argv[1])))
