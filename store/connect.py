"""Opening ``state.db`` with the standard library alone: connections, the identity check, errors.

``zpd status`` reads the store through this module and ``store/readmodel.py`` only, so that it imports
neither sqlite-utils (which imports pandas and numpy when they are installed) nor the daemon; everything
that writes goes through ``store/db.py``, which builds on it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

APP_ID = "zpd"
FORMAT_VERSION = 1

SqliteError = sqlite3.Error
"""Any error of the database driver (callers outside ``store/`` catch this name, not sqlite3's)."""
SqliteDatabaseError = sqlite3.DatabaseError
"""The driver's error for a file that is not (or no longer) a readable database."""
SQLITE_VERSION = sqlite3.sqlite_version
"""The SQLite library's version (logged at start)."""

IO_MESSAGES = ("disk i/o error", "database or disk is full", "readonly database", "unable to open database")


class StoreError(RuntimeError):
    """The state database is corrupt, foreign or of a newer format (exit code 4)."""


class StoreIOError(StoreError):
    """The state database could not be read or written for reasons of the disk (full, read-only,
    I/O error), not because of what it holds (exit code 1)."""


def connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """A connection in driver-level autocommit, with a busy timeout and foreign keys on."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    else:
        conn = sqlite3.connect(str(path), timeout=10.0)
    # Autocommit at the driver level: every write is either a single statement or inside an explicit
    # ``db.atomic()`` block, never an implicit transaction left open by accident.
    conn.isolation_level = None
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@contextlib.contextmanager
def batch_durability(conn: sqlite3.Connection) -> Iterator[None]:
    """Commits inside the block do not fsync (``synchronous = NORMAL``); the next commit after it does.

    For CALIBRATE's per-batch commits, the only frequent writes: in WAL mode a NORMAL commit survives
    any kill of the process (it is in the WAL file when COMMIT returns) and never corrupts the store;
    only a power loss or an OS crash can roll back the batches committed since the last fsync, which
    CALIBRATE then redoes alike (each sample has its own seed). The phase's closing commit (selection
    and phase advance), made after the block under ``synchronous = FULL``, fsyncs the WAL, so every
    committed round is durable as before. Inside an open transaction the pragma cannot change, so the
    block then keeps FULL."""
    relax = not conn.in_transaction
    if relax:
        conn.execute("PRAGMA synchronous = NORMAL")
    try:
        yield
    finally:
        if relax and not conn.in_transaction:
            conn.execute("PRAGMA synchronous = FULL")


def table_names(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]


def check_identity(conn: sqlite3.Connection, path: Path) -> None:
    """Raise StoreError unless the file is a zpd store of a format this zpd understands."""
    if "meta" not in table_names(conn):
        raise StoreError(f"{path}: not a zpd state database (no meta table); refusing to touch it")
    meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('app', 'format_version')").fetchall())
    if meta.get("app") != APP_ID:
        raise StoreError(f"{path}: not a zpd state database (app={meta.get('app')!r})")
    if int(meta.get("format_version", "0")) > FORMAT_VERSION:
        raise StoreError(
            f"{path}: format version {meta['format_version']} is newer than this zpd understands "
            f"({FORMAT_VERSION})"
        )


def open_readonly_conn(path: Path) -> sqlite3.Connection:
    """A read-only sqlite3 connection that works while the daemon writes; raises StoreError."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no state database")
    try:
        try:
            conn = connect(path, readonly=True)
            check_identity(conn, path)
        except sqlite3.OperationalError:
            # A read-only directory: a WAL reader cannot create the -shm file. With no writer able to
            # run there either, reading the file as immutable is safe.
            conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, timeout=10.0)
            conn.isolation_level = None
            check_identity(conn, path)
        return conn
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot read state database: {exc}") from None


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return row[0] if row else None


@contextlib.contextmanager
def transaction(db: Any) -> Iterator[sqlite3.Connection]:
    """One transaction around the block (``db``: a sqlite3 connection or a sqlite-utils Database); inside
    a transaction already, the block simply joins it. Yields the sqlite3 connection."""
    conn = getattr(db, "conn", db)
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def mark_seeded(db_path: Path, mark: str) -> None:
    """Record ``seeded_from`` in a staged store, checkpointed into the file itself (only the file is
    published; a WAL beside it would be left behind)."""
    conn = sqlite3.connect(str(db_path))
    try:
        with conn:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('seeded_from', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [mark],
            )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
