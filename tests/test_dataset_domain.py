"""The dataset domain: the four file formats, per-dataset grading, frozen difficulty (from the worked
solution, never from pass rates) and a frontier that stays put while the learner does, escalate and
simplify, the eval / bootstrap / pool split, and ``zpd start --config configs/dataset.toml`` end to end
with the eval set, the exam and training disjoint."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
from pathlib import Path

import pytest
from harness import ROOT, run_zpd, status

from zpd.configs.load import load_config
from zpd.configs.schema import DatasetConfig
from zpd.loop.domains.dataset import Dataset, grade_with_meta
from zpd.loop.domains.dataset_file import DatasetFileError
from zpd.loop.domains.dataset_grading import parse_number
from zpd.loop.domains.registry import build_domains
from zpd.store.rounds import round_dir

SHIPPED = ROOT / "configs" / "data" / "word_problems.jsonl"
ROWS = [json.loads(x) for x in SHIPPED.read_text().splitlines()]


def dataset(path: Path, **kw) -> Dataset:
    kw = {"eval_size": 10, "bootstrap_size": 10, "solution_field": "solution", "category_field": "category",
          "grader": "numeric", **kw}
    return Dataset(DatasetConfig(enabled=True, path=path, **kw))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "hf"])
def test_every_format_gives_the_same_items(fmt: str, tmp_path: Path) -> None:
    rows = ROWS[:60]
    if fmt == "jsonl":
        path = SHIPPED
    elif fmt == "csv":
        import csv

        path = tmp_path / "p.csv"
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "p.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        import datasets

        path = tmp_path / "hf"
        datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(path))
    d = dataset(path)
    expected = {r["question"]: r["answer"] for r in (ROWS if fmt == "jsonl" else rows)}
    assert {t.prompt: t.answer for t in d.tasks.values()} == expected


def test_gsm8k_style_answers_split_at_the_marker_and_grade_numerically(tmp_path: Path) -> None:
    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps({"question": "Q1?", "answer": "3 + 4 = 7\n#### 1,007"}) + "\n"
                    + "".join(json.dumps({"question": f"Q{i}?",
                                          "answer": f"w #### {i}"}) + "\n" for i in range(2, 9)))
    d = dataset(path, eval_size=1, bootstrap_size=1, solution_field=None, category_field=None)
    task = next(t for t in d.tasks.values() if t.prompt == "Q1?")
    assert task.answer == "1,007" and task.guidance == "3 + 4 = 7"
    assert d.grade(task, "so 1007 #### 1007") and d.grade(task, "1007.0") and not d.grade(task, "#### 1008")
    assert d.solution(task) == "3 + 4 = 7 #### 1,007" and d.grade(task, d.solution(task))
    # A task rebuilt from the store (meta carries the grader) grades the same, config-free.
    assert grade_with_meta(task, "#### 1007.0000001")
    assert parse_number("$1,234.50") == 1234.5 and parse_number("3/4") == 0.75
    assert parse_number("none") is None


def test_exact_grader_normalises_space_and_case(tmp_path: Path) -> None:
    path = tmp_path / "cap.jsonl"
    path.write_text("".join(json.dumps({"question": f"Capital of {c}?", "answer": a}) + "\n"
                            for c, a in [("France", "Paris"), ("Peru", "Lima"), ("Chad", "N'Djamena"),
                                         ("Mali", "Bamako")]))
    d = dataset(path, eval_size=1, bootstrap_size=0, grader="exact", solution_field=None, category_field=None)
    task = next(t for t in d.tasks.values() if t.answer == "N'Djamena")
    assert d.grade(task, "  n'djamena. ") and not d.grade(task, "Ndjamena")


def test_splits_are_disjoint_and_difficulty_is_frozen_from_the_worked_solution() -> None:
    d = dataset(SHIPPED)
    ev, bo, pool = set(d.eval_hashes), set(d.bootstrap_hashes), set(d.pool_hashes)
    assert len(ev) == 10 and len(bo) == 10 and not (ev & bo or ev & pool or bo & pool)
    assert len(ev | bo | pool) == len(ROWS)
    level = {h: d.estimated_difficulty(h) for h in d.items}
    cat = {h: d.items[h].category for h in d.items}
    # Longer worked solutions are harder: one-digit sums below two-digit ones, two-step problems on top.
    one_digit = [level[h] for h in d.items if len(d.items[h].solution) <= 5]
    two_digit_sums = [level[h] for h in d.items if cat[h] == "add" and len(d.items[h].solution) == 8]
    assert max(one_digit) < min(two_digit_sums)
    two_step = [level[h] for h in d.items if cat[h] == "two-step"]
    assert min(two_step) > max(level[h] for h in d.items if cat[h] != "two-step")
    assert 0.0 <= min(level.values()) < max(level.values()) <= 10.0
    # Solo statistics do not move a difficulty (they did, and the frontier drifted with no training).
    stats = {h: ((4, 4) if cat[h] == "two-step" else (0, 4)) for h in list(pool)[:120]}
    d.observe(stats, used=set(stats))
    assert {h: d.estimated_difficulty(h) for h in d.items} == level
    assert [t.difficulty for t in d.eval_items()] == [level[h] for h in d.eval_hashes]
    rng = random.Random(0)
    easy = d.make_task(0.0, rng)
    hard = d.make_task(10.0, rng)
    assert easy.difficulty == min(level.values()) and hard.meta["category"] == "two-step"
    assert d.escalate(easy, rng).difficulty >= easy.difficulty
    assert d.simplify(hard, rng).difficulty <= hard.difficulty
    # Items handed out or already stored are never offered again, until the pool is spent.
    offered = [d.make_task(5.0, rng).content_hash for _ in range(len(pool) - len(stats) - 4)]
    assert len(set(offered)) == len(offered) and not set(offered) & (set(stats) | ev | bo)


def test_the_frontier_does_not_move_while_the_learner_is_unchanged(tmp_path: Path) -> None:
    """Nothing is trained after round 0 (train.min_examples out of reach), so round 1 measures the round-0
    learner again: same answers, same eval difficulties, same frontier. (Before difficulties were frozen,
    this moved from 4.5 to 9.5.) The learner is made small: the check does not depend on what it knows."""
    state = tmp_path / "state"
    small = ["learner.hidden_size=32", "learner.num_heads=2", "learner.intermediate_size=64",
             "bootstrap.num_examples=100", "synthesis.num_candidates=8", "train.min_examples=1000000"]
    out = run_zpd("start", "--config", str(ROOT / "configs" / "dataset.toml"), "--state-dir", str(state),
                  "--rounds", "1", *[a for x in small for a in ("--set", x)], timeout=500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    conn = sqlite3.connect(state / "state.db")
    assert conn.execute("SELECT train_tokens FROM rounds WHERE id = 1").fetchone()[0] == 0
    weights = [hashlib.sha256((round_dir(state, n) / "learner" / "model.safetensors").read_bytes()).digest()
               for n in (0, 1)]
    assert weights[0] == weights[1]  # the same learner, measured twice
    answers = [conn.execute("SELECT task_id, output FROM measurements WHERE round = ? AND kind = 'eval' "
                            "ORDER BY task_id", [n]).fetchall() for n in (0, 1)]
    assert answers[0] == answers[1] and len(answers[0]) == 24
    frontier = [r[0] for r in conn.execute("SELECT value FROM frontier WHERE domain = 'dataset' "
                                           "ORDER BY round")]
    assert len(frontier) == 2 and frontier[0] == frontier[1], frontier
    levels = {r[0] for r in conn.execute("SELECT difficulty FROM tasks WHERE fate = 'eval'")}
    assert len(levels) >= 3  # the eval set spans several difficulties, so the frontier means something


def test_a_file_too_small_names_the_minimum(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "dataset.toml").domains.dataset
    need = cfg.eval_size + cfg.bootstrap_size + 1
    path = tmp_path / "small.jsonl"
    rows = ROWS[: need - 1]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    too_small = rf"small.jsonl: {need - 1} usable items, at least {need} needed"
    with pytest.raises(DatasetFileError, match=too_small):
        Dataset(cfg.model_copy(update={"path": path}))
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:need]))
    assert len(Dataset(cfg.model_copy(update={"path": path})).pool_hashes) == 1


def test_file_difficulty_is_used_as_given(tmp_path: Path) -> None:
    path = tmp_path / "lv.jsonl"
    path.write_text("".join(json.dumps({"question": f"{i}+{i}?", "answer": 2 * i,
                                        "level": i % 5}) + "\n" for i in range(40)))
    d = dataset(path, difficulty_field="level", solution_field=None, category_field=None, eval_size=5,
                bootstrap_size=5)
    assert (d.min_difficulty, d.max_difficulty) == (0.0, 4.0)
    assert d.make_task(3.2, random.Random(1)).difficulty == 3.0


def test_dataset_config_runs_end_to_end_with_eval_exam_and_training_disjoint(tmp_path: Path) -> None:
    state = tmp_path / "state"
    args = ["start", "--config", str(ROOT / "configs" / "dataset.toml"), "--state-dir", str(state),
            "--rounds", "1",
            # A smaller learner than the shipped one: disjointness does not depend on what it learns.
            "--set", "learner.hidden_size=32", "--set", "learner.num_heads=2",
            "--set", "learner.intermediate_size=64",
            "--set", "bootstrap.num_examples=120", "--set", "synthesis.num_candidates=12",
            "--set", "calibration.max_tokens=14", "--set", "measure.max_tokens=14", "--set",
            "exam.admit_per_round=6",
            "--set", "curriculum.solo_max_ratio=1.0", "--set", "curriculum.guided_min_ratio=0.0"]
    out = run_zpd(*args, timeout=500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    s = status(state)
    assert s["last_committed_round"] == 1 and "dataset" in s["frontier"]
    assert s["tasks"]["by_fate"]["eval"] == 24
    conn = sqlite3.connect(state / "state.db")
    q = lambda sql: {r[0] for r in conn.execute(sql)}  # noqa: E731
    eval_ids, exam_ids = q("SELECT id FROM tasks WHERE fate = 'eval'"), q("SELECT task_id FROM exam_items")
    train_ids = q("SELECT task_id FROM train_examples")
    assert q("SELECT DISTINCT domain FROM tasks") == {"dataset"}
    assert not (eval_ids & train_ids) and not (exam_ids & train_ids) and not (eval_ids & exam_ids)
    # The round-0 warm-up draws only from the bootstrap share, which no stored task comes from.
    cfg = load_config(ROOT / "configs" / "dataset.toml")
    d = build_domains(cfg.domains)["dataset"]
    assert not set(d.bootstrap_hashes) & q("SELECT content_hash FROM tasks")
    assert q("SELECT content_hash FROM tasks WHERE fate = 'eval'") == set(d.eval_hashes)
    # Re-importing adds nothing: the same command again exits at once and stores no new task.
    before = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    again = run_zpd(*args, timeout=200)
    assert again.returncode == 0 and conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == before
    # The shipped config loads, and --set points it at another file.
    other = tmp_path / "other.jsonl"
    other.write_text(SHIPPED.read_text())
    cfg = load_config(ROOT / "configs" / "dataset.toml", [f"domains.dataset.path={other}"])
    assert cfg.domains.dataset.path == other and set(build_domains(cfg.domains)) == {"dataset"}
