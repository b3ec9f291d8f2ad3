"""The ``tasks`` table: every statement SYNTHESIZE, CALIBRATE, MEASURE and exam integrity run on it.

A task row is the table's row as a dict (``TaskRow``; ``zpd.loop.context.RunContext.task_from_row`` makes
the domain's ``Task`` of it). The functions run their statement in the caller's transaction; they
never commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zpd.configs.vocabulary import CALIBRATED_FATES

from .sqlite import Database

TaskRow = dict[str, Any]
"""A row of ``tasks``: id, domain, difficulty, prompt, answer, guidance, canonical, content_hash, parent_id,
round, fate, fate_round, p_solo, p_guided, meta_json, selected, target_source."""


def insert_task(db: Database, *, domain: str, difficulty: float, prompt: str, answer: str, guidance: str,
                canonical: str, content_hash: str, parent_id: int | None, round_n: int, fate: str,
                meta_json: str) -> int | None:
    """Insert a task unless one with the same content hash exists; its id, or None (a duplicate). A task
    born decided (eval, exam) has its fate round set; a pending one gets it in CALIBRATE."""
    cur = db.execute(
        """INSERT OR IGNORE INTO tasks (domain, difficulty, prompt, answer, guidance, canonical,
               content_hash, parent_id, round, fate, fate_round, meta_json)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [domain, difficulty, prompt, answer, guidance, canonical, content_hash, parent_id, round_n, fate,
         round_n if fate != "pending" else None, meta_json],
    )
    return cur.lastrowid if cur.rowcount else None


def known_hashes(db: Database, domain: str | None = None) -> set[str]:
    """Content hashes of every stored task (of one domain when ``domain`` is given)."""
    if domain is None:
        return {r[0] for r in db.execute("SELECT content_hash FROM tasks").fetchall()}
    return {r[0] for r in db.execute("SELECT content_hash FROM tasks WHERE domain = ?", [domain]).fetchall()}


def eval_difficulties(db: Database, domain: str) -> list[tuple[int, str, float]]:
    """(id, content hash, difficulty) of the domain's eval items."""
    return [tuple(r) for r in db.execute(
        "SELECT id, content_hash, difficulty FROM tasks WHERE domain = ? AND fate = 'eval'", [domain]
    ).fetchall()]


def set_difficulty(db: Database, task_id: int, difficulty: float) -> None:
    db.execute("UPDATE tasks SET difficulty = ? WHERE id = ?", [difficulty, task_id])


def prompts_of(db: Database, domain: str) -> list[str]:
    """The prompts of every stored task of ``domain`` (eval and exam items included), oldest first."""
    return [
        r[0] for r in db.execute("SELECT prompt FROM tasks WHERE domain = ? ORDER BY id", [domain]).fetchall()
    ]


def derivable_parents(db: Database, domain: str, round_n: int) -> list[TaskRow]:
    """Round ``round_n``'s mastered and beyond tasks of ``domain``: the parents to escalate or simplify."""
    return list(
        db.query(
            "SELECT * FROM tasks WHERE domain = ? AND round = ? AND fate IN ('mastered', 'beyond') "
            "ORDER BY id",
            [domain, round_n],
        )
    )


def count_pending(db: Database, round_n: int) -> int:
    """Tasks of rounds <= ``round_n`` still pending (made this round, or left by a paused teacher)."""
    return int(
        db.execute("SELECT count(*) FROM tasks WHERE round <= ? AND fate = 'pending'", [round_n]).fetchone()[
            0
        ]
    )


def pending_batch(db: Database, round_n: int, after_id: int, limit: int) -> list[TaskRow]:
    """The next ``limit`` pending tasks of rounds <= ``round_n`` with an id above ``after_id``."""
    return list(
        db.query(
            "SELECT * FROM tasks WHERE round <= ? AND fate = 'pending' AND id > ? ORDER BY id LIMIT ?",
            [round_n, after_id, limit],
        )
    )


def set_fate(
    db: Database,
    task_id: int,
    *,
    fate: str,
    round_n: int,
    p_solo: float | None,
    p_guided: float | None,
    selected: int | None,
) -> None:
    """CALIBRATE's decision on a task: its fate, pass rates, and whether the policy trains on it."""
    db.execute(
        "UPDATE tasks SET fate = ?, fate_round = ?, p_solo = ?, p_guided = ?, selected = ? WHERE id = ?",
        [fate, round_n, p_solo, p_guided, selected, task_id],
    )


