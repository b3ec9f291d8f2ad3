"""CALIBRATE's batch commits skip the fsync (``store/connect.py: batch_durability``): what that keeps.

A commit made inside the block survives a SIGKILL of the process that made it (WAL: it is in the WAL file
when COMMIT returns), the store stays consistent, and FULL is back for every commit after the block."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from sqlite_utils import Database

from zpd.store.connect import batch_durability
from zpd.store.db import open_store

FULL, NORMAL = 2, 1


def _sync(db: Database) -> int:
    return int(db.conn.execute("PRAGMA synchronous").fetchone()[0])


def test_the_block_relaxes_fsync_and_restores_full_after_it_even_on_error(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    assert _sync(db) == FULL
    with batch_durability(db.conn):
        assert _sync(db) == NORMAL
    assert _sync(db) == FULL
    try:
        with batch_durability(db.conn):
            raise RuntimeError("a failed batch")
    except RuntimeError:
        pass
    assert _sync(db) == FULL


def test_inside_an_open_transaction_the_block_keeps_full(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    with db.atomic():
        with batch_durability(db.conn):
            assert _sync(db) == FULL
    assert _sync(db) == FULL


def test_a_batch_committed_in_the_block_survives_sigkill_of_its_process(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_store(path).conn.close()
    child = textwrap.dedent(f"""
        import os, signal
        from zpd.store.connect import batch_durability
        from zpd.store.db import open_store, set_meta
        db = open_store({str(path)!r})
        with batch_durability(db.conn):
            for i in range(50):
                with db.atomic():
                    set_meta(db, f"batch-{{i}}", str(i))
            print("committed", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and "committed" in proc.stdout, proc.stderr
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    keys = {r[0] for r in conn.execute("SELECT key FROM meta WHERE key LIKE 'batch-%'")}
    assert keys == {f"batch-{i}" for i in range(50)}
