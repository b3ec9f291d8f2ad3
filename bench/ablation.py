"""The controlled ablation (issue 13): which calibrated tasks to train on, on one shared pool, equal budgets.

    python bench/ablation.py             # 5 selection arms x 3 seeds + the tuning sweep, default learner
    python bench/ablation.py --full      # + the source table, 5 seeds (hours; resumable; seed after seed)
    python bench/ablation.py --dry-run   # smoke learner, 1 seed, 2 arms, 1 round (the CI test)
    python bench/ablation.py --set domains.arithmetic.guidance=hint --work /tmp/zpd-ablation-hint \
        --tuning bench/results/ablation/default/results.json   # each arm's stored cell; no sweep
    bash bench/ablation_gpu.sh           # the GPU scale (a larger learner from scratch on CUDA)

What it does, with real ``zpd start`` subprocesses throughout (each run resumable: rerun the command):

1. **Round 0 once** (``zpd start --rounds 0``, ``zpd snapshot``; or ``--round0 SNAPSHOT``, one made
   before): every run starts from it (``--from-snapshot``), so all arms share the learner and the frozen
   validation/test items.
2. **One pool per (seed, round)** (``bench/ablation_pool.py``): drawn from a fixed difficulty window
   (``--window``) by zpd's own domain code, deterministic from (seed, round), minus every task any run of
   that seed has stored; every arm reads it (``curriculum.source = "pool"``) and selects from it with its
   own learner's calibration (``curriculum.selection``). Runs go one round at a time in lockstep
   (``zpd start --rounds R``), so round R's pool can leave out what round R-1 trained on.
3. **Same tuning for every arm**: on seed 0 each arm runs every cell of ``--lrs`` x ``--replays``
   (``train.learning_rate``, ``train.replay_ratio``) and keeps the cell with the best *validation*
   accuracy at B (ties: the larger validation AUC, then the first cell); the other seeds run that cell.
   The choice is stored (``tuning.json``, ``results.json``) and printed. ``--tuning FILE`` takes every arm's
   choice from an earlier run's ``results.json`` or ``tuning.json`` instead (the sweep does not run; seed 0
   runs the stored cell like the other seeds), for a rerun that changes one setting under the same tuning.
4. **Budget**: a run advances while its training tokens after round 0 are <= B (``--budget-tokens``) and
   under the round cap; its result is its last round within B (the learner current there).
5. **Report** (``bench/ablation_report.py``, statistics in ``bench/ablation_stats.py``) into ``--out``.

Sizing of the default command (pilot on the 2-core development machine at load ~6, merged with the
issue-13 branches; bench/results/ablation/PILOT.md): round 0 (4,000 bootstrap examples, 518 eval items)
took 360 s on 2 threads; round 1 on a 320-task pool in window [1.5, 3.5] took 106 s a run on one thread
(calibrate 30, train 35, measure 7, process start and snapshot restore ~34), zpd selecting 78 tasks (52k
tokens). With the defaults (400-task pools, ~65k tokens a round, so B is ~6-7 rounds; cap 10) the 20 sweep
runs of seed 0 and the 10 runs of seeds 1-2 come to ~200 run-rounds: about 80-90 min on 2 idle cores at
2 jobs x 1 thread (phases ~2.5x faster idle than in the pilot), longer on a shared machine. That is over
the issue's 60 minutes; two thirds of it is the sweep (5 arms x 4 cells), which runs once per work dir.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from ablation_pool import make_pool, pool_path, stored_hashes, write_pool  # noqa: E402
from ablation_read import RunResult, dump, read_run, summary_json  # noqa: E402
from ablation_report import arm_summary, bar_lines, plots, table  # noqa: E402

ARMS = ["zpd", "random", "all-correct", "r-zero", "learnability"]
SOURCE_ARMS = {"src-frontier": ("frontier", "zpd"), "src-uniform": ("uniform", "zpd"),
               "src-schedule": ("schedule", "zpd"), "src-uniform-all": ("uniform", "all-correct")}
"""--full's source table: where candidates come from, each with zpd selection (and the old uniform
baseline, uniform candidates trained on everything correct, for the bar's token ratio)."""
GPU_SETS = ["learner.device=cuda", "learner.hidden_size=384", "learner.num_layers=6", "learner.num_heads=6",
            "learner.intermediate_size=1536", "bootstrap.num_examples=12000", "calibration.batch_size=256"]
"""--scale gpu: a ~11M-parameter learner (the default's ~0.4M x 30) trained from scratch on CUDA."""


