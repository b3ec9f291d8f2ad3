"""The read model of ``zpd status``: what the store says about the run, with the standard library's
``sqlite3`` alone (``zpd status`` must answer in well under a second on any store, so it imports
neither sqlite-utils nor the daemon). Every query here reads a small table (rounds, controller,
frontier, generation usage, meta, tasks per fate kept by triggers), never the history of tasks or
attempts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zpd.configs import vocabulary

COMPLETE = "COMPLETE"
FATES = list(vocabulary.FATES)


def round_name(n: int) -> str:
    return f"round_{n:06d}"


def rounds_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "rounds"


def committed_on_disk(state_dir: Path) -> list[int]:
    """Round numbers whose directory carries COMPLETE, ascending."""
    root = rounds_dir(state_dir)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if p.name.startswith("round_") and (p / COMPLETE).is_file():
            try:
                out.append(int(p.name.removeprefix("round_")))
            except ValueError:
                continue
    return sorted(out)


def next_round(db: Any) -> int:
    """The round being worked on (the running one), else the one after the last committed (0 at first)."""
    row = db.execute("SELECT id FROM rounds WHERE status = 'running' ORDER BY id LIMIT 1").fetchone()
    if row:
        return row[0]
    row = db.execute("SELECT max(id) FROM rounds WHERE status = 'committed'").fetchone()
    return 0 if row[0] is None else row[0] + 1


def last_committed(db: Any) -> int | None:
    return db.execute("SELECT max(id) FROM rounds WHERE status = 'committed'").fetchone()[0]


def _row(db: Any, sql: str, params: list[Any]) -> dict[str, Any] | None:
    cur = db.execute(sql, params)
    row = cur.fetchone()
    return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))


def _tables(db: Any) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}


def store_facts(db: Any) -> dict[str, Any]:
    """What ``status`` reads from the store: the controller row, committed rounds, the current learner's
    round row, the newest committed round's row, tasks per fate, the current learner's frontier,
    generation totals per role, the teacher's config and state (meta)."""
    tables = _tables(db)
    controller = _row(db, "SELECT * FROM controller WHERE id = 1", []) if "controller" in tables else None
    committed = {r[0] for r in db.execute("SELECT id FROM rounds WHERE status = 'committed'").fetchall()}
    current = newest = None
    if committed:
        newest = _row(db, "SELECT * FROM rounds WHERE id = ?", [max(committed)])
        current = (
            _row(db, "SELECT * FROM rounds WHERE id = ?", [newest["current_learner_round"]])
            if newest
            else None
        )
    by_fate = dict.fromkeys(FATES, 0)
    counts = (
        "SELECT fate, num_tasks FROM fate_counts WHERE num_tasks > 0"
        if "fate_counts" in tables
        else "SELECT fate, count(*) FROM tasks GROUP BY fate"
    )  # a store the daemon has not migrated yet
    for fate, n in db.execute(counts).fetchall():
        by_fate[fate] = n
    frontier = {}
    if current:
        frontier = dict(
            db.execute("SELECT domain, value FROM frontier WHERE round = ?", [current["id"]]).fetchall()
        )
    generation: dict[str, dict[str, Any]] = {}
    teacher_spent = 0.0
    if "generation_usage" in tables:
        for role, req, failed, pt, ct, cost in db.execute(
            "SELECT role, sum(num_requests), sum(num_failed), sum(prompt_tokens), sum(completion_tokens), "
            "sum(cost_usd) FROM generation_usage GROUP BY role"
        ).fetchall():
            generation[role] = {
                "requests": req,
                "failed": failed,
                "prompt_tokens": pt,
                "completion_tokens": ct,
                "cost_usd": round(cost, 6),
            }
        teacher_spent = db.execute(
            "SELECT coalesce(sum(cost_usd), 0) FROM generation_usage WHERE role = 'teacher'"
        ).fetchone()[0]
    meta = dict(
        db.execute("SELECT key, value FROM meta WHERE key IN ('config_json', 'teacher_state')").fetchall()
    )
    return {
        "controller": controller,
        "committed": committed,
        "current": current,
        "newest": newest,
        "by_fate": by_fate,
        "frontier": frontier,
        "generation": generation,
        "teacher_spent_usd": teacher_spent,
        "config": json.loads(meta.get("config_json") or "{}"),
        "teacher_state": json.loads(meta.get("teacher_state") or "{}"),
        "next_round": next_round(db),
    }
