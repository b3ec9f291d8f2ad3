"""The dataset domain's graders, math-verify included (symbolic equivalence in a killable worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zpd.configs.load import ConfigError, load_config
from zpd.loop.domains.dataset_grading import get_grader

ROOT = Path(__file__).resolve().parents[1]


def test_math_verify_grades_equivalent_forms() -> None:
    grade = get_grader("math-verify")
    assert grade("1/2", "0.5", {})
    assert grade("\\frac{1}{2}", "1/2", {})
    assert not grade("3", "4", {})


def test_dataset_config_accepts_math_verify_and_refuses_the_judge_for_now() -> None:
    cfg = load_config(ROOT / "configs" / "dataset.toml", ["domains.dataset.grader=math-verify"])
    assert cfg.domains.dataset.grader == "math-verify"
    with pytest.raises(ConfigError, match="llm-judge"):
        load_config(ROOT / "configs" / "dataset.toml", ["domains.dataset.grader=llm-judge"])