@dataclass
class Run:
    """One arm at one seed and tuning cell: a state directory advanced one round at a time."""

    name: str
    arm: str
    seed: int
    sets: list[str]
    """Its own --set overrides (selection, source, pool, tuning cell)."""
    pooled: bool
    """Whether it reads its seed's shared pool."""
    cell: dict[str, float] = field(default_factory=dict)


@dataclass
class Bench:
    """The invocation's settings, resolved."""

    config: Path
    work: Path
    out: Path
    sets: list[str]
    budget: int
    cap: int
    pool_size: int
    window: tuple[float, float]
    jobs: int
    threads: int
    target_delta: float
    n_boot: int
    round0_from: Path | None = None
    """``--round0``: a round-0 snapshot to start every run from, instead of building one."""


def zpd(args: list[str], log: Path, threads: int) -> None:
    """``python -m zpd.loop.cli ARGS`` with its output appended to ``log``; a failure ends the bench."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        proc = subprocess.run([sys.executable, "-m", "zpd.loop.cli", *args], stdout=fh,
                              stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-5:]
        raise SystemExit(f"zpd {args[0]} failed (exit {proc.returncode}); see {log}:\n" + "\n".join(tail))


def _sets(values: list[str]) -> list[str]:
    return [x for s in values for x in ("--set", s)]


def round0(b: Bench) -> Path:
    """The shared round-0 snapshot (made once, or copied from ``--round0``)."""
    archive = b.work / "round0.tar"
    if not archive.is_file() and b.round0_from is not None:
        shutil.copyfile(b.round0_from, archive.with_suffix(".tmp"))
        os.replace(archive.with_suffix(".tmp"), archive)
    if not archive.is_file():
        state, log = b.work / "round0", b.work / "round0.log"
        zpd(["start", "--config", str(b.config), "--state-dir", str(state), "--rounds", "0",
             "--set", "metrics.port=0", *_sets(b.sets)], log, max(1, b.threads * b.jobs))
        zpd(["snapshot", "--state-dir", str(state), "--out", str(archive)], log, 1)
    return archive


def progress(run: Run, b: Bench) -> tuple[int, int]:
    """(last committed round, training tokens after round 0) of a run; (-1, 0) before its first start."""
    from zpd.store.db import open_readonly
    from zpd.store.ledger_rounds import committed_rounds, read_round

    path = b.work / "runs" / run.name / "state.db"
    if not path.is_file():
        return -1, 0
    db = open_readonly(path)
    try:
        done = sorted(committed_rounds(db))
        return (done[-1] if done else -1), sum(read_round(db, n).train_tokens or 0 for n in done if n > 0)
    finally:
        db.conn.close()


def step(run: Run, r: int, b: Bench, archive: Path) -> None:
    """Advance one run to round r."""
    state = b.work / "runs" / run.name
    args = ["start", "--config", str(b.config), "--state-dir", str(state), "--rounds", str(r),
            "--set", "metrics.port=0", "--set", f"run.seed={run.seed}", *_sets(b.sets + run.sets)]
    if not (state / "state.db").exists():
        args += ["--from-snapshot", str(archive)]
    began = time.monotonic()
    zpd(args, b.work / "runs" / f"{run.name}.log", b.threads)
    print(f"  {run.name}: round {r} in {time.monotonic() - began:.0f} s", flush=True)


def ensure_pool(seed: int, r: int, runs: list[Run], b: Bench) -> None:
    """Round r's pool of a seed, once every run of that seed has finished round r - 1."""
    from zpd.configs.load import load_config

    path = pool_path(b.work / "pool" / f"seed{seed}", r)
    if path.is_file():
        return
    exclude = stored_hashes(b.work / "round0")
    for run in runs:
        if run.seed == seed and run.pooled:
            exclude |= stored_hashes(b.work / "runs" / run.name)
    cfg = load_config(b.config, b.sets)
    write_pool(path, make_pool(cfg, seed, r, b.pool_size, b.window, exclude))


def lockstep(runs: list[Run], b: Bench, archive: Path, by_seed: bool = False) -> None:
    """Every run one round at a time, up to the budget or the round cap; pools made between rounds.
    ``by_seed`` (``--full``): seed after seed, so that an interrupted bench has whole seeds to report
    (``--report-only --seeds``); a seed's pools depend only on its own runs, so the runs are the same,
    at the cost of a core left idle at the end of more rounds."""
    groups = [[run for run in runs if run.seed == s] for s in sorted({run.seed for run in runs})]
    for group in groups if by_seed else [runs]:
        _lockstep(group, b, archive)


