"""The store at scale: per-round queries and operations on 1M tasks / 10M attempts.

    python bench/scale.py --out /tmp/scale                # full size: 1M tasks, 10M attempts (minutes)
    python bench/scale.py --out /tmp/scale --tasks 20000  # scaled down, for development
    python bench/scale.py --out /tmp/scale --reuse        # measure again on the store --out already holds

Builds a state directory with the project's own schema and migrations (``open_store`` creates the file;
the rows go in by ``executemany`` in one transaction): rounds of 256 candidates (the default), each task
with 5 solo and 5 guided attempts, fates and training examples like a zpd-band run's, eval measurements
of every round, exam items, frontier and generation rows. The last round is mid-TRAIN: calibrated,
no training examples yet, so TRAIN's queries and the SNAPSHOT do the work a real round does.

Then it prints the wall time of each query or operation the daemon runs once per round, through the
project's own functions (``loop/``, ``store/``): start-up checks (``open_store``), ``solo_stats``,
``round_yield``, ``build_examples``, ``training_set``, the bandit's value scan, the status read model
(in process, and ``zpd status --json`` as a fresh subprocess), CALIBRATE's attempt inserts (rows/s) and
the SNAPSHOT phase (``loop/snapshot.py:run``: store copy, hashing, commit), against the goals of issue 15.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PER_ROUND = 256
NUM_SOLO = NUM_GUIDED = 5
EVAL_LEVELS, EVAL_PER_LEVEL = 8, 20
FATES = ["mastered", "zpd", "beyond", "exam"]
FATE_WEIGHTS = [0.15, 0.40, 0.43, 0.02]
ATTEMPT_SQL = """INSERT INTO attempts (task_id, round, learner_ref, role, mode, sample_idx, output, correct, num_tokens,
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
    tasks, fates, attempts = [], [], 0
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
        """INSERT INTO tasks (id, domain, difficulty, prompt, answer, guidance, canonical, content_hash, parent_id,
           round, fate, fate_round, p_solo, p_guided, selected) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        tasks,
    )
    del tasks

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
    now = time.time()
    conn.executemany(
        """INSERT INTO rounds (id, status, phase, started_at, finished_at, parent_learner_round,
           current_learner_round, promoted, config_json, eval_accuracy, eval_by_domain_json, exam_accuracy, exam_items,
           train_loss, train_tokens, num_train_examples, num_candidates, num_duplicates)
           VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, 0.2, '{"arithmetic": 0.2}', 0.3, 30, 0.17, 5000, 100, 256, 0)""",
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
    conn.execute("COMMIT")
    build_s = time.monotonic() - t0
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    # The learner the round trained (work/round_N/learner): a small stand-in of fixed size.
    from zpd.store.rounds import work_dir

    learner = work_dir(state_dir, last) / "learner"
    learner.mkdir(parents=True, exist_ok=True)
    (learner / "config.json").write_text("{}")
    (learner / "model.safetensors").write_bytes(os.urandom(4 << 20))
    info = {
        "tasks": num_tasks + len(eval_ids),
        "attempts": attempts,
        "rounds": num_rounds,
        "last_round": last,
        "train_examples": len(examples),
        "build_seconds": round(build_s, 1),
        "db_bytes": (state_dir / "state.db").stat().st_size,
    }
    (state_dir / "bench.json").write_text(json.dumps(info))
    return info


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def insert_rate(ctx, round_n: int, num_tasks: int, batch: int, per_task: bool = False) -> float:
    """Rows/s of CALIBRATE's attempt inserts: ``num_tasks`` tasks of 10 attempts, ``batch`` tasks per
    transaction (and its fsync: ``synchronous = FULL``), through the path calibrate uses."""
    from zpd.loop import calibrate

    ids = [
        r[0]
        for r in ctx.db.execute(
            "SELECT id FROM tasks WHERE fate != 'eval' ORDER BY id LIMIT ?", [num_tasks]
        ).fetchall()
    ]
    rows = {
        tid: [
            dict(
                task_id=tid,
                round=round_n,
                learner_ref="x",
                role="learner",
                mode=m,
                sample_idx=j,
                output="1+1=2;2>2",
                correct=1,
                num_tokens=12,
                latency_seconds=0.01,
                finish_reason="stop",
                grader="exact",
            )
            for m in ("solo", "guided")
            for j in range(5)
        ]
        for tid in ids
    }
    t0 = time.perf_counter()
    for i in range(0, len(ids), batch):
        chunk = ids[i : i + batch]
        with ctx.db.atomic():
            if (
                hasattr(calibrate, "insert_attempts") and not per_task
            ):  # after issue 15: one executemany a batch
                calibrate.insert_attempts(ctx.db, [r for t in chunk for r in rows[t]])
            else:  # before: sqlite-utils insert_all per task, as calibrate did
                for t in chunk:
                    ctx.db["attempts"].insert_all(rows[t], ignore=True)
    return sum(len(v) for v in rows.values()) / (time.perf_counter() - t0)


def measure(state_dir: Path, cfg, insert_tasks: int) -> list[tuple[str, float, str]]:
    from zpd.loop import integrity, snapshot, status, synthesize, training_set
    from zpd.loop.context import RunContext
    from zpd.loop.curriculum import build_policy_for
    from zpd.loop.domains.base import build_domains
    from zpd.store.db import migrations, open_store

    info = json.loads((state_dir / "bench.json").read_text())
    last = info["last_round"]
    out: list[tuple[str, float, str]] = []
    import sqlite3

    probe = sqlite3.connect(state_dir / "state.db")
    applied = {r[0] for r in probe.execute("SELECT name FROM _sqlite_migrations")}
    probe.close()
    upgrade = "m007_scale" not in applied and "m007_scale" in {m.name for m in migrations._migrations}
    s, db = timed(open_store, state_dir / "state.db")
    out.append(
        ("start-up: open_store, first open" + (" (upgrade: m007 and its backfill)" if upgrade else ""), s, "")
    )
    db.conn.close()
    s, db = timed(open_store, state_dir / "state.db")
    out.append(("start-up: open_store, second open", s, ""))
    ctx = RunContext(state_dir, cfg, db, build_domains(cfg.domains), None, logging.getLogger("bench"))
    s, stats = timed(synthesize.solo_stats, ctx, "arithmetic")
    out.append(("solo_stats (observation hook), first of a daemon", s, f"{len(stats)} items"))
    s, stats = timed(synthesize.solo_stats, ctx, "arithmetic")
    out.append(("solo_stats, next round", s, f"{len(stats)} items"))
    bandit = build_policy_for(cfg.curriculum.model_copy(update={"policy": "bandit"}), cfg.synthesis.spread)
    s, _ = timed(bandit.values, ctx, last, "arithmetic", 1.0, 8.0)
    out.append(("bandit value scan, round N", s, ""))
    s, _ = timed(bandit.values, ctx, last + 1, "arithmetic", 1.0, 8.0)
    out.append(("bandit value scan, round N+1", s, ""))
    s, n = timed(training_set.build_examples, ctx, last)
    out.append(("build_examples", s, f"{n} examples"))
    s, data = timed(training_set.training_set, ctx, last)
    out.append(("training_set (first of a daemon)", s, f"{len(data)} rows"))
    s, data = timed(training_set.training_set, ctx, last)
    out.append(("training_set (again)", s, f"{len(data)} rows"))
    s, _ = timed(training_set.round_yield, ctx, last)
    out.append(("round_yield", s, ""))
    s, held = timed(integrity.held_out, db, last)
    out.append(("exam version + eval set (integrity.held_out)", s, f"{len(held)} items"))
    s, _ = timed(status.collect, state_dir)
    out.append(("status read model (in process)", s, ""))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "zpd.loop.cli", "status", "--state-dir", str(state_dir), "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    s = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env)
    bare = time.perf_counter() - t0
    out.append(
        (
            "zpd status --json (fresh subprocess)",
            s,
            f"exit {proc.returncode}; a bare `python -c pass` took {bare:.3f} s right after",
        )
    )
    batch = ctx.cfg.calibration.batch_size
    fresh = db.execute("SELECT max(round) FROM attempts").fetchone()[0] + 1  # rounds no attempt has (--reuse)
    rate = insert_rate(ctx, fresh, insert_tasks, batch)
    out.append(
        (f"CALIBRATE attempt inserts, a commit per batch of {batch} tasks", 0.0, f"{rate:,.0f} rows/s")
    )
    rate = insert_rate(ctx, fresh + 1, insert_tasks, insert_tasks)
    out.append(("CALIBRATE attempt inserts, one transaction", 0.0, f"{rate:,.0f} rows/s"))
    rate = insert_rate(ctx, fresh + 2, insert_tasks, batch, per_task=True)
    out.append(
        (
            f"  the same inserts as before issue 15 (insert_all per task), batch of {batch}",
            0.0,
            f"{rate:,.0f} rows/s",
        )
    )
    rdir = state_dir / "rounds" / f"round_{last:06d}"
    if not rdir.is_dir():  # with --reuse the round is committed already: its snapshot is not timed again
        with db.atomic():  # the round reaches SNAPSHOT as it would after MEASURE
            ctx.advance(last, "snapshot")
        s, _ = timed(snapshot.run, ctx, last)
        written = sum(p.stat().st_size for p in rdir.rglob("*") if p.is_file())
        out.append(("SNAPSHOT phase (snapshot.run)", s, f"{written / 1e6:,.0f} MB written"))
    db.conn.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", type=Path, required=True, help="state directory to build (replaced unless --reuse)"
    )
    ap.add_argument("--tasks", type=int, default=1_000_000, help="candidate tasks (10 attempts each)")
    ap.add_argument("--insert-tasks", type=int, default=5000, help="tasks (x10 attempts) for the insert rate")
    ap.add_argument(
        "--round-seconds",
        type=float,
        default=116.0,
        help="a default round's wall time the snapshot share is taken of (bench/results/rounds.md)",
    )
    ap.add_argument("--reuse", action="store_true", help="measure the store --out already holds")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from zpd.configs.load import load_config, to_json

    cfg = load_config(ROOT / "configs" / "default.toml")
    if not args.reuse:
        if args.out.exists():
            shutil.rmtree(args.out)
        info = build(args.out, args.tasks, to_json(cfg))
    else:
        info = json.loads((args.out / "bench.json").read_text())
    print(
        f"store: {info['tasks']:,} tasks, {info['attempts']:,} attempts, {info['rounds']} rounds, "
        f"{info['train_examples']:,} training examples, state.db {info['db_bytes'] / 1e9:.2f} GB "
        f"(built in {info['build_seconds']} s)"
    )
    rows = measure(args.out, cfg, args.insert_tasks)
    print(f"{'operation':<62} {'seconds':>9}  goal      note")
    for name, s, note in rows:
        if "inserts" in name:
            goal = ">= 50k/s"
        elif "SNAPSHOT" in name:
            goal = f"<= {0.02 * args.round_seconds:.2f} s"
            note += f"; {100 * s / args.round_seconds:.1f} % of a {args.round_seconds:.0f} s round"
        elif "status" in name:
            goal = "< 0.3 s"
        else:
            goal = "< 0.1 s"
        seconds = "" if "inserts" in name else f"{s:.3f}"
        print(f"{name:<62} {seconds:>9}  {goal:<9} {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
