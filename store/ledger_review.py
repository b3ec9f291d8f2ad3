"""Human review (``zpd review --import``): the verdicts and what they do to the tasks in review.

The functions run their statement in the caller's transaction; they never commit.
"""

from __future__ import annotations

from .sqlite import Database


def answer_in_review(db: Database, task_id: int) -> str | None:
    """The stored answer of task ``task_id`` if it is in review; None when unknown or already decided."""
    row = db.execute("SELECT answer FROM tasks WHERE id = ? AND fate = 'review'", [task_id]).fetchone()
    return None if row is None else str(row[0])


def record_verdict(db: Database, *, task_id: int, verdict: str, old_answer: str, new_answer: str | None,
                   note: str | None, source: str, imported_at: float) -> None:
    db.execute(
        """INSERT INTO review_verdicts (task_id, verdict, old_answer, new_answer, note, source, imported_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        [task_id, verdict, old_answer, new_answer, note, source, imported_at])


def reopen(db: Database, task_id: int, answer: str) -> None:
    """A kept task goes back to pending with its (possibly corrected) answer, to be calibrated afresh."""
    db.execute("""UPDATE tasks SET fate = 'pending', fate_round = NULL, p_solo = NULL, p_guided = NULL,
                  answer = ? WHERE id = ?""", [answer, task_id])


def drop(db: Database, task_id: int) -> None:
    db.execute("UPDATE tasks SET fate = 'dropped' WHERE id = ?", [task_id])
