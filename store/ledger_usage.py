"""The generation ledger (``generation_usage``) and the samples that got no answer (``failed_attempts``).

The functions run their statement in the caller's transaction; they never commit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .sqlite import Database


@dataclass(frozen=True)
class UsageTotals:
    """What one call of a generator cost, to add to its (round, role, model) ledger row."""

    num_requests: int
    """Samples asked for."""
    num_failed: int
    """Samples that got no answer."""
    prompt_tokens: int
    """Prompt tokens over the samples."""
    completion_tokens: int
    """Generated tokens over the samples."""
    cost_usd: float = 0.0
    """Dollars (the teacher's price; 0 for the learner)."""


@dataclass(frozen=True)
class FailedSample:
    """A sample that produced no answer (endpoint down, malformed reply): never graded."""

    task_id: int | None
    """The task it was for (None: not a stored task)."""
    mode: str | None
    """solo | guided (None outside CALIBRATE)."""
    sample_idx: int
    """Its index among the task's samples."""
    error: str
    """Why (cut to 1000 characters when stored)."""


def add_usage(db: Database, round_n: int, role: str, model: str, totals: UsageTotals) -> None:
    """Add ``totals`` to the (round, role, model) ledger row."""
    db.execute(
        """INSERT INTO generation_usage (round, role, model, num_requests, num_failed, prompt_tokens,
               completion_tokens, cost_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (round, role, model) DO UPDATE SET
               num_requests = num_requests + excluded.num_requests,
               num_failed = num_failed + excluded.num_failed,
               prompt_tokens = prompt_tokens + excluded.prompt_tokens,
               completion_tokens = completion_tokens + excluded.completion_tokens,
               cost_usd = cost_usd + excluded.cost_usd""",
        [
            round_n,
            role,
            model,
            totals.num_requests,
            totals.num_failed,
            totals.prompt_tokens,
            totals.completion_tokens,
            totals.cost_usd,
        ],
    )


def record_failures(db: Database, round_n: int, phase: str, role: str, failed: list[FailedSample]) -> None:
    """Insert the failed samples of one call."""
    now = time.time()
    for f in failed:
        db.execute(
            "INSERT INTO failed_attempts (round, phase, role, task_id, mode, sample_idx, error, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [round_n, phase, role, f.task_id, f.mode, f.sample_idx, f.error[:1000], now],
        )


def teacher_spent(db: Database) -> float:
    """Dollars spent on the teacher over the whole run."""
    return float(
        db.execute(
            "SELECT coalesce(sum(cost_usd), 0) FROM generation_usage WHERE role = 'teacher'"
        ).fetchone()[0]
    )
