"""The validation split through the real daemon (issue 13): a learner made worse by its training is held
by the gate and the next round trains from its parent; a state directory made before the split (m010)
resumes, its eval items split by the same rule as a new run's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from harness import SMOKE, query, run_zpd, status

from zpd.loop import measure
from zpd.store import ledger_exam
from zpd.store.db import migrations
from zpd.store.run_record import load_run

# A larger level 1 than smoke's (18 items, 9 of them validation): the round-0 learner knows some
# one-digit sums, and the gate needs items it gets right to see a regression on.
EVAL = ["--set", "domains.arithmetic.eval_per_level=18"]


def _outcomes(state: Path, round_n: int, split: ledger_exam.Split) -> dict[int, bool]:
    conn = sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True)
    try:
        return ledger_exam.item_outcomes(conn, round_n, split)
    finally:
        conn.close()


def test_a_regressed_learner_is_held_and_the_next_round_trains_from_the_parent(tmp_path: Path) -> None:
    state = tmp_path / "state"
    base = ["start", "--config", str(SMOKE), "--state-dir", str(state), *EVAL,
            # 9 validation items at level 1 are few: at most a handful right before the sabotage, so the
            # threshold is raised from 0.1 to what that many can show (3 lost, none gained: p = 0.125).
            "--set", "measure.gate_p=0.2"]
    # Round 1's learner is sabotaged: a learning rate of 1.0 wrecks the tiny model's weights.
    out = run_zpd(*base, "--rounds", "1", "--set", "train.learning_rate=1.0", timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    parent, sabotaged = _outcomes(state, 0, "validation"), _outcomes(state, 1, "validation")
    assert sum(parent.values()) >= 3, "the round-0 learner should know some one-digit sums"
    assert sum(sabotaged.values()) < sum(parent.values())
    p = measure.mcnemar_p(parent, sabotaged)
    assert p < 0.2
    assert query(state, "SELECT promoted, current_learner_round FROM rounds WHERE id = 1") == [(0, 0)]
    # The next round, trained normally, starts from round 0's learner, not the held one.
    out = run_zpd(*base, "--rounds", "2", timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert query(state, "SELECT parent_learner_round FROM rounds WHERE id = 2") == [(0,)]
    # status reports the current learner's test part, and its validation part beside it.
    s = status(state)
    cur = s["current_learner_round"]
    (test_acc, val_acc), = query(state, "SELECT eval_accuracy, validation_accuracy FROM rounds WHERE id = ?",
                                 (cur,))
    test = _outcomes(state, cur, "test")
    assert s["eval"]["accuracy"] == test_acc == sum(test.values()) / len(test)
    assert s["eval"]["validation_accuracy"] == val_acc
    # The report's record of the run carries both parts, as stored.
    conn = sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True)
    rounds = {r.round: r for r in load_run(conn).rounds}
    conn.close()
    assert (rounds[cur].eval_accuracy, rounds[cur].validation_accuracy) == (test_acc, val_acc)


def _age(db_path: Path) -> None:
    """Turn a store back into the format before the split: undo m010 exactly, and give round 0 the
    whole-set eval accuracy the old MEASURE recorded."""
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("DROP TABLE eval_splits")
        conn.execute("ALTER TABLE rounds DROP COLUMN validation_accuracy")
        conn.execute("ALTER TABLE rounds DROP COLUMN validation_by_domain_json")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm010_validation_split'")
        conn.execute("UPDATE rounds SET eval_accuracy = (SELECT avg(correct) FROM measurements "
                     "WHERE round = rounds.id AND kind = 'eval')")
    conn.close()


def _schema(conn: sqlite3.Connection) -> dict[str, set[str]]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in tables}


def test_a_state_dir_made_before_the_split_resumes_with_the_rule_of_a_new_run(
        tmp_path: Path, round0_archive: Path) -> None:
    state = tmp_path / "state"
    args = ["start", "--config", str(SMOKE), "--state-dir", str(state),
            "--from-snapshot", str(round0_archive)]
    out = run_zpd(*args, "--rounds", "0", timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    fresh_split = dict(query(state, "SELECT t.content_hash, s.split FROM eval_splits s "
                                    "JOIN tasks t ON t.id = s.task_id"))
    _age(state / "state.db")
    # The aged store's migrated tables are exactly those the migrations before m010 build (the
    # snapshot-delta tables, made outside the migrations, aside).
    from sqlite_utils import Database

    reference = Database(sqlite3.connect(tmp_path / "reference.db"))
    migrations.apply(reference, stop_before="m010_validation_split")
    ref = _schema(reference.conn)
    aged = sqlite3.connect(state / "state.db")
    old = _schema(aged)
    aged.close()
    assert {t: old[t] for t in ref if t in old} == ref and "eval_splits" not in old

    out = run_zpd(*args[:-2], "--rounds", "1", timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    resumed = dict(query(state, "SELECT t.content_hash, s.split FROM eval_splits s "
                                "JOIN tasks t ON t.id = s.task_id"))
    assert resumed == fresh_split and len(resumed) == query(state, "SELECT count(*) FROM tasks "
                                                                   "WHERE fate = 'eval'")[0][0]
    # Round 0 was measured before the split: its figures stay as they were (the whole set); the gate of
    # round 1 paired round 1's validation answers with round 0's stored ones.
    (old_val,), = query(state, "SELECT validation_accuracy FROM rounds WHERE id = 0")
    assert old_val is None
    before, after = _outcomes(state, 0, "validation"), _outcomes(state, 1, "validation")
    assert before and set(before) == set(after)
    (promoted,), = query(state, "SELECT promoted FROM rounds WHERE id = 1")
    assert promoted == int(measure.mcnemar_p(before, after) >= 0.1)
    (cur_val,), = query(state, "SELECT validation_accuracy FROM rounds WHERE id = ?", (1 if promoted else 0,))
    assert status(state)["eval"]["validation_accuracy"] == cur_val
