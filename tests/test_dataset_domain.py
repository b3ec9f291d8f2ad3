"""The dataset domain: the four file formats, per-dataset grading, difficulty estimated from calibration
(the observe hook), escalate/simplify by that estimate, the eval / bootstrap / pool split, and
``zpd start --config configs/dataset.toml`` end to end with the eval set, the exam and training disjoint."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest
from harness import ROOT, run_zpd, status

from zpd.configs.load import load_config
from zpd.configs.schema import DatasetConfig
from zpd.loop.domains.base import build_domains
from zpd.loop.domains.dataset import Dataset, grade_with_meta
from zpd.loop.domains.dataset_grading import parse_number

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
                    + "".join(json.dumps({"question": f"Q{i}?", "answer": f"w #### {i}"}) + "\n" for i in range(2, 9)))
    d = dataset(path, eval_size=1, bootstrap_size=1, solution_field=None, category_field=None)
    task = next(t for t in d.tasks.values() if t.prompt == "Q1?")
    assert task.answer == "1,007" and task.guidance == "3 + 4 = 7"
    assert d.grade(task, "so 1007 #### 1007") and d.grade(task, "1007.0") and not d.grade(task, "#### 1008")
    assert d.solution(task) == "3 + 4 = 7 #### 1,007" and d.grade(task, d.solution(task))
    # A task rebuilt from the store (meta carries the grader) grades the same, config-free.
    assert grade_with_meta(task, "#### 1007.0000001")
    assert parse_number("$1,234.50") == 1234.5 and parse_number("3/4") == 0.75 and parse_number("none") is None


def test_exact_grader_normalises_space_and_case(tmp_path: Path) -> None:
    path = tmp_path / "cap.jsonl"
    path.write_text("".join(json.dumps({"question": f"Capital of {c}?", "answer": a}) + "\n"
                            for c, a in [("France", "Paris"), ("Peru", "Lima"), ("Chad", "N'Djamena"), ("Mali", "Bamako")]))
    d = dataset(path, eval_size=1, bootstrap_size=0, grader="exact", solution_field=None, category_field=None)
    task = next(t for t in d.tasks.values() if t.answer == "N'Djamena")
    assert d.grade(task, "  n'djamena. ") and not d.grade(task, "Ndjamena")


def test_splits_are_disjoint_and_difficulty_follows_observed_pass_rates() -> None:
    d = dataset(SHIPPED)
    ev, bo, pool = set(d.eval_hashes), set(d.bootstrap_hashes), set(d.pool_hashes)
    assert len(ev) == 10 and len(bo) == 10 and not (ev & bo or ev & pool or bo & pool)
    assert len(ev | bo | pool) == len(ROWS)
    cat = {h: d.items[h].category for h in d.items}
    # mul is always solved alone, two-step never: estimates (levels * (1 - p)) order the categories.
    stats = {h: ((4, 4) if cat[h] == "mul" else (0, 4) if cat[h] == "two-step" else (2, 4)) for h in list(pool)[:120]}
    d.observe(stats, used=set(stats))
    est = {c: {d.estimated_difficulty(h) for h in pool - set(stats) if cat[h] == c} for c in set(cat.values())}
    assert max(est["mul"]) < min(est["add"]) <= max(est["add"]) < min(est["two-step"])
    rng = random.Random(0)
    easy = d.make_task(0.0, rng)
    hard = d.make_task(10.0, rng)
    assert easy.meta["category"] == "mul" and hard.meta["category"] == "two-step"
    assert d.escalate(easy, rng).difficulty >= easy.difficulty and d.simplify(hard, rng).difficulty <= hard.difficulty
    # Items handed out or already stored are never offered again, until the pool is spent.
    offered = [d.make_task(5.0, rng).content_hash for _ in range(len(pool) - len(stats) - 4)]
    assert len(set(offered)) == len(offered) and not set(offered) & (set(stats) | ev | bo)


def test_file_difficulty_is_used_as_given(tmp_path: Path) -> None:
    path = tmp_path / "lv.jsonl"
    path.write_text("".join(json.dumps({"question": f"{i}+{i}?", "answer": 2 * i, "level": i % 5}) + "\n" for i in range(40)))
    d = dataset(path, difficulty_field="level", solution_field=None, category_field=None, eval_size=5, bootstrap_size=5)
    assert (d.min_difficulty, d.max_difficulty) == (0.0, 4.0)
    assert d.make_task(3.2, random.Random(1)).difficulty == 3.0


def test_dataset_config_runs_end_to_end_with_eval_exam_and_training_disjoint(tmp_path: Path) -> None:
    state = tmp_path / "state"
    args = ["start", "--config", str(ROOT / "configs" / "dataset.toml"), "--state-dir", str(state), "--rounds", "1",
            "--set", "bootstrap.num_examples=120", "--set", "synthesis.num_candidates=12",
            "--set", "calibration.max_tokens=14", "--set", "measure.max_tokens=14", "--set", "exam.admit_per_round=6",
            "--set", "curriculum.solo_max_ratio=1.0", "--set", "curriculum.guided_min_ratio=0.0"]
    out = run_zpd(*args, timeout=500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    s = status(state)
    assert s["last_committed_round"] == 1 and "dataset" in s["frontier"] and s["tasks"]["by_fate"]["eval"] == 24
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
