"""The curriculum's candidate sources and the routing every choice shares.

A curriculum is three choices (``configs/curriculum.py``; issue 13): the *source* of a round's candidates
(``curriculum.source``, here: registry ``SOURCES``, hooks in ``loop/policy.py``), the *selection* of the
calibrated tasks trained on (``curriculum.selection``, ``loop/selection.py``) and the *allocation* of
candidates across domains (``curriculum.allocation``, ``loop/allocation.py``). ``curriculum.policy``,
the older single choice, is an alias of a (source, selection) pair (``POLICY_ALIASES``).

Every choice sees the same calibration. The *fate* of a task is a measurement, the same whatever is
chosen (AgentFrontier's routing with a configurable band, ``band_fate``):

    p_solo  > solo_max_ratio                         -> mastered  (the pre-training pool)
    p_solo <= solo_max_ratio, p_guided >= guided_min -> zpd
    otherwise                                        -> beyond / review (cfg.beyond_fate)

(exam admission, stricter, is decided by the exam module: 0/k solo and k/k guided). The selection sets
``tasks.selected`` once the round is calibrated; a selected task trains on its successful guided answer,
else a solo success, else the domain's reference solution (``loop/selection.py``).

The sources (issues 7 and 13; ``reference/peers.md`` for SEC, PCL, R-Zero, Agent0):

* ``frontier`` (default): candidates in [frontier - spread, frontier + spread] plus escalations of last
  round's mastered tasks and simplifications of its beyond tasks (AgentFrontier).
* ``uniform``: difficulty uniform over the domain's range.
* ``schedule``: a window of width 2*spread sliding from the easiest to the hardest difficulty over
  ``schedule_rounds`` rounds.
* ``bandit`` (SEC): difficulty levels are arms; a candidate's level is drawn from softmax(Q / T); after
  calibration an arm's reward is the mean absolute advantage of its tasks' solo samples (2 p (1 - p) for
  binary rewards), and Q <- Q + alpha (r - Q) (TD(0)).
* ``fixed-window``: difficulty uniform in ``curriculum.window`` (each domain's whole range when None),
  clipped to the domain; it reads nothing of the store, so its draws depend only on the seed, the round
  and the domain, not on the learner.
* ``pool``: the round's candidates read from a file (``loop/pool.py``).
* ``self-play``: the learner proposes the candidates (``loop/selfplay.py``).

Every choice is a pure function of the store, the config, the seed and the round, so a resumed or
repeated run makes the same choices (the bandit's Q values are re-derived from the stored fates).
"""

from __future__ import annotations

import json
import math
import random
from typing import TYPE_CHECKING

from zpd.configs import vocabulary
from zpd.configs.curriculum import POLICY_ALIASES
from zpd.configs.schema import CurriculumConfig, ZpdConfig
from zpd.store.stats import bandit_checkpoint, bandit_rewards, save_bandit_checkpoint

from .policy import SOURCES, AfterTrain, Source, frontier_of, register
from .pool import PoolSource
from .selfplay import SelfPlay

if TYPE_CHECKING:
    from .context import RunContext

__all__ = ["POLICY_ALIASES", "SOURCES", "AfterTrain", "Source", "band_fate", "build_source",
           "build_source_for", "frontier_of", "needs_guided", "register"]

FATES = vocabulary.CALIBRATED_FATES


def band_fate(cfg: CurriculumConfig, p_solo: float, p_guided: float | None) -> str:
    """The task's fate from its pass rates (the same whatever the curriculum chooses)."""
    if p_solo > cfg.solo_max_ratio:
        return "mastered"
    if p_guided is not None and p_guided >= cfg.guided_min_ratio:
        return "zpd"
    return cfg.beyond_fate


def needs_guided(cfg: CurriculumConfig, p_solo: float) -> bool:
    """Guided attempts are only needed for tasks the learner fails alone (a solo pass rules out the ZPD)."""
    return p_solo <= cfg.solo_max_ratio


register(Source)
register(SelfPlay)  # loop/selfplay.py
register(PoolSource)  # loop/pool.py


@register
class Uniform(Source):
    name = "uniform"
    derives = False

    def difficulties(self, ctx: RunContext, round_n: int, domain: str, lo: float, hi: float,
                     n: int, rng: random.Random) -> list[float]:
        return [rng.uniform(lo, hi) for _ in range(n)]


@register
class FixedWindow(Uniform):
    name = "fixed-window"

    def difficulties(self, ctx: RunContext, round_n: int, domain: str, lo: float, hi: float,
                     n: int, rng: random.Random) -> list[float]:
        # No read of ctx: the draws depend on the rng (seed, round, domain) alone, not on the learner.
        a, b = (lo, hi) if self.cfg.window is None else self.cfg.window
        a, b = min(max(a, lo), hi), max(min(b, hi), lo)
        return [rng.uniform(a, b) for _ in range(n)]


@register
class FixedSchedule(Uniform):
    name = "schedule"

    def difficulties(self, ctx: RunContext, round_n: int, domain: str, lo: float, hi: float,
                     n: int, rng: random.Random) -> list[float]:
        progress = min(1.0, max(0, round_n - 1) / max(1, self.cfg.schedule_rounds - 1))
        a, b = self.window(lo, hi, lo + progress * (hi - lo))
        return [rng.uniform(a, b) for _ in range(n)]


@register
class Bandit(Uniform):
    name = "bandit"
    needs_pass_rate = True

    def arms(self, lo: float, hi: float) -> list[int]:
        return list(range(math.floor(lo), max(math.floor(lo), math.ceil(hi) - 1) + 1))

    def values(self, ctx: RunContext, round_n: int, domain: str, lo: float, hi: float) -> dict[int, float]:
        """Q per arm after rounds 1..round_n-1 (TD(0) over each round's mean absolute advantage)."""
        arms = self.arms(lo, hi)
        q = {arm: self.cfg.bandit_initial_value for arm in arms}
        # Start from the values stored after an earlier round (the same TD updates, in the same order).
        key = json.dumps([self.cfg.bandit_initial_value, self.cfg.bandit_step, arms])
        first = 1
        stored = bandit_checkpoint(ctx.db, domain, key)
        if stored is not None and stored[0] <= round_n - 1:
            first, q = stored[0] + 1, stored[1]
        for _, arm, reward in bandit_rewards(ctx.db, domain, round_n - 1, first_round=first):
            if arm in q:
                q[arm] += self.cfg.bandit_step * (reward - q[arm])
        if round_n - 1 >= first:
            save_bandit_checkpoint(ctx.db, domain, key, round_n - 1, q)
        return q

    def difficulties(self, ctx: RunContext, round_n: int, domain: str, lo: float, hi: float,
                     n: int, rng: random.Random) -> list[float]:
        q = self.values(ctx, round_n, domain, lo, hi)
        arms = list(q)
        top = max(q.values())
        weights = [math.exp((q[a] - top) / self.cfg.bandit_temperature) for a in arms]
        out = []
        for arm in rng.choices(arms, weights=weights, k=n):
            a, b = max(lo, float(arm)), min(hi, float(arm + 1))
            out.append(rng.uniform(a, b))
        return out


def build_source(cfg: ZpdConfig) -> Source:
    """The configured candidate source (``cfg`` is the whole ZpdConfig)."""
    return build_source_for(cfg.curriculum, cfg.synthesis.spread)


def build_source_for(cfg: CurriculumConfig, spread: float) -> Source:
    return SOURCES[cfg.source](cfg, spread)
