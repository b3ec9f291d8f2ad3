"""The queries of training's side of a round: eval sets, self-play proposals, the pretrain pool, frontiers.

What the round-0 bootstrap, the self-play proposer, continued pre-training and the curriculum policies
read and write, as typed functions, so that ``loop/`` runs no SQL of its own. ``db`` is the daemon's
sqlite-utils Database or a sqlite3 connection; a write joins the caller's transaction when one is open
(the phase opens it, so that its outputs commit with its phase advance).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple, dataclass, fields
from typing import Any

from .connect import transaction


# -- eval sets --------------------------------------------------------------------------------------
def count_eval_tasks(db: Any, domain: str) -> int:
    """How many frozen eval items ``domain`` has (0: its eval set is still to be made)."""
    sql = "SELECT count(*) FROM tasks WHERE fate = 'eval' AND domain = ?"
    return int(db.execute(sql, [domain]).fetchone()[0])


def eval_hashes(db: Any) -> set[str]:
    """The content hashes of every eval item (kept out of every training set)."""
    return {r[0] for r in db.execute("SELECT content_hash FROM tasks WHERE fate = 'eval'").fetchall()}


# -- continued pre-training -------------------------------------------------------------------------
def mastered_texts(db: Any, round_n: int) -> list[tuple[str, str]]:
    """(prompt, answer) of every task routed to ``mastered`` up to ``round_n``: the pretrain pool, most
    recent first (ties by id)."""
    return [(p, a) for p, a in db.execute(
        """SELECT prompt, answer FROM tasks WHERE fate = 'mastered' AND fate_round <= ?
           ORDER BY fate_round DESC, id""",
        [round_n]).fetchall()]


# -- curriculum -------------------------------------------------------------------------------------
def frontier_value(db: Any, round_n: int, domain: str) -> float | None:
    """The frontier MEASURE stored for the learner of ``round_n`` on ``domain`` (None: none)."""
    sql = "SELECT value FROM frontier WHERE round = ? AND domain = ?"
    row = db.execute(sql, [round_n, domain]).fetchone()
    return None if row is None else float(row[0])


# -- self-play proposals ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Proposal:
    """One proposer sample as SYNTHESIZE stores it (a row of ``proposals``)."""

    round: int
    domain: str
    group_id: int
    """The proposer prompt whose samples form one GRPO group."""
    sample_idx: int
    level: float
    """The difficulty the prompt asked for."""
    prompt: str
    output: str
    finish_reason: str | None
    """The generator's; ``error``: the sample failed (no reward: not the proposer's fault)."""
    valid: int
    """1: parses into a task of the domain that grades its own solution correct."""
    duplicate: int
    """1: valid, but already stored (or proposed earlier this round)."""
    content_hash: str | None
    """The parsed task's (valid proposals only)."""


_PROPOSAL_COLUMNS = tuple(f.name for f in fields(Proposal))


def insert_proposals(db: Any, rows: Iterable[Proposal]) -> None:
    """Store proposals; one already stored (same round, domain, group and sample) is left as it is."""
    with transaction(db) as conn:
        conn.executemany(
            f"INSERT OR IGNORE INTO proposals ({', '.join(_PROPOSAL_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(_PROPOSAL_COLUMNS))})", [astuple(r) for r in rows])


@dataclass(frozen=True, slots=True)
class ScoredProposal:
    """A stored proposal with what TRAIN scores it by: its task's solo pass rate."""

    id: int
    domain: str
    group_id: int
    sample_idx: int
    prompt: str
    output: str
    finish_reason: str | None
    valid: int
    duplicate: int
    p_solo: float | None
    """The solver's solo pass rate on the proposal's task (None: no task, or not calibrated yet)."""


def round_proposals(db: Any, round_n: int) -> list[ScoredProposal]:
    """Link the round's valid new proposals to the tasks they became, and return every proposal of the
    round with its task's pass rate, by domain, group and sample (call inside the phase's transaction)."""
    with transaction(db) as conn:
        conn.execute(
            """UPDATE proposals
               SET task_id = (SELECT t.id FROM tasks t WHERE t.content_hash = proposals.content_hash)
               WHERE round = ? AND valid = 1 AND duplicate = 0""", [round_n])
        rows = conn.execute(
            """SELECT p.id, p.domain, p.group_id, p.sample_idx, p.prompt, p.output, p.finish_reason, p.valid,
                      p.duplicate, t.p_solo
               FROM proposals p LEFT JOIN tasks t ON t.id = p.task_id
               WHERE p.round = ? ORDER BY p.domain, p.group_id, p.sample_idx""", [round_n]).fetchall()
    return [ScoredProposal(*r) for r in rows]


def set_proposal_rewards(db: Any, rewards: Iterable[tuple[int, float | None]]) -> None:
    """(proposal id, reward) pairs; None: no reward (its task is not calibrated, or the sample failed)."""
    with transaction(db) as conn:
        conn.executemany("UPDATE proposals SET reward = ? WHERE id = ?", [(r, i) for i, r in rewards])
