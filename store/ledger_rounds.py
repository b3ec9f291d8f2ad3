"""The ``rounds`` table and the per-round ``frontier``: one typed row per round, and every statement the
loop runs on them (issue 16: the store owns its queries).

The functions take the open store and run their statement; they never commit. A phase opens the
transaction itself (``with ctx.db.atomic():``), so its outputs commit with the phase advance.
A column added to ``rounds`` by a migration is added to ``RoundRow`` (and to ``RoundUpdate`` when the
loop writes it): ``read_round`` refuses a row whose columns differ from the dataclass.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from typing import Any, TypedDict, Unpack

from .sqlite import Database


@dataclass(frozen=True)
class RoundRow:
    """One row of ``rounds`` (store/db.py has the schema and what each migration added)."""

    id: int
    """The round number."""
    status: str
    """running | committed."""
    phase: str
    """The next phase to run (snapshot: about to commit; done: committed)."""
    started_at: float | None
    """When the round's row was created (epoch seconds)."""
    finished_at: float | None
    """When SNAPSHOT committed it."""
    parent_learner_round: int | None
    """Whose learner this round started from."""
    current_learner_round: int | None
    """Whose learner is current once this round commits (the promotion gate's decision)."""
    promoted: int | None
    """1 if this round's learner passed the promotion gate."""
    config_json: str | None
    """The resolved config this round runs with."""
    timings_json: str
    """Seconds per phase, summed over retries."""
    eval_accuracy: float | None
    """Accuracy on the frozen eval set's test part (rounds measured before m010: the whole set)."""
    eval_by_domain_json: str | None
    """The test accuracy per domain."""
    exam_accuracy: float | None
    """Accuracy on this round's exam version."""
    exam_items: int | None
    """Size of the exam version measured."""
    train_loss: float | None
    """The trainer's final loss."""
    train_tokens: int | None
    """Tokens trained on (solver and proposer)."""
    num_train_examples: int | None
    """New training examples of the round."""
    num_candidates: int | None
    """Candidates SYNTHESIZE stored."""
    num_duplicates: int | None
    """Candidates refused as duplicates."""
    failures: int
    """Failed attempts at a phase of this round."""
    last_error: str | None
    """The last failure's message (tail)."""
    yield_ratio: float | None
    """(zpd + exam) / calibrated candidates."""
    cost_per_accepted_usd: float | None
    """Teacher dollars per accepted item."""
    tokens_per_accepted: float | None
    """Generated tokens per accepted item."""
    num_attempts: int | None
    """Samples CALIBRATE drew."""
    num_attempts_fixed: int | None
    """What fixed-k sampling would have drawn."""
    decontamination_json: str | None
    """The round's exam-integrity report."""
    proposer_loss: float | None
    """Self-play: the proposer's training loss."""
    proposer_reward: float | None
    """Self-play: the proposer's mean reward."""
    proposer_valid_ratio: float | None
    """Self-play: share of proposals that parsed."""
    proposer_duplicate_ratio: float | None
    """Self-play: share of valid proposals already stored."""
    proposer_tokens: int | None
    """Self-play: tokens the proposer trained on."""
    validation_accuracy: float | None
    """Accuracy on the frozen eval set's validation part (what the gate and the frontier read; m010)."""
    validation_by_domain_json: str | None
    """The validation accuracy per domain."""


COLUMNS = tuple(f.name for f in fields(RoundRow))


class RoundUpdate(TypedDict, total=False):
    """The columns a phase sets when it advances a round (the keywords of ``advance``)."""

    current_learner_round: int | None
    promoted: int | None
    eval_accuracy: float | None
    eval_by_domain_json: str | None
    exam_accuracy: float | None
    exam_items: int | None
    train_loss: float | None
    train_tokens: int | None
    num_train_examples: int | None
    num_candidates: int | None
    num_duplicates: int | None
    yield_ratio: float | None
    cost_per_accepted_usd: float | None
    tokens_per_accepted: float | None
    num_attempts: int | None
    num_attempts_fixed: int | None
    decontamination_json: str | None
    proposer_loss: float | None
    proposer_reward: float | None
    proposer_valid_ratio: float | None
    proposer_duplicate_ratio: float | None
    proposer_tokens: int | None
    validation_accuracy: float | None
    validation_by_domain_json: str | None


