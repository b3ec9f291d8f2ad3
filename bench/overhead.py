"""Controller overhead and round 0's wall time, before and after threads by design and the persistent worker.

    python bench/overhead.py --config configs/smoke.toml --rounds 2            # smoke rounds, both variants
    python bench/overhead.py --config configs/default.toml --rounds 0 --variants after --competitor

Each variant runs the real daemon (``zpd start --rounds N`` in a subprocess) in a fresh state directory:

* ``before``: ``runtime.torch_threads = <all usable CPUs>`` (torch's own default: one thread per core) and
  ``train.persistent_worker = "off"`` (a fresh trainer child per job), i.e. zpd as it was;
* ``after``: the defaults (``auto`` threads, the persistent worker on the CPU).

``--competitor`` runs one other CPU-bound process (a busy loop) for the whole run. Figures per round, from
the store (``rounds.timings_json``) and the daemon's log (``training job finished``: the trainer's compute,
model load to save, and the job's wall time):

* ``wall``: the round's phases summed;
* ``gen``: CALIBRATE + MEASURE (generation phases; their little store work is counted as generation, so
  the overhead below is if anything understated);
* ``train``: the trainer's compute seconds;
* ``overhead``: ``wall - gen - train`` and its share of ``wall`` (goals: <= 10 % smoke, <= 2 % default).

It also prints the CPU-seconds of the whole run (the daemon and all its descendants). zpd's work is
single-threaded by default on a small model, so on a 2-core machine with one other CPU-bound process (it
gets one core) its wall time is about its CPU-seconds; on a more loaded machine wall time is longer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATION = ("calibrate", "measure")


def run_variant(config: Path, rounds: int, variant: str, extra: list[str], workdir: Path) -> Path:
    state = workdir / variant / "state"
    cmd = [sys.executable, "-m", "zpd.loop.cli", "start", "--config", str(config), "--state-dir", str(state),
           "--rounds", str(rounds), "--set", "metrics.port=0"]
    if variant == "before":
        cmd += ["--set", f"runtime.torch_threads={len(os.sched_getaffinity(0))}",
                "--set", "train.persistent_worker=off"]
    for o in extra:
        cmd += ["--set", o]
    state.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(state.parent / "daemon.out", "w") as fh:
        code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    print(f"# {variant}: daemon exited {code} after {time.monotonic() - t0:.0f} s wall, "
          f"{cpu:.0f} CPU-seconds "
          "(daemon, trainer and every other descendant)", flush=True)
    return state


def figures(state: Path) -> list[dict]:
    conn = sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True)
    rounds = conn.execute(
        "SELECT id, timings_json FROM rounds WHERE status = 'committed' ORDER BY id").fetchall()
    conn.close()
    train: dict[int, float] = defaultdict(float)
    wall_job: dict[int, float] = defaultdict(float)
    for line in (state / "logs" / "zpd.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") == "training job finished":
            train[rec["round"]] += rec["compute_seconds"]
            wall_job[rec["round"]] += rec["wall_seconds"]
    out = []
    for n, timings_json in rounds:
        timings = json.loads(timings_json or "{}")
        wall = sum(timings.values())
        gen = sum(timings.get(p, 0.0) for p in GENERATION)
        over = wall - gen - train[n]
        out.append({"round": n, "wall": wall, "gen": gen, "train": train[n], "job_wall": wall_job[n],
                    "overhead": over, "share": over / wall if wall else 0.0, "phases": timings})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "smoke.toml")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variants", default="before,after")
    ap.add_argument("--competitor", action="store_true", help="one other CPU-bound process during the runs")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="zpd-overhead-"))
    hog = None
    if args.competitor:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        results = {v: figures(run_variant(args.config, args.rounds, v, args.overrides, workdir))
                   for v in args.variants.split(",")}
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    print(f"\nconfig {args.config.name}, rounds 0..{args.rounds}, competitor: {'yes' if hog else 'no'}, "
          f"load average at the end {os.getloadavg()[0]:.1f}, CPUs {len(os.sched_getaffinity(0))}")
    print(f"{'variant':>8} {'round':>5} {'wall_s':>8} {'gen_s':>7} {'train_s':>8} {'job_wall_s':>10} "
          f"{'overhead_s':>10} {'overhead':>8}")
    for variant, rows in results.items():
        for r in rows:
            print(f"{variant:>8} {r['round']:>5} {r['wall']:>8.1f} {r['gen']:>7.1f} {r['train']:>8.1f} "
                  f"{r['job_wall']:>10.1f} {r['overhead']:>10.1f} {100 * r['share']:>7.1f}%")
        later = [r for r in rows if r["round"] > 0]
        if later:
            wall = sum(r["wall"] for r in later)
            over = sum(r["overhead"] for r in later)
            print(f"{variant:>8} {'>=1':>5} {wall:>8.1f} {'':>7} {'':>8} {'':>10} {over:>10.1f} "
                  f"{100 * over / wall:>7.1f}%")
    for variant, rows in results.items():
        for r in rows:
            phases = ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items())
            print(f"# {variant} round {r['round']} phases: " + phases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
