"""The attack suite, part 1: snapshot archives, configs and user files (dataset rows, corpus folders).

Every case must be handled (tests/attack_lib.py): one line, exit 2 or 4, no traceback, not one byte of
the state directory changed, memory under twice the baseline. Cases are seeded and generated
(tests/attack_cases.py); ``python bench/attacks.py`` prints the same table.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from attack_cases import archive_cases, config_cases, user_file_cases


def _run_all(cases) -> None:
    outcomes = [run() for _name, run in cases]
    failed = [f"{o.case}: {o.detail}" for o in outcomes if not o.handled]
    assert len(outcomes) >= 30
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("seed", [0])
def test_every_malformed_archive_is_refused_in_one_line_before_a_byte_is_written(
        round0_archive: Path, tmp_path: Path, seed: int) -> None:
    _run_all(archive_cases(round0_archive, tmp_path, seed))


def test_every_malformed_config_is_refused_in_one_line_and_creates_nothing(tmp_path: Path) -> None:
    _run_all(config_cases(tmp_path, seed=0))


def test_every_bad_row_is_refused_naming_its_line_or_skipped_and_counted(tmp_path: Path) -> None:
    _run_all(user_file_cases(tmp_path, seed=0))
