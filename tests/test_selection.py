"""The selection (``curriculum.selection``, loop/selection.py; issue 13): each rule on a hand-made calibrated
round in a real store, its sizes, its determinism, the target-source precedence, and the policy aliases.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from harness import SMOKE, run_zpd

from zpd.configs.load import ConfigError, load_config
from zpd.configs.schema import CurriculumConfig
from zpd.loop import selection
from zpd.loop.domains.base import Task
from zpd.store import ledger_tasks, stats
from zpd.store.db import open_store
from zpd.store.ledger_tasks import Calibrated

ROUND = 3

# (fate, solo grades, guided grades) per task of a hand-made round; p_solo and p_guided follow the grades.
ROWS = {
    1: ("zpd", [0, 0, 0, 0], [1, 0, 0]),
    2: ("zpd", [0, 0, 0, 0], [1, 1, 1]),
    3: ("zpd", [1, 0, 0, 0], [0, 1, 0]),
    4: ("mastered", [1, 1, 0, 0], []),  # p = 0.5
    5: ("mastered", [1, 1, 1, 0], []),  # p = 0.75
    6: ("mastered", [1, 1, 1, 1], []),  # p = 1
    7: ("beyond", [0, 0, 0, 0], [0, 0, 0]),  # no correct answer at all
    8: ("beyond", [1, 0, 0, 0], [0, 0, 0]),  # p = 0.25, a solo success only
    9: ("exam", [0, 0, 0, 0], [1, 1, 1]),  # never selectable
    10: ("mastered", [0, 1, 1, 1], []),  # p = 0.75
}


def _rate(grades: list[int]) -> float | None:
    return sum(grades) / len(grades) if grades else None


def _round_store(tmp_path: Path, rows: dict[int, tuple[str, list[int], list[int]]] = ROWS,
                 domain: str = "arithmetic"):
    db = open_store(tmp_path / "state.db")
    attempts = []
    for tid, (fate, solo, guided) in rows.items():
        t = Task(domain, 2.0, f"{tid}+{tid}", str(2 * tid), "guide", f"c{tid}")
        db["tasks"].insert(dict(id=tid, domain=domain, difficulty=2.0, prompt=t.prompt, answer=t.answer,
                                guidance=t.guidance, canonical=t.canonical, content_hash=t.content_hash,
                                round=ROUND, fate=fate, fate_round=ROUND, p_solo=_rate(solo),
                                p_guided=_rate(guided)))
        for mode, grades in (("solo", solo), ("guided", guided)):
            attempts += [dict(task_id=tid, round=ROUND, learner_ref="2", role="learner", mode=mode,
                              sample_idx=i, output=f"{mode}{i}", correct=g, num_tokens=1,
                              latency_seconds=0.0, finish_reason="stop") for i, g in enumerate(grades)]
    stats.insert_attempts(db, attempts)
    return db


def _choose(db, name: str, seed: int = 0, **cfg: object) -> dict[int, str]:
    sel = selection.build_selection(CurriculumConfig(selection=name, **cfg))
    return selection.choose(sel, ledger_tasks.calibrated_of_round(db, ROUND), seed, ROUND)


def test_the_round_pool_is_every_calibrated_task_but_exam_items(tmp_path):
    pool = ledger_tasks.calibrated_of_round(_round_store(tmp_path), ROUND)
    assert [t.id for t in pool] == [1, 2, 3, 4, 5, 6, 7, 8, 10]
    by_id = {t.id: t for t in pool}
    assert (by_id[3].guided_correct, by_id[3].solo_correct) == (True, True)
    assert (by_id[7].guided_correct, by_id[7].solo_correct) == (False, False)
    assert by_id[4].p_solo == 0.5 and by_id[1].p_guided == pytest.approx(1 / 3)


def test_each_selection_keeps_what_its_rule_says(tmp_path):
    db = _round_store(tmp_path)
    assert sorted(_choose(db, "zpd")) == [1, 2, 3]
    assert sorted(_choose(db, "r-zero")) == [4, 5, 10]  # p in [0.3, 0.8]
    assert sorted(_choose(db, "r-zero", rzero_band=(0.2, 0.5))) == [3, 4, 8]
    assert sorted(_choose(db, "all-correct")) == [1, 2, 3, 4, 5, 6, 8, 10]  # not 7 (nothing correct), not 9
    # learnability: the top 3 (the ZPD count) by p(1-p) = 0.25 (task 4), 0.1875 (tasks 3, 5, 8, 10: a tie).
    top = _choose(db, "learnability")
    assert len(top) == 3 and 4 in top and set(top) < {3, 4, 5, 8, 10}
    assert _choose(db, "learnability") == top  # the tie is broken by the seed, the same every time
    assert {frozenset(_choose(db, "learnability", seed=s)) for s in range(20)} > {frozenset(top)}


def test_random_draws_the_zpd_count_from_the_whole_pool_and_only_by_seed(tmp_path):
    db = _round_store(tmp_path)
    draws = [_choose(db, "random", seed=s) for s in range(30)]
    assert all(len(d) == 3 and set(d) <= {1, 2, 3, 4, 5, 6, 7, 8, 10} for d in draws)
    assert _choose(db, "random", seed=4) == draws[4]
    assert len({frozenset(d) for d in draws}) > 10
    assert set().union(*draws) == {1, 2, 3, 4, 5, 6, 7, 8, 10}  # any calibrated task, whatever its fate


def test_sizes_are_per_domain(tmp_path):
    db = _round_store(tmp_path)
    other = {100 + tid: row for tid, row in ROWS.items() if tid in (1, 4, 5, 6, 7)}  # one zpd task
    for tid, (fate, solo, _) in other.items():
        t = Task("other", 1.0, f"o{tid}", "1", "", f"o{tid}")
        db["tasks"].insert(dict(id=tid, domain="other", difficulty=1.0, prompt=t.prompt, answer="1",
                                guidance="", canonical=t.canonical, content_hash=t.content_hash, round=ROUND,
                                fate=fate, fate_round=ROUND, p_solo=_rate(solo), p_guided=None))
    for name in ("random", "learnability"):
        chosen = _choose(db, name)
        assert sum(t < 100 for t in chosen) == 3 and sum(t > 100 for t in chosen) == 1, name


def test_target_source_is_guided_then_solo_then_reference(tmp_path):
    db = _round_store(tmp_path)
    chosen = _choose(db, "random", seed=0) | _choose(db, "all-correct") | _choose(db, "zpd")
    every = {t.id: selection.target_source(t) for t in ledger_tasks.calibrated_of_round(db, ROUND)}
    assert every == {1: "guided", 2: "guided", 3: "guided", 4: "solo", 5: "solo", 6: "solo",
                     7: "reference", 8: "solo", 10: "solo"}
    assert all(chosen[t] == every[t] for t in chosen)
    assert selection.target_source(Calibrated(1, "d", "zpd", 0.5, 1.0, True, True)) == "guided"
    assert selection.target_source(Calibrated(1, "d", "beyond", 0.0, 0.0, False, False)) == "reference"


def test_the_stored_selection_is_idempotent_and_counted_per_target_source(tmp_path):
    db = _round_store(tmp_path)
    ledger_tasks.set_selection(db, ROUND, _choose(db, "all-correct"))
    ledger_tasks.set_selection(db, ROUND, {7: "reference", 3: "guided", 4: "solo"})  # a redo replaces it
    rows = dict(db.execute("SELECT id, selected FROM tasks").fetchall())
    assert rows == {1: 0, 2: 0, 3: 1, 4: 1, 5: 0, 6: 0, 7: 1, 8: 0, 9: None, 10: 0}
    assert ledger_tasks.target_sources(db, ROUND) == {"guided": 1, "solo": 1, "reference": 1}
    assert ledger_tasks.target_sources(db, ROUND + 1) == {"guided": 0, "solo": 0, "reference": 0}


def test_learnability_and_r_zero_read_exact_solo_rates_random_and_zpd_do_not():
    needs = {name: cls.needs_pass_rate for name, cls in selection.SELECTIONS.items()}
    assert needs == {"zpd": False, "r-zero": True, "all-correct": False, "random": False,
                     "learnability": True}


# -- the policy aliases ------------------------------------------------------------------------------


@pytest.mark.parametrize("policy,source,chosen", [
    ("zpd-band", "frontier", "zpd"), ("uniform", "uniform", "all-correct"),
    ("fixed-schedule", "schedule", "all-correct"), ("bandit", "bandit", "all-correct"),
    ("learnability", "uniform", "learnability"), ("self-play", "self-play", "zpd")])
def test_each_policy_is_a_source_and_a_selection(policy, source, chosen):
    cfg = load_config(SMOKE, [f"curriculum.policy={policy}"]).curriculum
    assert (cfg.source, cfg.selection) == (source, chosen)
    agreeing = load_config(SMOKE, [f"curriculum.policy={policy}", f"curriculum.source={source}",
                                   f"curriculum.selection={chosen}"]).curriculum
    assert agreeing == cfg
    # The pair alone names its alias, so a run's record still shows the policy.
    assert load_config(SMOKE, [f"curriculum.source={source}", f"curriculum.selection={chosen}"]
                       ).curriculum.policy == policy


def test_a_pair_without_an_alias_has_no_policy():
    cur = load_config(SMOKE, ["curriculum.source=pool", "curriculum.pool_dir=/p",
                              "curriculum.selection=random"]).curriculum
    assert (cur.policy, cur.source, cur.selection) == (None, "pool", "random")
    assert CurriculumConfig() == CurriculumConfig(source="frontier", selection="zpd")


def test_a_policy_and_a_disagreeing_source_or_selection_is_a_config_error_naming_the_keys(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, ["curriculum.policy=uniform", "curriculum.selection=zpd"])
    assert "curriculum.selection" in str(err.value) and "curriculum.policy" in str(err.value)
    with pytest.raises(ConfigError, match="curriculum.source.*curriculum.policy"):
        load_config(SMOKE, ["curriculum.policy=bandit", "curriculum.source=uniform"])
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(tmp_path / "s"), "--rounds", "1",
                  "--set", "curriculum.policy=zpd-band", "--set", "curriculum.source=pool", timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "curriculum.source" in lines[0] and "curriculum.policy" in lines[0]
    assert "Traceback" not in out.stderr and not (tmp_path / "s" / "state.db").exists()


@pytest.mark.parametrize("sets,key", [
    (["curriculum.window=[3, 1]"], "curriculum.window"),
    (["curriculum.rzero_band=[0.5, 1.5]"], "curriculum.rzero_band"),
    (["curriculum.source=pool"], "curriculum.pool_dir"),
    (["curriculum.selection=best"], "curriculum.selection"),
    (["curriculum.source=nowhere"], "curriculum.source"),
])
def test_bad_curriculum_keys_are_named(sets, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(SMOKE, sets)


def test_the_selection_does_not_depend_on_the_order_tasks_were_calibrated(tmp_path):
    db = _round_store(tmp_path)
    pool = ledger_tasks.calibrated_of_round(db, ROUND)
    shuffled = list(pool)
    random.Random(5).shuffle(shuffled)
    for name in selection.SELECTIONS:
        sel = selection.build_selection(CurriculumConfig(selection=name))
        assert selection.choose(sel, shuffled, 7, ROUND) == selection.choose(sel, pool, 7, ROUND), name


class _Ctx:
    """What select_round reads of a RunContext: the store and the round's config."""

    def __init__(self, db, *overrides: str) -> None:
        self.db, self.cfg = db, load_config(SMOKE, list(overrides))


def test_a_selection_cut_short_before_its_commit_is_redone_identically(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    killed, clean = (_Ctx(_round_store(tmp_path / d), "curriculum.selection=random", "run.seed=5")
                     for d in ("a", "b"))
    with pytest.raises(RuntimeError), killed.db.atomic():  # the transaction CALIBRATE ends with, cut short
        selection.select_round(killed, ROUND)
        raise RuntimeError("killed before the commit")
    assert killed.db.execute("SELECT count(*) FROM tasks WHERE selected IS NOT NULL").fetchone()[0] == 0
    with killed.db.atomic():
        again = selection.select_round(killed, ROUND)
    with clean.db.atomic():
        once = selection.select_round(clean, ROUND)
    read = "SELECT id, selected, target_source FROM tasks ORDER BY id"
    assert again == once and sum(once.values()) == 3
    assert killed.db.execute(read).fetchall() == clean.db.execute(read).fetchall()
