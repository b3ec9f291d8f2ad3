"""The ablation's shared pool: a function of (seed, round) alone, inside its window, leaving out what is
stored, written whole in the pool source's format."""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Appended, not prepended: a bench/ script must never stand in for a library in this worker's later tests
# (test_no_bench_script_is_named_like_an_installed_module).
sys.path.append(str(Path(__file__).resolve().parents[1] / "bench"))

from ablation_pool import make_pool, pool_path, read_pool, write_pool  # noqa: E402

from zpd.configs.schema import ZpdConfig  # noqa: E402


def test_pool_is_deterministic_windowed_and_excludes() -> None:
    cfg = ZpdConfig()
    a = make_pool(cfg, 0, 3, 50, (2.0, 3.0), set())
    assert a == make_pool(cfg, 0, 3, 50, (2.0, 3.0), set())
    assert a != make_pool(cfg, 0, 4, 50, (2.0, 3.0), set())  # another round, another pool
    assert a != make_pool(cfg, 1, 3, 50, (2.0, 3.0), set())  # another seed, another pool
    assert len(a) == 50 and len({t.content_hash for t in a}) == 50
    assert all(2.0 <= t.difficulty <= 3.0 for t in a)
    gone = {t.content_hash for t in a[:10]}
    b = make_pool(cfg, 0, 3, 50, (2.0, 3.0), gone)
    assert not gone & {t.content_hash for t in b} and len(b) == 50
    # Level 1 holds 55 distinct sums: a pool asking for more runs dry instead of repeating one.
    assert len(make_pool(cfg, 0, 1, 200, (1.0, 1.0), set())) == 55


def test_pool_file_round_trips(tmp_path: Path) -> None:
    tasks = make_pool(ZpdConfig(), 2, 1, 5, (1.0, 4.0), set())
    path = pool_path(tmp_path / "pool", 1)
    assert path.name == "round_000001.jsonl"
    write_pool(path, tasks)
    assert read_pool(path) == tasks
    fields = set(json.loads(path.read_text().splitlines()[0]))
    assert fields == {"domain", "difficulty", "prompt", "answer", "guidance", "canonical", "meta"}
    assert not list(tmp_path.glob("pool/*.tmp"))


def test_no_bench_script_is_named_like_an_installed_module() -> None:
    """bench/ is put on sys.path by the bench scripts and these tests: a script named like an installed
    top-level module (bench/reasoning_gym.py was, now bench/rg_check.py) would shadow that library for
    every later import in the process."""
    import importlib.metadata

    installed = importlib.metadata.packages_distributions()  # top-level module -> its distributions
    assert "reasoning_gym" in installed or "torch" in installed  # the map is real here
    bench = Path(__file__).resolve().parents[1] / "bench"
    clashes = sorted(p.stem for p in bench.glob("*.py") if p.stem in installed)
    assert clashes == [], f"bench scripts named like installed modules: {clashes}"