def fates_of_round(db: Database, round_n: int) -> dict[str, int]:
    """Tasks made in round ``round_n``, per fate."""
    return dict(
        db.execute("SELECT fate, count(*) FROM tasks WHERE round = ? GROUP BY fate", [round_n]).fetchall()
    )


def eval_tasks(db: Database, domains: list[str]) -> list[TaskRow]:
    """The frozen eval set of ``domains``, by id."""
    marks = ",".join("?" * len(domains))
    return list(
        db.query(f"SELECT * FROM tasks WHERE fate = 'eval' AND domain IN ({marks}) ORDER BY id", domains)
    )


def task_row(db: Database, task_id: int) -> TaskRow:
    return next(iter(db.query("SELECT * FROM tasks WHERE id = ?", [task_id])))


def held_out_rows(db: Database, exam_ids: set[int]) -> list[tuple[int, str, str, str, str]]:
    """(id, domain, content hash, prompt, fate) of the eval items and the tasks ``exam_ids``."""
    rows = db.execute(
        "SELECT id, domain, content_hash, prompt, fate FROM tasks WHERE fate = 'eval' "
        f"OR id IN ({','.join('?' * len(exam_ids))})",
        list(exam_ids),
    ).fetchall()
    return [tuple(r) for r in rows]


# -- the round's selection (loop/selection.py) -----------------------------------------------------------
SELECTABLE_FATES: tuple[str, ...] = tuple(f for f in CALIBRATED_FATES if f != "exam")
"""The fates a selection chooses among: everything calibrated but exam items (never trained on)."""
TARGET_SOURCES = ("guided", "solo", "reference")
"""Where a selected task's training target comes from (``tasks.target_source``, m009), by precedence."""


@dataclass(frozen=True)
class Calibrated:
    """A task routed by a round's CALIBRATE, as a selection sees it."""

    id: int
    domain: str
    fate: str
    p_solo: float | None
    p_guided: float | None
    guided_correct: bool
    """It has a correct guided attempt of the round (a successful guided trajectory)."""
    solo_correct: bool
    """It has a correct solo attempt of the round."""


def calibrated_of_round(db: Database, round_n: int) -> list[Calibrated]:
    """The tasks round ``round_n`` routed to a fate in ``SELECTABLE_FATES``, by id."""
    marks = ",".join("?" * len(SELECTABLE_FATES))
    rows = db.execute(
        f"""SELECT t.id, t.domain, t.fate, t.p_solo, t.p_guided,
               EXISTS (SELECT 1 FROM attempts a WHERE a.task_id = t.id AND a.round = t.fate_round
                       AND a.mode = 'guided' AND a.correct = 1),
               EXISTS (SELECT 1 FROM attempts a WHERE a.task_id = t.id AND a.round = t.fate_round
                       AND a.mode = 'solo' AND a.correct = 1)
            FROM tasks t WHERE t.fate_round = ? AND t.fate IN ({marks}) ORDER BY t.id""",
        [round_n, *SELECTABLE_FATES],
    ).fetchall()
    return [Calibrated(int(i), d, f, ps, pg, bool(g), bool(s)) for i, d, f, ps, pg, g, s in rows]


def set_selection(db: Database, round_n: int, chosen: Mapping[int, str]) -> None:
    """Round ``round_n``'s selection: ``chosen`` (task id -> target source) selected, every other task of
    ``calibrated_of_round`` not (its target source cleared). Idempotent: a rerun writes the same."""
    marks = ",".join("?" * len(SELECTABLE_FATES))
    db.execute(f"UPDATE tasks SET selected = 0, target_source = NULL WHERE fate_round = ? "
               f"AND fate IN ({marks})", [round_n, *SELECTABLE_FATES])
    db.conn.executemany("UPDATE tasks SET selected = 1, target_source = ? WHERE id = ?",
                        [(source, tid) for tid, source in sorted(chosen.items())])


def target_sources(db: Database, round_n: int) -> dict[str, int]:
    """How many of round ``round_n``'s selected tasks train on each target source (every key of
    ``TARGET_SOURCES`` present; tasks selected before m009 have none and are not counted)."""
    out = dict.fromkeys(TARGET_SOURCES, 0)
    for source, n in db.execute(
        "SELECT target_source, count(*) FROM tasks WHERE fate_round = ? AND selected = 1 AND fate != 'exam' "
        "AND target_source IS NOT NULL GROUP BY target_source",
        [round_n],
    ).fetchall():
        out[source] = int(n)
    return out