UPDATABLE = frozenset(RoundUpdate.__annotations__)


def read_round(db: Database, round_n: int) -> RoundRow:
    """Round ``round_n``'s row; KeyError when there is none."""
    cur = db.execute("SELECT * FROM rounds WHERE id = ?", [round_n])
    row = cur.fetchone()
    if row is None:
        raise KeyError(f"no round {round_n} in the store")
    names = tuple(d[0] for d in cur.description)
    if set(names) != set(COLUMNS):
        raise ValueError(f"rounds has columns {sorted(set(names) ^ set(COLUMNS))} that RoundRow does not "
                         "agree with (store/ledger_rounds.py)")
    return RoundRow(**dict(zip(names, row, strict=True)))


def update_round(db: Database, round_n: int, **values: Unpack[RoundUpdate]) -> None:
    """Set columns of round ``round_n`` (inside the caller's transaction)."""
    _update(db, round_n, dict(values))


def advance(db: Database, round_n: int, next_phase: str, **values: Unpack[RoundUpdate]) -> None:
    """Set the round's next phase and the figures the phase made (inside the phase's final transaction)."""
    _update(db, round_n, {"phase": next_phase, **values})


def _update(db: Database, round_n: int, values: dict[str, Any]) -> None:
    unknown = set(values) - UPDATABLE - {"phase"}
    if unknown:
        raise ValueError(f"not a column a phase sets in rounds: {', '.join(sorted(unknown))}")
    if not values:
        return
    sets = ", ".join(f"{k} = ?" for k in values)  # the names were checked against RoundUpdate above
    db.execute(f"UPDATE rounds SET {sets} WHERE id = ?", [*values.values(), round_n])


def create_round(db: Database, round_n: int, *, phase: str, parent_learner_round: int | None,
                 config_json: str) -> None:
    """Create round ``round_n``'s row, running at ``phase``, unless it exists (a resume)."""
    db.execute(
        """INSERT OR IGNORE INTO rounds (id, status, phase, started_at, parent_learner_round, config_json)
           VALUES (?, 'running', ?, ?, ?, ?)""",
        [round_n, phase, time.time(), parent_learner_round, config_json],
    )


def add_phase_seconds(db: Database, round_n: int, phase: str, seconds: float) -> None:
    """Add a phase's wall time to the round's timings (a retried phase sums its tries)."""
    timings = json.loads(read_round(db, round_n).timings_json or "{}")
    timings[phase] = round(timings.get(phase, 0.0) + seconds, 3)
    db.execute("UPDATE rounds SET timings_json = ? WHERE id = ?", [json.dumps(timings), round_n])


def record_failure(db: Database, round_n: int, error: str) -> None:
    """Count a failed phase of the round and keep its message."""
    db.execute("UPDATE rounds SET failures = failures + 1, last_error = ? WHERE id = ?", [error, round_n])


def current_learner_round(db: Any) -> int | None:
    """The round whose learner is current: the newest committed round's promotion decision. ``db``: the
    store or a read-only sqlite3 connection."""
    row = db.execute(
        "SELECT current_learner_round FROM rounds WHERE status = 'committed' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return None if row is None else row[0]


def committed_rounds(db: Any) -> set[int]:
    """The rounds the store records as committed."""
    return {r[0] for r in db.execute("SELECT id FROM rounds WHERE status = 'committed'").fetchall()}


def total_train_tokens(db: Database) -> int:
    """Tokens trained on over all rounds (``run.max_train_tokens``)."""
    return int(db.execute("SELECT coalesce(sum(train_tokens), 0) FROM rounds").fetchone()[0])


def frontier_of(db: Database, round_n: int) -> dict[str, float]:
    """Per domain, the frontier MEASURE estimated in round ``round_n``."""
    return dict(db.execute("SELECT domain, value FROM frontier WHERE round = ?", [round_n]).fetchall())


def set_frontier(db: Database, round_n: int, domain: str, value: float) -> None:
    db.execute("INSERT OR REPLACE INTO frontier (round, domain, value) VALUES (?, ?, ?)",
               [round_n, domain, value])
