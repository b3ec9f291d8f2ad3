"""Bench helper: the raw per-round figures of finished runs, read from their state directories.

    python bench/rg_rounds.py NAME=STATE_DIR [NAME=STATE_DIR ...] > bench/results/FILE.json

Per run: each round's eval and validation accuracy, frontier per domain, new training examples, promotion and
times; the eval items answered correctly / answered per domain, round and level; the fates decided in each
round. Read-only (``sqlite3`` on ``state.db``, opened read-only).
"""

from __future__ import annotations

import json
import sqlite3
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


def main(argv: list[str]) -> int:
    if not argv or any("=" not in a for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    runs = {name: figures(Path(path)) for name, path in (a.split("=", 1) for a in argv)}
    json.dump(runs, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
