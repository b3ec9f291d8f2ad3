"""The ``[synthesis]``, ``[calibration]`` and ``[curriculum]`` sections: making, measuring and routing tasks.

SYNTHESIZE draws candidates, CALIBRATE attempts them solo and guided, and the curriculum routes each to a
fate and decides what is trained on. This module imports nothing of zpd but ``Strict``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from .base import Strict


class SynthesisConfig(Strict):
    num_candidates: int = Field(96, ge=1, le=1_000_000)
    """New candidate tasks per domain per round."""

    spread: float = Field(1.5, ge=0, le=40)
    """Candidates' difficulty is drawn from [frontier - spread, frontier + spread], clipped to the domain."""

    escalate_fraction: float = Field(0.25, ge=0, le=1)
    """Share of candidates made by escalating last round's mastered tasks (the rest sampled fresh)."""

    max_tries_factor: int = Field(20, ge=1, le=1000)
    """Give up after num_candidates * this many draws (all duplicates: the domain is exhausted)."""


class CalibrationConfig(Strict):
    num_solo: int = Field(4, ge=1, le=64)
    """Solo attempts per task (the learner alone: the paper's LKP)."""

    num_guided: int = Field(3, ge=1, le=64)
    """Guided attempts per task (with guidance: the paper's MKO gets 3)."""

    temperature: float = Field(0.7, ge=0, le=5)
    """Sampling temperature of calibration attempts."""

    max_tokens: int = Field(24, ge=1, le=65536)
    """Longest answer generated, in tokens."""

    batch_size: int = Field(64, ge=1, le=65536)
    """Tasks calibrated (and committed to the store) per batch: the resume granularity."""

    adaptive: bool = True
    """Stop sampling a task once its fate is decided (a curtailed sequential test that decides as fixed k
    would; ``loop/calibrate.py``). False: every task gets num_solo solo and num_guided guided samples."""

    solo_stop_after_failures: int | None = Field(None, ge=1, le=64)
    """Adaptive only: decide a task failed alone once this many solo samples in a row, from the first, failed,
    even if fixed k could still call it mastered. None: exact (decides as fixed k). With a near-deterministic
    learner 1 saves most calls at a measured small disagreement (bench/results/curriculum)."""

    guided_stop_after_failures: int | None = Field(None, ge=1, le=64)
    """Adaptive only: decide a task failed with guidance once this many guided samples in a row, from the
    first, failed. None: exact."""


POLICY_ALIASES: dict[str, tuple[str, str]] = {
    "zpd-band": ("frontier", "zpd"),
    "uniform": ("uniform", "all-correct"),
    "fixed-schedule": ("schedule", "all-correct"),
    "bandit": ("bandit", "all-correct"),
    "learnability": ("uniform", "learnability"),
    "self-play": ("self-play", "zpd"),
}
"""``curriculum.policy`` (the one choice of issue 7) -> the (``source``, ``selection``) pair it stands for."""

Source = Literal["frontier", "uniform", "schedule", "bandit", "fixed-window", "pool", "self-play"]
Selection = Literal["zpd", "r-zero", "all-correct", "random", "learnability"]


