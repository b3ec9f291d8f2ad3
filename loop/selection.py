"""The selection (``curriculum.selection``): which of a round's calibrated tasks the learner trains on, and
the one rule that gives every selected task its training target.

Fates stay the measurement (``loop/curriculum.py:band_fate``); a selection only sets ``tasks.selected``.
It is a round-level decision: some selections are sized by the round's ZPD count, so it is made once
every batch of CALIBRATE is committed, in CALIBRATE's final transaction with the phase advance
(``select_round``). It reads only the store (the round's calibrated tasks, ``calibrated_of_round``), the
config and a seed derived from (seed, round, domain), so a kill before that commit redoes it identically.
Exam items are never among the candidates (exam admission is unchanged).

Per domain d, with N_d its number of tasks of fate ``zpd`` this round (under this run's calibration):

* ``zpd`` (default): fate zpd (AgentFrontier's D_ZPD).
* ``r-zero``: solo pass rate p with lo <= p <= hi, ``curriculum.rzero_band`` (R-Zero, Agent0).
* ``all-correct``: every task with a correct answer, solo or guided (the old uniform, fixed-schedule and
  bandit policies' choice).
* ``random``: N_d tasks drawn uniformly from the domain's calibrated tasks: the control for the ZPD
  filter at equal size.
* ``learnability``: the N_d tasks of highest p (1 - p), ties broken by a seeded shuffle (the old
  ``learnability`` policy kept each task with probability 4 p (1 - p) instead).

Sized per domain, so random and learnability take each domain's share as zpd does. The target (one rule for
every selection, stored as ``tasks.target_source``): the task's successful guided trajectory if it has
one (``guided``), else a solo success (``solo``), else the domain's reference solution (``reference``,
``domain.solution(task)``; ``loop/training_set.py``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from zpd.configs.schema import CurriculumConfig
from zpd.store import ledger_tasks
from zpd.store.ledger_tasks import Calibrated

from .context import rng_for

if TYPE_CHECKING:
    from .context import RunContext

__all__ = ["SELECTIONS", "Calibrated", "Selection", "build_selection", "choose", "register", "select_round",
           "target_source"]


class Selection:
    """The zpd selection; the others override ``choose``."""

    name = "zpd"
    needs_pass_rate = False
    """Whether it reads the solo pass rate itself: then adaptive calibration draws all ``num_solo`` solo
    samples, so the rate is not cut short."""

    def __init__(self, cfg: CurriculumConfig) -> None:
        self.cfg = cfg

    def choose(self, pool: Sequence[Calibrated], size: int, rng: random.Random) -> list[int]:
        """The ids of ``pool`` (one domain's calibrated tasks of the round, by id) to train on; ``size``:
        how many of them have fate zpd; ``rng``: seeded by (seed, round, domain)."""
        return [t.id for t in pool if t.fate == "zpd"]


SELECTIONS: dict[str, type[Selection]] = {}


def register(cls: type[Selection]) -> type[Selection]:
    """Make ``cls`` the selection named ``cls.name`` (``curriculum.selection``)."""
    SELECTIONS[cls.name] = cls
    return cls


register(Selection)


@register
class RZero(Selection):
    name = "r-zero"
    needs_pass_rate = True

    def choose(self, pool: Sequence[Calibrated], size: int, rng: random.Random) -> list[int]:
        lo, hi = self.cfg.rzero_band
        return [t.id for t in pool if t.p_solo is not None and lo <= t.p_solo <= hi]


@register
class AllCorrect(Selection):
    name = "all-correct"

    def choose(self, pool: Sequence[Calibrated], size: int, rng: random.Random) -> list[int]:
        return [t.id for t in pool if t.guided_correct or t.solo_correct]


@register
class RandomAtZpdSize(Selection):
    name = "random"

    def choose(self, pool: Sequence[Calibrated], size: int, rng: random.Random) -> list[int]:
        return sorted(rng.sample([t.id for t in pool], min(size, len(pool))))


def _learnability(p: float | None) -> float:
    # Rounded: 0.25 * 0.75 and 0.75 * 0.25 must tie exactly, whatever the float path.
    return 0.0 if p is None else round(p * (1.0 - p), 12)


@register
class Learnability(Selection):
    name = "learnability"
    needs_pass_rate = True

    def choose(self, pool: Sequence[Calibrated], size: int, rng: random.Random) -> list[int]:
        order = list(pool)
        rng.shuffle(order)  # the seeded tie-break: sorted() below is stable
        order.sort(key=lambda t: -_learnability(t.p_solo))
        return sorted(t.id for t in order[:size])


def build_selection(cfg: CurriculumConfig) -> Selection:
    return SELECTIONS[cfg.selection](cfg)


def target_source(task: Calibrated) -> str:
    """Where a selected task's training target comes from: guided > solo > reference."""
    return "guided" if task.guided_correct else "solo" if task.solo_correct else "reference"


def choose(selection: Selection, pool: Sequence[Calibrated], seed: int, round_n: int) -> dict[int, str]:
    """The round's selection over ``pool`` (its calibrated tasks): task id -> target source. A pure function
    of its arguments."""
    chosen: dict[int, str] = {}
    by_id = {t.id: t for t in pool}
    for domain in sorted({t.domain for t in pool}):
        mine = sorted((t for t in pool if t.domain == domain), key=lambda t: t.id)
        size = sum(t.fate == "zpd" for t in mine)
        for tid in selection.choose(mine, size, rng_for(seed, round_n, "select", domain)):
            chosen[tid] = target_source(by_id[tid])
    return chosen


def select_round(ctx: RunContext, round_n: int) -> dict[str, int]:
    """Choose and store round ``round_n``'s selection (call inside CALIBRATE's final transaction); returns
    the selected tasks per target source."""
    pool = ledger_tasks.calibrated_of_round(ctx.db, round_n)
    chosen = choose(build_selection(ctx.cfg.curriculum), pool, ctx.cfg.run.seed, round_n)
    ledger_tasks.set_selection(ctx.db, round_n, chosen)
    counts = dict.fromkeys(ledger_tasks.TARGET_SOURCES, 0)
    for source in chosen.values():
        counts[source] += 1
    return counts
