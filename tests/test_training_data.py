"""What TRAIN trains on (issue 13, "tests for the science path"): the replay mix has its configured
proportions; training prompts are the bare task and every target grades correct, on a real smoke round
whose candidates come from a pool file and whose selection is random at the ZPD size."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
from dataclasses import asdict
from pathlib import Path

import pytest
from harness import SMOKE, run_zpd

from zpd.configs.load import load_config
from zpd.loop import training_set
from zpd.loop.context import RunContext
from zpd.loop.domains.base import Task
from zpd.loop.domains.registry import build_domains
from zpd.loop.pool import pool_file
from zpd.store import ledger_tasks, training
from zpd.store.db import open_readonly, open_store


def _ctx(tmp_path: Path, *overrides: str) -> RunContext:
    cfg = load_config(SMOKE, list(overrides))
    db = open_store(tmp_path / "state.db")
    return RunContext(tmp_path, cfg, db, build_domains(cfg.domains), None, logging.getLogger("test"))


def _examples(ctx: RunContext, round_n: int, n: int, start: int) -> set[str]:
    """``n`` stored sft examples of ``round_n`` (with their tasks); returns their prompts."""
    rows = []
    for i in range(start, start + n):
        t = Task("arithmetic", 1.0, f"example {i}", str(i), "", f"k{i}")  # no bootstrap prompt reads so
        tid = ctx.insert_task(t, round_n=round_n, fate="zpd")
        assert tid is not None
        rows.append((tid, None, t.prompt, t.answer))
    training.insert_examples(ctx.db, round_n, "sft", rows)
    return {r[2] for r in rows}


@pytest.mark.parametrize("ratio,replayed", [(0.0, 0), (0.5, 5), (2.0, 20), (4.0, 30)])
def test_the_replay_mix_has_its_configured_proportions(tmp_path, ratio, replayed):
    ctx = _ctx(tmp_path, "bootstrap.enabled=false", f"train.replay_ratio={ratio}")
    earlier = _examples(ctx, 1, 30, 0)
    new = _examples(ctx, 2, 10, 100)
    data = training_set.training_set(ctx, 2)
    prompts = [ex["prompt"] for ex in data]
    assert set(prompts) >= new and prompts.count(next(iter(new))) == 1  # every new example, once
    replay = [p for p in prompts if p not in new]
    assert len(replay) == replayed == min(30, int(ratio * 10))  # replay_ratio x the new ones, at most all
    assert set(replay) <= earlier and len(set(replay)) == len(replay)  # earlier rounds', no repeats
    assert training_set.training_set(ctx, 2) == data  # seeded by the round


def test_the_replay_draws_from_earlier_rounds_and_the_bootstrap_set_by_their_sizes(tmp_path):
    ctx = _ctx(tmp_path, "bootstrap.num_examples=300", "train.replay_ratio=20.0")
    earlier = _examples(ctx, 1, 300, 0)
    new = _examples(ctx, 2, 20, 1000)
    boot = training_set.bootstrap_replay(ctx)
    assert len(boot) > 100 and not {ex["prompt"] for ex in boot} & (earlier | new)
    data = training_set.training_set(ctx, 2)
    replay = [ex["prompt"] for ex in data if ex["prompt"] not in new]
    assert len(replay) == 400 and len(data) == 420  # 20 new + 20 x 20 replayed
    from_earlier = sum(p in earlier for p in replay)
    assert from_earlier + sum(p in {ex["prompt"] for ex in boot} for p in replay) == 400
    # Each replayed row is a uniform draw over earlier examples and the bootstrap set together.
    assert from_earlier / 400 == pytest.approx(300 / (300 + len(boot)), abs=0.08)


def _pool(path: Path, n: int) -> list[Task]:
    domain = build_domains(load_config(SMOKE).domains)["arithmetic"]
    rng = random.Random(11)
    tasks: dict[str, Task] = {}
    while len(tasks) < n:
        t = domain.make_task(rng.uniform(1.0, 3.0), rng)
        if t is not None:
            tasks.setdefault(t.content_hash, t)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(t)) + "\n" for t in tasks.values()))
    return list(tasks.values())


def test_a_pool_round_trains_the_bare_task_on_a_target_that_grades_correct(tmp_path, round0_archive):
    pool = _pool(pool_file(tmp_path / "pool", 1), 40)
    state = tmp_path / "state"
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "1",
                  "--from-snapshot", str(round0_archive), "--set", "curriculum.source=pool",
                  "--set", f"curriculum.pool_dir={json.dumps(str(tmp_path / 'pool'))}",
                  "--set", "curriculum.selection=random", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    db = open_readonly(state / "state.db")
    conn: sqlite3.Connection = db.conn
    made = {h for (h,) in conn.execute("SELECT content_hash FROM tasks WHERE round = 1")}
    known_before = {h for (h,) in conn.execute("SELECT content_hash FROM tasks WHERE round = 0")}
    assert made and made <= {t.content_hash for t in pool}  # the file's candidates, nothing else
    assert {t.content_hash for t in pool} - made <= known_before  # what is missing was a duplicate
    # Random at the ZPD size: as many selected as the round has tasks of fate zpd.
    fates = dict(conn.execute("SELECT fate, count(*) FROM tasks WHERE fate_round = 1 GROUP BY fate"))
    selected = conn.execute("SELECT count(*) FROM tasks WHERE fate_round = 1 AND selected = 1").fetchone()[0]
    assert fates.get("zpd", 0) > 0 and selected == fates["zpd"]
    sources = ledger_tasks.target_sources(db, 1)
    assert sum(sources.values()) == selected
    domains = build_domains(load_config(SMOKE).domains)
    rows = conn.execute("""SELECT e.prompt, e.response, e.attempt_id, t.target_source, t.domain, t.difficulty,
                                  t.prompt, t.answer, t.guidance, t.canonical, t.meta_json, a.mode
                           FROM train_examples e JOIN tasks t ON t.id = e.task_id
                           LEFT JOIN attempts a ON a.id = e.attempt_id
                           WHERE e.round = 1 AND e.kind = 'sft'""").fetchall()
    assert len(rows) == selected
    seen = dict.fromkeys(sources, 0)
    for prompt, response, attempt, source, *fields, meta, mode in rows:
        task = Task(*fields, meta=json.loads(meta))
        domain = domains[task.domain]
        assert prompt == domain.solo_prompt(task) and prompt != domain.guided_prompt(task)
        assert task.guidance and task.guidance not in prompt  # the bare task: no guidance
        assert domain.grade(task, response), (prompt, response)  # every target is correct
        assert (mode or "reference") == source  # the target is what target_source says
        if source == "reference":
            assert attempt is None and response == domain.solution(task)
        seen[source] += 1
    assert seen == sources