class CurriculumConfig(Strict):
    """Three separate choices (issue 13): ``source`` (where a round's candidates come from), ``selection``
    (which calibrated tasks are trained on) and ``allocation`` (how candidates split across domains).
    ``policy``, the older single choice, is an alias for a (source, selection) pair:

    ==================  ============  ============
    policy              source        selection
    ==================  ============  ============
    ``zpd-band``        frontier      zpd
    ``uniform``         uniform       all-correct
    ``fixed-schedule``  schedule      all-correct
    ``bandit``          bandit        all-correct
    ``learnability``    uniform       learnability
    ``self-play``       self-play     zpd
    ==================  ============  ============

    A ``source`` or ``selection`` given beside a ``policy`` must agree with it (else a config error naming
    both keys). Without any of them: frontier and zpd. After validation ``source`` and ``selection`` are
    always set, and ``policy`` names the alias of the pair when there is one (else None).

    Change of meaning: the ``learnability`` policy used to keep each task with probability 4 p (1 - p);
    its selection now keeps the top N by p (1 - p), N the round's ZPD count (issue 13: a filter of about
    one task a round was a strawman)."""

    policy: Literal["zpd-band", "uniform", "fixed-schedule", "bandit", "learnability",
                    "self-play"] | None = None
    """An alias for a (source, selection) pair (the table above); None: the pair has no alias."""

    source: Source = "frontier"
    """Where a round's candidates come from (``loop/curriculum.py``). frontier: [frontier - spread,
    frontier + spread] plus escalations and simplifications of last round's tasks (AgentFrontier);
    uniform: difficulty uniform over the domain; schedule: a window sliding easy to hard over
    ``schedule_rounds``; bandit: SEC's difficulty-level bandit; fixed-window: difficulty uniform in
    ``window`` (independent of the learner); pool: read from ``pool_dir`` (``loop/pool.py``); self-play:
    the learner proposes them (``loop/selfplay.py``)."""

    selection: Selection = "zpd"
    """Which calibrated tasks are trained on (``loop/selection.py``; fates stay the measurement). zpd: fate
    zpd; r-zero: solo pass rate in ``rzero_band`` (R-Zero, Agent0); all-correct: every task with a correct
    answer, solo or guided; random: a random subset of the round's ZPD count (per domain); learnability:
    the top N by p (1 - p) of the solo pass rate, N the ZPD count (per domain)."""

    window: tuple[float, float] | None = None
    """fixed-window: the difficulty range [lo, hi] candidates are drawn from (clipped to each domain's
    range); None: each domain's whole range."""

    pool_dir: Path | None = None
    """pool: the folder of the pool files, ``round_NNNNNN.jsonl`` per round, one candidate per line
    with a Task's fields ``domain, difficulty, prompt, answer, guidance, canonical, meta``. A relative
    path in a config file is relative to that file (in ``--set``, to the working directory)."""

    rzero_band: tuple[float, float] = (0.3, 0.8)
    """r-zero: a task is selected when its solo pass rate p has lo <= p <= hi (R-Zero/Agent0: [0.3, 0.8])."""

    @model_validator(mode="before")
    @classmethod
    def _resolve_policy(cls, data: Any) -> Any:
        """Fill ``source``/``selection`` from ``policy``, refuse a disagreement, name the pair's alias."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in ("window", "rzero_band"):  # validated in Python's strict mode after this hook: no lists
            if isinstance(data.get(key), list):
                data[key] = tuple(data[key])
        policy = data.get("policy")
        if isinstance(policy, str) and policy in POLICY_ALIASES:
            for key, value in zip(("source", "selection"), POLICY_ALIASES[policy], strict=True):
                given = data.setdefault(key, value)
                if given != value:
                    raise ValueError(
                        f"curriculum.{key}: {given!r} disagrees with curriculum.policy = {policy!r}, which "
                        f"means source {POLICY_ALIASES[policy][0]!r} and selection "
                        f"{POLICY_ALIASES[policy][1]!r}; give either the policy or source and selection")
        elif policy is None:
            pair = (data.get("source", "frontier"), data.get("selection", "zpd"))
            data["policy"] = next((name for name, p in POLICY_ALIASES.items() if p == pair), None)
        return data

    @model_validator(mode="after")
    def _ranges(self) -> CurriculumConfig:
        for key, (lo, hi) in (("window", self.window or (0.0, 0.0)), ("rzero_band", self.rzero_band)):
            if lo > hi:
                raise ValueError(f"curriculum.{key}: lo {lo} is above hi {hi}")
        if not 0.0 <= self.rzero_band[0] <= self.rzero_band[1] <= 1.0:
            raise ValueError(f"curriculum.rzero_band: {list(self.rzero_band)} is not within [0, 1]")
        if self.source == "pool" and not self.pool_dir:
            raise ValueError("curriculum.pool_dir: source 'pool' needs the folder of its round files")
        return self

    schedule_rounds: int = Field(10, ge=1, le=100_000)
    """fixed-schedule: rounds over which the window slides from the easiest to the hardest difficulty."""

    bandit_temperature: float = Field(0.1, gt=0, le=100)
    """bandit: softmax temperature over arm values (rewards are mean absolute advantages, at most 0.5)."""

    bandit_step: float = Field(0.5, gt=0, le=1)
    """bandit: TD(0) step size alpha in Q <- Q + alpha (r - Q)."""

    bandit_initial_value: float = Field(0.5, ge=0, le=1)
    """bandit: Q of an arm never tried (optimistic: every level gets tried early)."""

    selfplay_group_size: int = Field(4, ge=2, le=256)
    """self-play: proposals sampled per proposer prompt (the GRPO group); a round samples
    ceil(num_candidates / this) groups, at levels drawn around the frontier."""

    selfplay_temperature: float = Field(1.0, gt=0, le=10)
    """self-play: sampling temperature of the proposer."""

    selfplay_max_tokens: int = Field(32, ge=1, le=65536)
    """self-play: longest proposal, in tokens."""

    selfplay_reward: Literal["learnability", "azr"] = "learnability"
    """self-play: reward of a valid proposal from its task's solo pass rate p (CALIBRATE). learnability:
    min(p, 1 - p) (R-Zero, Agent0); azr: 1 - p when 0 < p < 1, else 0 (Absolute Zero)."""

    selfplay_duplicate_penalty: float = Field(0.5, ge=0, le=10)
    """self-play: a proposal that parses but duplicates a stored task (or an earlier proposal of the
    round) earns minus this."""

    selfplay_invalid_reward: float = Field(-1.0, ge=-10, le=0)
    """self-play: reward of a proposal that is not a task of the domain (Agent0: -1)."""

    selfplay_learning_rate: float = Field(1e-4, gt=0, le=1)
    """self-play: learning rate of the proposer's GRPO update (TRAIN, after the solver's training)."""

    selfplay_steps: int = Field(2, ge=1, le=1000)
    """self-play: GRPO optimiser steps over the round's proposal groups (the first is on-policy)."""

    selfplay_bootstrap_fraction: float = Field(0.05, ge=0, le=1)
    """self-play: share of the bootstrap set (and of its replay) that teaches the proposer format,
    ``propose:<level>`` -> an expression of that level."""

    selfplay_format_repair_below: float = Field(0.5, ge=0, le=1)
    """self-play: when fewer than this share of a round's proposals are valid, the proposer's TRAIN step
    first fine-tunes on the format (the bootstrap's proposer rows, mixed with as many of its solver rows)
    before the GRPO update: the cold start of a learner whose round 0 was not self-play. 0: never."""

    solo_max_ratio: float = Field(0.25, ge=0, le=1)
    """A task 'fails alone' when its solo pass rate is at most this (else it is mastered)."""

    guided_min_ratio: float = Field(0.3, ge=0, le=1)
    """A task failed alone is in the ZPD when its guided pass rate is at least this (1 of 3 by default)."""

    beyond_fate: Literal["beyond", "review"] = "beyond"
    """Where a task failed even with guidance goes: deferred, or the human-review queue (the paper's
    D_human)."""

    allocation: Literal["even", "yield"] = "even"
    """The third choice: how a round's candidates are split across domains (``loop/allocation.py``): even
    (num_candidates each), or yield (the round total split by each domain's measured ZPD yield, with a
    floor per domain)."""

    allocation_floor_ratio: float = Field(0.25, ge=0, le=1)
    """yield: every domain gets at least this share of an even split (exploration, so yields stay
    measured)."""

    allocation_step: float = Field(0.5, gt=0, le=1)
    """yield: step alpha of the per-domain yield estimate, Y <- Y + alpha (yield of the round - Y)."""

    allocation_initial_value: float = Field(0.5, ge=0, le=1)
    """yield: a domain's yield estimate before it has been measured (optimistic: every domain gets tried)."""
