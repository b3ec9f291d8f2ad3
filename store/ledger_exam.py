"""The exam (``exam_items``), the eval set's splits (``eval_splits``) and the answers MEASURE stores
(``measurements``).

Version v of the exam is every item admitted in a round <= v and not graduated before v, so any version
can be rebuilt exactly from the store (``version_items``). The functions run their statement in the
caller's transaction; they never commit.
"""

from __future__ import annotations

from typing import Any, Literal

from .sqlite import Database

Split = Literal["validation", "test"]
"""The two parts of the frozen eval set: validation (read by decisions) and test (read by reports)."""
SPLITS: tuple[Split, ...] = ("validation", "test")


def version_items(db: Any, version: int) -> list[int]:
    """Task ids in exam version ``version`` (items graduated in round r are still in version r). ``db``:
    the store or a sqlite3 connection."""
    return [
        r[0]
        for r in db.execute(
            """SELECT task_id FROM exam_items WHERE admitted_round <= ?
               AND (graduated_round IS NULL OR graduated_round >= ?) ORDER BY task_id""",
            [version, version],
        ).fetchall()
    ]


def admitted_in(db: Database, round_n: int, domain: str) -> int:
    """Items of ``domain`` admitted in round ``round_n``."""
    return int(db.execute("SELECT count(*) FROM exam_items WHERE admitted_round = ? AND domain = ?",
                          [round_n, domain]).fetchone()[0])


def admit(db: Database, task_id: int, domain: str, round_n: int) -> None:
    db.execute("INSERT OR IGNORE INTO exam_items (task_id, domain, admitted_round) VALUES (?, ?, ?)",
               [task_id, domain, round_n])


def graduate(db: Database, task_id: int, round_n: int) -> None:
    """The item graduates in round ``round_n`` (unless it graduated before)."""
    db.execute("UPDATE exam_items SET graduated_round = ? WHERE task_id = ? AND graduated_round IS NULL",
               [round_n, task_id])


def stored_answers(db: Database, round_n: int, kind: str) -> dict[tuple[int, int], tuple[str, bool]]:
    """The round's stored ``kind`` (eval | exam) answers: (task id, sample index) -> (text, correct)."""
    return {(task_id, idx): (text, bool(ok)) for task_id, idx, text, ok in db.execute(
        "SELECT task_id, sample_idx, output, correct FROM measurements WHERE round = ? AND kind = ?",
        [round_n, kind]).fetchall()}


def insert_answers(db: Database, rows: list[dict[str, Any]]) -> None:
    """Measurement rows (round, kind, task_id, sample_idx, output, correct); ones already stored are kept."""
    db.table("measurements").insert_all(rows, ignore=True)


def eval_splits(db: Any) -> dict[int, str]:
    """Eval task id -> its stored split. ``db``: the store or a sqlite3 connection."""
    return dict(db.execute("SELECT task_id, split FROM eval_splits").fetchall())


def set_splits(db: Database, splits: dict[int, str]) -> None:
    """Store eval tasks' splits; a split already stored is kept (fixed once made)."""
    db.conn.executemany("INSERT OR IGNORE INTO eval_splits (task_id, split) VALUES (?, ?)",
                        list(splits.items()))


def item_outcomes(db: Any, round_n: int, split: Split) -> dict[int, bool]:
    """Task id -> whether round ``round_n``'s learner answered the eval item correctly (its greedy answer,
    sample 0), for the items of ``split``. ``db``: the store or a sqlite3 connection."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    return {task_id: bool(ok) for task_id, ok in db.execute(
        """SELECT m.task_id, m.correct FROM measurements m JOIN eval_splits s ON s.task_id = m.task_id
           WHERE m.round = ? AND m.kind = 'eval' AND m.sample_idx = 0 AND s.split = ?""",
        [round_n, split]).fetchall()}
