"""A trainer worker that lives across rounds: torch and transformers are imported once, not every round.

    python -P -m zpd.trainer.worker          # started by TrainerWorker; commands on stdin, events on stdout

A fresh trainer child pays its start-up every round (imports, then exit: 15 s of a smoke round's 16 on a
loaded 2-core machine, issue 15). The worker reads one JSON command per line on stdin:

* ``{"cmd": "job", "path": JOB.json}``: run the job exactly as ``python -m zpd.trainer.job`` would (the same
  events, the result written atomically, checkpoints and resume included), then ``{"event": "done"}``, or
  the traceback and ``{"event": "failed", "error"}``;
* ``{"cmd": "release"}``: drop every model, collect, give CUDA's cached memory back, and answer
  ``{"event": "released", "models", "cuda_allocated_bytes"}`` (what it still holds: 0 and 0);
* end of input: exit 0.

``TrainerWorker`` is the daemon side. The worker leads its own session, dies with the daemon
(PR_SET_PDEATHSIG), and is killed as a tree on stop, on a timeout and after a failed job (a job that
raised may have left the process in a bad state, e.g. CUDA out of memory); the next job starts a new
one. A job in flight when the worker or the daemon dies fails its round's attempt; the retry starts the
job again and it resumes from its checkpoint (``trainer/checkpoint.py``).
"""

from __future__ import annotations

import collections
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
        elif cmd.get("cmd") == "release":
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
                if event.get("event") in ("done", "failed", "released", "ready"):
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
            if not self.alive():
                self.close(kill=True)  # one that died between jobs: reap it and close its pipes
                self._start()
                ready = self._next_event(deadline, should_stop, on_progress, "training")
                if ready is None or ready.get("event") != "ready":
                    raise self._died("the trainer worker exited before it was ready")
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


if __name__ == "__main__":
    from zpd.trainer.quick_exit import exit_now  # at the end of input: no torch teardown (1-6 s)

    exit_now(serve())
