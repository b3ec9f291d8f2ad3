"""A trainer worker that lives across rounds: torch and transformers are imported once, not every round.

    python -P -m zpd.trainer.worker          # started by TrainerWorker; commands on stdin, events on stdout

A fresh trainer child pays its start-up every round (imports, then exit: 15 s of a smoke round's 16 on a
loaded 2-core machine, issue 15). The worker reads one JSON command per line on stdin:

* ``{"cmd": "job", "path": JOB.json}``: run the job exactly as ``python -m zpd.trainer.job`` would (the same
  events, the result written atomically, checkpoints and resume included), then ``{"event": "done"}``, or
  the traceback and ``{"event": "failed", "error"}``;
* ``{"cmd": "generate", "model", "device", "batch_size", "torch_threads", "num_params", "prompts", "n",
  "temperature", "max_tokens", "seed", "stop", "sample_seeds"}``: the embedded generator's ``generate``
  on that learner (loaded on first use and kept until ``drop``), answered ``{"event": "generated",
  "completions"}`` (per prompt, ``n`` ``Completion`` fields), or ``{"event": "failed", "error"}``;
* ``{"cmd": "drop", "model", "device", "batch_size"}``: forget that generator: ``{"event": "dropped"}``;
* ``{"cmd": "release"}``: drop every model, collect, give CUDA's cached memory back, and answer
  ``{"event": "released", "models", "cuda_allocated_bytes"}`` (what it still holds: 0 and 0);
* end of input: exit 0.

``WorkerGenerator`` is the ``embedded`` generation backend served by the worker, for a CPU learner with
the worker on (``loop/context.py``): the daemon then imports neither torch nor transformers, and a round
pays their imports (5-8 s of CPU on a 2-core machine) once, in the worker, not again in the daemon. Its
completions are those of ``EmbeddedGenerator`` in the daemon, sample for sample (same code, same seeds,
the same thread rule, resolved in the process that runs torch).

``TrainerWorker`` is the daemon side. The worker leads its own session, dies with the daemon
(PR_SET_PDEATHSIG), and is killed as a tree on stop, on a timeout and after a failed job (a job that
raised may have left the process in a bad state, e.g. CUDA out of memory); the next job starts a new
one. A job in flight when the worker or the daemon dies fails its round's attempt; the retry starts the
job again and it resumes from its checkpoint (``trainer/checkpoint.py``).
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .completion import Completion
from .job import execute_job
from .process import (
    POLL_SECONDS,
    TrainJobFailed,
    TrainJobStopped,
    child_argv,
    die_with_parent,
    emit,
    kill_tree,
    parse_event,
    pump,
    write_job,
)
from .result import TrainResult
from .spec import TrainJob

RELEASE_TIMEOUT_SECONDS = 60.0


# -- worker side -----------------------------------------------------------------------------------
def _live_models() -> int:
    from .hf import PreTrainedModel

    return sum(1 for o in gc.get_objects() if isinstance(o, PreTrainedModel))


def _release() -> dict[str, Any]:
    gc.collect()
    import torch

    allocated = 0
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        allocated = int(torch.cuda.memory_allocated())
    return {"event": "released", "models": _live_models(), "cuda_allocated_bytes": allocated}


_generators: dict[str, Any] = {}
"""The worker's embedded generators, by ``_generator_key``: kept across calls until ``drop``/``release``."""


def _generator_key(cmd: dict[str, Any]) -> str:
    return json.dumps([cmd["model"], cmd["device"], cmd["batch_size"]])


def _generate(cmd: dict[str, Any]) -> dict[str, Any]:
    """One ``generate`` command (module docstring); the threads are chosen here, where torch runs."""
    from .generate import EmbeddedGenerator
    from .threads import apply_threads, choose_threads, own_load

    apply_threads(choose_threads(cmd["torch_threads"], num_params=cmd["num_params"], own_load=own_load()))
    key = _generator_key(cmd)
    if key not in _generators:
        _generators[key] = EmbeddedGenerator(Path(cmd["model"]), device=cmd["device"],
                                             batch_size=cmd["batch_size"])
    outs = _generators[key].generate(
        cmd["prompts"], n=cmd["n"], temperature=cmd["temperature"], max_tokens=cmd["max_tokens"],
        seed=cmd["seed"], stop=cmd["stop"], sample_seeds=cmd["sample_seeds"])
    return {"event": "generated", "completions": [[dataclasses.asdict(c) for c in row] for row in outs]}


