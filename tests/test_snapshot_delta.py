"""Delta snapshots (store/delta.py) on real SQLite files: a round stored as ``store.delta`` + ``base_round``
rebuilds to exactly the rows a full copy taken at the same instant holds (every table, every rowid), over a
chain of delta rounds and full rounds; rollback to a delta round restores it; ``zpd snapshot`` of a delta
round archives a complete ``state.db``; a damaged delta is refused with one line and exit 4."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from zpd.loop.rollback import rollback
from zpd.store import delta
from zpd.store.archive import seed_from_snapshot, write_snapshot
from zpd.store.connect import transaction
from zpd.store.db import backup_to, open_store
from zpd.store.rounds import commit_round, mark_committed, round_dir, verify_round
from zpd.store.stats import insert_attempts
from zpd.store.training import bootstrap_examples, insert_examples


def _rows(path: Path, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """Every table's rows with their rowid (where the table has one), and the schema, of a store file."""
    conn = sqlite3.connect(path)
    try:
        out: dict[str, object] = {"schema": sorted(conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall())}
        for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            if t in skip:
                continue
            try:
                rows = conn.execute(f'SELECT rowid, * FROM "{t}"').fetchall()
            except sqlite3.OperationalError:  # WITHOUT ROWID
                rows = conn.execute(f'SELECT * FROM "{t}"').fetchall()
            out[t] = sorted(rows, key=repr)
        return out
    finally:
        conn.close()


def _task(conn: sqlite3.Connection, n: int, i: int) -> int:
    conn.execute(
        """INSERT INTO tasks (domain, difficulty, prompt, answer, guidance, canonical, content_hash, round,
           fate) VALUES ('arith', ?, ?, ?, '', ?, ?, ?, 'pending')""",
        [1.0 + i, f"q{n}-{i}", str(i), f"c{n}-{i}", f"h{n}-{i}", n])
    return conn.execute("SELECT max(id) FROM tasks").fetchone()[0]


def _work(db: object, n: int) -> None:
    """What a round does to the store, through the store's own functions where they exist: new tasks and
    attempts, fates set on earlier tasks (tasks updated in place), measurements (their trigger updates
    solo_totals), a replaced frontier row, an exam graduation, the bootstrap set replaced, a deletion."""
    with transaction(db) as conn:
        conn.execute("INSERT OR REPLACE INTO rounds (id, status, phase, config_json) VALUES (?, 'running', "
                     "'snapshot', '{}')", [n])
        ids = [_task(conn, n, i) for i in range(6)]
        insert_attempts(db, [dict(task_id=t, round=n, learner_ref=f"round_{n}", role="learner", mode=m,
                                  sample_idx=s, output="x", correct=(t + s) % 2, num_tokens=3,
                                  latency_seconds=0.1, finish_reason="stop", grader="exact")
                             for t in ids for m in ("solo", "guided") for s in range(2)])
        conn.execute("UPDATE tasks SET fate = 'zpd', fate_round = ?, p_solo = 0.5, selected = 1 "
                     "WHERE fate = 'pending' AND round < ?", [n, n])
        conn.executemany("INSERT INTO measurements (round, kind, task_id, sample_idx, output, correct) "
                         "VALUES (?, 'eval', ?, 0, 'y', 1)", [(n, t) for t in ids[:3]])
        conn.execute("INSERT OR REPLACE INTO frontier (round, domain, value) VALUES (0, 'arith', ?)",
                     [float(n)])
        conn.execute("INSERT OR IGNORE INTO exam_items (task_id, domain, admitted_round) "
                     "VALUES (?, 'arith', ?)",
                     [ids[0], n])
        conn.execute("UPDATE exam_items SET graduated_round = ? WHERE admitted_round < ? AND graduated_round "
                     "IS NULL", [n, n])
        if n >= 2:
            conn.execute("DELETE FROM failed_attempts WHERE round = ?", [n - 1])
        conn.execute("INSERT INTO failed_attempts (round, phase, role, error, created_at) "
                     "VALUES (?, 'calibrate', 'learner', 'timeout', 0)", [n])
        insert_examples(conn, n, "sft", [(t, None, f"p{t}", f"r{t}") for t in ids[:2]])
    bootstrap_examples(db, f"key{n % 2}", lambda: [dict(prompt=f"b{n}{i}", response="r", domain="arith",
                                                         answer="1") for i in range(3 + n)])


def _commit(db: object, state: Path, n: int, full_every: int, copies: Path) -> str:
    """SNAPSHOT's sequence (loop/snapshot.py): tracking, plan, commit, mark committed, restart the log
    after a full copy. A full copy of the live store is taken at the instant the round's store is written."""
    delta.ensure_tracking(db)
    base = delta.plan(db, state, n, full_every=full_every, min_bytes=0)
    learner = state / "work" / f"learner_{n}"  # a new one per round: rounds hard-link learner files
    learner.mkdir(parents=True, exist_ok=True)
    (learner / "config.json").write_text(json.dumps({"round": n}))

    def write(stage: Path) -> None:
        delta.write_store(db, stage, n, base, lambda dest: backup_to(db, dest))
        backup_to(db, copies / f"full_{n}.db")

    commit_round(state, n, parent_round=None, learner_src=learner, config_json="{}", write_store=write,
                 version="test")
    with transaction(db):
        if base is None:
            delta.reset_base(db, n)
        mark_committed(db, n)
    return "full" if base is None else f"delta on {base}"


