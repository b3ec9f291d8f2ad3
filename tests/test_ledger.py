"""The store's typed round API (store/ledger_rounds.py) and the per-round view of the run context."""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path

import pytest

from zpd.configs.load import load_config, to_json
from zpd.loop.context import RunContext
from zpd.loop.domains.registry import build_domains
from zpd.store import ledger_rounds
from zpd.store.db import open_store

ROOT = Path(__file__).resolve().parents[1]


def test_round_row_has_exactly_the_columns_of_a_migrated_store(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    columns = {row[1] for row in db.execute("PRAGMA table_info(rounds)").fetchall()}
    assert columns == {f.name for f in fields(ledger_rounds.RoundRow)}
    assert ledger_rounds.UPDATABLE < columns


def test_advance_sets_typed_fields_and_refuses_an_unknown_column(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    with db.atomic():
        ledger_rounds.create_round(db, 1, phase="synthesize", parent_learner_round=0, config_json="{}")
        ledger_rounds.create_round(db, 1, phase="train", parent_learner_round=7, config_json="{}")  # a resume
        ledger_rounds.advance(db, 1, "calibrate", num_candidates=12, num_duplicates=3)
    row = ledger_rounds.read_round(db, 1)
    assert (row.phase, row.status, row.parent_learner_round) == ("calibrate", "running", 0)
    assert (row.num_candidates, row.num_duplicates, row.failures) == (12, 3, 0)
    with pytest.raises(ValueError, match="no_such_column"):
        ledger_rounds.advance(db, 1, "train", **{"no_such_column": 1})
    with pytest.raises(ValueError, match="status"):  # a column the phases do not set through advance
        ledger_rounds.update_round(db, 1, **{"status": "committed"})
    assert ledger_rounds.read_round(db, 1).phase == "calibrate"
    with pytest.raises(KeyError):
        ledger_rounds.read_round(db, 2)


def test_phase_seconds_add_up_over_retries(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    ledger_rounds.create_round(db, 0, phase="bootstrap", parent_learner_round=None, config_json="{}")
    ledger_rounds.add_phase_seconds(db, 0, "bootstrap", 1.25)
    ledger_rounds.add_phase_seconds(db, 0, "bootstrap", 0.5)
    ledger_rounds.record_failure(db, 0, "boom")
    row = ledger_rounds.read_round(db, 0)
    assert row.timings_json == '{"bootstrap": 1.75}' and (row.failures, row.last_error) == (1, "boom")


def test_a_round_view_has_its_own_config_and_shares_the_engines(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "smoke.toml", [])
    other = load_config(ROOT / "configs" / "smoke.toml", ["calibration.num_solo=3"])
    db = open_store(tmp_path / "state.db")
    ctx = RunContext(tmp_path, cfg, db, build_domains(cfg.domains), None, logging.getLogger("t"))
    view = ctx.for_round(other)
    assert view.cfg.calibration.num_solo == 3 and ctx.cfg.calibration.num_solo != 3
    assert to_json(ctx.cfg) == to_json(cfg)  # the daemon's context is not changed
    view.trainer_worker = "worker"
    assert ctx.trainer_worker == "worker" and view.db is ctx.db
    with pytest.raises(AttributeError):
        view.cfg = cfg
