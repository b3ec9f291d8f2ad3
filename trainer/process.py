"""Running a trainer child as a supervised process tree: started in its own session, its events streamed,
killed as a whole tree on stop, timeout or error, so that no process outlives the call.

``supervise`` runs any command that way (the verl launcher and served replicas use it too); ``run_job``
runs one ``TrainJob`` in ``python -m zpd.trainer.job`` (``trainer/job.py``, the child side). A child
reports on stdout, one JSON line per event (``emit``): ``{"event": "start", "pid"}`` first, then
``{"event": "step", "step", "total", "loss", "tokens"}``, ...; other lines are its log.
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
from pathlib import Path
from typing import IO, Any

from zpd.store.atomic import atomic_write_text

from .result import TrainResult
from .spec import TrainJob

TERM_GRACE_SECONDS = 5.0
POLL_SECONDS = 0.2


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


def emit(event: dict[str, Any]) -> None:
    """Report one event to the daemon: a JSON line on stdout, flushed."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


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


def die_with_parent() -> None:
    """Runs in the child before exec: the kernel SIGKILLs it when the daemon dies, even by SIGKILL, so a
    killed daemon never leaves a trainer writing into a directory its restarted self will reuse."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Feed ``stream``'s lines into ``lines`` (a reader thread's loop); None at its end."""
    for line in iter(stream.readline, ""):
        lines.put(line.rstrip("\n"))
    lines.put(None)


def supervise(argv: list[str], *, what: str, timeout_seconds: float, on_line: Callable[[str], None],
              tail: collections.deque[str], should_stop: Callable[[], bool] | None = None,
              cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Run ``argv`` to its end as a child that leads its own session and dies with the daemon, feeding
    every output line to ``on_line``. Returns the finished process (check ``returncode``).

    Raises TrainJobStopped when ``should_stop()``, TrainJobFailed on a timeout or when it cannot start
    (with ``tail``, which ``on_line`` fills, as the log tail). In every outcome, exceptions from the
    callbacks included, the child tree is gone on return."""
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=dict(os.environ, **(env or {}), PYTHONUNBUFFERED="1"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            start_new_session=True, preexec_fn=die_with_parent,
        )
    except OSError as exc:
        raise TrainJobFailed(f"{what} could not be started ({argv[0]}): {exc}") from None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=pump, args=(proc.stdout, lines), daemon=True)
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
                raise TrainJobFailed(f"{what} timed out after {timeout_seconds:g} s", "\n".join(tail),
                                     proc.pid)
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
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    log_tail_lines: int = 50,
) -> TrainResult:
    """Run ``job`` in a child process (``supervise``) and return its result.

    Raises TrainJobFailed (non-zero exit, missing result, timeout) or TrainJobStopped (should_stop).
    """
    job_path = write_job(job)
    result_path = Path(job.result_path)
    tail: collections.deque[str] = collections.deque(maxlen=log_tail_lines)

    def on_line(line: str) -> None:
        event = parse_event(line)
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


def write_job(job: TrainJob) -> Path:
    """Write ``job`` where its child reads it (``TrainJob.spec_path``), with no stale result beside it."""
    result_path = Path(job.result_path)
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.unlink(missing_ok=True)
    atomic_write_text(job.spec_path, job.to_json())
    return job.spec_path


def parse_event(line: str) -> dict[str, Any] | None:
    """The event a child's output line reports, or None for a log line."""
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None
