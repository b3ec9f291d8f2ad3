"""Training data in the store: a round's examples, the replay sample and the stored bootstrap set.

Bounded reads: a round's selected tasks come through the ``tasks(fate_round)`` index; the replay sample
reads the ids of earlier examples from an index (``train_examples(kind, round)``) and then only the rows
it drew; the bootstrap set is made once per key and read back, not re-made each round.
"""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from .connect import transaction


def _dicts(cur: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def selected_targets(db: Any, round_n: int) -> list[dict[str, Any]]:
    """The round's selected tasks (``tasks.selected``; not exam items) with their target answer: the first
    correct guided sample, else the first correct solo sample (``attempt_id``/``output`` None: neither; the
    target is then the reference solution when ``target_source`` says so). Each row carries the task's
    columns too (``target_source`` among them), so the caller can render the prompt the learner reads
    solo."""
    return _dicts(
        db.execute(
            """SELECT x.*, a.output FROM (
               SELECT t.*, t.id AS task_id,
                      (SELECT a.id FROM attempts a WHERE a.task_id = t.id AND a.round = ? AND a.correct = 1
                         ORDER BY a.mode = 'guided' DESC, a.sample_idx LIMIT 1) AS attempt_id
               FROM tasks t WHERE t.selected = 1 AND t.fate_round = ? AND t.fate != 'exam') x
           LEFT JOIN attempts a ON a.id = x.attempt_id ORDER BY x.task_id""",
            [round_n, round_n],
        )
    )


def insert_examples(db: Any, round_n: int, kind: str,
                    rows: Sequence[tuple[int, int | None, str, str]]) -> None:
    """(task_id, attempt_id, prompt, response) rows as the round's examples of ``kind`` (idempotent;
    attempt_id None: a reference target)."""
    getattr(db, "conn", db).executemany(
        """INSERT OR IGNORE INTO train_examples (round, task_id, attempt_id, kind, prompt, response)
           VALUES (?, ?, ?, ?, ?, ?)""",
        [(round_n, t, a, kind, p, r) for t, a, p, r in rows],
    )


def count_examples(db: Any, round_n: int, kind: str) -> int:
    return db.execute(
        "SELECT count(*) FROM train_examples WHERE round = ? AND kind = ?", [round_n, kind]
    ).fetchone()[0]


_EXAMPLE_ROWS = """SELECT e.id AS example_id, e.prompt AS eprompt, e.response, t.*
                   FROM train_examples e JOIN tasks t ON t.id = e.task_id"""


def round_examples(db: Any, round_n: int, kind: str) -> list[dict[str, Any]]:
    """The round's examples of ``kind`` with their task's columns, by example id."""
    return _dicts(
        db.execute(f"{_EXAMPLE_ROWS} WHERE e.round = ? AND e.kind = ? ORDER BY e.id", [round_n, kind])
    )


SPANS = "train_example_rounds"
"""A memo of the replay sample's per-round figures: (kind, round) -> count, min id, max id of the examples,
for a prefix of the rounds; triggers on ``train_examples`` drop a round, and every later one, whenever
an example of it is inserted, changed or deleted, so each round is read from the index about once."""


def _read_spans(db: Any, kind: str, lo: int, hi: int) -> list[tuple[int, int, int, int]]:
    return db.execute(
        "SELECT round, count(*), min(id), max(id) FROM train_examples WHERE kind = ? AND round >= ? "
        "AND round < ? GROUP BY round ORDER BY round",
        [kind, lo, hi],
    ).fetchall()


def round_spans(db: Any, round_n: int, kind: str) -> list[tuple[int, int, int, int]]:
    """(round, count, min id, max id) of the examples of ``kind`` of each round before ``round_n``: from
    the memo, reading from the index only the rounds it lacks (all of them on a read-only connection)."""
    conn = getattr(db, "conn", db)
    try:
        with transaction(conn) as tx:
            tx.execute(f"CREATE TABLE IF NOT EXISTS {SPANS} (kind TEXT NOT NULL, round INTEGER NOT NULL, "
                       "n INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL, "
                       "PRIMARY KEY (kind, round)) WITHOUT ROWID")
            for event, row in (("INSERT", "NEW"), ("DELETE", "OLD"), ("UPDATE", "OLD"), ("UPDATE", "NEW")):
                # A change to an earlier round's examples (a late one) forgets that round and the later ones.
                name = f"{SPANS}_{event.lower()}_{row.lower()}"
                tx.execute(f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} "
                           f"ON train_examples BEGIN DELETE FROM {SPANS} WHERE kind = {row}.kind "
                           f"AND round >= {row}.round; END")
            top = tx.execute(f"SELECT coalesce(max(round) + 1, 0), count(*) FROM {SPANS} WHERE kind = ?",
                             [kind]).fetchone()
            start = top[0] if top[1] else 0
            if start < round_n:
                tx.executemany(f"INSERT OR REPLACE INTO {SPANS} (kind, round, n, lo, hi) "
                               "VALUES (?, ?, ?, ?, ?)",
                               [(kind, *r) for r in _read_spans(tx, kind, start, round_n)])
            rows = tx.execute(f"SELECT round, n, lo, hi FROM {SPANS} WHERE kind = ? AND round < ? "
                              "ORDER BY round", [kind, round_n]).fetchall()
            return [(int(r), int(n), int(lo), int(hi)) for r, n, lo, hi in rows]
    except sqlite3.OperationalError:  # a read-only connection: no memo
        return _read_spans(conn, kind, 0, round_n)


