"""Run a config for a fixed budget and print, per round, what the learner can do.

    python bench/rounds.py                                # configs/default.toml, 30 minutes
    python bench/rounds.py --minutes 5 --config configs/smoke.toml
    python bench/rounds.py --state-dir runs/demo --report-only   # print an existing run

It runs the real daemon (``zpd start`` in a subprocess, stopped by ``run.max_wall_seconds``) and then
reads the store: eval-set accuracy (the frozen yardstick, overall and per difficulty), exam version,
size and accuracy, the frontier, the fates of the round's candidates, training examples and loss, and
the wall time of each round and phase.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def report(state_dir: Path) -> str:
    conn = sqlite3.connect(f"file:{state_dir / 'state.db'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    rounds = conn.execute("SELECT * FROM rounds WHERE status = 'committed' ORDER BY id").fetchall()
    levels: dict[int, dict[float, list[int]]] = defaultdict(lambda: defaultdict(list))
    for r in conn.execute(
        "SELECT m.round, t.difficulty, m.correct FROM measurements m JOIN tasks t ON t.id = m.task_id "
        "WHERE m.kind = 'eval'"
    ):
        levels[r["round"]][r["difficulty"]].append(r["correct"])
    all_levels = sorted({lvl for per in levels.values() for lvl in per})
    head = (f"{'round':>5} {'wall_s':>7} {'eval':>6} {'exam v/items/acc':>17} {'frontier':>8} "
            f"{'cand':>5} {'mast':>5} {'zpd':>4} {'beyond':>6} {'exam+':>5} {'train_ex':>8} {'loss':>7} "
            f"{'promo':>5}  "
            + " ".join(f"L{int(lvl)}" .rjust(5) for lvl in all_levels))
    lines = [head]
    for r in rounds:
        n = r["id"]
        timings = json.loads(r["timings_json"] or "{}")
        fates = dict(conn.execute("SELECT fate, count(*) FROM tasks WHERE fate_round = ? AND round = ? "
                                  "GROUP BY fate", (n, n)).fetchall())
        frontier = conn.execute("SELECT group_concat(printf('%.2f', value), '/') FROM frontier "
                                "WHERE round = ?", (n,)).fetchone()[0]
        per_level = " ".join(
            (f"{sum(levels[n][lvl]) / len(levels[n][lvl]):.2f}" if levels[n].get(lvl) else "-").rjust(5)
            for lvl in all_levels
        )
        loss = f"{r['train_loss']:.3f}" if r["train_loss"] is not None else "-"
        exam = f"{n}/{r['exam_items'] or 0}/{r['exam_accuracy'] or 0:.2f}"
        lines.append(
            f"{n:>5} {sum(timings.values()):>7.1f} {r['eval_accuracy'] or 0:>6.3f} "
            f"{exam:>17} {frontier or '-':>8} "
            f"{r['num_candidates'] or 0:>5} {fates.get('mastered', 0):>5} {fates.get('zpd', 0):>4} "
            f"{fates.get('beyond', 0) + fates.get('review', 0):>6} {fates.get('exam', 0):>5} "
            f"{r['num_train_examples'] or 0:>8} {loss:>7} "
            f"{r['promoted'] if r['promoted'] is not None else '-':>5}  {per_level}"
        )
    if rounds:
        walls = [sum(json.loads(r["timings_json"] or "{}").values()) for r in rounds[1:]]
        if walls:
            lines.append(f"\nrounds >= 1: {len(walls)}, wall time per round: "
                         f"mean {sum(walls) / len(walls):.1f} s, "
                         f"min {min(walls):.1f} s, max {max(walls):.1f} s; round 0 (bootstrap): "
                         f"{sum(json.loads(rounds[0]['timings_json'] or '{}').values()):.1f} s")
        phase_tot: dict[str, float] = defaultdict(float)
        for r in rounds[1:]:
            for phase, secs in json.loads(r["timings_json"] or "{}").items():
                phase_tot[phase] += secs
        if phase_tot:
            lines.append("phase share of rounds >= 1: " + ", ".join(
                f"{p} {100 * s / sum(phase_tot.values()):.0f}%"
                for p, s in sorted(phase_tot.items(), key=lambda x: -x[1])))
    conn.close()
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "default.toml")
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-time budget of the run")
    ap.add_argument("--state-dir", type=Path, default=None, help="default: a new temporary directory")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="zpd-bench-")) / "state"
    if not args.report_only:
        cmd = [sys.executable, "-m", "zpd.loop.cli", "start", "--config", str(args.config),
               "--state-dir", str(state_dir),
               "--set", f"run.max_wall_seconds={args.minutes * 60}", "--set", "metrics.port=0"]
        for o in args.overrides:
            cmd += ["--set", o]
        print("$", " ".join(cmd), flush=True)
        t0 = time.monotonic()
        log = state_dir.parent / "daemon.out"
        state_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh:
            code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
        print(f"daemon exited {code} after {time.monotonic() - t0:.0f} s (log: {log})")
    print(f"state dir: {state_dir}\n")
    print(report(state_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
