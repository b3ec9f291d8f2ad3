"""The exam: held-out frontier items that evolve with the learner, one version per round.

Admission (in CALIBRATE) is stricter than the training band: 0/k solo and k/k guided. In MEASURE the
new learner takes the current version; items it then solves solo at ``exam.graduate_ratio``
graduate. Version v is every item admitted in a round <= v and not graduated before v, so any
version can be rebuilt exactly from the store (``version_items``).
"""

from __future__ import annotations

from sqlite_utils import Database

from .context import RunContext


def admissible(p_solo: float, p_guided: float | None) -> bool:
    return p_solo == 0.0 and p_guided is not None and p_guided == 1.0


def try_admit(ctx: RunContext, task_id: int, domain: str, round_n: int) -> bool:
    """Admit a task if this round's quota for its domain and the exam's size allow (inside a transaction)."""
    cfg = ctx.cfg.exam
    admitted = ctx.db.execute(
        "SELECT count(*) FROM exam_items WHERE admitted_round = ? AND domain = ?", [round_n, domain]
    ).fetchone()[0]
    size = len(version_items(ctx.db, round_n))
    if admitted >= cfg.admit_per_round or size >= cfg.max_items:
        return False
    ctx.db.execute(
        "INSERT OR IGNORE INTO exam_items (task_id, domain, admitted_round) VALUES (?, ?, ?)", [task_id, domain, round_n]
    )
    return True


def version_items(db: Database, version: int) -> list[int]:
    """Task ids in exam version ``version`` (items graduated in round r are still in version r)."""
    return [
        r[0]
        for r in db.execute(
            """SELECT task_id FROM exam_items WHERE admitted_round <= ?
               AND (graduated_round IS NULL OR graduated_round >= ?) ORDER BY task_id""",
            [version, version],
        ).fetchall()
    ]
