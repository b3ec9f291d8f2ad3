"""Candidate sources (``curriculum.source``; issue 13): the pool source reading a round's file, and the
fixed window, which does not depend on the learner."""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

import pytest
from harness import SMOKE

from zpd.configs.load import load_config
from zpd.configs.schema import CurriculumConfig
from zpd.loop import curriculum
from zpd.loop.context import rng_for
from zpd.loop.domains.base import Task
from zpd.loop.domains.registry import build_domains
from zpd.loop.errors import PhaseFailed
from zpd.loop.pool import pool_file, read_pool, write_pool
from zpd.store.db import open_store


class _Ctx:
    """What a source reads of a RunContext: the store, the current learner round and the domains."""

    def __init__(self, db, current: int | None = None, domains: dict | None = None) -> None:
        self.db, self._current, self.domains = db, current, domains or {"arithmetic": None}

    def current_learner_round(self) -> int | None:
        return self._current


def _tasks(n: int, seed: int = 0) -> list[Task]:
    domain = build_domains(load_config(SMOKE).domains)["arithmetic"]
    rng = random.Random(seed)
    out = [domain.make_task(rng.uniform(1, 4), rng) for _ in range(n)]
    return [t for t in out if t is not None]


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


# -- pool ----------------------------------------------------------------------------------------------


def test_the_pool_source_reads_the_rounds_file(tmp_path):
    tasks = _tasks(6)
    tasks[0] = Task(**{**asdict(tasks[0]), "meta": {"origin": "bench"}})
    _write(pool_file(tmp_path, 2), [json.dumps(asdict(t)) for t in tasks[:3]] + [""]
           + [json.dumps(asdict(t)) for t in tasks[3:]])
    assert pool_file(tmp_path, 2).name == "round_000002.jsonl"
    src = curriculum.build_source_for(CurriculumConfig(source="pool", pool_dir=tmp_path), spread=1.0)
    assert not src.derives and not src.quota
    got = src.propose(_Ctx(None), 2, "arithmetic", None, 1, random.Random(0))
    assert got == tasks  # every candidate of the file, whatever n, in file order, meta included
    assert [t.content_hash for t in got] == [t.content_hash for t in tasks]
    write_pool(pool_file(tmp_path, 3), tasks[::-1])
    assert read_pool(pool_file(tmp_path, 3), {"arithmetic"}) == tasks[::-1]


def test_a_missing_pool_file_names_it(tmp_path):
    src = curriculum.build_source_for(CurriculumConfig(source="pool", pool_dir=tmp_path), spread=1.0)
    with pytest.raises(PhaseFailed, match=r"round_000007\.jsonl: pool file not found"):
        src.propose(_Ctx(None), 7, "arithmetic", None, 10, random.Random(0))


@pytest.mark.parametrize("line,why", [
    ("{not json", "line 2: "),
    ("[1, 2]", "line 2: not a JSON object"),
    ('{"domain": "arithmetic"}', "line 2: missing answer, canonical"),
    ("EXTRA", "line 2: unknown colour"),
    ("DIFFICULTY", "line 2: difficulty is not a finite number"),
    ("META", "line 2: meta is not an object"),
    ("DOMAIN", "line 2: domain 'knowledge' is not enabled"),
])
def test_a_bad_pool_line_names_the_file_and_the_line(tmp_path, line, why):
    good = asdict(_tasks(1)[0])
    bad = {"EXTRA": {**good, "colour": "red"}, "DIFFICULTY": {**good, "difficulty": "hard"},
           "META": {**good, "meta": []}, "DOMAIN": {**good, "domain": "knowledge"}}
    text = json.dumps(bad[line]) if line in bad else line
    path = _write(pool_file(tmp_path, 1), [json.dumps(good), text, json.dumps(good)])
    with pytest.raises(PhaseFailed) as err:
        read_pool(path, {"arithmetic"})
    message = str(err.value)
    assert message.startswith(f"{path}: ") and why in message and "\n" not in message


# -- fixed window --------------------------------------------------------------------------------------


def _fates_store(tmp_path: Path, name: str, fate: str, frontier: float):
    (tmp_path / name).mkdir()
    db = open_store(tmp_path / name / "state.db")
    db["frontier"].insert(dict(round=1, domain="arithmetic", value=frontier))
    for i in range(20):
        t = Task("arithmetic", 1 + i % 4, f"p{i}", "1", "", f"c{i}")
        db["tasks"].insert(dict(id=i + 1, domain="arithmetic", difficulty=t.difficulty, prompt=t.prompt,
                                answer="1", guidance="", canonical=t.canonical, content_hash=t.content_hash,
                                round=1, fate=fate, fate_round=1, p_solo=1.0 if fate == "mastered" else 0.0))
    return db


def test_the_fixed_window_does_not_depend_on_the_learner(tmp_path):
    cfg = CurriculumConfig(source="fixed-window", window=(2.0, 3.5))
    strong = _Ctx(_fates_store(tmp_path, "strong", "mastered", 3.8), current=1)
    weak = _Ctx(_fates_store(tmp_path, "weak", "beyond", 1.2), current=1)
    draws = []
    for ctx in (strong, weak):
        src = curriculum.build_source_for(cfg, spread=1.5)
        draws.append(src.difficulties(ctx, 2, "arithmetic", 1.0, 4.0, 300,
                                      rng_for(0, 2, "synthesize", "arithmetic")))
    assert draws[0] == draws[1]
    assert min(draws[0]) >= 2.0 and max(draws[0]) <= 3.5 and max(draws[0]) - min(draws[0]) > 1.0
    assert not curriculum.build_source_for(cfg, spread=1.5).derives
    # The frontier source, by contrast, follows the learner.
    band = curriculum.build_source_for(CurriculumConfig(), spread=0.5)
    near = [band.difficulties(c, 2, "arithmetic", 1.0, 4.0, 50, random.Random(0)) for c in (strong, weak)]
    assert near[0] != near[1]


def test_the_fixed_window_is_clipped_to_the_domain_or_is_its_whole_range(tmp_path):
    ctx = _Ctx(None)
    whole = curriculum.build_source_for(CurriculumConfig(source="fixed-window"), spread=1.0)
    ds = whole.difficulties(ctx, 1, "arithmetic", 1.0, 8.0, 2000, random.Random(1))
    assert min(ds) < 1.1 and max(ds) > 7.9
    wide = curriculum.build_source_for(CurriculumConfig(source="fixed-window", window=(0.0, 20.0)),
                                       spread=1.0)
    ds = wide.difficulties(ctx, 1, "arithmetic", 1.0, 8.0, 2000, random.Random(1))
    assert min(ds) >= 1.0 and max(ds) <= 8.0


def test_a_relative_pool_dir_in_a_config_file_is_relative_to_that_file(tmp_path: Path) -> None:
    from zpd.configs.load import load_config

    (tmp_path / "c.toml").write_text('[curriculum]\nsource = "pool"\npool_dir = "pools"\n')
    assert load_config(tmp_path / "c.toml").curriculum.pool_dir == (tmp_path / "pools").resolve()
