"""The controller lock: one daemon (or one writing command) per state directory.

``fcntl.flock`` on ``controller.lock`` held for the process lifetime; the kernel drops it when the
process dies, so a SIGKILLed daemon leaves no stale lock. The file holds the holder's pid, host and
start time (JSON) so a refused process can name it. The file is deleted only by the process that
created it, when its start is refused (``release(discard=True)``): a refused start leaves no trace. A
waiter that locked the deleted file notices (its inode is no longer the path's) and tries again, so
mutual exclusion holds across the deletion.

``check_state_dir`` is the read-only look at a directory that comes before the lock: the lock is only
ever created in an empty directory or a zpd state directory's root, never in ``/``, in a foreign
folder, or inside another run (its ``rounds/``, a committed round, ``abandoned/``).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = "controller.lock"
FRESH_ENTRIES = frozenset({LOCK_NAME, "logs", "state.db", "state.db-wal", "state.db-shm", "state.db-journal"})
"""What a directory may hold and still count as empty: leftovers of a start refused or killed early."""
_RUN_MARKERS = ("rounds", "LATEST", LOCK_NAME, "logs")


class StateDirRefused(Exception):
    """The directory cannot be a state directory; ``code`` is the exit code (2 usage, 4 foreign)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _is_seed_stage(name: str) -> bool:
    return name.startswith(".seed-") and name.endswith(".tmp")


def fresh_dir_foreign(state_dir: Path) -> list[str]:
    """Entries of a directory without a store that make it not empty. A seeding killed between publishing
    the round and the store leaves its stage and ``rounds/`` (and ``LATEST``): those are its own, not
    foreign (the next start removes them, zpd.store.archive.discard_interrupted_seed)."""
    names = [p.name for p in Path(state_dir).iterdir()]
    seeding = any(_is_seed_stage(n) for n in names)
    return sorted(n for n in names if n not in FRESH_ENTRIES and not _is_seed_stage(n)
                  and not (seeding and n in ("rounds", "LATEST")))


def _is_run_root(path: Path) -> bool:
    return (path / "state.db").is_file() and any((path / m).exists() for m in _RUN_MARKERS)


def check_state_dir(state_dir: Path) -> str:
    """Read-only: ``"new"`` (absent), ``"fresh"`` (empty, or only ``FRESH_ENTRIES`` and stale seeding
    stages) or ``"zpd"`` (the root of a zpd state directory). Raises StateDirRefused otherwise."""
    from .db import StoreError, open_readonly

    state_dir = Path(state_dir)
    for parent in state_dir.parents:
        if _is_run_root(parent):
            raise StateDirRefused(4, f"{state_dir}: inside the zpd state directory {parent}; give that "
                                     "directory itself or one outside it")
    if not state_dir.exists():
        return "new"
    if not state_dir.is_dir():
        raise StateDirRefused(2, f"{state_dir}: not a directory")
    if (state_dir / "COMPLETE").exists() or (state_dir / "manifest.json").exists():
        raise StateDirRefused(4, f"{state_dir}: a committed round's directory, not a state directory; "
                                 "give the run's own directory or an empty one")
    if (state_dir / "state.db").exists():
        try:
            open_readonly(state_dir / "state.db").conn.close()
        except StoreError as exc:
            raise StateDirRefused(4, str(exc)) from None
        return "zpd"
    foreign = fresh_dir_foreign(state_dir)
    if foreign:
        raise StateDirRefused(4, f"{state_dir}: not empty and not a zpd state directory (found "
                                 f"{', '.join(foreign[:5])}); refusing to use it")
    return "fresh"


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
        self.created = False
        """Whether this process created the lock file (only then may ``release(discard=True)`` delete it)."""

    def _open(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            self.created = True
        except FileExistsError:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            self.created = False
        return fd

    def _still_the_file(self, fd: int) -> bool:
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev)

    def acquire(self, retry_seconds: float = 0.5) -> None:
        """Take the lock or raise LockHeld. Retries briefly: a `status` probe holds it for microseconds."""
        deadline = time.monotonic() + retry_seconds
        fd = self._open()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if self._still_the_file(fd):
                    break
                os.close(fd)  # its creator deleted it after a refused start: lock the file now there
                fd = self._open()
                continue
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

    def release(self, discard: bool = False) -> None:
        """Unlock. ``discard``: delete the file too if this process created it (a refused start)."""
        if self._fd is not None:
            if discard and self.created:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
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
