"""The ablation bench's statistics on hand-made numbers whose answers are worked out in the comments."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Appended, not prepended: a bench/ script must never stand in for a library in this worker's later tests
# (test_ablation_pool.py: test_no_bench_script_is_named_like_an_installed_module).
sys.path.append(str(Path(__file__).resolve().parents[1] / "bench"))

from ablation_stats import (  # noqa: E402
    RoundPoint,
    at_budget,
    bootstrap_ci,
    bootstrap_diff_ci,
    copied,
    copied_results,
    discordant,
    mcnemar,
    normalised_auc,
    step_curve,
    tokens_to_target,
    work_correct,
)


def test_mcnemar_exact_tails() -> None:
    # 5 discordant pairs all for A: P(X >= 5 | n=5, 1/2) = 1/32; two-sided doubles it.
    assert mcnemar(5, 0, "greater") == pytest.approx(1 / 32)
    assert mcnemar(5, 0) == pytest.approx(2 / 32)
    assert mcnemar(5, 0, "less") == pytest.approx(1.0)
    # b=3, c=1: P(X >= 3 | n=4) = (4 + 1) / 16; the other tail P(X >= 1) = 15/16; two-sided = 10/16.
    assert mcnemar(3, 1, "greater") == pytest.approx(5 / 16)
    assert mcnemar(3, 1) == pytest.approx(10 / 16)
    # b=1, c=5, "greater": P(X >= 1 | n=6) = 63/64.
    assert mcnemar(1, 5, "greater") == pytest.approx(63 / 64)
    # Balanced: the two-sided p is capped at 1.
    assert mcnemar(2, 2) == 1.0
    assert mcnemar(0, 0, "greater") == 1.0
    with pytest.raises(ValueError):
        mcnemar(-1, 2)


def test_discordant_counts_only_shared_items() -> None:
    a = {1: True, 2: True, 3: False, 4: False, 9: True}
    b = {1: False, 2: True, 3: True, 4: False, 7: False}
    assert discordant(a, b) == (1, 1)  # item 1 for A, item 3 for B; 9 and 7 are not shared


def test_bootstrap_degenerate_and_seeded() -> None:
    one = bootstrap_ci([[True] * 10], n_boot=200)
    assert (one.mean, one.lo, one.hi) == (1.0, 1.0, 1.0)
    # Two seeds at 1 and 0: the seed resample alone gives 0, 0.5 or 1, so a 95 % CI spans [0, 1].
    spread = bootstrap_ci([[1, 1, 1], [0, 0, 0]], n_boot=2000, seed=3)
    assert spread.mean == 0.5
    assert spread.lo == 0.0 and spread.hi == 1.0
    again = bootstrap_ci([[1, 0, 1, 1], [0, 1, 0, 0]], n_boot=500, seed=7)
    assert again == bootstrap_ci([[1, 0, 1, 1], [0, 1, 0, 0]], n_boot=500, seed=7)
    assert again != bootstrap_ci([[1, 0, 1, 1], [0, 1, 0, 0]], n_boot=500, seed=8)


def test_bootstrap_width_matches_the_binomial_error() -> None:
    # One seed of 100 items at 0.5: the standard error is 0.05, so the 95 % CI is about 0.5 +- 0.098.
    ci = bootstrap_ci([[True] * 50 + [False] * 50], n_boot=4000, seed=1)
    assert ci.mean == 0.5
    assert 0.38 < ci.lo < 0.42 and 0.58 < ci.hi < 0.62
    with pytest.raises(ValueError):
        bootstrap_ci([[True], []])


def test_bootstrap_diff_is_paired_on_common_items() -> None:
    a = [{1: True, 2: True, 3: False}]
    b = [{1: False, 2: True, 3: False, 4: True}]
    d = bootstrap_diff_ci(a, b, n_boot=500)
    assert d.mean == pytest.approx(1 / 3)  # items 1-3: differences 1, 0, 0; item 4 is not paired
    assert d.lo >= 0.0 and d.hi <= 1.0
    # A always right where B is wrong, on every item of both seeds: the CI is the point 1.
    same = bootstrap_diff_ci([{1: True, 2: True}, {5: True}], [{1: False, 2: False}, {5: False}])
    assert (same.lo, same.hi) == (1.0, 1.0)


POINTS = [
    RoundPoint(0, 0, 0.1, True),
    RoundPoint(1, 100, 0.3, True),
    RoundPoint(2, 200, 0.0, False),  # a rejected candidate: the learner stays at 0.3
    RoundPoint(3, 300, 0.5, True),
    RoundPoint(4, 450, 0.9, True),  # past a budget of 400
]


def test_step_curve_holds_rejected_rounds() -> None:
    assert step_curve(POINTS) == [(0, 0.1), (100, 0.3), (200, 0.3), (300, 0.5), (450, 0.9)]
    with pytest.raises(ValueError):
        step_curve([RoundPoint(0, 0, None, True)])


def test_normalised_auc_by_hand() -> None:
    # budget 400: 0.1*100 + 0.3*100 + 0.3*100 + 0.5*100 = 120 -> 0.3 (round 4 is past the budget).
    assert normalised_auc(POINTS, 400) == pytest.approx(0.3)
    # budget 250: 0.1*100 + 0.3*100 + 0.3*50 = 55 -> 0.22.
    assert normalised_auc(POINTS, 250) == pytest.approx(0.22)
    # Had round 2 been read as a collapse to 0.0, the area at 400 would be 90/400; it is not.
    assert normalised_auc(POINTS, 400) != pytest.approx(90 / 400)


def test_tokens_to_target_and_budget_index() -> None:
    assert tokens_to_target(POINTS, 0.3, 400) == 100
    assert tokens_to_target(POINTS, 0.45, 400) == 300
    assert tokens_to_target(POINTS, 0.45, 250) is None
    assert tokens_to_target(POINTS, 0.8, 400) is None  # 0.9 comes only past the budget
    rejected_high = [RoundPoint(0, 0, 0.1, True), RoundPoint(1, 50, 0.9, False)]
    assert tokens_to_target(rejected_high, 0.5, 400) is None  # a rejected candidate is not the learner
    assert at_budget(POINTS, 400) == 3
    assert at_budget(POINTS, 10_000) == 4
    assert at_budget(POINTS, 99) == 0


def test_copied_means_the_worked_part_is_the_guidance() -> None:
    assert copied("7+8=15;5+6+1=12", "7+8=15;5+6+1=12>125")
    assert not copied("7+8;5+6+1", "7+8=15;5+6+1=12>125")  # the learner did the work the hint left out
    assert not copied("5;2;1", "125")  # no worked part


def test_copied_results_reads_the_step_results() -> None:
    # Seen in a pilot: the learner garbles an operand digit (8+3) but writes the scaffold's sums.
    assert copied_results("5+3=8;8+2=10", "5+3=8;8+3=10>108")
    assert not copied("5+3=8;8+2=10", "5+3=8;8+3=10>108")
    assert not copied_results("5+3=8;8+2=10", "5+3=8;8+2=11>118")  # a result of its own
    assert not copied_results("5+3;8+2", "5+3=8;8+2=10>108")  # a hint has no results to copy
    assert not copied_results("5+3=8", "108")


def test_work_correct_checks_the_columns() -> None:
    assert work_correct("85+23", "5+3=8;8+2=10>108")
    assert not work_correct("85+23", "5+3=8;8+3=10>108")  # right answer, wrong step
    assert not work_correct("85-23", "5-3=2>62")  # not an all-'+' prompt
    assert not work_correct("85+23", "108")
