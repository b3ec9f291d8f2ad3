"""The attack suite as a table: tried and handled per category (the generators of tests/attack_cases.py
and tests/attacks_live.py, judged by tests/attack_lib.py's rules), written to bench/results/attacks.md.

    python bench/attacks.py [--seed 0] [--archive round0.tar] [--out bench/results/attacks.md]

Without ``--archive`` it makes one: a smoke run's round 0 (a minute or two on a CPU), snapshotted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from attack_cases import archive_cases, config_cases, user_file_cases  # noqa: E402
from attack_lib import cli  # noqa: E402
from attacks_live import kill_race_cases, sandbox_cases, serve_cases  # noqa: E402


def _archive(work: Path) -> Path:
    state, out = work / "round0", work / "round0.tar"
    zpd = [sys.executable, "-m", "zpd.loop.cli"]
    subprocess.run([*zpd, "start", "--config", str(ROOT / "configs" / "smoke.toml"),
                    "--state-dir", str(state), "--rounds", "0"], check=True, capture_output=True)
    subprocess.run([*zpd, "snapshot", "--state-dir", str(state), "--out", str(out)],
                   check=True, capture_output=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--archive", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "attacks.md")
    args = ap.parse_args()
    from zpd.trainer.openai_server import LearnerServer, ServeLimits

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        archive = args.archive or _archive(work)
        state = work / "state"
        code, err = cli("start", "--config", ROOT / "configs" / "smoke.toml", "--state-dir", state,
                        "--rounds", "0", "--from-snapshot", archive)
        assert code == 0, err
        learner = sorted((state / "rounds").iterdir())[-1] / "learner"
        srv = LearnerServer(lambda: (0, learner), None, limits=ServeLimits(connection_timeout_seconds=1.0,
                                                                            max_connections=4))
        port = int(srv.start("127.0.0.1", 0).rsplit(":", 1)[1].split("/")[0])
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        for sub in "acusk":
            (work / sub).mkdir()
        groups = [("archives", lambda: archive_cases(archive, work / "a", args.seed)),
                  ("configs", lambda: config_cases(work / "c", args.seed)),
                  ("user files", lambda: user_file_cases(work / "u", args.seed)),
                  ("sandbox", lambda: sandbox_cases(work / "s", args.seed)),
                  ("serve", lambda: serve_cases(port, args.seed)),
                  ("kills and races", lambda: kill_race_cases(archive, state, work / "k", args.seed))]
        table, failures = defaultdict(lambda: [0, 0, 0.0]), []
        for category, make in groups:
            t0 = time.monotonic()
            for _name, run in make():
                outcome = run()
                table[category][0] += 1
                table[category][1] += outcome.handled
                if not outcome.handled:
                    failures.append(f"{category} / {outcome.case}: {outcome.detail}")
            table[category][2] = time.monotonic() - t0
            print(f"{category:16} tried {table[category][0]:3}  handled {table[category][1]:3}  "
                  f"({table[category][2]:.1f} s)", flush=True)
        srv.shutdown()
    lines = ["# Attack suite: tried and handled per category", "",
             f"`python bench/attacks.py --seed {args.seed}` (the cases of tests/test_attacks_*.py). "
             "Handled: one",
             "line, exit 2 or 4 (serve: a 4xx, or 200/503 under a flood, never a reset), "
             "no traceback, not one",
             "byte of the state directory changed, memory under twice the baseline; "
             "sandbox: contained within its",
             "caps; kills: the next start recovers, nothing half-written. "
             "Measured on the shared 2-core machine",
             "(other jobs running: times are upper bounds).", "",
             "| category | tried | handled | seconds |", "|---|---|---|---|"]
    lines += [f"| {c} | {t} | {h} | {s:.1f} |" for c, (t, h, s) in table.items()]
    total_t, total_h = sum(v[0] for v in table.values()), sum(v[1] for v in table.values())
    lines += [f"| all | {total_t} | {total_h} | |", ""]
    lines += ["Not handled:", *[f"- {f}" for f in failures], ""] if failures else ["Every case handled.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(failures) or "every case handled")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
