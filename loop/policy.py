"""The candidate source's interface (``curriculum.source``): its hooks, with the frontier source's
behaviour as their defaults.

A source chooses where a round's candidates are drawn (``difficulties``, or candidates of its own:
``propose``), whether SYNTHESIZE also derives candidates from last round's tasks (``derives``), and may
add a training step of its own after TRAIN's (``after_train``; self-play updates its proposer there).
Which calibrated tasks are trained on is the other choice, ``curriculum.selection``
(``loop/selection.py``). The sources themselves and ``build_source`` are in ``loop/curriculum.py``; a new
one is a subclass plus ``register``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zpd.configs.schema import CurriculumConfig
from zpd.store.examples import frontier_value
from zpd.store.ledger_rounds import RoundUpdate

if TYPE_CHECKING:
    from .context import RunContext


@dataclass(frozen=True)
class AfterTrain:
    """What a source's own step after TRAIN's training adds to the round."""

    columns: RoundUpdate = field(default_factory=lambda: RoundUpdate())
    """``rounds`` columns, written with TRAIN's phase advance."""
    num_tokens: int = 0
    """Tokens the step trained on (added to the round's ``train_tokens``)."""


class Source:
    """The frontier source; the other sources override what differs."""

    name = "frontier"
    derives = True
    """Whether SYNTHESIZE also escalates last round's mastered tasks and simplifies its beyond tasks."""

    needs_pass_rate = False
    """Whether the source reads the solo pass rate itself (not only the band decision): then adaptive
    calibration still draws all ``num_solo`` solo samples, so the rate is not cut short."""

    quota = True
    """Whether a round makes the allocation's count of candidates per domain (False: the source's own
    count, as the pool's file gives it; no "exhausted" warning when it is smaller)."""

    def __init__(self, cfg: CurriculumConfig, spread: float) -> None:
        self.cfg, self.spread = cfg, spread

    def window(self, lo: float, hi: float, center: float) -> tuple[float, float]:
        """[center - spread, center + spread] clipped to [lo, hi] *before* drawing, at least one level wide
        (so a frontier near the easy end does not pile candidates, mostly duplicates, on one level)."""
        a = max(lo, min(center - self.spread, hi - 1.0))
        return a, min(hi, max(center + self.spread, a + 1.0))

    def difficulties(self, ctx: RunContext, round_n: int, domain: str, lo: float, hi: float,
                     n: int, rng: random.Random) -> list[float]:
        """``n`` difficulties for fresh candidates of ``domain`` (whose range is [lo, hi])."""
        frontier = frontier_of(ctx, domain)
        a, b = self.window(lo, hi, lo if frontier is None else frontier)
        return [rng.uniform(a, b) for _ in range(n)]

    def propose(self, ctx: RunContext, round_n: int, domain_name: str, domain: Any, n: int,
                rng: random.Random) -> list[Any] | None:
        """Fresh candidates made by the source itself (self-play: the learner proposes them; pool: read
        from a file), or None to have the domain make them at ``difficulties``. Invalid proposals are
        simply left out."""
        return None

    def train_output(self, work: Path) -> Path:
        """Where TRAIN's training of the learner goes (``work``: the round's work directory). Each training
        step is complete once its directory exists; the round's learner is ``work/learner``."""
        return work / "learner"

    def after_train(self, ctx: RunContext, round_n: int, *, trained: Path, out: Path) -> AfterTrain:
        """The source's own step after TRAIN's training: from ``trained`` (``train_output``) it leaves the
        round's learner complete in ``out``, inside TRAIN (before its phase commit: a rerun after a kill
        must find what it left, or redo it alike). Default: none (``trained`` is ``out``)."""
        return AfterTrain()


SOURCES: dict[str, type[Source]] = {}


def register(cls: type[Source]) -> type[Source]:
    """Make ``cls`` the source named ``cls.name`` (``curriculum.source``)."""
    SOURCES[cls.name] = cls
    return cls


def frontier_of(ctx: RunContext, domain: str) -> float | None:
    """The frontier measured for the current learner (None before any measurement)."""
    current = ctx.current_learner_round()
    if current is None:
        return None
    return frontier_value(ctx.db, current, domain)
