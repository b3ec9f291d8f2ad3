"""The controller lock: one daemon (or one writing command) per state directory.

``fcntl.flock`` on ``controller.lock`` held for the process lifetime; the kernel drops it when the
process dies, so a SIGKILLed daemon leaves no stale lock. The file holds the holder's pid, host and
start time (JSON) so a refused process can name it. The file is never deleted (deleting a lock file
others may have open breaks mutual exclusion).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = "controller.lock"


class LockHeld(RuntimeError):
    """Another process holds the state directory. ``pid`` names it when known."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.pid = pid
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"state directory {path.parent} is held by {holder} ({path})")


def read_holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


class ControllerLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, retry_seconds: float = 0.5) -> None:
        """Take the lock or raise LockHeld. Retries briefly: a `status` probe holds it for microseconds."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + retry_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockHeld(self.path, read_holder(self.path).get("pid")) from None
                time.sleep(0.05)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ControllerLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder_if_running(state_dir: Path) -> int | None:
    """The pid of the process holding the lock, or None when nobody holds it. Never blocks a daemon:
    the probe lock is shared and released at once."""
    path = Path(state_dir) / LOCK_NAME
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_holder(path).get("pid") or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
