"""reasoning-gym as a domain (issue 17), on the real library: items, grading and its check, difficulty,
escalation, guidance, the candidate allocation on a real store, and a smoke run of three families.

Skipped where reasoning-gym is not installed, unless ZPD_REQUIRE_REASONING_GYM=1 (CI sets it).
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
from dataclasses import asdict
from pathlib import Path

import pytest
from optional import require

require("reasoning_gym")

from harness import run_zpd, status  # noqa: E402
from prometheus_client import generate_latest  # noqa: E402

from zpd.configs.reasoning_gym import ReasoningGymConfig  # noqa: E402
from zpd.configs.schema import CurriculumConfig  # noqa: E402
from zpd.loop.allocation import build_allocation  # noqa: E402
from zpd.loop.domains import rg_grading as g  # noqa: E402
from zpd.loop.domains.base import Task  # noqa: E402
from zpd.loop.domains.reasoning_gym import Family, build_families  # noqa: E402
from zpd.loop.domains.registry import grader_for  # noqa: E402
from zpd.loop.metrics import DaemonMetrics  # noqa: E402
from zpd.store.db import open_store  # noqa: E402
from zpd.trainer.verl.reward import compute_score  # noqa: E402

# 20 families that pass the grading check with both response formats (bench/results/reasoning-gym.md).
FAMILIES = [
    "basic_arithmetic", "chain_sum", "products", "simple_equations", "lcm", "leg_counting", "spell_backward",
    "decimal_chain_sum", "count_primes", "fraction_simplification", "prime_factorization",
    "complex_arithmetic", "letter_counting", "calendar_arithmetic", "count_bits", "caesar_cipher",
    "word_sorting", "number_sorting", "base_conversion", "bitwise_arithmetic",
]


def _cfg(**kw) -> ReasoningGymConfig:
    return ReasoningGymConfig(enabled=True, **{"families": ["chain_sum"], **kw})


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_makes_graded_items_at_its_levels(family):
    cfg = _cfg(families=[family], response="answer_tags")
    result = g.check_family(family, num_items=20, seed=7, threshold=1.0, range_mode="upper_bound",
                            max_level=None, response="answer_tags")
    assert result.ok, result.reason
    fam = Family(family, cfg, result.levels, eval_budget=40)
    rng = random.Random(0)
    for level in (result.levels[0], result.levels[-1]):
        task = fam.make_task(float(level), rng)
        # The scalar difficulty is the curriculum level the item was made at.
        assert task.difficulty == level == task.meta["rg"]["level"] and task.domain == f"rg:{family}"
        assert task.prompt.startswith(task.meta["rg"]["entry"]["question"]) and task.answer
        assert fam.grade(task, fam.solution(task)) and fam.score(task, fam.solution(task)) == 1.0
        assert not fam.grade(task, "<answer>zzz</answer>") and not fam.grade(task, "no tags at all")
        others = (fam.make_task(float(level), rng) for _ in range(20))
        other = next(t for t in others if t.answer != task.answer)
        assert not fam.grade(task, fam.solution(other))  # another item's answer fails
        # The stored form grades alike wherever it is rebuilt (CALIBRATE, GRPO, verl's reward).
        rebuilt = Task(**json.loads(json.dumps(asdict(task))))
        grade = grader_for(task.domain)
        assert grade(rebuilt, fam.solution(task)) and not grade(rebuilt, "x")
        # Offline guidance never contains the answer string.
        assert task.answer not in task.guidance
    for t in fam.eval_items():
        assert t.answer not in t.guidance


def test_guidance_never_contains_the_answer_and_unguided_families_are_reported():
    cfg = _cfg(families=["basic_arithmetic", "chain_sum", "gcd"], response="worked")
    families, left_out = build_families(cfg)
    for fam in families.values():
        for i in range(30):
            t = fam.make_task(float(i % 3), random.Random(i))
            assert t.answer not in t.guidance
            assert fam.guided_prompt(t) == (f"{t.guidance}\n{t.prompt}" if t.guidance else t.prompt)
        assert fam.offline_guidance_ratio() >= 0.5
    # gcd's answers are mostly 1 or 2: almost every solved example contains the answer string.
    assert "gcd" in left_out and "no offline guidance" in left_out["gcd"] and "rg:gcd" not in families
    kept, _ = build_families(_cfg(families=["gcd"], response="worked", unguided="keep"))
    assert list(kept) == ["rg:gcd"]


def test_families_failing_the_grading_check_are_left_out():
    families, left_out = build_families(_cfg(families=["game_of_life_halting", "chain_sum"]))
    assert list(families) == ["rg:chain_sum"]
    assert "garbage" in left_out["game_of_life_halting"]  # "zzz" scores 1.0 there


def test_unknown_family_group_or_hint_prompt_is_one_clear_error():
    from zpd.configs.load import ConfigError

    with pytest.raises(ConfigError, match="domains.reasoning_gym.families: no family 'no_such'"):
        build_families(_cfg(families=["no_such"]))
    with pytest.raises(ValueError, match="no family group"):
        ReasoningGymConfig(families="nope")
    with pytest.raises(ValueError, match="must contain"):
        ReasoningGymConfig(hint_prompt="no placeholder")


def test_escalation_and_simplification_move_the_level():
    cfg = _cfg(families=["chain_sum"], max_level=4)
    fam = Family("chain_sum", cfg, [0, 1, 2, 3, 4], eval_budget=20)
    rng = random.Random(3)
    t = fam.make_task(2.0, rng)
    assert t.difficulty == 2.0
    assert fam.escalate(t, rng).difficulty == 3.0 and fam.simplify(t, rng).difficulty == 1.0
    top = fam.make_task(4.0, rng)
    assert fam.escalate(top, rng).difficulty == 4.0  # clipped to the last level
    # A frontier between levels draws both neighbours, in proportion.
    levels = [fam.make_task(2.25, rng).difficulty for _ in range(400)]
    assert set(levels) == {2.0, 3.0} and 0.15 < levels.count(3.0) / 400 < 0.35


def test_items_are_a_function_of_the_seed_and_the_eval_set_is_fixed():
    cfg = _cfg(families=["chain_sum"])
    fam = Family("chain_sum", cfg, [0, 1, 2], eval_budget=12)
    a = [fam.make_task(1.0, random.Random(11)).content_hash for _ in range(3)]
    assert len(set(a)) == 1  # the same rng state (run seed, round, domain) makes the same item
    e1, e2 = fam.eval_items(), Family("chain_sum", cfg, [0, 1, 2], eval_budget=12).eval_items()
    assert [t.content_hash for t in e1] == [t.content_hash for t in e2] and len(e1) == 12
    assert {t.meta["rg"]["split"] for t in e1} == {"validation", "test"}
    assert sorted({t.difficulty for t in e1}) == [0.0, 1.0, 2.0]


def test_the_eval_cap_bounds_the_total_over_families():
    names = ["basic_arithmetic", "chain_sum", "products"]
    families, _ = build_families(_cfg(families=names, max_eval_items=30))
    sizes = {n: len(f.eval_items()) for n, f in families.items()}
    assert sum(sizes.values()) <= 30 and all(s > 0 for s in sizes.values())


def test_verl_reward_grades_the_stored_task():
    fam = Family("chain_sum", _cfg(), [0, 1], eval_budget=4)
    task = fam.make_task(1.0, random.Random(5))
    info = {"domain": task.domain, "prompt": task.prompt, "task_json": json.dumps(asdict(task))}
    assert compute_score("zpd/" + task.domain, fam.solution(task), task.answer, info) == 1.0
    assert compute_score("zpd/" + task.domain, "<answer>zzz</answer>", task.answer, info) == 0.0


def test_metrics_pre_initialise_every_family():
    m = DaemonMetrics(["rg:basic_arithmetic", "rg:chain_sum"], version="0")
    m.set_frontier("rg:chain_sum", 1.5)
    m.set_domain_yield("rg:chain_sum", 0.25)
    text = generate_latest(m.registry).decode()
    assert 'zpd_frontier_difficulty{domain="rg:basic_arithmetic"} 0.0' in text
    assert 'zpd_frontier_difficulty{domain="rg:chain_sum"} 1.5' in text
    assert 'zpd_domain_yield_ratio{domain="rg:chain_sum"} 0.25' in text


# -- allocation across families, on a real store -------------------------------------------------------
def _round(db, round_n: int, fates: dict[str, list[str]]) -> None:
    for domain, fs in fates.items():
        for i, fate in enumerate(fs):
            t = Task(domain, 1.0, f"{domain} r{round_n} #{i}", "1", "", f"{domain}:{round_n}:{i}")
            db["tasks"].insert(dict(domain=domain, difficulty=1.0, prompt=t.prompt, answer="1", guidance="",
                                    canonical=t.canonical, content_hash=t.content_hash, round=round_n,
                                    fate=fate, fate_round=round_n))


def test_yield_allocation_follows_measured_yield_keeps_a_floor_and_recovers(tmp_path):
    db = open_store(tmp_path / "state.db")
    cfg = CurriculumConfig(allocation="yield", allocation_floor_ratio=0.25, allocation_step=0.5)
    alloc = build_allocation(cfg)
    names = ["rg:a", "rg:b", "rg:c"]
    assert build_allocation(CurriculumConfig()).split(db, 1, names, 40) == {n: 40 for n in names}
    assert alloc.split(db, 1, names, 40) == {n: 40 for n in names}  # nothing measured: even
    high, low = ["zpd"] * 8 + ["mastered"] * 2, ["mastered"] * 9 + ["beyond"]
    for r in (1, 2):
        _round(db, r, {"rg:a": high, "rg:b": low, "rg:c": low})
    split = alloc.split(db, 3, names, 40)
    assert sum(split.values()) == 120 and split["rg:a"] > 2 * max(split["rg:b"], split["rg:c"])
    assert min(split["rg:b"], split["rg:c"]) >= 10  # the floor: a quarter of an even share
    for r in (3, 4, 5):  # yields swap: b is now the productive family
        _round(db, r, {"rg:a": low, "rg:b": high, "rg:c": low})
    after = alloc.split(db, 6, names, 40)
    assert after["rg:b"] > 2 * max(after["rg:a"], after["rg:c"])
    assert after["rg:a"] >= 10 and sum(after.values()) == 120
    assert alloc.split(db, 6, names, 40) == after  # derived from the store: the same on a rerun


# -- a smoke run: three families, two rounds, a resume -------------------------------------------------
SMOKE_RG = """
[run]
seed = 1
[learner]
hidden_size = 32
num_layers = 1
num_heads = 2
intermediate_size = 64
max_positions = 256
[bootstrap]
num_examples = 120
max_solo_difficulty = 0.0
max_guided_difficulty = 1.0
epochs = 1.0
[domains.arithmetic]
enabled = false
[domains.reasoning_gym]
enabled = true
families = ["basic_arithmetic", "chain_sum", "products"]
response = "worked"
max_level = 2
eval_per_level = 2
max_eval_items = 18
check_items = 8
[synthesis]
num_candidates = 6
[calibration]
num_solo = 2
num_guided = 2
max_tokens = 8
batch_size = 8
[curriculum]
allocation = "yield"
[measure]
max_tokens = 8
[exam]
admit_per_round = 1
max_items = 6
[train]
epochs = 1.0
batch_size = 16
max_retries = 0
[metrics]
port = 0
[logging]
progress = false
"""


def _tasks(state: Path) -> list[tuple]:
    conn = sqlite3.connect(state / "state.db")
    return conn.execute("SELECT round, domain, content_hash, fate != 'eval' FROM tasks "
                        "ORDER BY content_hash").fetchall()


def test_three_families_commit_two_rounds_and_a_resume_makes_the_same_items(tmp_path):
    config = tmp_path / "rg.toml"
    config.write_text(SMOKE_RG)
    resumed, fresh = tmp_path / "resumed", tmp_path / "fresh"
    for state, steps in ((resumed, ("1", "2")), (fresh, ("2",))):
        for rounds in steps:
            out = run_zpd("start", "--config", str(config), "--state-dir", str(state), "--rounds", rounds,
                          timeout=900)
            assert out.returncode == 0, out.stderr[-3000:]
    s = status(resumed)
    assert s["committed_rounds"] == 2
    assert set(s["frontier"]) == {"rg:basic_arithmetic", "rg:chain_sum", "rg:products"}
    assert set(s["eval"]["by_domain"]) == set(s["frontier"])
    # The same run seed makes the same items, whether the run was resumed between rounds or not.
    assert _tasks(resumed) == _tasks(fresh)
    conn = sqlite3.connect(resumed / "state.db")
    assert conn.execute("SELECT count(*) FROM tasks WHERE fate = 'eval'").fetchone()[0] <= 18
    # Exam and eval items never reach training; raw scores are stored with the attempts.
    assert conn.execute("""SELECT count(*) FROM train_examples e JOIN tasks t ON t.id = e.task_id
                           WHERE t.fate IN ('eval', 'exam')""").fetchone()[0] == 0
    for (report,) in conn.execute("SELECT decontamination_json FROM rounds WHERE id >= 1"):
        assert json.loads(report)["exact_overlap"] == 0
    scores = conn.execute("SELECT score, correct FROM attempts").fetchall()
    assert scores and all(sc is not None and (sc >= 1.0) == bool(ok) for sc, ok in scores)
    meta = json.loads(conn.execute("SELECT meta_json FROM tasks WHERE round = 1 LIMIT 1").fetchone()[0])
    assert meta["rg"]["entry"]["question"] and meta["rg"]["version"] == "0.1.25"
    # The set of families is fixed for a run.
    out = run_zpd("start", "--config", str(config), "--state-dir", str(resumed), "--rounds", "3",
                  "--set", 'domains.reasoning_gym.families=["chain_sum"]', timeout=300)
    assert out.returncode == 2 and "domains.reasoning_gym.families" in out.stderr


# -- frozen validation and test sets ---------------------------------------------------------------------
def test_frozen_sets_are_disjoint_fixed_over_the_levels_and_independent_of_the_run_seed():
    cfg = _cfg(families=["chain_sum", "products"], max_level=2, eval_per_level=6, validation_ratio=0.5)
    families, _ = build_families(cfg)
    for fam in families.values():
        items = fam.eval_items()
        val = [t for t in items if t.meta["rg"]["split"] == "validation"]
        test = [t for t in items if t.meta["rg"]["split"] == "test"]
        assert len(val) == len(test) == 9 and len(items) == 18
        # Disjoint (by content hash: what dedup and integrity compare), and each split spans every level.
        assert not {t.content_hash for t in val} & {t.content_hash for t in test}
        assert len({t.content_hash for t in items}) == len(items)
        assert {t.difficulty for t in val} == {t.difficulty for t in test} == {0.0, 1.0, 2.0}
        # Fixed seeds: a rebuilt family (another run, another run.seed) makes the same sets.
        again = Family(fam.family, cfg, fam.levels, fam.eval_budget).eval_items()
        assert [(t.content_hash, t.meta["rg"]["split"]) for t in again] == [
            (t.content_hash, t.meta["rg"]["split"]) for t in items]
        # eval_seed moves them; training candidates (rng from the run seed) do not hit them.
        moved = Family(fam.family, _cfg(families=[fam.family], max_level=2, eval_per_level=6, eval_seed=1),
                       fam.levels, fam.eval_budget).eval_items()
        assert {t.content_hash for t in moved} != {t.content_hash for t in items}
        # Level 0 has few distinct items, so a candidate can equal an eval item: the store keeps the eval item
        # (stored first) and drops the candidate as a duplicate by content hash; the smoke run checks that no
        # eval or exam item reaches training. At level 2 a collision is rare: the sets are apart.
        rng = random.Random(0)
        candidates = {fam.make_task(2.0, rng).content_hash for i in range(100)}
        assert not candidates & {t.content_hash for t in items}


def test_the_eval_cap_holds_with_many_families_and_the_split_ratio():
    names = FAMILIES[:12]
    families, _ = build_families(_cfg(families=names, max_eval_items=40, eval_per_level=8, check_items=4,
                                      validation_ratio=0.25))
    items = [t for f in families.values() for t in f.eval_items()]
    assert 0 < len(items) <= 40 and {t.domain for t in items} == set(families)
    splits = [t.meta["rg"]["split"] for t in items]
    assert splits.count("validation") <= splits.count("test")


# -- guidance with a [teacher]: its attempt, or its hint to the learner --------------------------------
def _teacher_model(path: Path) -> Path:
    """A real local model as the teacher (random init: its hints are nonsense, but real model output)."""
    from zpd.configs.schema import LearnerConfig
    from zpd.trainer.model import create_learner

    create_learner(path, LearnerConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                       max_positions=256), seed=5)
    return path


def test_teacher_hints_guide_the_learner_or_the_teacher_attempts(tmp_path):
    import shutil

    from zpd.trainer.generate import EmbeddedGenerator

    config = tmp_path / "rg.toml"
    config.write_text(SMOKE_RG.replace('"basic_arithmetic", "chain_sum", "products"',
                                       '"chain_sum", "products"'))
    teacher = _teacher_model(tmp_path / "teacher")
    base = tmp_path / "base"
    out = run_zpd("start", "--config", str(config), "--state-dir", str(base), "--rounds", "0", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    with_teacher = ["--set", "teacher.backend=embedded", "--set", f'teacher.model="{teacher}"',
                    "--set", "teacher.temperature=0", "--set", "domains.reasoning_gym.hint_max_tokens=12"]
    roles = {}
    for mode in ("hint", "attempt"):
        state = tmp_path / mode
        shutil.copytree(base, state)
        out = run_zpd("start", "--config", str(config), "--state-dir", str(state), "--rounds", "1",
                      *with_teacher, "--set", f"domains.reasoning_gym.teacher_guidance='{mode}'", timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        conn = sqlite3.connect(state / "state.db")
        roles[mode] = dict(conn.execute("SELECT role, count(*) FROM attempts "
                                        "WHERE mode = 'guided' AND round = 1 GROUP BY role").fetchall())
        rows = conn.execute("SELECT guidance, answer, meta_json FROM tasks WHERE round = 1").fetchall()
        assert rows
        if mode == "attempt":
            assert all("guidance_by" not in json.loads(m)["rg"] for _, _, m in rows)
            continue
        # Every round-1 candidate's guidance is the teacher's hint: the same model, prompt and seed make it.
        gen = EmbeddedGenerator(teacher)
        cfg = ReasoningGymConfig()
        for guidance, answer, meta_json in rows:
            m = json.loads(meta_json)["rg"]
            assert m["guidance_by"] == f"teacher:{teacher}"
            prompt = cfg.hint_prompt.replace("{question}", m["entry"]["question"])
            text = gen.generate([prompt], max_tokens=12, seed=m["seed"])[0][0].text.strip()
            assert guidance == ("" if answer in text else text) and answer not in guidance
        gen.close()
        # The frozen eval items keep their offline guidance (hints: candidates once round 0 is committed).
        evals = conn.execute("SELECT meta_json FROM tasks WHERE fate = 'eval'").fetchall()
        assert evals and all("guidance_by" not in json.loads(m)["rg"] for (m,) in evals)
    # Hints: the learner makes the guided attempts; attempt mode: the teacher does, as in the paper.
    assert roles["hint"].get("learner", 0) > 0 and "teacher" not in roles["hint"]
    assert roles["attempt"].get("teacher", 0) > 0 and "learner" not in roles["attempt"]


def test_eval_split_validation_holds_the_test_items_out_of_measure_and_of_the_candidates():
    cfg = _cfg(families=["chain_sum"], max_level=2, eval_per_level=12)
    held_cfg = _cfg(families=["chain_sum"], max_level=2, eval_per_level=12, eval_split="validation")
    whole, held = Family("chain_sum", cfg, [0, 1, 2], 36), Family("chain_sum", held_cfg, [0, 1, 2], 36)
    test = {t.content_hash for t in held.test_items()}
    assert test == {t.content_hash for t in whole.eval_items() if t.meta["rg"]["split"] == "test"}
    # MEASURE reads the validation items only; the test items are the other half of the same frozen set.
    assert {t.meta["rg"]["split"] for t in held.eval_items()} == {"validation"}
    assert len(held.eval_items()) + len(test) == len(whole.eval_items()) == 36
    # Level-0 items are few: without the guard the same rng draws test items as candidates; with it, never.
    drawn_whole = [whole.make_task(0.0, random.Random(i)).content_hash for i in range(300)]
    drawn_held = [held.make_task(0.0, random.Random(i)).content_hash for i in range(300)]
    assert set(drawn_whole) & test and not set(drawn_held) & test


def test_the_example_config_loads_and_its_families_pass_the_checks():
    from harness import ROOT

    from zpd.configs.load import load_config

    cfg = load_config(ROOT / "configs" / "reasoning-gym.toml").domains.reasoning_gym
    families, left_out = build_families(cfg)
    assert cfg.enabled and not left_out and len(families) == len(cfg.family_names() or [])
    assert sum(len(f.eval_items()) for f in families.values()) <= cfg.max_eval_items


def test_attribute_difficulty_is_the_sum_of_attribute_levels_under_their_caps():
    ladder = g.Ladder("attributes")
    # chain_sum: num_terms 11 levels, num_digits 10: scalar levels 0..19, each item one combination.
    assert g.last_level("chain_sum", ladder) == 19 and g.last_level("chain_sum") == 10
    for level in (0, 1, 3, 19):
        settings = {g.setting_of("chain_sum", level, seed, ladder) for seed in range(40)}
        assert all(sum(k for _, k in s) == level for s in settings)
        assert len(settings) == min(level + 1, 20 - level)  # every combination is drawn
    # The global ladder is reasoning-gym's own set_global_level: the same item from the same seed.
    from reasoning_gym.factory import DATASETS, create_curriculum

    cur = create_curriculum("chain_sum")
    cur.set_global_level(2)
    raw = DATASETS["chain_sum"][0](config=cur.generate_configuration({"seed": 5, "size": 1}))[0]
    assert g.make_entry("chain_sum", 2, 5, "inclusive")["question"] == raw["question"]
    # Capped: one-digit terms, the level is the number of terms less two; the levels are in the meta and
    # the stored task grades alike wherever it is rebuilt.
    cfg = _cfg(difficulty="attributes", attribute_max={"num_digits": 0}, response="worked", max_level=6)
    families, left_out = build_families(cfg)
    fam = families["rg:chain_sum"]
    assert not left_out and fam.levels == list(range(7))
    rng = random.Random(1)
    for level in range(7):
        task = fam.make_task(float(level), rng)
        meta = task.meta["rg"]
        assert meta["attributes"] == {"num_digits": 0, "num_terms": level}
        assert meta["entry"]["metadata"]["num_terms"] == level + 2
        assert all(len(term) == 1 for term in meta["entry"]["metadata"]["expression"].split()[::2])
        rebuilt = Task(**json.loads(json.dumps(asdict(task))))
        assert grader_for(task.domain)(rebuilt, fam.solution(task)) and not fam.grade(task, ">zzz")
    with pytest.raises(ValueError, match="num_digits"):
        _cfg(attribute_max={"num_digits": -1})


def test_chain_sum_worked_steps_are_the_running_total_and_the_guidance_leaves_the_last_result_out():
    chain_steps = g.chain_steps
    entry = {"answer": "5", "metadata": {"expression": "3 - 5 + 7"}}
    assert chain_steps(entry) == ["3-5=-2", "-2+7=5"]
    assert chain_steps({**entry, "answer": "6"}) == []  # a total that is not the answer: no steps
    assert chain_steps({"answer": "1", "metadata": {"expression": "3 * 5"}}) == []
    cfg = _cfg(difficulty="attributes", attribute_max={"num_digits": 0}, response="worked", max_level=6)
    fam = build_families(cfg)[0]["rg:chain_sum"]
    guided = 0
    for i in range(60):
        task = fam.make_task(float(i % 7), random.Random(100 + i))
        steps = fam.solution(task).rsplit(">", 1)[0].split(";")
        total = int(steps[0].split("=")[0][0])
        for step in steps:  # each step is right and starts from the total before it
            first, op, term, result = re.fullmatch(r"(-?[0-9]+)([+-])([0-9]+)=(-?[0-9]+)", step).groups()
            assert int(first) == total
            assert int(result) == (total + int(term) if op == "+" else total - int(term))
            total = int(result)
        assert str(total) == task.answer and fam.grade(task, fam.solution(task))
        assert task.answer not in task.guidance
        if task.guidance:
            guided += 1
            assert fam.solution(task).startswith(task.guidance)  # the attempt finishes the last step
    # Every candidate has a guidance: an item whose guidance would hold the answer is drawn again (about
    # a third of the items made from fixed seeds have none).
    assert guided == 60 and 0.5 <= fam.offline_guidance_ratio() < 1.0
    # The work is graded too: the right last number after a wrong step fails; a bare answer is graded alone.
    task = next(t for t in (fam.task_at(2, s) for s in range(50)) if t.meta["rg"]["entry"]["metadata"]
                ["expression"].startswith(("1 + ", "2 + ", "3 + ")))
    steps = fam.solution(task).rsplit(">", 1)[0].split(";")
    lhs, rhs = steps[0].split("=")
    wrong = ";".join([f"{lhs}={int(rhs) + 1}", *steps[1:]])
    assert not fam.grade(task, f"{wrong}>{task.answer}") and fam.score(task, f"{wrong}>{task.answer}") == 0
    assert fam.grade(task, f">{task.answer}") and not fam.grade(task, f">{int(task.answer) + 1}")
    rebuilt = Task(**json.loads(json.dumps(asdict(task))))
    assert not grader_for(task.domain)(rebuilt, f"{wrong}>{task.answer}")
    assert compute_score("zpd/rg:chain_sum", f"{wrong}>{task.answer}", task.answer,
                         {"task_json": json.dumps(asdict(task))}) == 0.0
