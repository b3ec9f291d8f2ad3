"""Bench helper: the raw per-round figures of finished runs, read from their state directories.

    python bench/rg_rounds.py NAME=STATE_DIR [NAME=STATE_DIR ...] > bench/results/FILE.json
    python bench/rg_rounds.py --paired FILE.json DOMAIN A1:B1 A2:B2 ...   # arm A against arm B, per seed

Per run: each round's eval and validation accuracy, frontier per domain, new training examples, promotion and
times; the eval items answered correctly / answered per domain, round and level; the fates decided in each
round. Read-only (``sqlite3`` on ``state.db``, opened read-only).
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import sys
from pathlib import Path
from typing import Any

ROUND_COLUMNS = ("id", "eval_accuracy", "validation_accuracy", "num_train_examples", "promoted", "started_at",
                 "finished_at")


def figures(state_dir: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{state_dir / 'state.db'}?mode=ro", uri=True)
    rounds = [dict(zip(ROUND_COLUMNS, row, strict=True))
              for row in conn.execute(f"SELECT {', '.join(ROUND_COLUMNS)} FROM rounds ORDER BY id")]
    for r in rounds:
        r["frontier"] = dict(conn.execute("SELECT domain, value FROM frontier WHERE round = ?", (r["id"],)))
    levels: dict[str, dict[str, dict[str, list[int]]]] = {}
    for domain, round_n, level, correct, answered in conn.execute(
            """SELECT t.domain, m.round, t.difficulty, sum(m.correct), count(*) FROM measurements m
               JOIN tasks t ON t.id = m.task_id WHERE m.kind = 'eval' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""):
        levels.setdefault(domain, {}).setdefault(str(round_n), {})[str(level)] = [correct, answered]
    fates: dict[str, dict[str, int]] = {}
    for round_n, fate, n in conn.execute(
            "SELECT fate_round, fate, count(*) FROM tasks WHERE fate_round >= 1 GROUP BY 1, 2 ORDER BY 1, 2"):
        fates.setdefault(str(round_n), {})[fate] = n
    return {"rounds": rounds, "eval_correct_answered_by_domain_round_level": levels, "fates_by_round": fates}


T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def _ci(values: list[float]) -> str:
    mean = statistics.mean(values)
    if len(values) < 2:
        return f"{mean:+.3f}"
    half = T_975.get(len(values) - 1, 1.96) * statistics.stdev(values) / len(values) ** 0.5
    return f"{mean:+.3f} (95 % CI {mean - half:+.3f} .. {mean + half:+.3f})"


def paired(path: Path, domain: str, pairs: list[tuple[str, str]]) -> None:
    """Per seed (a pair of runs from the same round 0), each arm's gain from round 0 to its last round and
    the difference between the arms at the last round, in frontier and validation accuracy; the mean over
    the seeds with a t interval."""
    runs = json.loads(path.read_text())
    for key in ("frontier", "validation_accuracy"):
        def at(run: str, i: int, key: str = key) -> float:
            row = runs[run]["rounds"][i]
            return float(row["frontier"][domain] if key == "frontier" else row[key])

        gains = {arm: [at(p[arm], -1) - at(p[arm], 0) for p in pairs] for arm in (0, 1)}
        diffs = [at(a, -1) - at(b, -1) for a, b in pairs]
        print(f"{key}: gain A {[round(g, 3) for g in gains[0]]} = {_ci(gains[0])}; gain B "
              f"{[round(g, 3) for g in gains[1]]} = {_ci(gains[1])}; A - B at the last round "
              f"{[round(x, 3) for x in diffs]} = {_ci(diffs)}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--paired"] and len(argv) >= 4:
        paired(Path(argv[1]), argv[2], [(a, b) for a, b in (x.split(":", 1) for x in argv[3:])])
        return 0
    if not argv or any("=" not in a for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    runs = {name: figures(Path(path)) for name, path in (a.split("=", 1) for a in argv)}
    json.dump(runs, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
