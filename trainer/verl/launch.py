"""verl as a local child process group: stream its output, stop it, never leave it behind.

The child leads its own session (torchrun and its ranks are in it); on stop, timeout or any error of
ours the whole tree is killed with ``zpd.trainer.job.kill_tree``. Every output line goes to
``log_path`` and through ``on_line``; the last lines travel with a failure as its log tail.
"""

from __future__ import annotations

import collections
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from zpd.trainer.job import TrainJobFailed, TrainJobStopped, kill_tree

POLL_SECONDS = 0.2
LOG_TAIL_LINES = 60


def _pump(stream, lines: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line.rstrip("\n"))
    lines.put(None)


def run_local(argv: list[str], *, cwd: Path, env: dict[str, str], log_path: Path, timeout_seconds: float,
              on_line: Callable[[str], None], should_stop: Callable[[], bool] | None) -> None:
    """Run ``argv`` to completion. Raises TrainJobFailed (non-zero exit, signal, timeout) or TrainJobStopped."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    with open(log_path, "a") as log:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=dict(os.environ, **env, PYTHONUNBUFFERED="1"),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace", start_new_session=True)
        except OSError as exc:
            raise TrainJobFailed(f"verl could not be started ({argv[0]}): {exc}") from None
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
                    log.write(line + "\n")
                    tail.append(line)
                    on_line(line)
                if should_stop is not None and should_stop():
                    raise TrainJobStopped(pid=proc.pid)
                if time.monotonic() > deadline:
                    raise TrainJobFailed(f"verl timed out after {timeout_seconds:g} s", "\n".join(tail), proc.pid)
            finished = True
        finally:
            if not finished:
                kill_tree(proc.pid)
                proc.wait()
            reader.join(timeout=1.0)
            if proc.stdout is not None:
                proc.stdout.close()
    if proc.returncode != 0:
        how = (f"was killed by signal {-proc.returncode} (an OOM kill shows as 9)" if proc.returncode < 0
               else f"exited with status {proc.returncode}")
        raise TrainJobFailed(f"verl {how}; log: {log_path}", "\n".join(tail), proc.pid)
