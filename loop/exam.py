"""The exam: held-out frontier items that evolve with the learner, one version per round.

Admission (in CALIBRATE) is stricter than the training band: 0/k solo and k/k guided. In MEASURE the
new learner takes the current version; items it then solves solo at ``exam.graduate_ratio``
graduate. Version v is every item admitted in a round <= v and not graduated before v, so any
version can be rebuilt exactly from the store (``zpd.store.ledger_exam.version_items``).
"""

from __future__ import annotations

from zpd.store import ledger_exam

from .context import RunContext


def admissible(p_solo: float, p_guided: float | None) -> bool:
    return p_solo == 0.0 and p_guided is not None and p_guided == 1.0


def try_admit(ctx: RunContext, task_id: int, domain: str, round_n: int) -> bool:
    """Admit a task if this round's quota for its domain and the exam's size allow (inside a transaction)."""
    cfg = ctx.cfg.exam
    admitted = ledger_exam.admitted_in(ctx.db, round_n, domain)
    size = len(ledger_exam.version_items(ctx.db, round_n))
    if admitted >= cfg.admit_per_round or size >= cfg.max_items:
        return False
    ledger_exam.admit(ctx.db, task_id, domain, round_n)
    return True