def _lockstep(runs: list[Run], b: Bench, archive: Path) -> None:
    for r in range(1, b.cap + 1):
        active = []
        for run in runs:
            last, tokens = progress(run, b)
            if last < r and tokens <= b.budget:
                active.append(run)
        if not active:  # every run has this round already (a resumed bench): on to the next one
            continue
        for seed in sorted({run.seed for run in active if run.pooled}):
            ensure_pool(seed, r, runs, b)
        seeds = ", ".join(str(x) for x in sorted({run.seed for run in active}))
        print(f"round {r}: {len(active)} runs (seeds {seeds}), {b.jobs} at a time", flush=True)
        with ThreadPoolExecutor(max_workers=b.jobs) as ex:
            for f in [ex.submit(step, run, r, b, archive) for run in active]:
                f.result()


def finished(result: RunResult, b: Bench) -> bool:
    """Whether a run is over: past the budget B, or at the round cap."""
    last = result.validation[-1]
    return last.tokens > b.budget or last.round >= b.cap


def pool_run(arm: str, seed: int, cell: dict[str, float], b: Bench) -> Run:
    pool = b.work / "pool" / f"seed{seed}"
    sets = ['curriculum.source="pool"', f'curriculum.pool_dir="{pool}"', f'curriculum.selection="{arm}"',
            f"train.learning_rate={cell['learning_rate']}", f"train.replay_ratio={cell['replay_ratio']}"]
    return Run(run_name(arm, seed, cell), arm, seed, sets, True, dict(cell))


def run_name(arm: str, seed: int, cell: dict[str, float]) -> str:
    """The state directory's name (under ``<work>/runs``) of a pooled arm at a seed and tuning cell."""
    return f"{arm}-s{seed}-lr{cell['learning_rate']:g}-rr{cell['replay_ratio']:g}"


def sweep(arms: list[str], grid: list[dict[str, float]], b: Bench, archive: Path,
          run: bool = True) -> dict[str, dict]:
    """Seed 0, every arm x every cell; each arm's choice by validation accuracy at B (then AUC)."""
    from ablation_stats import normalised_auc

    runs = [pool_run(a, 0, c, b) for a in arms for c in grid]
    if run:
        lockstep(runs, b, archive)
    tuning: dict[str, dict] = {}
    for a in arms:
        scored = []
        for k, c in enumerate(grid):
            res = read_run(b.work / "runs" / run_name(a, 0, c), b.budget)
            scored.append((res.validation_at_b, normalised_auc(res.validation, b.budget), -k, c))
        best = max(scored, key=lambda t: t[:3])
        tuning[a] = {**best[3], "run": run_name(a, 0, best[3]),
                     "cells": [{**c, "validation_at_b": v, "validation_auc": u} for v, u, _, c in scored]}
        print(f"tuning {a}: lr {best[3]['learning_rate']:g}, replay {best[3]['replay_ratio']:g} "
              f"(validation at B {best[0]:.3f})", flush=True)
    dump(b.work / "tuning.json", tuning)
    return tuning