def _answer(cmd: dict[str, Any], make: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Emit ``make(cmd)``, or its traceback and a ``failed`` event."""
    try:
        event = make(cmd)
    except Exception as exc:  # noqa: BLE001  (reported to the daemon, which kills this worker)
        import traceback

        traceback.print_exc(file=sys.stdout)
        event = {"event": "failed", "error": f"{type(exc).__name__}: {exc}"}
    emit(event)


def _drop(cmd: dict[str, Any]) -> dict[str, Any]:
    gen = _generators.pop(_generator_key(cmd), None)
    if gen is not None:
        gen.close()
        gc.collect()
    return {"event": "dropped"}


def _run_one(job_path: Path) -> None:
    emit({"event": "start", "pid": os.getpid()})
    try:
        execute_job(job_path)
    except Exception as exc:  # noqa: BLE001  (reported to the daemon, which kills this worker)
        import traceback

        traceback.print_exc(file=sys.stdout)
        emit({"event": "failed", "error": f"{type(exc).__name__}: {exc}"})
        return
    finally:
        gc.collect()  # the job's model goes now, not at some later collection
    emit({"event": "done"})


def serve() -> int:
    """The worker's loop over stdin commands (module docstring)."""
    from . import grpo, sft  # noqa: F401  (the imports every job needs, paid once)

    # The imported modules' objects (torch, transformers: about 450,000) are never garbage; frozen, the
    # collection after each job scans only what jobs made: 0.6-1.0 s a job at load 6, against 0.000 s.
    gc.freeze()
    emit({"event": "ready", "pid": os.getpid()})
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd.get("cmd") == "job":
            _run_one(Path(cmd["path"]))
        elif cmd.get("cmd") == "generate":
            _answer(cmd, _generate)
        elif cmd.get("cmd") == "drop":
            _answer(cmd, _drop)
        elif cmd.get("cmd") == "release":
            for gen in _generators.values():
                gen.close()
            _generators.clear()
            emit(_release())
        else:
            emit({"event": "failed", "error": f"unknown worker command {cmd.get('cmd')!r}"})
    return 0


# -- daemon side -----------------------------------------------------------------------------------
class TrainerWorker:
    """One worker process, started on first use; ``run`` is ``run_job``'s equivalent."""

    def __init__(self, cwd: Path | None = None, log_tail_lines: int = 50) -> None:
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=log_tail_lines)

    @property
    def pid(self) -> int | None:
        return self._process().pid if self.alive() else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _process(self) -> subprocess.Popen[str]:
        """The worker process (called only once one was started)."""
        if self.proc is None:
            raise TrainJobFailed("the trainer worker is not running")
        return self.proc

    def _start(self) -> None:
        if self.cwd is not None:
            Path(self.cwd).mkdir(parents=True, exist_ok=True)
        try:
            self.proc = subprocess.Popen(
                child_argv("zpd.trainer.worker"), cwd=self.cwd, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                errors="replace", start_new_session=True, preexec_fn=die_with_parent,
            )
        except OSError as exc:
            raise TrainJobFailed(
                f"the trainer worker could not be started ({sys.executable}): {exc}") from None
        self._lines = queue.Queue()
        self._reader = threading.Thread(target=pump, args=(self.proc.stdout, self._lines), daemon=True)
        self._reader.start()

    def _send(self, cmd: dict[str, Any]) -> None:
        stdin = self._process().stdin
        try:
            if stdin is not None:
                stdin.write(json.dumps(cmd) + "\n")
                stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # it died: the reader sees the end of its output

    def _next_event(self, deadline: float, should_stop: Callable[[], bool] | None,
                    on_event: Callable[[dict[str, Any]], None] | None, what: str) -> dict[str, Any] | None:
        """The next event among the worker's lines (others go to ``tail``); None when it exited."""
        while True:
            try:
                line = self._lines.get(timeout=POLL_SECONDS)
            except queue.Empty:
                line = ""
            if line is None:
                return None
            event = parse_event(line) if line else None
            if line and event is None:
                self.tail.append(line)
            if should_stop is not None and should_stop():
                pid = self._process().pid
                self.close(kill=True)
                raise TrainJobStopped(pid=pid)
            if time.monotonic() > deadline:
                pid = self._process().pid
                self.close(kill=True)
                raise TrainJobFailed(f"{what} timed out", "\n".join(self.tail), pid)
            if event is not None:
                if event.get("event") in ("done", "failed", "released", "ready", "generated", "dropped"):
                    return event
                if on_event is not None:
                    on_event(event)

    def run(self, job: TrainJob, *, timeout_seconds: float,
            on_progress: Callable[[dict[str, Any]], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> TrainResult:
        """Run ``job`` in the worker (started first when none is alive) and return its result. Raises
        TrainJobFailed (the job raised, the worker died, a timeout) or TrainJobStopped; in both cases the
        worker is gone on return."""
        job_path = write_job(job)
        result_path = Path(job.result_path)
        deadline = time.monotonic() + timeout_seconds
        try:
            self._ensure_started(deadline, should_stop, on_progress)
            self.tail.clear()
            self._send({"cmd": "job", "path": str(job_path)})
            end = self._next_event(deadline, should_stop, on_progress, "training")
        except (TrainJobFailed, TrainJobStopped):
            self.close(kill=True)
            raise
        if end is None:
            raise self._died("the trainer worker died during the job")
        if end.get("event") != "done":
            pid = self._process().pid
            self.close(kill=True)
            raise TrainJobFailed(f"training job failed: {end.get('error')}", "\n".join(self.tail), pid)
        if not result_path.exists():
            raise TrainJobFailed("training finished without writing its result", "\n".join(self.tail),
                                 self.pid)
        return TrainResult(**json.loads(result_path.read_text()))

    def _ensure_started(self, deadline: float, should_stop: Callable[[], bool] | None,
                        on_event: Callable[[dict[str, Any]], None] | None) -> None:
        """Start a worker and wait for its ``ready``, unless one is alive."""
        if self.alive():
            return
        self.close(kill=True)  # one that died between commands: reap it and close its pipes
        self._start()
        ready = self._next_event(deadline, should_stop, on_event, "the trainer worker's start")
        if ready is None or ready.get("event") != "ready":
            raise self._died("the trainer worker exited before it was ready")

    def request(self, cmd: dict[str, Any], *, answer: str, timeout_seconds: float) -> dict[str, Any]:
        """Send ``cmd`` (the worker started first when none is alive) and return its ``answer`` event.
        Raises TrainJobFailed when the worker fails the command, dies or times out; the worker is then
        gone (the next command starts a new one)."""
        deadline = time.monotonic() + timeout_seconds
        what = f"the trainer worker's {cmd['cmd']}"
        try:
            self._ensure_started(deadline, None, None)
            self.tail.clear()
            self._send(cmd)
            end = self._next_event(deadline, None, None, what)
        except TrainJobFailed:
            self.close(kill=True)
            raise
        if end is None:
            raise self._died(f"the trainer worker died during its {cmd['cmd']}")
        if end.get("event") != answer:
            pid = self._process().pid
            self.close(kill=True)
            raise TrainJobFailed(f"{what} failed: {end.get('error')}", "\n".join(self.tail), pid)
        return end

    def _died(self, message: str) -> TrainJobFailed:
        pid = self._process().pid
        code = self._process().wait(timeout=30)
        self.close(kill=True)
        return TrainJobFailed(f"{message} (status {code})", "\n".join(self.tail), pid)

    def release(self, *, exit: bool = False) -> dict[str, Any] | None:
        """Make the worker drop its models and free CUDA's cache (``exit``: stop it instead); its answer,
        or None when no worker is alive (or it was stopped)."""
        if not self.alive():
            return None
        if exit:
            self.close()
            return None
        self._send({"cmd": "release"})
        event = self._next_event(time.monotonic() + RELEASE_TIMEOUT_SECONDS, None, None, "release")
        return event

    def close(self, *, kill: bool = False) -> None:
        """Stop the worker: end of input and a short wait (``kill``: none), then the whole tree is killed."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if not kill and proc.poll() is None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                pass
        kill_tree(proc.pid)
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if self._reader is not None:
            self._reader.join(timeout=1.0)


class WorkerGenerator:
    """The ``embedded`` generation backend run in the trainer worker (module docstring): the
    ``Generator`` protocol of ``trainer/generation.py``, one worker command per call."""

    def __init__(self, worker: TrainerWorker, model: str | Path, *, device: str, batch_size: int,
                 torch_threads: int | str, num_params: int, timeout_seconds: float) -> None:
        self.worker = worker
        self.spec: dict[str, Any] = {"model": str(model), "device": device, "batch_size": batch_size}
        self.threads: dict[str, Any] = {"torch_threads": torch_threads, "num_params": num_params}
        self.timeout_seconds = timeout_seconds

    def generate(self, prompts: list[str], *, n: int = 1, temperature: float = 0.0, max_tokens: int,
                 seed: int = 0, stop: list[str] | None = None,
                 sample_seeds: list[list[int]] | None = None) -> list[list[Completion]]:
        if not prompts:
            return []
        event = self.worker.request(
            {"cmd": "generate", **self.spec, **self.threads, "prompts": prompts, "n": n,
             "temperature": temperature, "max_tokens": max_tokens, "seed": seed, "stop": stop,
             "sample_seeds": sample_seeds},
            answer="generated", timeout_seconds=self.timeout_seconds)
        return [[Completion(**c) for c in row] for row in event["completions"]]

    def close(self) -> None:
        """The worker forgets this generator's model (nothing to do when no worker is alive)."""
        if self.worker.alive():
            try:
                self.worker.request({"cmd": "drop", **self.spec}, answer="dropped",
                                    timeout_seconds=RELEASE_TIMEOUT_SECONDS)
            except TrainJobFailed:
                pass  # the worker is gone, and its models with it


if __name__ == "__main__":
    from zpd.trainer.quick_exit import exit_now  # at the end of input: no torch teardown (1-6 s)

    exit_now(serve())
