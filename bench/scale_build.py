"""Building bench/scale.py's store: 1M tasks / 10M attempts with the project's own schema (issue 15)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path

PER_ROUND = 256
NUM_SOLO = NUM_GUIDED = 5
EVAL_LEVELS, EVAL_PER_LEVEL = 8, 20
FATES = ["mastered", "zpd", "beyond", "exam"]
FATE_WEIGHTS = [0.15, 0.40, 0.43, 0.02]
ATTEMPT_SQL = """INSERT INTO attempts (task_id, round, learner_ref, role, mode, sample_idx, output, correct,
    num_tokens,
                 latency_seconds, finish_reason, grader) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


def _task(i: int, rng: random.Random) -> tuple[str, str, str, str, str, float]:
    digits = 1 + i % 8
    a, b = rng.randrange(10 ** (digits - 1), 10**digits), rng.randrange(10 ** (digits - 1), 10**digits)
    prompt = f"{a}+{b}="
    guidance = f"add the columns from the right: {a} over {b}"
    return (
        prompt,
        str(a + b),
        guidance,
        f"{a}+{b}",
        hashlib.sha256(f"{i}:{prompt}".encode()).hexdigest(),
        float(digits),
    )


def build(state_dir: Path, num_tasks: int, cfg_json: str, seed: int = 0) -> dict:
    """A state directory of ``num_tasks`` candidates (plus the eval set); returns what it holds."""
    from sqlite_utils import Database

    from zpd.store import db as store_db

    state_dir.mkdir(parents=True, exist_ok=True)
    # The project's schema and migrations, up to the scale migration when there is one (issue 15): the rows
    # go in as an older store's were, and the first open below applies m007 (its backfill) as an upgrade
    # would.
    names = [m.name for m in store_db.migrations._migrations]
    if "m007_scale" in names:
        db = Database(store_db.connect(state_dir / "state.db", readonly=False))
        store_db.migrations.apply(db, stop_before="m007_scale")
        db.execute("INSERT INTO meta (key, value) VALUES ('app', 'zpd'), ('format_version', '1')")
    else:
        db = store_db.open_store(state_dir / "state.db")
    conn = db.conn
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")
    rng = random.Random(seed)
    num_rounds = max(2, -(-num_tasks // PER_ROUND))
    last = num_rounds  # rounds 1..last; round `last` is mid-TRAIN
    t0 = time.monotonic()
    conn.execute("BEGIN")
    fates, eval_ids = _insert_tasks(conn, num_tasks, rng)
    attempts, examples = _insert_history(conn, fates, eval_ids, last, cfg_json)
    conn.execute("COMMIT")
    build_s = time.monotonic() - t0
    return _finish(state_dir, conn, build_s, num_tasks + len(eval_ids), attempts, examples, last)


def _insert_tasks(conn, num_tasks: int, rng: random.Random) -> tuple[list, list[int]]:
    """The eval set (round 0) and ``num_tasks`` candidates with their fates; returns (fates, eval ids)."""
    tasks, fates = [], []
    next_id = 1
    for level in range(1, EVAL_LEVELS + 1):  # round 0: the eval set
        for _ in range(EVAL_PER_LEVEL):
            p, ans, g, can, h, _d = _task(next_id * 8 + level - 1, rng)
            tasks.append(
                (next_id, "arithmetic", float(level), p, ans, g, can, h, None, 0, "eval", 0, None, None, None)
            )
            next_id += 1
    eval_ids = list(range(1, next_id))
    for i in range(num_tasks):
        r = 1 + i // PER_ROUND
        p, ans, g, can, h, d = _task(next_id, rng)
        fate = rng.choices(FATES, FATE_WEIGHTS)[0]
        ps = {"mastered": 0.6, "zpd": 0.2, "beyond": 0.0, "exam": 0.0}[fate] + rng.choice([0.0, 0.2])
        pg = {"mastered": None, "zpd": 0.6, "beyond": 0.0, "exam": 1.0}[fate]
        tasks.append(
            (
                next_id,
                "arithmetic",
                d + rng.random() * 0.9,
                p,
                ans,
                g,
                can,
                h,
                None,
                r,
                fate,
                r,
                min(ps, 1.0),
                pg,
                int(fate == "zpd"),
            )
        )
        fates.append((next_id, r, fate, ans))
        next_id += 1
    conn.executemany(
        """INSERT INTO tasks (id, domain, difficulty, prompt, answer, guidance, canonical, content_hash,
           parent_id, round, fate, fate_round, p_solo, p_guided, selected)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        tasks,
    )
    return fates, eval_ids


def _insert_history(conn, fates: list, eval_ids: list[int], last: int, cfg_json: str) -> tuple[int, list]:
    """Attempts, training examples, exam items, measurements, rounds, frontier and usage rows."""

    def attempt_rows():
        for tid, r, fate, ans in fates:
            for mode, k in (("solo", NUM_SOLO), ("guided", NUM_GUIDED)):
                for j in range(k):
                    ok = (fate == "mastered" and mode == "solo" and j < 3) or (
                        mode == "guided" and fate != "beyond" and j < 3 + (fate == "exam") * 2
                    )
                    yield (
                        tid,
                        r,
                        str(r - 1),
                        "learner",
                        mode,
                        j,
                        f"1+1=2;{ans}>{ans if ok else '0'}",
                        int(ok),
                        12,
                        0.01,
                        "stop",
                        "exact",
                    )

    cur = conn.executemany(ATTEMPT_SQL, attempt_rows())
    attempts = cur.rowcount
    examples = []
    for tid, r, fate, ans in fates:
        if fate == "zpd" and r < last:
            p = f"{ans}?"
            examples.append((r, tid, "sft", p, f"1+1=2;{ans}>{ans}"))
    conn.executemany(
        "INSERT INTO train_examples (round, task_id, kind, prompt, response) VALUES (?, ?, ?, ?, ?)", examples
    )
    exam = [
        (tid, "arithmetic", r, r + 3 if r + 3 < last else None) for tid, r, fate, _ in fates if fate == "exam"
    ]
    conn.executemany(
        "INSERT INTO exam_items (task_id, domain, admitted_round, graduated_round) VALUES (?, ?, ?, ?)", exam
    )

    def measurement_rows():
        for r in range(0, last):
            for tid in eval_ids:
                yield r, "eval", tid, 0, "1+1=2;2>2", int((tid + r) % 3 == 0), "exact"

    conn.executemany(
        "INSERT INTO measurements (round, kind, task_id, sample_idx, output, correct, grader) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        measurement_rows(),
    )
    _insert_rounds(conn, last, cfg_json)
    return attempts, examples


def _insert_rounds(conn, last: int, cfg_json: str) -> None:
    """Rounds 0..last (the last one mid-TRAIN), their frontier and usage rows, and the run's config."""
    num_rounds = last
    now = time.time()
    conn.executemany(
        """INSERT INTO rounds (id, status, phase, started_at, finished_at, parent_learner_round,
           current_learner_round, promoted, config_json, eval_accuracy, eval_by_domain_json, exam_accuracy,
           exam_items,
           train_loss, train_tokens, num_train_examples, num_candidates, num_duplicates)
           VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, 0.2, '{"arithmetic": 0.2}', 0.3, 30, 0.17, 5000, 100, 256,
                   0)""",
        [
            (
                r,
                "committed" if r < last else "running",
                "done" if r < last else "train",
                now - 100 * (last - r),
                now - 100 * (last - r) + 90 if r < last else None,
                max(r - 1, 0) if r else None,
                r if r < last else None,
                cfg_json if r in (0, last - 1, last) else "{}",
            )
            for r in range(0, last + 1)
        ],
    )
    conn.executemany(
        "INSERT INTO frontier (round, domain, value) VALUES (?, 'arithmetic', ?)",
        [(r, 1.5 + r / num_rounds) for r in range(0, last)],
    )
    conn.executemany(
        "INSERT INTO generation_usage (round, role, model, num_requests, completion_tokens) "
        "VALUES (?, 'learner', ?, 2560, 30000)",
        [(r, str(r - 1)) for r in range(1, last + 1)],
    )
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('config_json', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [cfg_json],
    )


def _finish(state_dir: Path, conn, build_s: float, num_tasks: int, attempts: int, examples: list,
            last: int) -> dict:
    """Checkpoint, the learner stand-in, and ``bench.json``: what the store holds."""
    num_rounds = last
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    # The learner the round trained (work/round_N/learner): a small stand-in of fixed size.
    from zpd.store.rounds import work_dir

    learner = work_dir(state_dir, last) / "learner"
    learner.mkdir(parents=True, exist_ok=True)
    (learner / "config.json").write_text("{}")
    (learner / "model.safetensors").write_bytes(os.urandom(4 << 20))
    info = {
        "tasks": num_tasks,
        "attempts": attempts,
        "rounds": num_rounds,
        "last_round": last,
        "train_examples": len(examples),
        "build_seconds": round(build_s, 1),
        "db_bytes": (state_dir / "state.db").stat().st_size,
    }
    (state_dir / "bench.json").write_text(json.dumps(info))
    return info
