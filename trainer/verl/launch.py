"""verl as a local child process group: stream its output, stop it, never leave it behind.

The child leads its own session (torchrun and its ranks are in it) and dies with the daemon; on stop,
timeout or any error of ours the whole tree is killed (``zpd.trainer.process.supervise``). Every output
line goes to ``log_path`` and through ``on_line``; the last lines travel with a failure as its log tail.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path

from zpd.trainer.process import TrainJobFailed, supervise

LOG_TAIL_LINES = 60


def run_local(argv: list[str], *, cwd: Path, env: dict[str, str], log_path: Path, timeout_seconds: float,
              on_line: Callable[[str], None], should_stop: Callable[[], bool] | None) -> None:
    """Run ``argv`` to completion. Raises TrainJobFailed (non-zero exit, signal, timeout) or
    TrainJobStopped."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    with open(log_path, "a") as log:

        def each(line: str) -> None:
            log.write(line + "\n")
            tail.append(line)
            on_line(line)

        proc = supervise(argv, what="verl", timeout_seconds=timeout_seconds, on_line=each, tail=tail,
                         should_stop=should_stop, cwd=cwd, env=env)
    if proc.returncode != 0:
        how = (f"was killed by signal {-proc.returncode} (an OOM kill shows as 9)" if proc.returncode < 0
               else f"exited with status {proc.returncode}")
        raise TrainJobFailed(f"verl {how}; log: {log_path}", "\n".join(tail), proc.pid)
