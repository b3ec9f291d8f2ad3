"""The store at scale (issue 15): totals kept on insert, the bandit's memo, the replay sample read by id,
the bounded start-up check, and ``zpd status`` through sqlite3 alone. Each on a real SQLite file; the
timings at 1M tasks are in ``bench/scale.py``, not here."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from zpd.configs.load import load_config
from zpd.loop import training_set
from zpd.loop.context import RunContext, rng_for
from zpd.loop.curriculum import build_source_for
from zpd.loop.domains.registry import build_domains
from zpd.store import stats
from zpd.store.db import StoreError, open_store, start_up_check
from zpd.store.readmodel import FATES, store_facts

ROOT = Path(__file__).resolve().parents[1]
TASK_SQL = """INSERT INTO tasks (id, domain, difficulty, prompt, answer, guidance, canonical, content_hash,
              round, fate, fate_round, p_solo, p_guided, selected)
              VALUES (?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?, ?, ?)"""


def _tasks(db, rng: random.Random, num_rounds: int, per_round: int, domains=("a", "b")) -> list[tuple]:
    rows, tid = [], 1
    for r in range(1, num_rounds + 1):
        for _ in range(per_round):
            fate = rng.choice(["mastered", "zpd", "beyond"])
            p = rng.choice([0.0, 0.25, 0.5, 1.0])
            rows.append(
                (
                    tid,
                    rng.choice(domains),
                    rng.uniform(1, 6),
                    f"{tid}+1=",
                    str(tid + 1),
                    f"c{tid}",
                    f"h{tid}",
                    r,
                    fate,
                    r,
                    p,
                    0.6,
                    int(fate == "zpd"),
                )
            )
            tid += 1
    with db.atomic():
        db.conn.executemany(TASK_SQL, rows)
    return rows


def _attempt(tid: int, r: int, mode: str, j: int, ok: bool, role: str = "learner") -> dict:
    return dict(
        task_id=tid,
        round=r,
        learner_ref="0",
        role=role,
        mode=mode,
        sample_idx=j,
        output=f" out{tid}.{j} ",
        correct=int(ok),
        num_tokens=3,
        latency_seconds=0.1,
        finish_reason="stop",
        grader="exact",
    )


def test_solo_totals_equal_the_join_over_every_attempt(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    rng = random.Random(1)
    tasks = _tasks(db, rng, 3, 20)
    with db.atomic():
        rows = [
            _attempt(t[0], t[7] + (role == "teacher"), mode, j, rng.random() < 0.5, role)
            for t in tasks
            for mode, role in (("solo", "learner"), ("guided", "learner"), ("solo", "teacher"))
            for j in range(3)
        ]
        stats.insert_attempts(db, rows)
        stats.insert_attempts(db, rows[:50])  # already stored: ignored, counted once
        stats.insert_attempts(db, [_attempt(tasks[0][0], 9, "solo", 0, True)])
        for t in tasks[::3]:
            db.execute(
                "INSERT INTO measurements (round, kind, task_id, sample_idx, output, correct) "
                "VALUES (1, 'eval', ?, 0, 'x', ?)",
                [t[0], t[0] % 2],
            )

    def joined(domain: str) -> dict[str, tuple[int, int]]:  # solo_stats as it was: a join over every answer
        expected: dict[str, tuple[int, int]] = {}
        for sql in (
            """SELECT t.content_hash, sum(a.correct), count(*)
                       FROM attempts a JOIN tasks t ON t.id = a.task_id
                       WHERE t.domain = ? AND a.mode = 'solo' AND a.role = 'learner'
                       GROUP BY t.content_hash""",
            """SELECT t.content_hash, sum(m.correct), count(*)
                       FROM measurements m JOIN tasks t ON t.id = m.task_id
                       WHERE t.domain = ? GROUP BY t.content_hash""",
        ):
            for h, s, n in db.execute(sql, [domain]).fetchall():
                s0, n0 = expected.get(h, (0, 0))
                expected[h] = (s0 + s, n0 + n)
        return expected

    for domain in ("a", "b"):
        assert stats.solo_stats(db, domain) == joined(domain) and joined(domain)
    assert db.execute("SELECT count(*) FROM attempts").fetchone()[0] == len(rows) + 1
    # The next rounds: new answers, to items seen before and new ones; the memo reads only those.
    with db.atomic():
        stats.insert_attempts(db, [_attempt(t[0], 10, "solo", 0, True) for t in tasks[::4]])
        db.execute(
            "INSERT INTO measurements (round, kind, task_id, sample_idx, output, correct) VALUES (11, "
            "'exam', ?, 0, "
            "'x', 1)",
            [tasks[1][0]],
        )
    for domain in ("a", "b"):
        got = stats.solo_stats(db, domain)
        assert got == joined(domain) == stats.solo_stats(db.conn, domain)
        with pytest.raises(TypeError):
            got["h1"] = (0, 0)  # read-only: a caller cannot change the memo
        assert stats.solo_stats(db, domain) == joined(domain)


def test_a_batch_larger_than_one_statement_is_stored_whole_and_counted_once(tmp_path: Path) -> None:
    """insert_attempts splits a batch into multi-row INSERTs of _ROWS_PER_STATEMENT rows; a batch of
    several statements, and one partly stored already, still add each solo answer exactly once."""
    db = open_store(tmp_path / "state.db")
    tasks = _tasks(db, random.Random(2), 2, 150)
    rows = [_attempt(t[0], 3, mode, j, (t[0] + j) % 3 == 0) for t in tasks for mode in ("solo", "guided")
            for j in range(5)]
    assert len(rows) > 2 * stats._ROWS_PER_STATEMENT
    first = len(rows) // 2 + 7  # the second call repeats some of the first's rows
    assert stats.insert_attempts(db, rows[:first]) == first
    assert stats.insert_attempts(db, rows[first - 400:]) == len(rows) - first + 400
    assert db.execute("SELECT count(*) FROM attempts").fetchone()[0] == len(rows)
    expected = {
        h: (s, n) for h, s, n in db.execute(
            """SELECT t.content_hash, sum(a.correct), count(*)
               FROM attempts a JOIN tasks t ON t.id = a.task_id
               WHERE t.domain = 'a' AND a.mode = 'solo' GROUP BY t.content_hash""").fetchall()}
    assert expected and stats.solo_stats(db.conn, "a") == expected
    assert {n for _, n in expected.values()} == {5}


def test_migration_backfills_the_totals_of_an_older_store(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    db.execute("DROP TABLE solo_totals")  # as before m007: the tables and triggers of m007 absent
    for name in (
        "measurements_solo_totals",
        "tasks_bandit_insert",
        "tasks_bandit_update",
        "tasks_bandit_delete",
        "tasks_fate_insert",
        "tasks_fate_update",
        "tasks_fate_delete",
    ):
        db.execute(f"DROP TRIGGER {name}")
    for sql in (
        "DROP TABLE bootstrap_examples",
        "DROP TABLE fate_counts",
        "DROP TABLE bandit_values",
        "DROP TABLE bandit_rewards",
        "DROP INDEX tasks_fate_round",
        "DROP INDEX tasks_domain_fate_round",
        "DROP INDEX train_examples_kind_round",
        "DROP INDEX exam_items_admitted",
        "DELETE FROM _sqlite_migrations WHERE name = 'm007_scale'",
    ):
        db.execute(sql)
    tasks = _tasks(db, random.Random(2), 2, 5)
    with db.atomic():  # as an older zpd wrote them
        db["attempts"].insert_all([_attempt(t[0], t[7], "solo", j, j == 0) for t in tasks for j in range(4)])
    db.conn.close()
    db = open_store(tmp_path / "state.db")
    assert "m007_scale" in {r[0] for r in db.execute("SELECT name FROM _sqlite_migrations")}
    got = {**stats.solo_stats(db, "a"), **stats.solo_stats(db, "b")}
    assert got == {t[6]: (1, 4) for t in tasks}
    assert store_facts(db.conn)["by_fate"] == {
        **dict.fromkeys(FATES, 0),
        **dict(db.execute("SELECT fate, count(*) FROM tasks GROUP BY fate").fetchall()),
    }


def test_fate_counts_follow_inserts_routing_and_reviews(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    tasks = _tasks(db, random.Random(6), 3, 10)
    db.execute("UPDATE tasks SET fate = 'pending' WHERE id <= 12")  # new candidates
    db.execute("UPDATE tasks SET fate = 'exam' WHERE id BETWEEN 3 AND 5")  # routed
    db.execute("UPDATE tasks SET fate = 'dropped' WHERE id = 20")  # a review verdict
    db.execute("UPDATE tasks SET p_solo = 0.5 WHERE id = 21")  # not a fate change
    expected = {
        **dict.fromkeys(FATES, 0),
        **dict(db.execute("SELECT fate, count(*) FROM tasks GROUP BY fate").fetchall()),
    }
    assert store_facts(db.conn)["by_fate"] == expected and sum(expected.values()) == len(tasks)
    assert expected["exam"] == 3 and expected["dropped"] == 1


def _ctx(tmp_path: Path, db, *overrides: str) -> RunContext:
    cfg = load_config(ROOT / "configs" / "smoke.toml", list(overrides))
    return RunContext(tmp_path, cfg, db, build_domains(cfg.domains), None, logging.getLogger("test"))


def test_bandit_values_follow_every_change_to_the_tasks(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    rng = random.Random(3)
    _tasks(db, rng, 6, 30, domains=("arithmetic",))
    ctx = _ctx(tmp_path, db, 'curriculum.policy="bandit"')
    policy = build_source_for(ctx.cfg.curriculum, ctx.cfg.synthesis.spread)

    def direct(round_n: int) -> dict[int, float]:  # the scan as it was: every round's tasks, from the table
        q = {arm: ctx.cfg.curriculum.bandit_initial_value for arm in policy.arms(1.0, 8.0)}
        for _, arm, reward in db.execute(
            """SELECT fate_round, CAST(difficulty AS INTEGER), avg(2 * p_solo * (1 - p_solo)) FROM tasks
                   WHERE domain = 'arithmetic' AND fate_round BETWEEN 1 AND ? AND p_solo IS NOT NULL
                   AND round = fate_round GROUP BY fate_round, CAST(difficulty AS INTEGER)
                   ORDER BY fate_round""",
            [round_n - 1],
        ).fetchall():
            if arm in q:
                q[arm] += ctx.cfg.curriculum.bandit_step * (reward - q[arm])
        return q

    assert policy.values(ctx, 5, "arithmetic", 1.0, 8.0) == pytest.approx(direct(5), abs=1e-12)
    memo = db.execute("SELECT count(*) FROM bandit_rewards").fetchone()[0]
    assert memo == 4
    # A review resets a task (loop/review.py); calibration routes a new one into an earlier round.
    db.execute("UPDATE tasks SET fate = 'pending', fate_round = NULL, p_solo = NULL WHERE id = 7")
    db.execute(TASK_SQL, [999, "arithmetic", 2.5, "x", "y", "z", "hz", 2, "zpd", 2, 0.5, 1.0, 1])
    db.execute("UPDATE tasks SET p_solo = 1.0 WHERE id = 40")
    assert policy.values(ctx, 5, "arithmetic", 1.0, 8.0) == pytest.approx(direct(5), abs=1e-12)
    assert policy.values(ctx, 7, "arithmetic", 1.0, 8.0) == pytest.approx(direct(7), abs=1e-12)
    assert direct(5) != direct(2)


def test_training_set_is_the_sample_the_whole_history_gives(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    rng = random.Random(4)
    tasks = _tasks(db, rng, 4, 25, domains=("arithmetic",))
    with db.atomic():
        for t in tasks:
            if t[8] == "zpd":
                db.execute(
                    "INSERT INTO train_examples (round, task_id, kind, prompt, response) VALUES (?, ?, "
                    "'sft', ?, ?)",
                    [t[7], t[0], t[3], f"r{t[0]}"],
                )
            if t[0] % 7 == 0:  # another kind in between: a round's sft ids are not contiguous
                db.execute(
                    "INSERT INTO train_examples (round, task_id, kind, prompt, response) VALUES (?, ?, 'rl', "
                    "?, ?)",
                    [t[7], t[0], t[3], t[4]],
                )
    ctx = _ctx(tmp_path, db, "train.replay_ratio=3.0")
    from zpd.loop.bootstrap import bootstrap_set, eval_hashes, propose_share
    from zpd.loop.context import derive_seed

    def reference(round_n: int) -> list[dict]:  # training_set as it was: every earlier row read
        def rows(where: str) -> list[dict]:
            return [
                {
                    "prompt": r["eprompt"],
                    "response": r["response"],
                    "domain": r["domain"],
                    "answer": r["answer"],
                    "task_json": json.dumps(asdict(ctx.task_from_row(r))),
                    "prompt_style": "bare",
                }
                for r in db.query(
                    f"""SELECT e.prompt AS eprompt, e.response, t.* FROM train_examples e
                                           JOIN tasks t ON t.id = e.task_id
                                           WHERE e.round {where} ? AND e.kind = 'sft'
                                           ORDER BY e.id""",
                    [round_n],
                )
            ]

        new, old = rows("="), rows("<")
        old += bootstrap_set(
            ctx.domains,
            ctx.cfg.bootstrap,
            derive_seed(ctx.cfg.run.seed, "bootstrap"),
            eval_hashes(ctx),
            propose_fraction=propose_share(ctx.cfg),
        )
        r = rng_for(ctx.cfg.run.seed, round_n, "replay")
        data = new + r.sample(old, min(len(old), int(ctx.cfg.train.replay_ratio * len(new))))
        r.shuffle(data)
        return data[: ctx.cfg.train.max_examples]

    for round_n in (4, 3, 4):  # the second time round 4 reads the stored bootstrap set
        got = training_set.training_set(ctx, round_n)
        assert got == reference(round_n) and len(got) > 0
    assert (
        db.execute("SELECT count(*) FROM bootstrap_examples").fetchone()[0] == ctx.cfg.bootstrap.num_examples
    )
    late = next(t for t in tasks if t[7] == 1 and t[8] != "zpd")  # ids no longer grow with the round
    db.execute(
        "INSERT INTO train_examples (round, task_id, kind, prompt, response) VALUES (1, ?, 'sft', 'p', 'r')",
        [late[0]],
    )
    assert training_set.training_set(ctx, 4) == reference(4)
    other = _ctx(tmp_path, db, "bootstrap.num_examples=7", "train.replay_ratio=3.0")  # another key: made anew
    assert sum(1 for row in training_set.training_set(other, 4) if "task_json" not in row) <= 7
    assert db.execute("SELECT count(*) FROM bootstrap_examples").fetchone()[0] == 7


def _corrupt_root_page(path: Path, table: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", [table]).fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(path, "r+b") as fh:
        fh.seek((root - 1) * size + (100 if root == 1 else 0))
        fh.write(b"\x0d\x00\x00\xff\xff\xff\xff\xff")  # a leaf page header claiming 65535 cells


def test_start_up_check_is_full_after_an_unclean_stop_and_bounded_after_a_clean_one(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = open_store(path)
    _tasks(db, random.Random(5), 3, 400)
    db.execute("INSERT INTO controller (id, pid) VALUES (1, NULL)")  # the daemon recorded its stop
    assert start_up_check(db.conn, path) == "bounded"
    db.execute("UPDATE controller SET pid = 4242 WHERE id = 1")  # killed: the pid was never cleared
    assert start_up_check(db.conn, path) == "full"
    db.conn.close()
    _corrupt_root_page(path, "tasks")
    with pytest.raises(
        StoreError, match="corrupt|malformed"
    ):  # unclean stop: the full check finds a big table's damage
        open_store(path)
    clean = tmp_path / "clean.db"
    db = open_store(clean)
    db.execute("INSERT INTO rounds (id, status, phase) VALUES (0, 'committed', 'done')")
    db.execute("INSERT INTO controller (id, pid) VALUES (1, NULL)")
    db.conn.close()
    _corrupt_root_page(clean, "rounds")
    with pytest.raises(
        StoreError, match="corrupt|malformed"
    ):  # clean stop: the tables that steer the loop are checked
        open_store(clean)


def test_status_imports_neither_sqlite_utils_pandas_torch_nor_the_daemon(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db = open_store(state / "state.db")
    for n in (0, 1, 2):
        db.execute(
            "INSERT INTO rounds (id, status, phase, current_learner_round, eval_accuracy, exam_items) "
            "VALUES (?, 'committed', 'done', ?, 0.5, 3)",
            [n, n],
        )
    db.execute("INSERT INTO frontier (round, domain, value) VALUES (2, 'arithmetic', 1.75)")
    db.conn.close()
    probe = (
        "import json, sys\n"
        "from zpd.loop.cli import main\n"
        f"code = main(['status', '--state-dir', {str(state)!r}] + sys.argv[1:])\n"
        "heavy = ['sqlite_utils', 'pandas', 'numpy', 'torch', 'transformers', 'zpd.loop.daemon', "
        "'pydantic']\n"
        "print(json.dumps({'code': code, 'loaded': [m for m in heavy if m in sys.modules]}))\n"
    )
    for extra in ([], ["--json"]):
        out = subprocess.run(
            [sys.executable, "-c", probe, *extra], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        *printed, last = out.stdout.strip().splitlines()
        assert json.loads(last) == {"code": 0, "loaded": []}
        if extra:
            s = json.loads("\n".join(printed))
            assert (
                s["committed_rounds"] == 2
                and s["last_committed_round"] == 2
                and s["frontier"] == {"arithmetic": 1.75}
            )
        else:
            assert "round 0 (bootstrap) + 2 rounds (last: 2)" in "\n".join(printed)


def test_report_counts_rounds_as_bootstrap_plus_n() -> None:
    from zpd.loop.report import RoundData, RunData, _markdown
    from zpd.loop.status import rounds_phrase

    run = RunData(rounds=[RoundData(round=n) for n in range(3)], policy="zpd-band")
    assert "round 0 (bootstrap) + 2 rounds committed" in _markdown({"run": [run]}, "t")
    assert rounds_phrase(1, 1) == "round 0 (bootstrap) + 1 round" and rounds_phrase(0, None) == "no round yet"


def test_the_store_imports_sqlite_utils_without_pandas_or_numpy(tmp_path: Path) -> None:
    """Every store module takes sqlite-utils from ``store/sqlite.py``, which imports it without its optional
    pandas and numpy (0.35 s of each zpd process's start); both stay importable afterwards."""
    import ast

    store = ROOT / "store"
    direct = []
    for path in sorted(store.glob("*.py")):
        if path.name == "sqlite.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            direct += [f"{path.name}:{node.lineno}" for n in names if n.split(".")[0] == "sqlite_utils"]
    assert direct == [], f"import Database from zpd.store.sqlite instead: {direct}"
    probe = (
        "import json, sys\n"
        "from zpd.store.db import open_store\n"
        f"db = open_store({str(tmp_path / 'state.db')!r})\n"
        "loaded = [m for m in ('pandas', 'numpy') if m in sys.modules]\n"
        "import sqlite_utils.db as s, pandas, numpy\n"
        "print(json.dumps([loaded, s.pd is None, pandas.DataFrame([[1]]).shape[0], int(numpy.int64(2))]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[], True, 1, 2]
