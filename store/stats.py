"""Per-round statistics, read so that their cost does not grow with the store's history.

* ``solo_stats``: per item, the learner's solo answers (correct, all) over every round, read from
  ``solo_totals`` (kept on insert: ``insert_attempts``, a trigger on measurements; m007), and after the
  first call only the items answered since: never a join over every attempt ever made.
* ``round_yield_counts``: a round's calibrated and accepted tasks and its generation spend, through
  the ``tasks(fate_round)`` index.
* ``bandit_rewards``: per round, the bandit policy's reward per arm (its tasks' mean absolute advantage
  2 p (1 - p)), memoised in ``bandit_rewards``: a round is computed once, and again only after one of
  its tasks changed (triggers delete its entry), so a round's scan reads that round's tasks.
  The values after a round are kept too (``bandit_checkpoint``), so a round replays one round.
* ``insert_attempts``: CALIBRATE's graded samples, multi-row INSERTs per batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from .connect import transaction

ATTEMPT_COLUMNS = (
    "task_id",
    "round",
    "learner_ref",
    "role",
    "mode",
    "sample_idx",
    "output",
    "correct",
    "num_tokens",
    "latency_seconds",
    "finish_reason",
    "grader",
    "score",
)
_INSERT_ATTEMPTS_HEAD = f"INSERT OR IGNORE INTO attempts ({', '.join(ATTEMPT_COLUMNS)}) VALUES "
_ONE_ROW = f"({', '.join('?' * len(ATTEMPT_COLUMNS))})"


def solo_stats(db: Any, domain: str) -> Mapping[str, tuple[int, int]]:
    """Per content hash of ``domain``: (solo answers correct, solo answers) over all rounds, from the
    learner's calibration attempts and its eval and exam answers in MEASURE (all solo). Read-only.

    Read from ``solo_totals``. On a sqlite-utils Database (the daemon's, which lives across rounds) the
    totals are also kept in memory, and a later call reads only the items answered in or after the
    newest round it saw (answers are stored with the round they were given in, and rounds only
    advance); the mapping returned is a read-only view of them, valid until the next call."""
    memo = getattr(db, "_zpd_solo_totals", None) if hasattr(db, "conn") else None
    seen = memo.get(domain) if memo is not None else None
    since, totals = seen if seen is not None else (None, {})
    sql = "SELECT content_hash, correct, answers, updated_round FROM solo_totals WHERE domain = ?"
    rows = db.execute(
        sql if since is None else sql + " AND updated_round >= ?",
        [domain] if since is None else [domain, since],
    ).fetchall()
    newest = since
    for h, s, n, r in rows:
        totals[h] = (int(s), int(n))
        newest = r if newest is None else max(newest, r)
    if hasattr(db, "conn"):
        if memo is None:
            memo = db._zpd_solo_totals = {}
        memo[domain] = (newest, totals)
    return MappingProxyType(totals)


def round_yield_counts(db: Any, round_n: int) -> tuple[int, int, float, int]:
    """(tasks calibrated in the round, of which zpd or exam, teacher USD, generated tokens) of a round."""
    calibrated, accepted = db.execute(
        """SELECT count(*), coalesce(sum(fate IN ('zpd', 'exam')), 0) FROM tasks
           WHERE fate_round = ? AND fate IN ('mastered', 'zpd', 'beyond', 'review', 'exam')""",
        [round_n],
    ).fetchone()
    usd, tokens = db.execute(
        "SELECT coalesce(sum(cost_usd), 0), coalesce(sum(completion_tokens), 0) FROM generation_usage "
        "WHERE round = ?",
        [round_n],
    ).fetchone()
    return calibrated, accepted, usd, tokens


_BANDIT_SQL = """SELECT fate_round, CAST(difficulty AS INTEGER), avg(2 * p_solo * (1 - p_solo)) FROM tasks
                 WHERE domain = ? AND fate_round BETWEEN ? AND ? AND p_solo IS NOT NULL AND round = fate_round
                 GROUP BY fate_round, CAST(difficulty AS INTEGER) ORDER BY fate_round"""


def bandit_rewards(
    db: Any, domain: str, last_round: int, first_round: int = 1
) -> list[tuple[int, int, float]]:
    """(round, arm, mean 2 p (1 - p) of the round's own tasks at that integer difficulty) for rounds
    ``first_round``..``last_round`` of ``domain``, by round then arm. Rounds not memoised yet are
    computed (one indexed query over them) and memoised; needs a writable store."""
    memo = {
        r: json.loads(j)
        for r, j in db.execute(
            "SELECT fate_round, rewards_json FROM bandit_rewards "
            "WHERE domain = ? AND fate_round BETWEEN ? AND ?",
            [domain, first_round, last_round],
        ).fetchall()
    }
    missing = [r for r in range(first_round, last_round + 1) if r not in memo]
    if missing:
        fresh: dict[int, list] = {r: [] for r in missing}
        wanted = set(missing)
        for r, arm, reward in db.execute(_BANDIT_SQL, [domain, missing[0], missing[-1]]).fetchall():
            if r in wanted:
                fresh[r].append([arm, reward])
        with transaction(db) as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO bandit_rewards (domain, fate_round, rewards_json) VALUES (?, ?, ?)",
                [(domain, r, json.dumps(v)) for r, v in fresh.items()],
            )
        memo.update(fresh)
    return [(r, arm, reward) for r in sorted(memo) for arm, reward in memo[r]]


def bandit_checkpoint(db: Any, domain: str, key: str) -> tuple[int, dict[int, float]] | None:
    """(through_round, values) stored for the policy ``key``, or None. Cleared by triggers when a task of
    a round <= through_round changes."""
    row = db.execute(
        "SELECT through_round, values_json FROM bandit_values WHERE domain = ? AND key = ?", [domain, key]
    ).fetchone()
    return None if row is None else (row[0], {int(a): q for a, q in json.loads(row[1]).items()})


def save_bandit_checkpoint(
    db: Any, domain: str, key: str, through_round: int, values: Mapping[int, float]
) -> None:
    with transaction(db) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO bandit_values (domain, key, through_round, values_json) "
            "VALUES (?, ?, ?, ?)",
            [domain, key, through_round, json.dumps({str(a): q for a, q in values.items()})],
        )


_SOLO_TOTALS_SINCE = """INSERT INTO solo_totals (domain, content_hash, correct, answers, updated_round)
    SELECT t.domain, t.content_hash, sum(a.correct), count(*), max(a.round)
    FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE a.id > ? AND a.mode = 'solo' AND a.role = 'learner'
    GROUP BY t.domain, t.content_hash
    ON CONFLICT (domain, content_hash) DO UPDATE SET correct = correct + excluded.correct,
        answers = answers + excluded.answers, updated_round = max(updated_round, excluded.updated_round)"""
_SOLO_TOTALS_ADD = """INSERT INTO solo_totals (domain, content_hash, correct, answers, updated_round)
    SELECT domain, content_hash, ?, ?, ? FROM tasks WHERE id = ?
    ON CONFLICT (domain, content_hash) DO UPDATE SET correct = correct + excluded.correct,
        answers = answers + excluded.answers, updated_round = max(updated_round, excluded.updated_round)"""
_ROWS_PER_STATEMENT = 32766 // len(ATTEMPT_COLUMNS) // 2
"""Rows of one multi-row INSERT: well inside SQLite's 32,766 bound parameters (3.32+)."""


def _solo_totals_of(rows: list[Mapping[str, Any]]) -> list[tuple[int, int, int, int]]:
    """(correct, answers, newest round, task id) of the learner's solo answers among ``rows``, per task."""
    totals: dict[int, tuple[int, int, int]] = {}
    for r in rows:
        if r.get("mode") == "solo" and r.get("role") == "learner":
            correct, answers, newest = totals.get(r["task_id"], (0, 0, r["round"]))
            totals[r["task_id"]] = (correct + int(r["correct"]), answers + 1, max(newest, r["round"]))
    return [(c, a, n, tid) for tid, (c, a, n) in totals.items()]


def insert_attempts(db: Any, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert graded attempts (dicts with ``ATTEMPT_COLUMNS``; ``grader`` may be absent), ignoring any
    already stored (unique per task, round, mode, sample), and add the learner's solo answers among them
    to ``solo_totals``, in the caller's transaction (or one of its own). The only way attempts are
    written. Returns the rows given.

    Measured at 1M tasks / 10M attempts (bench/results/scale.md): multi-row INSERTs instead of one
    ``executemany`` row by row, and the totals summed here and added per task, instead of a join of the
    batch's rows back to ``tasks`` and a GROUP BY. When some rows were already stored (a replayed
    batch), the totals are taken from the rows actually added, as before: those above the id mark."""
    given = list(rows)
    values = [v for r in given for v in (r.get(c) for c in ATTEMPT_COLUMNS)]
    if not given:
        return 0
    width = len(ATTEMPT_COLUMNS)
    with transaction(db) as conn:
        # New rows get ids above the largest (INTEGER PRIMARY KEY, never given explicitly), so the
        # rows this batch added are those above the mark; ignored duplicates add nothing.
        mark = conn.execute("SELECT coalesce(max(id), 0) FROM attempts").fetchone()[0]
        added = 0
        for i in range(0, len(given), _ROWS_PER_STATEMENT):
            n = min(_ROWS_PER_STATEMENT, len(given) - i)
            sql = _INSERT_ATTEMPTS_HEAD + ", ".join([_ONE_ROW] * n)
            added += conn.execute(sql, values[i * width : (i + n) * width]).rowcount
        if added == len(given):
            conn.executemany(_SOLO_TOTALS_ADD, _solo_totals_of(given))
        else:
            conn.execute(_SOLO_TOTALS_SINCE, [mark])
    return len(given)
