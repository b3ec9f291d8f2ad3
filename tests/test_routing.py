"""Routing, exam membership and the frontier estimate: the decisions each round makes."""

from __future__ import annotations

from pathlib import Path

import pytest

from zpd.configs.schema import CurriculumConfig
from zpd.loop import curriculum
from zpd.loop.exam import admissible
from zpd.loop.measure import estimate_frontier
from zpd.store.db import open_store
from zpd.store.ledger_exam import version_items


def test_zpd_band_routes_as_agentfrontier() -> None:
    cfg = CurriculumConfig()
    assert curriculum.band_fate(cfg, 1.0,
                                None) == "mastered"  # the learner solves it alone -> pre-training pool
    assert curriculum.band_fate(cfg, 0.0, 1 / 3) == "zpd"  # fails alone, 1 of 3 guided -> training
    assert curriculum.band_fate(cfg, 0.25, 0.5) == "zpd"
    assert curriculum.band_fate(cfg, 0.0, 0.0) == "beyond"
    assert curriculum.band_fate(CurriculumConfig(beyond_fate="review"), 0.0,
                                0.0) == "review"  # the paper's D_human
    assert curriculum.band_fate(CurriculumConfig(solo_max_ratio=0.0), 0.25, 1.0) == "mastered"
    assert not curriculum.needs_guided(cfg, 0.5) and curriculum.needs_guided(cfg, 0.0)


def test_exam_admission_is_stricter_than_the_band() -> None:
    assert admissible(0.0, 1.0)
    assert not admissible(0.0, 2 / 3)
    assert not admissible(0.25, 1.0)
    assert not admissible(0.0, None)


def test_exam_versions_rebuild_from_the_store(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    for i in range(1, 5):
        db.execute("INSERT INTO tasks (id, domain, difficulty, prompt, answer, guidance, canonical, "
                   "content_hash, round, fate)"
                   " VALUES (?, 'd', 1, 'p', 'a', 'g', 'c', ?, 1, 'exam')", [i, f"h{i}"])
    db.execute("INSERT INTO exam_items VALUES (1, 'd', 1, 2)")  # admitted in 1, graduated in 2
    db.execute("INSERT INTO exam_items VALUES (2, 'd', 1, NULL)")
    db.execute("INSERT INTO exam_items VALUES (3, 'd', 2, NULL)")
    db.execute("INSERT INTO exam_items VALUES (4, 'd', 3, 3)")
    assert version_items(db, 1) == [1, 2]
    assert version_items(db, 2) == [1, 2, 3]  # item 1 is still taken in the round it graduates
    assert version_items(db, 3) == [2, 3, 4]
    assert version_items(db, 4) == [2, 3]


@pytest.mark.parametrize(
    "curve, expected",
    [
        ({1: 1.0, 2: 1.0, 3: 0.0}, 2.5),
        ({1: 1.0, 2: 0.75, 3: 0.25, 4: 0.0}, 2.5),
        ({1: 0.0, 2: 0.0}, 0.5),
        ({1: 1.0, 2: 1.0}, 2.0),
        ({1: 1.0, 2: 0.2, 3: 0.9}, 1.625),  # a lucky hard level does not move the frontier past a failed one
    ],
)
def test_frontier_is_where_solo_accuracy_crosses_half(curve: dict, expected: float) -> None:
    assert estimate_frontier(curve) == pytest.approx(expected)