def earlier_example_ids(db: Any, round_n: int, kind: str, positions: Sequence[int]) -> list[int]:
    """The ids at ``positions`` of the ascending list of ids of the examples of ``kind`` of rounds before
    ``round_n`` (positions below ``count_earlier``). Reads per-round counts (``round_spans``), then one id
    per position (none where a round's ids are contiguous): never the whole list, unless ids do not grow
    with the round (then it is read once)."""
    per_round = round_spans(db, round_n, kind)
    if any(a[3] >= b[2] for a, b in zip(per_round, per_round[1:], strict=False)):
        ids = sorted(
            r[0]
            for r in db.execute(
                "SELECT id FROM train_examples WHERE kind = ? AND round < ?", [kind, round_n]
            ).fetchall()
        )
        return [ids[p] for p in positions]
    starts, total = [], 0
    for _, n, _, _ in per_round:
        starts.append(total)
        total += n
    out = []
    for p in positions:
        i = bisect.bisect_right(starts, p) - 1
        r, n, lo, hi = per_round[i]
        offset = p - starts[i]
        if hi - lo + 1 == n:
            out.append(lo + offset)
        else:
            out.append(
                db.execute(
                    "SELECT id FROM train_examples WHERE kind = ? AND round = ? ORDER BY id LIMIT 1 OFFSET ?",
                    [kind, r, offset],
                ).fetchone()[0]
            )
    return out


def count_earlier(db: Any, round_n: int, kind: str) -> int:
    """How many examples of ``kind`` rounds before ``round_n`` have (from ``round_spans``)."""
    return sum(r[1] for r in round_spans(db, round_n, kind))


def examples_by_id(db: Any, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The examples with these ids, with their task's columns."""
    out: dict[int, dict[str, Any]] = {}
    for i in range(0, len(ids), 500):  # below SQLite's limit on host parameters
        chunk = list(ids[i : i + 500])
        for row in _dicts(db.execute(f"{_EXAMPLE_ROWS} WHERE e.id IN ({','.join('?' * len(chunk))})", chunk)):
            out[row["example_id"]] = row
    return out


BOOTSTRAP_FIELDS = ("prompt", "response", "domain", "answer")


def bootstrap_examples(db: Any, key: str, make: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The bootstrap set stored under ``key``; made with ``make()`` and stored (replacing any other key's)
    when absent. Rows are dicts of ``BOOTSTRAP_FIELDS``, in the order ``make`` returned them."""
    rows = [
        dict(zip(BOOTSTRAP_FIELDS, r, strict=True))
        for r in db.execute(
            "SELECT prompt, response, domain, answer FROM bootstrap_examples WHERE key = ? ORDER BY idx",
            [key],
        ).fetchall()
    ]
    stored = db.execute("SELECT count(*) FROM bootstrap_examples").fetchone()[0]
    if rows and stored == len(rows):
        return rows
    rows = make()
    if any(set(r) != set(BOOTSTRAP_FIELDS) for r in rows):  # not storable as such: used as made
        return rows
    with transaction(db) as conn:
        conn.execute("DELETE FROM bootstrap_examples")
        conn.executemany(
            "INSERT INTO bootstrap_examples (idx, key, prompt, response, domain, answer) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(i, key, *(r[f] for f in BOOTSTRAP_FIELDS)) for i, r in enumerate(rows)],
        )
    return [{f: r[f] for f in BOOTSTRAP_FIELDS} for r in rows]
