"""``zpd status``: what a state directory holds and what its daemon is doing. Read-only.

Works while the daemon runs (the store is opened read-only, WAL lets it read while the daemon
writes) and never takes the controller lock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zpd.store.db import get_meta, open_readonly
from zpd.store.lock import holder_if_running
from zpd.store.rounds import committed_on_disk

from .daemon import next_round

FATES = ["pending", "mastered", "zpd", "beyond", "review", "exam", "eval", "dropped"]


class StatusError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def collect(state_dir: Path) -> dict[str, Any]:
    state_dir = Path(state_dir).resolve()
    if not state_dir.is_dir() or not any(state_dir.iterdir()):
        raise StatusError(2, f"{state_dir}: no such state directory (or it is empty)")
    if not (state_dir / "state.db").is_file():
        raise StatusError(2, f"{state_dir}: not a zpd state directory (no state.db)")
    from zpd.store.db import StoreError

    try:
        db = open_readonly(state_dir / "state.db")
    except StoreError as exc:
        raise StatusError(4, str(exc)) from None
    try:
        return _collect(db, state_dir)
    finally:
        db.conn.close()


def _collect(db, state_dir: Path) -> dict[str, Any]:
    pid = holder_if_running(state_dir)
    running = pid is not None
    controller = next(db.query("SELECT * FROM controller WHERE id = 1"), None) if "controller" in db.table_names() else None
    committed_db = {r[0] for r in db.execute("SELECT id FROM rounds WHERE status = 'committed'").fetchall()}
    committed = committed_db | set(committed_on_disk(state_dir))
    last = max(committed) if committed else None
    if running and controller:
        round_n, phase = controller["round"], controller["phase"] or "idle"
    else:
        round_n, phase = next_round(db), "idle"
        if round_n in committed:  # committed on disk; the store hears of it when the daemon next starts
            round_n = max(committed) + 1
    cur_row = None
    if committed_db:
        newest = db.execute("SELECT current_learner_round FROM rounds WHERE id = ?", [max(committed_db)]).fetchone()[0]
        cur_row = next(db.query("SELECT * FROM rounds WHERE id = ?", [newest]), None)
    newest_row = next(db.query("SELECT * FROM rounds WHERE id = ?", [max(committed_db)]), None) if committed_db else None
    by_fate = dict.fromkeys(FATES, 0)
    for fate, n in db.execute("SELECT fate, count(*) FROM tasks GROUP BY fate").fetchall():
        by_fate[fate] = n
    frontier = {}
    if cur_row:
        frontier = dict(db.execute("SELECT domain, value FROM frontier WHERE round = ?", [cur_row["id"]]).fetchall())
    return {
        "state_dir": str(state_dir),
        "running": running,
        "pid": pid if running and pid and pid > 0 else None,
        "round": round_n,
        "phase": phase,
        "committed_rounds": len([n for n in committed if n >= 1]),
        "last_committed_round": last,
        "current_learner_round": cur_row["id"] if cur_row else None,
        "eval": {
            "accuracy": (cur_row["eval_accuracy"] or 0.0) if cur_row else 0.0,
            "by_domain": json.loads(cur_row["eval_by_domain_json"] or "{}") if cur_row else {},
        },
        "exam": {
            "version": newest_row["id"] if newest_row else 0,
            "num_items": (newest_row["exam_items"] or 0) if newest_row else 0,
            "accuracy": (newest_row["exam_accuracy"] or 0.0) if newest_row else 0.0,
        },
        "frontier": frontier,
        "tasks": {"total": sum(by_fate.values()), "by_fate": by_fate},
        "metrics_url": controller["metrics_url"] if controller else None,
        "generation": _generation(db),
        "teacher": _teacher(db),
    }


def _generation(db) -> dict[str, Any]:
    """Run totals per role: requests, failed samples, tokens, dollars (empty before any generation)."""
    if "generation_usage" not in db.table_names():
        return {}
    out = {}
    for role, req, failed, pt, ct, cost in db.execute(
        "SELECT role, sum(num_requests), sum(num_failed), sum(prompt_tokens), sum(completion_tokens), sum(cost_usd) "
        "FROM generation_usage GROUP BY role"
    ).fetchall():
        out[role] = {"requests": req, "failed": failed, "prompt_tokens": pt, "completion_tokens": ct,
                     "cost_usd": round(cost, 6)}
    return out


def _teacher(db) -> dict[str, Any] | None:
    """None without a [teacher]; else its model, cap, dollars spent and whether calls are paused."""
    config = json.loads(get_meta(db, "config_json") or "{}")
    teacher = config.get("teacher")
    if not teacher:
        return None
    state = json.loads(get_meta(db, "teacher_state") or "{}")
    spent = 0.0
    if "generation_usage" in db.table_names():
        spent = db.execute("SELECT coalesce(sum(cost_usd), 0) FROM generation_usage WHERE role = 'teacher'").fetchone()[0]
    return {"model": teacher.get("model"), "max_cost_usd": teacher.get("max_cost_usd"), "spent_usd": round(spent, 6),
            "paused": bool(state.get("paused", False)), "awaiting_tasks": state.get("awaiting_tasks", 0),
            "paused_round": state.get("round") if state.get("paused") else None}


def render(s: dict[str, Any]) -> str:
    lines = [
        f"state dir        {s['state_dir']}",
        f"daemon           {'running, pid ' + str(s['pid']) if s['running'] else 'not running'}",
        f"round / phase    {s['round']} / {s['phase']}",
        f"committed        {s['committed_rounds']} rounds (last: {s['last_committed_round']})",
        f"eval accuracy    {s['eval']['accuracy']:.3f}  " + "  ".join(f"{d}={v:.3f}" for d, v in s["eval"]["by_domain"].items()),
        f"exam             v{s['exam']['version']}: {s['exam']['num_items']} items, accuracy {s['exam']['accuracy']:.3f}",
        "frontier         " + "  ".join(f"{d}={v:.2f}" for d, v in s["frontier"].items()),
        f"tasks            {s['tasks']['total']}  " + "  ".join(f"{k}={v}" for k, v in s["tasks"]["by_fate"].items() if v),
        f"metrics          {s['metrics_url']}",
    ]
    for role, g in s.get("generation", {}).items():
        lines.append(f"generated        {role}: {g['completion_tokens']} tokens, {g['failed']} failed, ${g['cost_usd']:.4f}")
    t = s.get("teacher")
    if t:
        cap = "no cap" if t["max_cost_usd"] is None else f"cap ${t['max_cost_usd']:.2f}"
        paused = f"  PAUSED (spending cap), {t['awaiting_tasks']} tasks waiting" if t["paused"] else ""
        lines.append(f"teacher          {t['model']}: ${t['spent_usd']:.4f} spent, {cap}{paused}")
    return "\n".join(lines)
