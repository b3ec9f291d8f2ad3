"""The ``controller`` row: what the running daemon is doing, for ``zpd status`` (one row, id 1).

The functions run their statement in the caller's transaction; they never commit.
"""

from __future__ import annotations

import time

from .sqlite import Database


def controller_started(db: Database, *, pid: int, round_n: int, metrics_url: str | None) -> None:
    """The daemon is up: its pid, the round it will work on, its metrics address."""
    now = time.time()
    db.execute(
        "INSERT OR REPLACE INTO controller (id, pid, round, phase, metrics_url, started_at, updated_at) "
        "VALUES (1, ?, ?, 'idle', ?, ?, ?)",
        [pid, round_n, metrics_url, now, now],
    )


def set_controller_phase(db: Database, phase: str, round_n: int | None = None) -> None:
    """The phase the daemon is in (``round_n`` None: the round is unchanged)."""
    db.execute("UPDATE controller SET phase = ?, round = coalesce(?, round), updated_at = ? WHERE id = 1",
               [phase, round_n, time.time()])


def controller_stopped(db: Database) -> None:
    """The daemon has exited: no pid."""
    db.execute("UPDATE controller SET pid = NULL, updated_at = ? WHERE id = 1", [time.time()])
