"""Curriculum policies: which difficulties a round's candidates are drawn at, and which calibrated tasks
the learner trains on. One interface (``loop/policy.py``), a registry, chosen by ``curriculum.policy``.

Every policy sees the same calibration. The *fate* of a task is a measurement, the same under every
policy (AgentFrontier's routing with a configurable band, ``band_fate``):

    p_solo  > solo_max_ratio                         -> mastered  (the pre-training pool)
    p_solo <= solo_max_ratio, p_guided >= guided_min -> zpd
    otherwise                                        -> beyond / review (cfg.beyond_fate)

(exam admission, stricter, is decided by the exam module: 0/k solo and k/k guided). What differs is the
*choice*: where candidates are drawn (``Policy.difficulties``) and which tasks become training data
(``Policy.select``, stored as ``tasks.selected``). A selected task trains on a successful answer of the
learner's: its first correct guided sample, else its first correct solo sample (a task with neither
cannot be trained on without a teacher's answer, so it is skipped whatever the policy).

The policies (issue 7; ``reference/peers.md`` for SEC, PCL, R-Zero, Agent0):

* ``zpd-band`` (default): candidates in [frontier - spread, frontier + spread] plus escalations of last
  round's mastered tasks and simplifications of its beyond tasks; trains on the ZPD.
* ``uniform`` (the baseline): difficulty uniform over the domain's range; trains on every task it has
  an answer for.
* ``fixed-schedule``: a window of width 2*spread sliding from the easiest to the hardest difficulty over
  ``schedule_rounds`` rounds; trains on every task it has an answer for.
* ``bandit`` (SEC): difficulty levels are arms; a candidate's level is drawn from softmax(Q / T); after
  calibration an arm's reward is the mean absolute advantage of its tasks' solo samples (2 p (1 - p) for
  binary rewards), and Q <- Q + alpha (r - Q) (TD(0)); trains on every task it has an answer for.
* ``learnability``: difficulty uniform over the range; a task is selected with probability
  4 p (1 - p) of its solo pass rate p (weight by p (1 - p), scaled to 1 at p = 1/2).
* ``self-play``: the learner proposes the candidates (``loop/selfplay.py``); trains on the ZPD.

Every choice is a pure function of the store, the config, the seed and the round, so a resumed or
repeated run makes the same choices (the bandit's Q values are re-derived from the stored fates).
"""

from __future__ import annotations

import json
import math
import random
from typing import TYPE_CHECKING

from zpd.configs import vocabulary
from zpd.configs.schema import CurriculumConfig, ZpdConfig
from zpd.store.stats import bandit_checkpoint, bandit_rewards, save_bandit_checkpoint

from .policy import POLICIES, AfterTrain, Policy, frontier_of, register
from .selfplay import SelfPlay

if TYPE_CHECKING:
    from .context import RunContext

__all__ = ["POLICIES", "AfterTrain", "Policy", "band_fate", "build_policy", "build_policy_for", "frontier_of",
           "needs_guided", "register"]

FATES = vocabulary.CALIBRATED_FATES


def band_fate(cfg: CurriculumConfig, p_solo: float, p_guided: float | None) -> str:
    """The task's fate from its pass rates (the same under every policy)."""
    if p_solo > cfg.solo_max_ratio:
        return "mastered"
    if p_guided is not None and p_guided >= cfg.guided_min_ratio:
        return "zpd"
    return cfg.beyond_fate


def needs_guided(cfg: CurriculumConfig, p_solo: float) -> bool:
    """Guided attempts are only needed for tasks the learner fails alone (a solo pass rules out the ZPD)."""
    return p_solo <= cfg.solo_max_ratio


register(Policy)
register(SelfPlay)


@register
class Uniform(Policy):
    name = "uniform"
    derives = False

    def difficulties(self, ctx: RunContext, round_n: int, domain: str, lo: float, hi: float,
                     n: int, rng: random.Random) -> list[float]:
        return [rng.uniform(lo, hi) for _ in range(n)]

    def select(self, fate: str, p_solo: float, p_guided: float | None, rng: random.Random) -> bool:
        return True


@register
class FixedSchedule(Uniform):
    name = "fixed-schedule"

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


@register
class Learnability(Uniform):
    name = "learnability"
    needs_pass_rate = True

    def select(self, fate: str, p_solo: float, p_guided: float | None, rng: random.Random) -> bool:
        return rng.random() < 4.0 * p_solo * (1.0 - p_solo)


register(SelfPlay)  # loop/selfplay.py


def build_policy(cfg: ZpdConfig) -> Policy:
    """The configured policy (``cfg`` is the whole ZpdConfig)."""
    return build_policy_for(cfg.curriculum, cfg.synthesis.spread)


def build_policy_for(cfg: CurriculumConfig, spread: float) -> Policy:
    return POLICIES[cfg.policy](cfg, spread)
