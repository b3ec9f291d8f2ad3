"""The store: migrations, identity checks, read-only readers, atomic writes, the round commit protocol."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from zpd.store.atomic import atomic_write_json, atomic_write_text
from zpd.store.db import StoreError, backup_to, open_readonly, open_store
from zpd.store.lock import ControllerLock, holder_if_running
from zpd.store.rounds import (
    commit_round,
    committed_on_disk,
    prune,
    read_latest,
    round_dir,
    rounds_to_prune,
    verify_round,
)


def test_open_store_migrates_with_wal_and_is_idempotent(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"rounds", "tasks", "attempts", "exam_items", "train_examples",
            "measurements"} <= set(db.table_names())
    applied = [r[0] for r in db.execute("SELECT name FROM _sqlite_migrations").fetchall()]
    db.conn.close()
    db = open_store(tmp_path / "state.db")  # again: nothing re-applied
    assert [r[0] for r in db.execute("SELECT name FROM _sqlite_migrations").fetchall()] == applied


def test_attempts_are_unique_per_task_round_mode_sample(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    db.execute("INSERT INTO tasks (domain, difficulty, prompt, answer, guidance, canonical, content_hash, "
               "round, fate) "
               "VALUES ('d', 1, 'p', 'a', 'g', 'c', 'h', 1, 'pending')")
    row = dict(task_id=1, round=1, learner_ref="0", mode="solo", sample_idx=0, output="x", correct=0,
               num_tokens=1, latency_seconds=0.1, finish_reason="stop")
    db["attempts"].insert(row)
    with pytest.raises(sqlite3.IntegrityError):
        db["attempts"].insert(row)
    db["attempts"].insert_all([row], ignore=True)
    assert db.execute("SELECT count(*) FROM attempts").fetchone()[0] == 1


def test_foreign_and_corrupt_databases_are_refused_untouched(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    with pytest.raises(StoreError, match="not a zpd state database"):
        open_store(foreign)
    assert foreign.read_bytes() == before

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not sqlite at all" * 100)
    before = corrupt.read_bytes()
    with pytest.raises(StoreError):
        open_store(corrupt)
    assert corrupt.read_bytes() == before


def test_newer_format_is_refused(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    db.execute("UPDATE meta SET value = '999' WHERE key = 'format_version'")
    db.conn.close()
    with pytest.raises(StoreError, match="newer"):
        open_store(tmp_path / "state.db")


def test_readonly_reader_sees_committed_rows_and_cannot_write(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    db.execute("INSERT INTO frontier (round, domain, value) VALUES (1, 'a', 2.5)")
    ro = open_readonly(tmp_path / "state.db")
    assert ro.execute("SELECT value FROM frontier").fetchone()[0] == 2.5
    with pytest.raises(sqlite3.OperationalError):
        ro.execute("INSERT INTO frontier (round, domain, value) VALUES (2, 'a', 3)")


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "LATEST"
    atomic_write_text(target, "1\n")
    atomic_write_text(target, "2\n")
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert target.read_text() == "2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "x.json"]


def _learner(tmp_path: Path) -> Path:
    src = tmp_path / "learner_src"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"\x00" * 1000)
    (src / "config.json").write_text("{}")
    return src


def test_commit_round_protocol_and_verify(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db = open_store(state / "state.db")
    src = _learner(tmp_path)
    final = commit_round(state, 3, parent_round=2, learner_src=src, config_json="{}",
                         backup_db=lambda p: backup_to(db, p), version="t")
    assert final == round_dir(state, 3)
    assert verify_round(final) == []
    assert read_latest(state) == 3
    assert committed_on_disk(state) == [3]
    assert sqlite3.connect(final / "state.db").execute("SELECT count(*) FROM meta").fetchone()[0] >= 2
    (final / "learner" / "config.json").write_text('{"tampered": 1}')
    assert any("does not match" in p for p in verify_round(final))


def test_half_built_round_is_not_committed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "rounds" / ".round_000001.tmp").mkdir(parents=True)
    (state / "rounds" / "round_000002").mkdir(parents=True)  # no COMPLETE marker
    assert committed_on_disk(state) == []


def test_retention_keeps_last_every_and_protected() -> None:
    committed = list(range(10))
    assert rounds_to_prune(committed, keep_last=2, keep_every=0, keep_all=False,
                           protect=set()) == list(range(8))
    assert rounds_to_prune(committed, keep_last=3, keep_every=4, keep_all=False, protect={1}) == [2, 3, 5, 6]
    assert rounds_to_prune(committed, keep_last=2, keep_every=0, keep_all=True, protect=set()) == []


def test_prune_removes_marker_first(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db = open_store(state / "state.db")
    src = _learner(tmp_path)
    for n in (1, 2):
        commit_round(state, n, parent_round=None, learner_src=src, config_json="{}",
                     backup_db=lambda p: backup_to(db, p), version="t")
    prune(state, [1])
    assert committed_on_disk(state) == [2]
    assert not round_dir(state, 1).exists()


def test_lock_refuses_second_holder_and_names_pid(tmp_path: Path) -> None:
    first = ControllerLock(tmp_path)
    first.acquire()
    try:
        assert holder_if_running(tmp_path) is not None
        code = (
            "import sys; from zpd.store.lock import ControllerLock, LockHeld\n"
            f"try:\n    ControllerLock({str(tmp_path)!r}).acquire()\nexcept LockHeld as e:\n    "
            f"print(e.pid); sys.exit(3)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 3
        assert int(out.stdout.strip()) == os.getpid()
    finally:
        first.release()
    assert holder_if_running(tmp_path) is None
    with ControllerLock(tmp_path):
        assert holder_if_running(tmp_path) is not None
