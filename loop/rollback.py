"""``zpd rollback``: learner, exam and curriculum state back to round N; the daemon continues with N+1.

Takes the controller lock (so it refuses while a daemon runs, naming its pid). Nothing is deleted:
the later rounds' directories and the store as it was move to ``abandoned/after_round_N_<time>/``.
Order, so that a kill at any point is repaired by running the command again: round N's store is
checked (and, for a delta round, rebuilt from its base and delta: ``store/delta.py``) before anything
moves, later rounds move aside, then the store is restored from round N's (SQLite's backup API, one
transaction), then ``LATEST`` is rewritten.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from zpd.store import delta
from zpd.store.atomic import atomic_write_text, fsync_dir
from zpd.store.db import backup_to, open_store
from zpd.store.lock import ControllerLock
from zpd.store.rounds import committed_on_disk, is_committed, reconcile, round_dir, round_name, verify_round


class RollbackError(RuntimeError):
    """The rollback cannot be done; nothing was changed."""


def rollback(state_dir: Path, round_n: int) -> list[int]:
    """Roll ``state_dir`` back to committed round ``round_n``; returns the rounds moved aside."""
    state_dir = Path(state_dir).resolve()
    if not (state_dir / "state.db").is_file():
        raise RollbackError(f"{state_dir}: not a zpd state directory (no state.db)")
    with ControllerLock(state_dir):
        db = open_store(state_dir / "state.db")
        try:
            reconcile(db, state_dir)
            on_disk = committed_on_disk(state_dir)
            target = round_dir(state_dir, round_n)
            if round_n not in on_disk:
                why = "was pruned by retention" if is_committed(db, round_n) else "does not exist"
                raise RollbackError(f"round {round_n} {why} in {state_dir} (on disk: {on_disk or 'none'})")
            aside = state_dir / "abandoned" / f"after_{round_name(round_n)}_{int(time.time())}"
            rebuilt = None
            if delta.store_kind(target) == "delta":
                aside.mkdir(parents=True, exist_ok=True)
                rebuilt = aside / f".{round_name(round_n)}.rebuilt.db"
                delta.materialize(state_dir, round_n, rebuilt)  # DeltaError (exit 4) before anything moves
            problems = verify_round(target)
            if problems:
                raise RollbackError(f"round {round_n} is damaged: {problems[0]}")
            later = [n for n in on_disk if n > round_n]
            aside.mkdir(parents=True, exist_ok=True)
            backup_to(db, aside / "state.db")  # the store as it was, before the restore
            for n in later:
                os.rename(round_dir(state_dir, n), aside / round_name(n))
            fsync_dir(round_dir(state_dir, round_n).parent)
            fsync_dir(aside)
            delta.restore(db, state_dir, round_n, rebuilt)
            reconcile(db, state_dir)
            shutil.rmtree(state_dir / "work", ignore_errors=True)
            atomic_write_text(state_dir / "LATEST", f"{round_n}\n")
            return later
        finally:
            db.conn.close()
