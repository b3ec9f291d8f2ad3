"""Curriculum policies, adaptive calibration, exam integrity and reproducibility (issue 7).

Unit tests run on tiny real objects (a real store with its migrations, a real tiny model); the end-to-end
tests run the real daemon from the session's round-0 snapshot of the smoke config.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest
from harness import SMOKE, run_zpd

from zpd.configs.schema import CurriculumConfig, LearnerConfig
from zpd.loop import curriculum, integrity, selection
from zpd.loop.calibrate import Samples, decided, sample, successes_needed
from zpd.loop.domains.base import Task
from zpd.store.db import open_store
from zpd.store.ledger_exam import version_items
from zpd.store.ledger_tasks import Calibrated


class _Ctx:
    """What a source reads of a RunContext: the store and the current learner round."""

    def __init__(self, db, current: int | None = None) -> None:
        self.db, self._current = db, current

    def current_learner_round(self) -> int | None:
        return self._current


def _store(tmp_path: Path):
    return open_store(tmp_path / "state.db")


def _task(db, tid: int, difficulty: float, fate: str, p_solo: float | None, round_n: int) -> None:
    db["tasks"].insert(dict(id=tid, domain="arithmetic", difficulty=difficulty, prompt=f"p{tid}", answer="1",
                            guidance="", canonical=f"c{tid}",
                            content_hash=Task("arithmetic", difficulty, f"p{tid}", "1", "",
                                              f"c{tid}").content_hash,
                            round=round_n, fate=fate, fate_round=round_n, p_solo=p_solo))


def _chosen(name: str, pool: list[Calibrated]) -> list[int]:
    """The ids a selection keeps of a one-domain pool (sized by its ZPD count, as a round would)."""
    sel = selection.build_selection(CurriculumConfig(selection=name))
    return sel.choose(pool, sum(t.fate == "zpd" for t in pool), random.Random(0))


# -- sources and selections (policies are aliases of a pair) --------------------------------------------


def test_every_source_selection_and_policy_is_registered_and_configurable():
    for name in ("frontier", "uniform", "schedule", "bandit", "fixed-window", "pool", "self-play"):
        assert curriculum.SOURCES[name].name == name
        assert CurriculumConfig(source=name, pool_dir="p").source == name
    for name in ("zpd", "r-zero", "all-correct", "random", "learnability"):
        assert selection.SELECTIONS[name].name == name
        assert CurriculumConfig(selection=name).selection == name
    for name in ("zpd-band", "uniform", "fixed-schedule", "bandit", "learnability", "self-play"):
        cfg = CurriculumConfig(policy=name)
        assert cfg.policy == name and (cfg.source, cfg.selection) == curriculum.POLICY_ALIASES[name]
    with pytest.raises(ValueError, match="policy"):
        CurriculumConfig(policy="random")


def test_zpd_band_draws_around_the_frontier_and_trains_on_the_zpd(tmp_path):
    db = _store(tmp_path)
    db["frontier"].insert(dict(round=3, domain="arithmetic", value=4.0))
    pol = curriculum.build_source_for(CurriculumConfig(), spread=1.0)
    ds = pol.difficulties(_Ctx(db, current=3), 4, "arithmetic", 1.0, 8.0, 500, random.Random(0))
    assert min(ds) >= 3.0 and max(ds) <= 5.0 and max(ds) - min(ds) > 1.5
    assert CurriculumConfig().selection == "zpd"
    pool = [Calibrated(1, "arithmetic", "zpd", 0.0, 1.0, True, False),
            Calibrated(2, "arithmetic", "mastered", 1.0, None, False, True)]
    assert _chosen("zpd", pool) == [1]
    assert pol.derives


def test_uniform_spans_the_domain_and_trains_on_everything(tmp_path):
    db = _store(tmp_path)
    db["frontier"].insert(dict(round=3, domain="arithmetic", value=4.0))
    pol = curriculum.build_source_for(CurriculumConfig(policy="uniform"), spread=1.0)
    ds = pol.difficulties(_Ctx(db, current=3), 4, "arithmetic", 1.0, 8.0, 2000, random.Random(0))
    assert min(ds) < 1.1 and max(ds) > 7.9
    assert sum(d < 4.5 for d in ds) / len(ds) == pytest.approx(0.5, abs=0.05)
    # The uniform policy's selection: every task with a correct answer, whatever its fate.
    assert CurriculumConfig(policy="uniform").selection == "all-correct"
    pool = [Calibrated(i, "arithmetic", f, 1.0, None, False, True)
            for i, f in enumerate(("mastered", "zpd", "beyond"), start=1)]
    assert _chosen("all-correct", pool) == [1, 2, 3]
    assert not pol.derives


def test_fixed_schedule_slides_from_easy_to_hard(tmp_path):
    pol = curriculum.build_source_for(CurriculumConfig(policy="fixed-schedule", schedule_rounds=5),
                                      spread=0.5)
    ctx = _Ctx(_store(tmp_path))
    means = [sum(ds) / len(ds) for ds in
             (pol.difficulties(ctx, r, "arithmetic", 1.0, 9.0, 200, random.Random(r)) for r in (1, 3, 5, 9))]
    assert means[0] < 2.0 and 4.5 < means[1] < 5.5 and means[2] > 8.0 and means[3] > 8.0


def test_bandit_values_follow_mean_absolute_advantage(tmp_path):
    db = _store(tmp_path)
    cfg = CurriculumConfig(policy="bandit", bandit_step=0.5, bandit_initial_value=0.5,
                           bandit_temperature=0.05)
    pol = curriculum.build_source_for(cfg, spread=1.0)
    # Round 1: level 1 always solved (advantage 0), level 2 half solved (2p(1-p) = 0.5), level 3 never.
    for i, (d, p) in enumerate([(1.2, 1.0), (1.5, 1.0), (2.3, 0.5), (2.7, 0.5), (3.1, 0.0)]):
        _task(db, i + 1, d, "mastered", p, 1)
    q = pol.values(_Ctx(db), 2, "arithmetic", 1.0, 4.0)
    assert q == {1: pytest.approx(0.25), 2: pytest.approx(0.5), 3: pytest.approx(0.25)}
    ds = pol.difficulties(_Ctx(db), 2, "arithmetic", 1.0, 4.0, 1000, random.Random(0))
    assert sum(2.0 <= d < 3.0 for d in ds) / len(ds) > 0.9  # softmax(Q / T) favours the learnable arm
    # Round 2 at level 2 all solved: TD(0) moves its value halfway to 0.
    _task(db, 10, 2.5, "mastered", 1.0, 2)
    assert pol.values(_Ctx(db), 3, "arithmetic", 1.0, 4.0)[2] == pytest.approx(0.25)


def test_learnability_selects_the_top_p_times_one_minus_p_at_the_zpd_size():
    # Issue 13: the learnability policy now keeps the N tasks of highest p(1-p), N the ZPD count (it used
    # to keep each with probability 4 p (1 - p), about one task a round: a strawman).
    assert CurriculumConfig(policy="learnability").selection == "learnability"
    pool = [Calibrated(1, "arithmetic", "mastered", 1.0, None, False, True),
            Calibrated(2, "arithmetic", "zpd", 0.0, 1.0, True, False),
            Calibrated(3, "arithmetic", "zpd", 0.0, 0.5, True, False),
            Calibrated(4, "arithmetic", "mastered", 0.5, None, False, True),
            Calibrated(5, "arithmetic", "mastered", 0.75, None, False, True)]
    assert _chosen("learnability", pool) == [4, 5]  # N = 2; p(1-p): 0.25, 0.1875, then zeros


# -- adaptive calibration ---------------------------------------------------------------------------


def test_the_sequential_test_stops_exactly_when_fixed_k_is_decided():
    # 4 solo samples, mastered when more than 0.25 * 4 succeed: 2 successes decide it, 3 failures too.
    need = successes_needed(0.25, 4, strict=True)
    assert need == 2
    assert successes_needed(0.3, 3, strict=False) == 1 and successes_needed(0.0, 4, strict=True) == 1
    # Degenerate bands are decided after the first answered sample, as fixed k would decide them.
    assert successes_needed(1.0, 4, strict=True) == 5 and successes_needed(0.0, 3, strict=False) == 0
    assert not decided(Samples(), 4, 5) and decided(Samples(grades=[False]), 4, 5)
    assert not decided(Samples(grades=[None]), 3, 0) and decided(Samples(grades=[None, False]), 3, 0)
    # Truncation: f failures from the first sample decide "failed" even where fixed k could still flip.
    assert decided(Samples(grades=[False]), 4, need, stop_after=1)
    assert not decided(Samples(grades=[True, False]), 4, need, stop_after=1)
    assert not decided(Samples(grades=[False]), 4, need, stop_after=2)
    assert decided(Samples(grades=[False, False]), 4, need, stop_after=2)
    assert not decided(Samples(grades=[True]), 4, need)
    assert decided(Samples(grades=[True, True]), 4, need)
    assert not decided(Samples(grades=[False, False]), 4, need)
    assert decided(Samples(grades=[False, False, False]), 4, need)
    assert decided(Samples(grades=[True, False, False, False]), 4, need)


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory):
    from zpd.trainer.generate import EmbeddedGenerator
    from zpd.trainer.model import create_learner

    d = tmp_path_factory.mktemp("tiny") / "learner"
    create_learner(d, LearnerConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                    max_positions=64),
                   seed=0)
    return EmbeddedGenerator(d)


def test_a_sample_depends_only_on_its_own_seed(tiny_generator):
    prompts = ["12+34", "5+6", "777+1"]
    seeds = [[11, 12, 13], [21, 22, 23], [31, 32, 33]]
    at_once = tiny_generator.generate(prompts, n=3, temperature=1.0, max_tokens=8, sample_seeds=seeds)
    alone = [[tiny_generator.generate([p], n=1, temperature=1.0, max_tokens=8, sample_seeds=[[s]])[0][0]
              for s in ss] for p, ss in zip(prompts, seeds, strict=True)]
    assert [[c.text for c in cs] for cs in at_once] == [[c.text for c in cs] for cs in alone]
    other = tiny_generator.generate(prompts, n=3, temperature=1.0, max_tokens=8,
                                    sample_seeds=[[s + 1000 for s in ss] for ss in seeds])
    assert [[c.text for c in cs] for cs in other] != [[c.text for c in cs] for cs in at_once]


def test_adaptive_sampling_decides_as_fixed_k_with_fewer_calls(tiny_generator):
    # The untrained model's text is noise; "correct" = the sample contains a given character, which gives
    # every pass rate from 0 to 1 across prompts.
    chars = "0123456789+"
    items = {i: (f"{i}+{i * 7}",
                 (lambda c: (lambda text: c in text))(chars[i % len(chars)])) for i in range(40)}
    k, need = 6, successes_needed(0.25, 6, strict=True)

    def seed_of(tid: int, j: int) -> int:
        return 1000 * tid + j

    fixed: dict[int, Samples] = {}
    calls_fixed = sample(tiny_generator, items, fixed, k=k, keep_going=None, seed_of=seed_of,
                         temperature=1.0, max_tokens=6)
    adaptive: dict[int, Samples] = {}
    calls_adaptive = sample(tiny_generator, items, adaptive, k=k,
                            keep_going=lambda s: not decided(s, k, need),
                            seed_of=seed_of, temperature=1.0, max_tokens=6)
    decision = {t: fixed[t].successes >= need for t in items}
    assert 0 < sum(decision.values()) < len(items)  # both outcomes occur
    assert {t: adaptive[t].successes >= need for t in items} == decision
    assert calls_fixed == k * len(items) and calls_adaptive < calls_fixed
    for t in items:  # adaptive's samples are fixed-k's first samples
        n = len(adaptive[t].grades)
        assert [c.text for c in adaptive[t].completions] == [c.text for c in fixed[t].completions[:n]]


# -- exam integrity ---------------------------------------------------------------------------------


def test_contaminated_training_examples_are_dropped_and_reported(tmp_path):
    db = _store(tmp_path)
    _task(db, 1, 2.0, "eval", None, 0)
    _task(db, 2, 3.0, "exam", 0.0, 1)
    db["exam_items"].insert(dict(task_id=2, domain="arithmetic", admitted_round=1))
    exam_task = Task("arithmetic", 3.0, "p2", "1", "", "c2")
    near = Task("arithmetic", 3.0, "P2 ", "1", "", "other")  # another canonical form, the same prompt folded
    clean_task = Task("arithmetic", 3.0, "p9", "1", "", "c9")
    data = [{"prompt": t.prompt, "response": "x", "domain": "arithmetic",
             "task_json": json.dumps({"domain": t.domain, "difficulty": t.difficulty, "prompt": t.prompt,
                                      "answer": t.answer, "guidance": t.guidance, "canonical": t.canonical,
                                      "meta": {}})}
            for t in (exam_task, near, clean_task)]
    clean, report = integrity.check(db, 1, data, {})
    assert [ex["prompt"] for ex in clean] == ["p9"]
    assert report == {"train_examples_checked": 3, "exam_items": 1, "eval_items": 1, "exact_overlap": 1,
                      "near_overlap": 1, "dropped": 2}


# -- end to end: reproducibility, exam versions, a policy other than zpd-band --------------------------


def _fates(state: Path) -> list[tuple]:
    conn = sqlite3.connect(state / "state.db")
    return conn.execute("SELECT round, content_hash, fate, p_solo, p_guided, selected FROM tasks "
                        "WHERE round >= 1 ORDER BY content_hash").fetchall()


def test_same_seed_same_tasks_and_fates_and_exam_versions_rebuild(tmp_path, round0_archive):
    runs = []
    for name, seed, rounds in (("a", 3, 2), ("b", 3, 2), ("c", 4, 1)):
        state = tmp_path / name
        out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", str(rounds),
                      "--from-snapshot", str(round0_archive), "--set", f"run.seed={seed}", timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append(state)
    a, b, c = (_fates(s) for s in runs)
    assert a and a == b  # same seed and config: the same tasks, pass rates and fates
    assert {r[1] for r in a if r[0] == 1} != {r[1] for r in c}  # another seed: other tasks

    conn = sqlite3.connect(runs[0] / "state.db")
    for v in (1, 2):
        measured = [r[0] for r in conn.execute(
            "SELECT DISTINCT task_id FROM measurements WHERE kind = 'exam' AND round = ? ORDER BY task_id",
            [v])]
        snapshot = sqlite3.connect(runs[0] / "rounds" / f"round_{v:06d}" / "state.db")
        assert version_items(conn, v) == measured == version_items(snapshot, v)
        report = json.loads(conn.execute("SELECT decontamination_json FROM rounds WHERE id = ?",
                                         [v]).fetchone()[0])
        assert report["exact_overlap"] == report["near_overlap"] == report["dropped"] == 0
        assert report["eval_items"] > 0 and report["train_examples_checked"] > 0
        calls, fixed = conn.execute("SELECT num_attempts, num_attempts_fixed FROM rounds WHERE id = ?",
                                    [v]).fetchone()
        assert 0 < calls < fixed
    assert any(version_items(conn, v) for v in (1, 2))


def test_uniform_policy_trains_on_tasks_solved_alone_too(tmp_path, round0_archive):
    state = tmp_path / "uniform"
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "1",
                  "--from-snapshot", str(round0_archive), "--set", 'curriculum.policy="uniform"', timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    conn = sqlite3.connect(state / "state.db")
    by_fate = dict(conn.execute("SELECT fate, sum(selected) FROM tasks WHERE round = 1 AND fate != 'exam' "
                                "GROUP BY fate").fetchall())
    assert by_fate.get("mastered", 0) > 0  # selected though solved alone
    examples = conn.execute("""SELECT t.fate, a.mode FROM train_examples e JOIN tasks t ON t.id = e.task_id
                               JOIN attempts a ON a.id = e.attempt_id WHERE e.round = 1""").fetchall()
    assert ("mastered", "solo") in examples  # its target is the learner's own correct solo answer
    assert all(f != "exam" for f, _ in examples)
    difficulties = [r[0] for r in conn.execute("SELECT difficulty FROM tasks WHERE round = 1")]
    assert max(difficulties) - min(difficulties) >= 2.0  # drawn over the whole range, not around a frontier
