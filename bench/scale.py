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
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from scale_build import build  # noqa: E402  (bench/ is on the path when this runs as a script)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def insert_rate(ctx, round_n: int, num_tasks: int, batch: int, per_task: bool = False,
                full_sync: bool = False) -> float:
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
    from zpd.store.connect import batch_durability

    # As CALIBRATE commits its batches: without an fsync each (``batch_durability``), unless ``full_sync``
    # (every batch commit fsynced, as before); the phase's closing commit, timed too, syncs them all.
    relaxed = batch_durability(ctx.db.conn) if not full_sync else contextlib.nullcontext()
    t0 = time.perf_counter()
    with relaxed:
        for i in range(0, len(ids), batch):
            chunk = ids[i : i + batch]
            with ctx.db.atomic():
                if (
                    hasattr(calibrate, "insert_attempts") and not per_task
                ):  # after issue 15: multi-row inserts a batch
                    calibrate.insert_attempts(ctx.db, [r for t in chunk for r in rows[t]])
                else:  # before: sqlite-utils insert_all per task, as calibrate did
                    for t in chunk:
                        ctx.db["attempts"].insert_all(rows[t], ignore=True)
    with ctx.db.atomic():  # the phase's closing commit (FULL: fsyncs the WAL, the batches' included)
        ctx.db.execute("UPDATE meta SET value = value WHERE key = 'app'")
    return sum(len(v) for v in rows.values()) / (time.perf_counter() - t0)


def delta_rounds(
    ctx, last: int, attempt_round: int, batch: int, rounds: int = 2
) -> list[tuple[str, float, str]]:
    """SNAPSHOT of the rounds after a full one, as deltas (``store/delta.py``): each round adds a default
    round's rows (256 candidates, 10 attempts each, their fates set) and commits."""
    from zpd.loop import snapshot
    from zpd.store.rounds import link_or_copy_tree, round_dir, work_dir

    ctx.cfg.snapshot.delta_min_bytes = 0  # deltas at any size (the default starts at 256 MB)
    out = []
    for k in range(1, rounds + 1):
        n = last + k
        with ctx.db.atomic():
            ctx.db.execute(
                "INSERT INTO rounds (id, status, phase, started_at, parent_learner_round, config_json) "
                "SELECT ?, 'running', 'snapshot', started_at, parent_learner_round, config_json "
                "FROM rounds WHERE id = ?", [n, last])
            ctx.db.execute(
                "UPDATE tasks SET fate_round = ?, p_solo = 0.4 WHERE id IN "
                "(SELECT id FROM tasks WHERE fate != 'eval' ORDER BY id DESC LIMIT 256)", [n])
        insert_rate(ctx, attempt_round + k, 256, batch)
        link_or_copy_tree(round_dir(ctx.state_dir, last) / "learner", work_dir(ctx.state_dir, n) / "learner")
        s, _ = timed(snapshot.run, ctx, n)
        rdir = round_dir(ctx.state_dir, n)
        written = sum(p.stat().st_size for p in rdir.rglob("*") if p.is_file())
        kind = "delta" if (rdir / "store.delta").is_file() else "full"
        out.append((f"SNAPSHOT phase, {kind} round {k} after it", s, f"{written / 1e6:,.1f} MB written"))
    return out


def measure(state_dir: Path, cfg, insert_tasks: int) -> list[tuple[str, float, str]]:
    from zpd.loop import integrity, snapshot, status, synthesize, training_set
    from zpd.loop.context import RunContext
    from zpd.loop.curriculum import build_source_for
    from zpd.loop.domains.registry import build_domains
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
    bandit = build_source_for(cfg.curriculum.model_copy(update={"source": "bandit"}), cfg.synthesis.spread)
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
    out.append(_status_subprocess(state_dir))
    out += _insert_rows(ctx, db, insert_tasks)
    rdir = state_dir / "rounds" / f"round_{last:06d}"
    if not rdir.is_dir():  # with --reuse the round is committed already: its snapshot is not timed again
        with db.atomic():  # the round reaches SNAPSHOT as it would after MEASURE
            ctx.advance(last, "snapshot")
        s, _ = timed(snapshot.run, ctx, last)
        written = sum(p.stat().st_size for p in rdir.rglob("*") if p.is_file())
        out.append(("SNAPSHOT phase, a full round (snapshot.run)", s, f"{written / 1e6:,.0f} MB written"))
        fresh = db.execute("SELECT max(round) FROM attempts").fetchone()[0] + 1
        out += delta_rounds(ctx, last, fresh, cfg.calibration.batch_size)
    db.conn.close()
    return out


def _status_subprocess(state_dir: Path) -> tuple[str, float, str]:
    """``zpd status --json`` as a fresh process, beside a bare interpreter's start."""
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
    return (
        "zpd status --json (fresh subprocess)",
        s,
        f"exit {proc.returncode}; a bare `python -c pass` took {bare:.3f} s right after",
    )


def _insert_rows(ctx, db, insert_tasks: int) -> list[tuple[str, float, str]]:
    """CALIBRATE's attempt inserts: a commit per batch, one transaction, and the path before issue 15."""
    out: list[tuple[str, float, str]] = []
    batch = ctx.cfg.calibration.batch_size
    fresh = db.execute("SELECT max(round) FROM attempts").fetchone()[0] + 1  # rounds no attempt has (--reuse)
    rate = insert_rate(ctx, fresh, insert_tasks, batch)
    out.append(
        (f"CALIBRATE attempt inserts, a commit per batch of {batch} tasks", 0.0, f"{rate:,.0f} rows/s")
    )
    rate = insert_rate(ctx, fresh + 3, insert_tasks, batch, full_sync=True)
    out.append(
        ("  the same with every batch commit fsynced (before)", 0.0, f"{rate:,.0f} rows/s")
    )
    rate = insert_rate(ctx, fresh + 1, insert_tasks, insert_tasks)
    out.append(("CALIBRATE attempt inserts, one transaction", 0.0, f"{rate:,.0f} rows/s"))
    rate = insert_rate(ctx, fresh + 2, insert_tasks, batch, per_task=True, full_sync=True)
    out.append(
        (
            f"  the same inserts as before issue 15 (insert_all per task), batch of {batch}",
            0.0,
            f"{rate:,.0f} rows/s",
        )
    )
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
