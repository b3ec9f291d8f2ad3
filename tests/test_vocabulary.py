"""One vocabulary for fates and phases (issue 16): every list of them derives from configs/vocabulary.py."""

from __future__ import annotations

import ast
import re
import sqlite3
from pathlib import Path
from typing import get_args

from zpd.configs import vocabulary
from zpd.configs.schema import CurriculumConfig
from zpd.configs.vocabulary import (
    CALIBRATED_FATES,
    DAEMON_PHASES,
    FATES,
    ROUND_PHASES,
    DaemonState,
    Fate,
    Phase,
)

ROOT = Path(__file__).resolve().parents[1]


def test_every_name_has_a_docstring() -> None:
    tree = ast.parse((ROOT / "configs" / "vocabulary.py").read_text())
    seen = []
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        body = cls.body
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):  # an enum member
                nxt = body[i + 1] if i + 1 < len(body) else None
                assert isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant), (cls.name, i)
                seen.append(stmt.targets[0].id)
    assert sorted(seen) == sorted([*Fate.__members__, *Phase.__members__, *DaemonState.__members__])


def test_derived_tuples() -> None:
    assert FATES == ("pending", "mastered", "zpd", "beyond", "review", "exam", "eval", "dropped")
    assert set(CALIBRATED_FATES) == set(FATES) - {"pending", "eval", "dropped"}
    assert ROUND_PHASES == ("bootstrap", "synthesize", "calibrate", "train", "measure", "snapshot")
    assert DAEMON_PHASES == (*ROUND_PHASES, "idle", "stopping")
    assert vocabulary.DONE not in DAEMON_PHASES
    assert all(type(name) is str for name in (*FATES, *CALIBRATED_FATES, *DAEMON_PHASES))


def test_every_layer_lists_the_same_names() -> None:
    from zpd.loop import curriculum, metrics, report, round
    from zpd.store import readmodel, yields

    assert readmodel.FATES == list(FATES) and metrics.FATES == list(FATES)
    assert curriculum.FATES == CALIBRATED_FATES and yields.CALIBRATED_FATES == CALIBRATED_FATES
    assert report.BAND_FATES == list(CALIBRATED_FATES)
    assert metrics.PHASES == list(DAEMON_PHASES)
    assert list(round.PHASES) == list(ROUND_PHASES)
    assert round.FIRST_PHASE == {True: Phase.BOOTSTRAP, False: Phase.SYNTHESIZE}


def test_config_and_routing_use_the_vocabulary() -> None:
    from zpd.loop.curriculum import band_fate

    assert set(get_args(CurriculumConfig.model_fields["beyond_fate"].annotation)) <= set(CALIBRATED_FATES)
    cfg = CurriculumConfig()
    fates = {band_fate(cfg, p_solo, p_guided) for p_solo in (0.0, 0.5, 1.0) for p_guided in (None, 0.0, 1.0)}
    assert fates == {Fate.MASTERED, Fate.ZPD, Fate.BEYOND}


def test_design_doc_lists_the_same_fates() -> None:
    row = next(line for line in (ROOT / "docs" / "design.md").read_text().splitlines()
               if line.startswith("| fate |"))
    assert tuple(re.findall(r"`([a-z]+)`", row)) == FATES


def test_members_are_the_strings_the_store_holds() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE rounds (phase TEXT)")
    conn.execute("INSERT INTO rounds VALUES (?)", [Phase.SYNTHESIZE])
    assert conn.execute("SELECT phase, typeof(phase) FROM rounds").fetchall() == [("synthesize", "text")]
    assert f"{Fate.ZPD}" == "zpd" and Fate("beyond") is Fate.BEYOND