def load_tuning(path: Path, arms: list[str]) -> dict[str, dict]:
    """Every arm's stored cell from an earlier run's ``results.json`` (its "tuning") or ``tuning.json``."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--tuning {path}: cannot read it as JSON ({exc})") from None
    stored = data.get("tuning", data) if isinstance(data, dict) else {}
    tuning: dict[str, dict] = {}
    for a in arms:
        cell = stored.get(a) if isinstance(stored, dict) else None
        if not isinstance(cell, dict) or not {"learning_rate", "replay_ratio"} <= cell.keys():
            raise SystemExit(f"--tuning {path}: no learning_rate and replay_ratio for arm {a!r}")
        c = {"learning_rate": float(cell["learning_rate"]), "replay_ratio": float(cell["replay_ratio"])}
        tuning[a] = {**c, "run": run_name(a, 0, c), "cells": cell.get("cells", []),
                     "from": str(path)}
        print(f"tuning {a}: lr {c['learning_rate']:g}, replay {c['replay_ratio']:g} (from {path})",
              flush=True)
    return tuning


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "default.toml")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--seeds", default=None, help="default 0,1,2 (--full: 0-4)")
    ap.add_argument("--budget-tokens", type=int, default=400_000, help="B: training tokens after round 0")
    ap.add_argument("--rounds", type=int, default=10, help="round cap per run (B is meant to bind)")
    ap.add_argument("--pool-size", type=int, default=400, help="tasks per (seed, round) pool")
    ap.add_argument("--window", default="1.5,3.5",
                    help="the pool's fixed difficulty window lo,hi (default: levels 2 and 3, half each)")
    ap.add_argument("--lrs", default="1e-3,3e-3", help="train.learning_rate values of the sweep")
    ap.add_argument("--replays", default="1.0,2.0", help="train.replay_ratio values of the sweep")
    ap.add_argument("--target-delta", type=float, default=0.05,
                    help="validation target = round-0 validation accuracy + this")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/zpd-bench-ablation"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ablation")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra --set for every run")
    ap.add_argument("--tuning", type=Path, default=None,
                    help="each arm's cell from an earlier results.json / tuning.json (skips the sweep)")
    ap.add_argument("--full", action="store_true", help="+ the source table, 5 seeds")
    ap.add_argument("--round0", type=Path, default=None, metavar="SNAPSHOT",
                    help="start every run from this round-0 snapshot (`zpd snapshot` of a `zpd start "
                         "--rounds 0` of the same config) instead of building one in --work")
    ap.add_argument("--scale", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--dry-run", action="store_true", help="smoke learner, 1 seed, 2 arms, 1 round")
    ap.add_argument("--bootstrap-samples", type=int, default=2000)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.config, args.arms, args.seeds = ROOT / "configs" / "smoke.toml", "zpd,random", "0"
        args.rounds = 1
        args.pool_size, args.window, args.replays, args.bootstrap_samples = 12, "1,3", "2.0", 200
        args.budget_tokens = 10**9
        if args.round0 is None:  # a smaller round 0 than smoke's (a pipeline check, not a learner)
            args.sets = ["bootstrap.num_examples=800", "bootstrap.epochs=2.0", *args.sets]
    if args.seeds is None:
        args.seeds = "0,1,2,3,4" if args.full else "0,1,2"
    for a in args.arms.split(","):
        if a not in ARMS:
            ap.error(f"--arms: unknown arm {a!r} (known: {', '.join(ARMS)})")
    if "zpd" not in args.arms.split(","):
        ap.error("--arms: the zpd arm is the reference of the comparison; keep it")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sets = list(args.sets)
    if args.scale == "gpu":
        from zpd.configs.load import load_config

        load_config(ROOT / "configs" / "default.toml", GPU_SETS + sets)  # one clear line if they do not
        if args.dry_run:  # CPU: the pipeline on the smoke learner; the GPU settings only validated
            print(f"GPU scale settings validate: {' '.join(GPU_SETS)}", flush=True)
        else:
            sets = GPU_SETS + sets
    lo, hi = (float(x) for x in args.window.split(","))
    cores = os.cpu_count() or 2
    b = Bench(args.config, args.work, args.out, sets, args.budget_tokens, args.rounds, args.pool_size,
              (lo, hi), args.jobs, max(1, cores // max(1, args.jobs)), args.target_delta,
              args.bootstrap_samples, args.round0)
    arms, seeds = args.arms.split(","), [int(s) for s in args.seeds.split(",")]
    grid = [{"learning_rate": float(lr), "replay_ratio": float(rr)}
            for lr in args.lrs.split(",") for rr in args.replays.split(",")]
    began = time.monotonic()
    stored = None if args.tuning is None else load_tuning(args.tuning, arms)  # bad input: before any run
    if args.round0 is not None and not args.round0.is_file():
        raise SystemExit(f"--round0 {args.round0}: no such file")
    b.work.mkdir(parents=True, exist_ok=True)
    archive = b.work / "round0.tar" if args.report_only else round0(b)
    if stored is not None:
        tuning = stored
        dump(b.work / "tuning.json", tuning)
    else:
        tuning = sweep(arms, grid, b, archive, run=not args.report_only)
    # Seed 0's chosen cells already ran in the sweep; with stored tuning they run here like the others.
    runs = [pool_run(a, s, tuning[a], b) for s in seeds if s != 0 or stored is not None for a in arms]
    if args.full:
        zcell = tuning["zpd"]
        for s in seeds:
            for name, (src, sel) in SOURCE_ARMS.items():
                cell = {k: zcell[k] for k in ("learning_rate", "replay_ratio")}
                own = [f'curriculum.source="{src}"', f'curriculum.selection="{sel}"',
                       f"train.learning_rate={cell['learning_rate']}",
                       f"train.replay_ratio={cell['replay_ratio']}"]
                runs.append(Run(f"{name}-s{s}", name, s, own, False, cell))
    if not args.report_only:
        lockstep(runs, b, archive, by_seed=args.full)
    return report(b, arms, seeds, tuning, runs, args, time.monotonic() - began)


def report(b: Bench, arms: list[str], seeds: list[int], tuning: dict[str, dict], extra: list[Run],
           args: argparse.Namespace, wall: float) -> int:
    """Read every run back, print and write the tables, the json and the plots."""
    from zpd.store.db import open_readonly
    from zpd.store.ledger_rounds import read_round

    # Round 0 as every run has it: the bench's own round-0 state, or (--round0) the zpd arm's first run,
    # which was seeded from that snapshot.
    where = b.work / "round0" / "state.db"
    if not where.is_file():
        where = b.work / "runs" / run_name("zpd", seeds[0], tuning["zpd"]) / "state.db"
    db = open_readonly(where)
    try:
        v0 = getattr(read_round(db, 0), "validation_accuracy", None)
    finally:
        db.conn.close()
    if v0 is None:
        raise SystemExit(f"{where}: round 0 has no validation accuracy (rounds.validation_accuracy)")
    target = v0 + b.target_delta
    results: dict[str, list[RunResult]] = {a: [read_run(b.work / "runs" / run_name(a, s, tuning[a]), b.budget)
                                               for s in seeds] for a in arms}
    for name_ in dict.fromkeys(r.arm for r in extra if not r.pooled):
        tuning.setdefault(name_, tuning["zpd"])
        results[name_] = [read_run(b.work / "runs" / f"{name_}-s{s}", b.budget) for s in seeds]
    unfinished = [f"{r.name} (round {r.validation[-1].round}, {r.validation[-1].tokens:,} tokens)"
                  for rs in results.values() for r in rs if not finished(r, b)]
    if unfinished:  # its result would be an early round, not the one at B
        raise SystemExit(f"{len(unfinished)} runs stopped before B and before the round cap {b.cap}: "
                         f"{', '.join(unfinished)}; run the same command again to advance them")
    summaries = [arm_summary(a, rs, results["zpd"], b.budget, target, b.n_boot) for a, rs in results.items()]
    b.out.mkdir(parents=True, exist_ok=True)
    paths = plots(results, b.out, b.budget)
    cmd = "python bench/ablation.py " + " ".join(sys.argv[1:] if argv_is_cli() else [])
    lines = [f"# Selection ablation ({time.strftime('%Y-%m-%d')})", "", f"Command: `{cmd.strip()}`", "",
             f"Config `{b.config.name}`{' + ' + ', '.join(b.sets) if b.sets else ''}; seeds {seeds}; "
             f"B = {b.budget:,} training tokens after round 0; round cap {b.cap}; pool {b.pool_size} tasks "
             f"per (seed, round) from difficulty window {b.window}; validation target {target:.3f} "
             f"(round 0 {v0:.3f} + {b.target_delta}).", "",
             "Test accuracy at B: mean over seeds, 95 % CI from a bootstrap over test items within each "
             "seed, then over seeds; 'vs zpd': paired difference; McNemar: exact, two-sided, paired on "
             "test items; "
             "AUC: normalised area under the current learner's validation curve over [0, B]; copy rate: "
             "share of guided targets whose worked part is the guidance verbatim (work), or whose step "
             "results (after each '=') are the guidance's, whatever the rest says (results); right work: "
             "share of guided targets whose worked part is the right column work.", "",
             *table(summaries, tuning), "", *bar_lines(summaries, len(seeds)), "",
             *[f"![{p.stem}]({p.name})" for p in paths], "",
             f"Wall time of this invocation: {wall:.0f} s on {os.cpu_count()} cores ({b.jobs} runs at a "
             f"time, {b.threads} threads each); the machine may have been shared with other jobs, so it is "
             "an upper bound.", ""]
    text = "\n".join(lines)
    (b.out / "README.md").write_text(text)
    dump(b.out / "results.json", {"settings": {k: str(v) for k, v in vars(args).items()}, "tuning": tuning,
                                  "validation_target": target, "round0_validation": v0, "arms": summaries,
                                  "runs": {a: [summary_json(r) for r in rs] for a, rs in results.items()}})
    print(text)
    return 0


def argv_is_cli() -> bool:
    return Path(sys.argv[0]).name == "ablation.py"


if __name__ == "__main__":
    raise SystemExit(main())
