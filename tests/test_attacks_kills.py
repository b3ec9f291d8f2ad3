"""The attack suite, part 4: kills and races. SIGKILL while seeding from a snapshot (the next start
recovers), processes racing for one directory's lock while refused starts delete the file (never two
holders), SIGKILL of ``zpd snapshot`` (the archive whole or absent, the state directory unchanged)."""

from __future__ import annotations

from pathlib import Path

import pytest
from attack_lib import cli
from attacks_live import kill_race_cases


@pytest.fixture(scope="module")
def seeded(round0_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("kills") / "state"
    code, err = cli("start", "--config", Path(__file__).parents[1] / "configs" / "smoke.toml", "--state-dir",
                    state,
                    "--rounds", "0", "--from-snapshot", round0_archive)
    assert code == 0, err
    return state


def test_kills_and_races_lose_nothing(round0_archive: Path, seeded: Path, tmp_path: Path) -> None:
    outcomes = [run() for _name, run in kill_race_cases(round0_archive, seeded, tmp_path, seed=0)]
    failed = [f"{o.case}: {o.detail}" for o in outcomes if not o.handled]
    assert len(outcomes) >= 30
    assert not failed, "\n".join(failed)