def _run(tmp_path: Path, rounds: int, full_every: int) -> tuple[Path, Path, list[str]]:
    state, copies = tmp_path / "state", tmp_path / "copies"
    state.mkdir()
    copies.mkdir()
    db = open_store(state / "state.db")
    kinds = []
    for n in range(rounds + 1):
        _work(db, n)
        kinds.append(_commit(db, state, n, full_every, copies))
    db.conn.close()
    return state, copies, kinds


def test_delta_rounds_rebuild_to_exactly_the_full_copy(tmp_path: Path) -> None:
    state, copies, kinds = _run(tmp_path, 5, full_every=3)
    # Round 0 installs the tracking before its copy is taken; 1 and 2 are deltas on it; 3 is full again.
    assert kinds == ["full", "delta on 0", "delta on 0", "full", "delta on 3", "delta on 3"]
    for n in range(6):
        here = round_dir(state, n)
        assert verify_round(here) == []
        manifest = json.loads((here / "manifest.json").read_text())["files"]
        if kinds[n] == "full":
            assert "state.db" in manifest and not (here / "store.delta").exists()
            continue
        assert {"store.delta", "base_round"} <= set(manifest) and "state.db" not in manifest
        out = tmp_path / f"rebuilt_{n}.db"
        delta.materialize(state, n, out)
        want = _rows(copies / f"full_{n}.db")
        assert _rows(out) == want
        assert len(want["attempts"]) == 24 * (n + 1) and want["delta_log"]  # type: ignore[arg-type]
        assert sqlite3.connect(out).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # A delta holds what changed since its base, not the store: far fewer attempts than the copy.
    conn = sqlite3.connect(round_dir(state, 5) / "store.delta")
    assert conn.execute("SELECT count(*) FROM x_attempts").fetchone()[0] == 48


def test_rollback_to_a_delta_round_restores_its_rows(tmp_path: Path) -> None:
    state, copies, kinds = _run(tmp_path, 3, full_every=4)
    assert kinds[2:] == ["delta on 0", "delta on 0"]
    assert rollback(state, 2) == [3]
    skip = ("rounds",)  # reconcile marks round 2 committed; its copy was taken mid-commit
    assert _rows(state / "state.db", skip) == _rows(copies / "full_2.db", skip)
    conn = sqlite3.connect(state / "state.db")
    assert conn.execute("SELECT status FROM rounds WHERE id = 2").fetchone() == ("committed",)
    assert conn.execute("SELECT max(round) FROM attempts").fetchone() == (2,)
    # The next round after the rollback is a delta on round 0 again, and rebuilds exactly.
    db = open_store(state / "state.db")
    _work(db, 3)
    assert _commit(db, state, 3, 4, copies) == "delta on 0"
    db.conn.close()
    delta.materialize(state, 3, tmp_path / "again.db")
    assert _rows(tmp_path / "again.db") == _rows(copies / "full_3.db")


def test_rollback_to_a_full_round_then_deltas_apply_to_it(tmp_path: Path) -> None:
    state, copies, _ = _run(tmp_path, 3, full_every=4)
    assert rollback(state, 0) == [1, 2, 3]
    db = open_store(state / "state.db")
    _work(db, 1)
    assert _commit(db, state, 1, 4, copies) == "delta on 0"
    db.conn.close()
    delta.materialize(state, 1, tmp_path / "r1.db")
    assert _rows(tmp_path / "r1.db") == _rows(copies / "full_1.db")


def test_snapshot_of_a_delta_round_archives_a_complete_store(tmp_path: Path) -> None:
    state, copies, kinds = _run(tmp_path, 2, full_every=5)
    assert kinds[2] == "delta on 0"
    index = write_snapshot(state, 2, tmp_path / "r2.tar", "test")
    assert "round_000002/state.db" in index["files"] and "round_000002/store.delta" not in index["files"]
    with tarfile.open(tmp_path / "r2.tar") as tar:
        assert "round_000002/base_round" not in tar.getnames()
    target = tmp_path / "seeded"
    target.mkdir()
    assert seed_from_snapshot(tmp_path / "r2.tar", target) == 2
    assert verify_round(round_dir(target, 2)) == []
    assert _rows(target / "state.db") == _rows(copies / "full_2.db")


def test_a_damaged_delta_is_refused_with_one_line_and_exit_4(tmp_path: Path) -> None:
    state, _copies, kinds = _run(tmp_path, 3, full_every=5)
    assert kinds[2] == "delta on 0"
    damaged = round_dir(state, 2) / "store.delta"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    before = _rows(state / "state.db")
    out = subprocess.run([sys.executable, "-m", "zpd.loop.cli", "rollback", "--state-dir", str(state),
                          "--round", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 4, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "store.delta" in lines[0] and "Traceback" not in out.stderr
    assert _rows(state / "state.db") == before and (round_dir(state, 3) / "COMPLETE").is_file()


def test_a_store_without_deltas_below_the_size_threshold(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db = open_store(state / "state.db")
    _work(db, 0)
    delta.ensure_tracking(db)
    with transaction(db):
        delta.reset_base(db, 0)
    size = (state / "state.db").stat().st_size
    learner = tmp_path / "learner"
    learner.mkdir()
    (learner / "config.json").write_text("{}")
    commit_round(state, 0, parent_round=None, learner_src=learner, config_json="{}",
                 write_store=lambda stage: delta.write_store(db, stage, 0, None, lambda d: backup_to(db, d)),
                 version="test")
    time.sleep(0)
    assert delta.plan(db, state, 1, full_every=5, min_bytes=size + 1) is None
    assert delta.plan(db, state, 1, full_every=5, min_bytes=0) == 0
    assert delta.plan(db, state, 1, full_every=1, min_bytes=0) is None
    db.conn.close()
