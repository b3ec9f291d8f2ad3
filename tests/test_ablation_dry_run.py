"""``bench/ablation.py --dry-run``: the whole bench on the smoke learner (round 0 from the suite's snapshot
through ``--round0``, a seed-0 sweep of 2 cells x 2 arms on the shared pool, one round each, the report),
with real ``zpd start`` subprocesses; then the GPU scale's dry run on the same work directory, which
validates the GPU settings and resumes without running a round again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(ROOT / "bench" / "ablation.py"), "--dry-run", "--jobs", "2",
                           "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), *extra],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)


def test_dry_run_end_to_end_and_resume(tmp_path: Path, round0_archive: Path) -> None:
    # Every run starts from the suite's smoke round 0 (--round0: the bench copies it instead of building one).
    first = _bench(tmp_path, "--round0", str(round0_archive))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "| zpd |" in first.stdout and "| random |" in first.stdout
    work = tmp_path / "work"
    assert (work / "round0.tar").read_bytes() == round0_archive.read_bytes()  # copied, not built again
    assert not (work / "round0").exists()
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    grid = [(1e-3, 2.0), (3e-3, 2.0)]
    for arm in ("zpd", "random"):
        t = res["tuning"][arm]
        assert (t["learning_rate"], t["replay_ratio"]) in grid
        best = max(c["validation_at_b"] for c in t["cells"])
        chosen = [c for c in t["cells"] if c["learning_rate"] == t["learning_rate"]]
        assert len(t["cells"]) == 2 and chosen[0]["validation_at_b"] == best  # chosen on validation
        (run,) = res["runs"][arm]
        assert [r["round"] for r in run["rounds"]] == [0, 1]
        assert run["test_items"] and set(run["test_items"].values()) <= {True, False}
        # The reported test accuracy is rebuilt from the stored per-item outcomes.
        assert run["test_at_b"] == pytest.approx(sum(run["test_items"].values()) / len(run["test_items"]))
        # Target sources at B are round 1's, and every one is a source of the contract.
        assert run["sources"] == run["rounds"][1]["target_sources"]
        assert set(run["sources"]) <= {"guided", "solo", "reference"}
    # Both arms calibrated the same pool: one file for seed 0's round 1, in the pool source's format.
    pool = (tmp_path / "work" / "pool" / "seed0" / "round_000001.jsonl").read_text().splitlines()
    assert len(pool) == 12
    assert set(json.loads(pool[0])) == {"domain", "difficulty", "prompt", "answer", "guidance", "canonical",
                                        "meta"}
    assert res["arms"][1]["mcnemar_vs_zpd"][0]["p_two_sided"] <= 1.0
    assert (tmp_path / "out" / "accuracy_vs_tokens.png").stat().st_size > 0
    assert (tmp_path / "out" / "accuracy_by_level.png").stat().st_size > 0
    # Again on the same work directory, at the GPU scale (its settings only validated on the CPU) and
    # with --tuning (each arm's stored cell instead of the sweep): seed 0's chosen runs are the same runs,
    # so it resumes with nothing left to run and reports the same arms.
    (tmp_path / "res.json").write_text(json.dumps(res))
    again = _bench(tmp_path, "--scale", "gpu", "--tuning", str(tmp_path / "res.json"))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "GPU scale settings validate" in again.stdout
    assert f"tuning zpd: lr {res['tuning']['zpd']['learning_rate']:g}" in again.stdout
    assert "round 1:" not in again.stdout  # resumed: nothing left to run
    assert json.loads((tmp_path / "out" / "results.json").read_text())["arms"] == res["arms"]


def test_a_tuning_file_without_an_arm_is_one_line_before_any_run(tmp_path: Path) -> None:
    bad = tmp_path / "tuning.json"
    bad.write_text(json.dumps({"zpd": {"learning_rate": 1e-3, "replay_ratio": 2.0}}))
    proc = _bench(tmp_path, "--tuning", str(bad))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"--tuning {bad}: no learning_rate and replay_ratio for arm 'random'"
    assert not (tmp_path / "work").exists()


def test_a_missing_round0_snapshot_is_one_line_before_any_run(tmp_path: Path) -> None:
    proc = _bench(tmp_path, "--round0", str(tmp_path / "nope.tar"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"--round0 {tmp_path / 'nope.tar'}: no such file"
    assert not (tmp_path / "work").exists()


def _patched_bench(code: str) -> str:
    """Run ``code`` with bench/ on the path in a subprocess (it patches the bench module's functions without
    touching this process) and return its stdout."""
    out = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'bench')\n" + code],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_full_runs_seed_after_seed_and_the_default_all_seeds_together() -> None:
    """``lockstep(by_seed=True)`` (``--full``) advances one seed's runs to their end before the next seed's;
    without it every run of every seed takes each round together. Checked in a subprocess, which patches
    the bench module's ``_lockstep`` without touching this process."""
    code = (
        "import ablation\n"
        "calls = []\n"
        "ablation._lockstep = lambda runs, b, archive: calls.append(sorted({r.seed for r in runs}))\n"
        "runs = [ablation.Run(f'a{s}{k}', 'zpd', s, [], True) for s in (2, 0, 1) for k in range(2)]\n"
        "ablation.lockstep(runs, None, None, by_seed=True); print(calls); calls.clear()\n"
        "ablation.lockstep(runs, None, None); print(calls)\n"
    )
    assert _patched_bench(code).split("\n")[:2] == ["[[0], [1], [2]]", "[[0, 1, 2]]"]


def test_a_resumed_lockstep_advances_runs_past_rounds_they_all_have() -> None:
    """A bench resumed after every run of a seed committed round 1 (or more) goes on from there: round 1
    having no run left to advance is no reason to stop (it stopped there once, and --full reported seed 0
    at round 3 of 10). The report refuses runs that stopped before B and before the round cap."""
    code = (
        "from types import SimpleNamespace as N\n"
        "import ablation\n"
        "from ablation_stats import RoundPoint\n"
        "done, calls = {'a': 2, 'b': 3}, []\n"
        "ablation.progress = lambda run, b: (done[run.name], 0)\n"
        "def step(run, r, b, archive):\n"
        "    calls.append((run.name, r)); done[run.name] = r\n"
        "ablation.step, ablation.ensure_pool = step, lambda *a: None\n"
        "runs = [ablation.Run(n, 'zpd', 0, [], True) for n in ('a', 'b')]\n"
        "ablation._lockstep(runs, N(cap=5, budget=100, jobs=1), None)\n"
        "print(sorted(calls))\n"
        "b = N(budget=400_000, cap=10)\n"
        "print([ablation.finished(N(validation=[RoundPoint(n, t, 0.1, True)]), b)\n"
        "       for n, t in ((3, 154_792), (4, 402_180), (10, 300_000))])\n"
    )
    *printed, calls, finished = _patched_bench(code).strip().split("\n")
    assert calls == "[('a', 3), ('a', 4), ('a', 5), ('b', 4), ('b', 5)]"
    assert printed == ["round 3: 1 runs (seeds 0), 1 at a time", "round 4: 2 runs (seeds 0), 1 at a time",
                       "round 5: 2 runs (seeds 0), 1 at a time"]
    assert finished == "[False, True, True]"
