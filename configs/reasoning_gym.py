"""``[domains.reasoning_gym]``: reasoning-gym's procedural task families as zpd domains
(``loop/domains/reasoning_gym.py``). Each family is its own domain instance, ``rg:<family>``.

This module imports nothing of zpd (nor reasoning-gym: family names are checked when the domain is built).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Named groups ``families`` may give instead of a list. "all" is every family reasoning-gym registers
# (resolved when the domain is built); the others are fixed lists.
GROUPS: dict[str, list[str]] = {
    # Short questions with short answers: the embedded char-level learner passes some items of the first two
    # at level 0 (its answer priors), and of none of the others measured (bench/results/reasoning-gym.md).
    "tiny": ["letter_counting", "count_bits", "basic_arithmetic"],
    "arithmetic": ["basic_arithmetic", "chain_sum", "decimal_chain_sum", "products", "gcd", "lcm",
                   "simple_equations", "count_bits", "leg_counting", "fraction_simplification"],
    "all": [],
}


class ReasoningGymConfig(BaseModel):
    """reasoning-gym families as domains (off by default; needs ``pip install 'zpd[reasoning-gym]'``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = False
    """Use reasoning-gym families as domains."""

    families: list[str] | str = Field(default_factory=lambda: list(GROUPS["tiny"]))
    """The families (reasoning-gym dataset names, each the domain ``rg:<family>``), or a group name
    (``tiny``, ``arithmetic``, ``all``). Fixed for a run, like the set of domains. Families that fail the
    grading check are left out (logged)."""

    pass_threshold: float = Field(1.0, gt=0, le=1)
    """An answer passes when reasoning-gym's ``score_answer`` gives at least this (the raw score is
    stored with each calibration attempt)."""

    max_level: int | None = Field(None, ge=0, le=100)
    """Highest scalar level used (see ``difficulty``). None: the family's own last level."""

    difficulty: Literal["global", "attributes"] = "global"
    """A family's scalar difficulty, its level: ``global``, reasoning-gym's global level (every attribute at
    min(level, its last level)); ``attributes``, the sum of the attribute levels (each item at one
    combination summing to its level, drawn from its seed), so that one attribute can grow while the
    others stay: chain_sum's level 1 is three one-digit terms or two two-digit ones, not three two-digit
    ones."""

    attribute_max: dict[str, int] = Field(default_factory=dict)
    """Highest level per curriculum attribute, by name, in every family that has the attribute (others
    ignore it), under either ``difficulty``: ``{num_digits = 0}`` keeps chain_sum's terms one digit, its
    level then the number of terms less two."""

    range_mode: Literal["upper_bound", "inclusive"] = "upper_bound"
    """How a level becomes a configuration: ``upper_bound`` draws ranged attributes from the level's own
    segment (levels are disjoint bands), ``inclusive`` from level 0 up to it (reasoning-gym's default)."""

    response: Literal["answer_tags", "worked"] = "answer_tags"
    """Response format: ``answer_tags`` (reasoning-gym's ``<answer>...</answer>``; the prompt asks for it)
    or ``worked`` (work, then '>' and the answer; what the embedded learner writes). One extractor each."""

    instruction: str = Field("Give your final answer as <answer>...</answer>.", max_length=1000)
    """Appended to every prompt under ``answer_tags`` (reasoning-gym's own prompts do not ask for tags)."""

    guidance: Literal["auto", "worked", "demos", "none"] = "auto"
    """Offline guidance of guided attempts (without a [teacher]): ``worked`` steps from the entry's metadata
    where reasoning-gym has them, ``demos`` (solved items of the same family and level as in-context
    examples), ``auto`` (worked steps, else demos), ``none``. Guidance never contains the answer string."""

    num_demos: int = Field(2, ge=1, le=16)
    """Solved examples in a ``demos`` guidance."""

    unguided: Literal["drop", "keep"] = "drop"
    """A family with no offline guidance makes no ZPD claim without a [teacher]: ``drop`` leaves it out
    (logged), ``keep`` keeps it (set this when a [teacher] makes the guided attempts)."""

    teacher_guidance: Literal["attempt", "hint"] = "attempt"
    """With a [teacher]: ``attempt``, the teacher makes the guided attempts (the paper's MKO); ``hint``, the
    teacher writes a hint for each candidate once round 0 is committed (``hint_prompt``; stored as the
    task's guidance, dropped when it contains the answer string) and the learner makes the guided attempts
    with it. Hints need every enabled domain to be reasoning-gym families (else the teacher attempts)."""

    hint_prompt: str = Field(
        "Give a short hint for solving this problem. Do not state the final answer.\n\n{question}",
        max_length=4000)
    """The teacher's hint request under ``teacher_guidance = "hint"``; ``{question}``: the item's question."""

    hint_max_tokens: int = Field(128, ge=1, le=100_000)
    """Longest teacher hint, in tokens."""

    check_items: int = Field(20, ge=2, le=1000)
    """Items of the grading check: the reference answer must score 1.0, and a garbage string and another
    item's answer below ``pass_threshold``, on each; a family failing it is left out."""

    eval_seed: int = Field(0, ge=0)
    """Seed of the frozen eval sets (and of the grading check), independent of ``run.seed`` so that runs
    with different seeds measure on the same items."""

    eval_per_level: int = Field(8, ge=1, le=10_000)
    """Frozen eval items per family and level (before ``max_eval_items``)."""

    max_eval_items: int = Field(400, ge=1, le=1_000_000)
    """Total cap on eval items over all families: MEASURE answers at most this many per round."""

    validation_ratio: float = Field(0.5, ge=0, le=1)
    """Share of each level's eval items tagged ``validation`` (the rest ``test``) in the task meta."""

    eval_split: Literal["all", "validation"] = "all"
    """What MEASURE reads as the eval set: ``all`` (validation and test items, one set), or ``validation``
    only: the test items are then held out of the run (never stored, measured or trained on: candidates
    equal to one are drawn again), for a final report outside the loop (``Family.test_items``)."""

    @field_validator("families")
    @classmethod
    def _families(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, str) and v not in GROUPS:
            raise ValueError(f"no family group {v!r}; groups: {', '.join(sorted(GROUPS))} (or give a list)")
        if isinstance(v, list):
            if not v:
                raise ValueError("must name at least one family")
            if len(set(v)) != len(v):
                raise ValueError("names a family twice")
        return v

    @field_validator("attribute_max")
    @classmethod
    def _attribute_max(cls, v: dict[str, int]) -> dict[str, int]:
        bad = [k for k, level in v.items() if level < 0]
        if bad:
            raise ValueError(f"{bad[0]}: an attribute level is 0 or more")
        return v

    @field_validator("hint_prompt")
    @classmethod
    def _hint_prompt(cls, v: str) -> str:
        if "{question}" not in v:
            raise ValueError("must contain {question}")
        return v

    def ladder(self) -> tuple[str, tuple[tuple[str, int], ...]]:
        """``difficulty`` and ``attribute_max`` as the domain's ``Ladder`` fields (mode, sorted caps)."""
        return self.difficulty, tuple(sorted(self.attribute_max.items()))

    def family_names(self) -> list[str] | None:
        """The configured families (None: the group ``all``, resolved by the domain)."""
        if isinstance(self.families, str):
            return list(GROUPS[self.families]) or None
        return list(self.families)
