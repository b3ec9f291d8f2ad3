"""The attack suite, part 2: hostile programs in the code tool's sandbox. Each run returns (no
exception), writes nothing outside its box, writes at most ``max_total_bytes`` in all, and ends within
its wall-time limit."""

from __future__ import annotations

from pathlib import Path

from attacks_live import sandbox_cases


def test_every_hostile_program_is_contained(tmp_path: Path) -> None:
    outcomes = [run() for _name, run in sandbox_cases(tmp_path, seed=0)]
    failed = [f"{o.case}: {o.detail}" for o in outcomes if not o.handled]
    assert len(outcomes) >= 30
    assert not failed, "\n".join(failed)
