"""``zpd status``: what a state directory holds and what its daemon is doing. Read-only.

Works while the daemon runs (the store is opened read-only, WAL lets it read while the daemon
writes) and never takes the controller lock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zpd.store.connect import SqliteDatabaseError, StoreError, open_readonly_conn
from zpd.store.lock import holder_if_running
from zpd.store.readmodel import FATES, committed_on_disk, store_facts

__all__ = ["FATES", "StatusError", "collect", "render"]


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
    try:
        conn = open_readonly_conn(state_dir / "state.db")
    except StoreError as exc:
        raise StatusError(4, str(exc)) from None
    try:
        facts = store_facts(conn)
    except SqliteDatabaseError as exc:
        raise StatusError(4, f"{state_dir / 'state.db'}: cannot read state database: {exc}") from None
    finally:
        conn.close()
    return _collect(facts, state_dir)


def _collect(f: dict[str, Any], state_dir: Path) -> dict[str, Any]:
    pid = holder_if_running(state_dir)
    running = pid is not None
    controller, committed_db, cur_row, newest_row = f["controller"], f["committed"], f["current"], f["newest"]
    committed = committed_db | set(committed_on_disk(state_dir))
    last = max(committed) if committed else None
    if running and controller:
        round_n, phase = controller["round"], controller["phase"] or "idle"
    else:
        round_n, phase = f["next_round"], "idle"
        if round_n in committed:  # committed on disk; the store hears of it when the daemon next starts
            round_n = max(committed) + 1
    by_fate = f["by_fate"]
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
            # the validation part (what the gate and the frontier read); None before m010 measured it
            "validation_accuracy": cur_row.get("validation_accuracy") if cur_row else None,
        },
        "exam": {
            "version": newest_row["id"] if newest_row else 0,
            "num_items": (newest_row["exam_items"] or 0) if newest_row else 0,
            "accuracy": (newest_row["exam_accuracy"] or 0.0) if newest_row else 0.0,
        },
        "frontier": f["frontier"],
        "tasks": {"total": sum(by_fate.values()), "by_fate": by_fate},
        "metrics_url": controller["metrics_url"] if controller else None,
        "generation": f["generation"],
        "teacher": _teacher(f),
    }


def _teacher(f: dict[str, Any]) -> dict[str, Any] | None:
    """None without a [teacher]; else its model, cap, dollars spent and whether calls are paused."""
    teacher = f["config"].get("teacher")
    if not teacher:
        return None
    state = f["teacher_state"]
    return {"model": teacher.get("model"), "max_cost_usd": teacher.get("max_cost_usd"),
            "spent_usd": round(f["teacher_spent_usd"], 6),
            "paused": bool(state.get("paused", False)), "awaiting_tasks": state.get("awaiting_tasks", 0),
            "paused_round": state.get("round") if state.get("paused") else None}


def _validation_phrase(value: float | None) -> str:
    """The validation accuracy after the test part's figures (absent before m010 measured one)."""
    return "" if value is None else f"  (test part; validation {value:.3f})"


def render(s: dict[str, Any]) -> str:
    lines = [
        f"state dir        {s['state_dir']}",
        f"daemon           {'running, pid ' + str(s['pid']) if s['running'] else 'not running'}",
        f"round / phase    {s['round']} / {s['phase']}",
        f"committed        {rounds_phrase(s['committed_rounds'], s['last_committed_round'])} "
        f"(last: {s['last_committed_round']})",
        f"eval accuracy    {s['eval']['accuracy']:.3f}  "
        + "  ".join(f"{d}={v:.3f}" for d, v in s["eval"]["by_domain"].items())
        + _validation_phrase(s["eval"].get("validation_accuracy")),
        f"exam             v{s['exam']['version']}: {s['exam']['num_items']} items, "
        f"accuracy {s['exam']['accuracy']:.3f}",
        "frontier         " + "  ".join(f"{d}={v:.2f}" for d, v in s["frontier"].items()),
        f"tasks            {s['tasks']['total']}  "
        + "  ".join(f"{k}={v}" for k, v in s["tasks"]["by_fate"].items() if v),
        f"metrics          {s['metrics_url']}",
    ]
    for role, g in s.get("generation", {}).items():
        lines.append(
            f"generated        {role}: {g['completion_tokens']} tokens, {g['failed']} failed, "
            f"${g['cost_usd']:.4f}"
        )
    t = s.get("teacher")
    if t:
        cap = "no cap" if t["max_cost_usd"] is None else f"cap ${t['max_cost_usd']:.2f}"
        paused = f"  PAUSED (spending cap), {t['awaiting_tasks']} tasks waiting" if t["paused"] else ""
        lines.append(f"teacher          {t['model']}: ${t['spent_usd']:.4f} spent, {cap}{paused}")
    return "\n".join(lines)


def rounds_phrase(committed_rounds: int, last_committed_round: int | None) -> str:
    """How many rounds a run has committed, said so that round 0 is not mistaken for a missing round:
    "round 0 (bootstrap) + N rounds" (N = ``committed_rounds``, the rounds numbered >= 1)."""
    if last_committed_round is None:
        return "no round yet"
    return f"round 0 (bootstrap) + {committed_rounds} round{'' if committed_rounds == 1 else 's'}"
