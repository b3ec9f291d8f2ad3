"""The ``[measure]`` and ``[exam]`` sections: how a new learner is measured and promoted.

This module imports nothing of zpd but ``Strict``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Strict


class MeasureConfig(Strict):
    gate: Literal["mcnemar", "tolerance"] = "mcnemar"
    """The promotion gate, on the eval set's validation part: 'mcnemar' holds a new learner when a
    one-sided exact McNemar test of its answers paired with the parent learner's gives p < ``gate_p`` for
    "worse"; 'tolerance' holds it when its validation accuracy is more than ``promotion_tolerance`` below
    the parent's."""

    gate_p: float = Field(0.1, gt=0, le=1)
    """mcnemar gate: the p-value below which a new learner counts as worse than its parent."""

    promotion_tolerance: float = Field(0.02, ge=0, le=1)
    """tolerance gate: a new learner whose validation accuracy drops by more than this is kept in its round
    but not made current."""

    validation_fraction: float = Field(0.5, gt=0, lt=1)
    """Share of each level's eval items that go to validation in domains that do not size their splits
    themselves (arithmetic does: ``domains.arithmetic.eval_validation_per_level``)."""

    max_tokens: int = Field(24, ge=1, le=65536)
    """Longest answer generated in MEASURE."""


class ExamConfig(Strict):
    admit_per_round: int = Field(12, ge=0, le=100_000)
    """Frontier items admitted to the exam per domain per round (0/k solo and k/k guided), instead of
    training."""

    max_items: int = Field(200, ge=1, le=1_000_000)
    """Upper bound on exam size; admission pauses while it is full."""

    graduate_ratio: float = Field(1.0, gt=0, le=1)
    """An exam item graduates (leaves the exam) when the learner solves it solo at this rate in MEASURE."""

    num_samples: int = Field(1, ge=1, le=64)
    """Solo samples per exam item in MEASURE (1 = greedy)."""
