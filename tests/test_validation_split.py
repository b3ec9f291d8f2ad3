"""The eval set's validation / test split (issue 13): sizes, determinism, the McNemar gate, and per-item
outcomes that rebuild the reported figures. Real stores (SQLite files through ``open_store``) and the
real MEASURE phase: its answers are stored before it runs (the product's resume path: a batch already
answered is read back, not generated again), so the outcomes are hand-made and known."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from harness import ROOT

from zpd.configs.load import load_config
from zpd.configs.schema import ArithmeticConfig
from zpd.loop import bootstrap, eval_split, measure
from zpd.loop.context import RunContext
from zpd.loop.domains.arithmetic import Arithmetic
from zpd.loop.domains.registry import build_domains
from zpd.store import ledger_exam, ledger_rounds, ledger_tasks
from zpd.store.db import open_store

SMOKE = ROOT / "configs" / "smoke.toml"
DEFAULT = ROOT / "configs" / "default.toml"


def _ctx(tmp_path: Path, *overrides: str, seed: int = 0) -> RunContext:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = load_config(SMOKE, [f"run.seed={seed}", *overrides])
    db = open_store(tmp_path / "state.db")
    return RunContext(tmp_path, cfg, db, build_domains(cfg.domains), None, logging.getLogger("test"))


def _eval_set(ctx: RunContext) -> list[ledger_tasks.TaskRow]:
    with ctx.db.atomic():
        bootstrap.make_eval_sets(ctx)
    return ledger_tasks.eval_tasks(ctx.db, list(ctx.domains))


# -- sizes ---------------------------------------------------------------------------------------------
def test_default_arithmetic_sizes_give_100_test_items_at_levels_2_to_L_and_a_third_at_most() -> None:
    cfg = load_config(DEFAULT, []).domains.arithmetic
    domain = Arithmetic(cfg)
    sizes = {level: domain.eval_sizes(level) for level in domain.eval_levels()}
    assert cfg.eval_top_level == 3
    assert sizes[2.0] == sizes[3.0] == (100, 100)
    assert domain.distinct_tasks(1.0) == 55 and sum(sizes[1.0]) == 18   # a third of one-digit addition
    assert all(sizes[float(level)] == (10, 10) for level in range(4, 9))   # above L: a smaller count
    assert all(sum(s) <= max(2, domain.distinct_tasks(lvl) // 3) for lvl, s in sizes.items())
    assert sum(sum(s) for s in sizes.values()) == 518   # MEASURE's eval items per round (docs/design.md)


def test_distinct_tasks_counts_what_make_task_can_make() -> None:
    import random

    domain = Arithmetic(ArithmeticConfig(max_difficulty=2))
    rng = random.Random(0)
    seen = {domain.make_task(1.0, rng).canonical for _ in range(5000)}
    assert len(seen) == domain.distinct_tasks(1.0) == 55


def test_eval_set_is_made_at_the_configured_sizes_and_split_disjointly(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "domains.arithmetic.eval_top_level=3", "domains.arithmetic.eval_test_per_level=7",
               "domains.arithmetic.eval_validation_per_level=5", "domains.arithmetic.eval_per_level=6")
    rows = _eval_set(ctx)
    with ctx.db.atomic():
        splits = eval_split.assign(ctx, rows)
    assert set(splits) == {r["id"] for r in rows} and set(splits.values()) == {"validation", "test"}
    stored = ledger_exam.eval_splits(ctx.db)
    assert stored == splits
    per_level: dict[tuple[float, str], int] = {}
    for r in rows:
        key = (r["difficulty"], splits[r["id"]])
        per_level[key] = per_level.get(key, 0) + 1
    assert per_level == {(1.0, "validation"): 3, (1.0, "test"): 3, (2.0, "validation"): 5, (2.0, "test"): 7,
                         (3.0, "validation"): 5, (3.0, "test"): 7, (4.0, "validation"): 3, (4.0, "test"): 3}


def test_split_is_deterministic_from_the_seed_and_fixed_once_stored(tmp_path: Path) -> None:
    a = _ctx(tmp_path / "a")
    b = _ctx(tmp_path / "b")
    other = _ctx(tmp_path / "c", seed=1)
    rows_a, rows_b = _eval_set(a), _eval_set(b)
    with a.db.atomic(), b.db.atomic():
        split_a, split_b = eval_split.assign(a, rows_a), eval_split.assign(b, rows_b)
    by_hash = {r["content_hash"]: split_a[r["id"]] for r in rows_a}
    assert by_hash == {r["content_hash"]: split_b[r["id"]] for r in rows_b}   # same seed: same split
    # Another seed orders the same items differently (over the 16 items of smoke, some item moves).
    moved = eval_split.split_of(other.domains, 1, 0.5, rows_a)
    assert moved != split_a and sorted(moved.values()) == sorted(split_a.values())
    # Stored once, a split is kept: a second assign (another round) changes nothing.
    a.db.execute("UPDATE eval_splits SET split = 'test' WHERE split = 'validation'")
    with a.db.atomic():
        again = eval_split.assign(a, rows_a)
    assert set(again.values()) == {"test"}


def test_domains_without_their_own_sizes_split_each_level_by_validation_fraction() -> None:
    rows = [{"id": i, "domain": "plain", "difficulty": float(i % 3), "content_hash": f"h{i}"}
            for i in range(30)]
    split = eval_split.split_of({}, 0, 0.3, rows)
    for level in range(3):
        ids = [r["id"] for r in rows if r["difficulty"] == level]
        assert sum(split[i] == "validation" for i in ids) == 3   # round(10 * 0.3)
    assert eval_split.validation_count(1, 1, 1) == 1 and eval_split.validation_count(2, 99, 1) == 1


# -- the McNemar p-value --------------------------------------------------------------------------------
def test_mcnemar_p_on_hand_made_outcomes() -> None:
    parent = {1: True, 2: True, 3: True, 4: True, 5: False, 6: True, 7: False}
    new = {1: False, 2: False, 3: False, 4: True, 5: True, 6: True, 7: False, 8: False}  # 8: unpaired
    # b = 3 (items 1-3), c = 1 (item 5): P(Binom(4, 1/2) >= 3) = (4 + 1) / 16
    assert measure.mcnemar_p(parent, new) == pytest.approx(5 / 16)
    assert measure.mcnemar_p(parent, {**parent, 1: False, 2: False, 3: False, 4: False, 6: False}) == (
        pytest.approx(1 / 32))
    assert measure.mcnemar_p(parent, new) == pytest.approx(
        sum(math.comb(4, k) for k in (3, 4)) / 16)
    assert measure.mcnemar_p(parent, parent) == 1.0   # no discordant pair: no evidence of worse
    assert measure.mcnemar_p(new, parent) == pytest.approx(15 / 16)  # better: b = 1, c = 3


# -- MEASURE over stored answers --------------------------------------------------------------------------
def _measure(ctx: RunContext, round_n: int, parent: int | None, correct: dict[int, bool]) -> None:
    """Round ``round_n`` at MEASURE with every eval answer already stored (``correct`` per task id), then
    the real phase."""
    with ctx.db.atomic():
        ledger_rounds.create_round(ctx.db, round_n, phase="measure", parent_learner_round=parent,
                                   config_json="{}")
        ledger_exam.insert_answers(ctx.db, [
            dict(round=round_n, kind="eval", task_id=i, sample_idx=0, output="x", correct=int(ok))
            for i, ok in correct.items()])
    measure.run(ctx, round_n)


def _split_ctx(tmp_path: Path, *overrides: str) -> tuple[RunContext, dict[int, str], list]:
    ctx = _ctx(tmp_path, "domains.arithmetic.eval_per_level=18", *overrides)
    rows = _eval_set(ctx)
    with ctx.db.atomic():
        splits = eval_split.assign(ctx, rows)
    return ctx, splits, rows


def test_per_item_outcomes_rebuild_the_reported_accuracies(tmp_path: Path) -> None:
    ctx, splits, rows = _split_ctx(tmp_path)
    correct = {r["id"]: (r["id"] * 7) % 5 < 2 + (r["difficulty"] < 2) for r in rows}
    _measure(ctx, 0, None, correct)
    row = ctx.round_row(0)
    for split, acc, by_domain in (("test", row.eval_accuracy, row.eval_by_domain_json),
                                  ("validation", row.validation_accuracy, row.validation_by_domain_json)):
        outcomes = ledger_exam.item_outcomes(ctx.db, 0, split)
        assert set(outcomes) == {i for i, s in splits.items() if s == split}
        assert outcomes == {i: correct[i] for i in outcomes}
        assert acc == sum(outcomes.values()) / len(outcomes)   # exactly: the same sum over the same items
        assert json.loads(by_domain or "{}") == {"arithmetic": acc}
    assert row.eval_accuracy != row.validation_accuracy   # two parts, two figures (this outcome pattern)
    with pytest.raises(ValueError, match="split"):
        ledger_exam.item_outcomes(ctx.db, 0, "train")  # type: ignore[arg-type]  # the error under test


def test_the_frontier_reads_validation_only(tmp_path: Path) -> None:
    frontiers, accuracies = [], []
    for name, flip_test in (("a", False), ("b", True)):
        ctx, splits, rows = _split_ctx(tmp_path / name)
        correct = {r["id"]: r["difficulty"] < 2 or (r["difficulty"] < 3 and r["id"] % 2 == 0) for r in rows}
        if flip_test:  # every test answer turned around: the test figures move, the frontier must not
            correct = {i: ok != (splits[i] == "test") for i, ok in correct.items()}
        _measure(ctx, 0, None, correct)
        frontiers.append(ledger_rounds.frontier_of(ctx.db, 0))
        accuracies.append(ctx.round_row(0).eval_accuracy)
    assert frontiers[0] == frontiers[1] and 1.0 < frontiers[0]["arithmetic"] < 3.0
    assert accuracies[0] != accuracies[1]


def _gate_case(tmp_path: Path, wrong: str, *overrides: str) -> ledger_rounds.RoundRow:
    """Round 0 answers everything right; round 1 (from round 0's learner) gets the ``wrong`` split's
    level-1 and level-2 items wrong."""
    ctx, splits, rows = _split_ctx(tmp_path, *overrides)
    _measure(ctx, 0, None, {r["id"]: True for r in rows})
    _measure(ctx, 1, 0, {r["id"]: not (splits[r["id"]] == wrong and r["difficulty"] <= 2) for r in rows})
    return ctx.round_row(1)


def test_the_mcnemar_gate_holds_a_learner_worse_on_validation(tmp_path: Path) -> None:
    held = _gate_case(tmp_path / "v", "validation")
    assert (held.promoted, held.current_learner_round) == (0, 0)
    # The same losses on test items only: the gate does not read test, so the learner is promoted.
    passed = _gate_case(tmp_path / "t", "test")
    assert (passed.promoted, passed.current_learner_round) == (1, 1)
    assert passed.eval_accuracy is not None and passed.eval_accuracy < 1.0 == passed.validation_accuracy


def test_the_mcnemar_gate_needs_p_below_gate_p(tmp_path: Path) -> None:
    # 9 + 9 validation items lost, none gained: p = 2**-18 (3.8e-6): held when gate_p is above it.
    held = _gate_case(tmp_path / "a", "validation", "measure.gate_p=1e-5")
    assert (held.promoted, held.current_learner_round) == (0, 0)
    assert _gate_case(tmp_path / "c", "validation", "measure.gate_p=1e-6").promoted == 1


def test_the_tolerance_gate_compares_validation_accuracy(tmp_path: Path) -> None:
    held = _gate_case(tmp_path / "v", "validation", "measure.gate=tolerance",
                      "measure.promotion_tolerance=0.3")
    assert held.validation_accuracy is not None and held.validation_accuracy < 0.7
    assert held.promoted == 0
    lenient = _gate_case(tmp_path / "l", "validation", "measure.gate=tolerance",
                         "measure.promotion_tolerance=0.9")
    assert lenient.promoted == 1


def test_a_domains_own_validation_tags_are_kept() -> None:
    rows = [{"id": i, "domain": "rg:x", "difficulty": 1.0, "content_hash": f"h{i}",
             "meta_json": json.dumps({"rg": {"split": "validation" if i < 3 else "test"}})} for i in range(4)]
    assert eval_split.split_of({}, 0, 0.5, rows) == {0: "validation", 1: "validation", 2: "validation",
                                                     3: "test"}


def test_the_report_shows_the_validation_part_beside_the_test_part() -> None:
    from zpd.loop.report import RoundData, RunData, round_table

    both = round_table(RunData(rounds=[RoundData(round=1, eval_accuracy=0.25, validation_accuracy=0.625)]))
    header = both.splitlines()[0]
    assert "| eval acc | validation acc |" in header and "| 0.2500 | 0.6250 |" in both
    old = round_table(RunData(rounds=[RoundData(round=1, eval_accuracy=0.25)]))   # a store before m010
    assert "validation acc" not in old
