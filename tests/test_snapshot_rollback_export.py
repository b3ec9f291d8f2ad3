"""snapshot, start --from-snapshot, rollback and export, through the real CLI on a real smoke run."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import tarfile
from pathlib import Path

import pytest
from harness import SMOKE, run_zpd, spawn_zpd, status, wait_for

from zpd.store.rounds import round_dir


@pytest.fixture(scope="module")
def three_rounds(tmp_path_factory: pytest.TempPathFactory, round0_archive: Path) -> Path:
    state = tmp_path_factory.mktemp("run") / "state"
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "3",
                  "--from-snapshot", str(round0_archive))
    assert out.returncode == 0, out.stderr[-3000:]
    return state


@pytest.fixture
def state(three_rounds: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "state"
    shutil.copytree(three_rounds, copy)
    return copy


def tree_digest(path: Path) -> dict[str, str]:
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_snapshot_then_start_from_it_continues_after_its_round(state: Path, tmp_path: Path) -> None:
    archive = tmp_path / "snap.tar"
    out = run_zpd("snapshot", "--state-dir", str(state), "--out", str(archive))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["round"] == 3
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "SNAPSHOT.json" in names and "round_000003/state.db" in names
    assert "round_000003/learner/config.json" in names

    fresh = tmp_path / "fresh"
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(fresh), "--rounds", "4",
                  "--from-snapshot", str(archive))
    assert out.returncode == 0, out.stderr[-3000:]
    s = status(fresh)
    assert s["last_committed_round"] == 4 and s["committed_rounds"] == 4
    assert tree_digest(round_dir(fresh, 3) / "learner") == tree_digest(round_dir(state, 3) / "learner")
    # Same command again: the directory was seeded by that archive, so the flag is ignored.
    again = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(fresh), "--rounds", "4",
                    "--from-snapshot", str(archive))
    assert again.returncode == 0
    # A non-empty directory it did not seed is refused, untouched.
    refused = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "4",
                      "--from-snapshot", str(archive))
    assert refused.returncode == 2 and "not empty" in refused.stderr
    assert status(state)["last_committed_round"] == 3


def test_truncated_or_altered_archive_is_refused_and_writes_nothing(state: Path, tmp_path: Path) -> None:
    archive = tmp_path / "snap.tar"
    assert run_zpd("snapshot", "--state-dir", str(state), "--out", str(archive)).returncode == 0
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    target = tmp_path / "t1"
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(target), "--rounds", "4",
                  "--from-snapshot", str(truncated))
    assert out.returncode == 2 and "truncated" in out.stderr, out.stderr
    assert not target.exists()  # refused from the index alone, before the lock: nothing created

    altered = tmp_path / "altered.tar"
    with tarfile.open(archive) as src, tarfile.open(altered, "w") as dst:
        for member in src:
            data = src.extractfile(member).read()
            if member.name == "round_000003/config.json":
                data = data.replace(b'"seed": 0', b'"seed": 1')
            member.size = len(data)
            import io

            dst.addfile(member, io.BytesIO(data))
    target = tmp_path / "t2"
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(target), "--rounds", "4",
                  "--from-snapshot", str(altered))
    assert out.returncode == 2 and "sha256" in out.stderr, out.stderr
    assert not (target / "state.db").exists() and not (target / "rounds").exists()


def test_rollback_to_round_1_then_continue_with_round_2(state: Path) -> None:
    learner_1 = tree_digest(round_dir(state, 1) / "learner")
    out = run_zpd("rollback", "--state-dir", str(state), "--round", "1")
    assert out.returncode == 0, out.stderr
    s = status(state)
    assert s["last_committed_round"] == 1 and s["committed_rounds"] == 1 and s["round"] == 2
    assert tree_digest(round_dir(state, 1) / "learner") == learner_1
    assert not round_dir(state, 2).exists()
    moved = list((state / "abandoned").glob("after_round_000001_*"))
    assert len(moved) == 1 and (moved[0] / "round_000003" / "COMPLETE").is_file()  # nothing deleted
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "2",
                  "--log-format", "json")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    committed = [x["round"] for x in lines if x["event"] == "round committed"]
    assert committed == [2]
    assert status(state)["last_committed_round"] == 2


def test_rollback_bad_input_changes_nothing(state: Path) -> None:
    before = tree_digest(state / "rounds")
    out = run_zpd("rollback", "--state-dir", str(state), "--round", "9")
    assert out.returncode == 2 and "round 9 does not exist" in out.stderr
    shutil.rmtree(round_dir(state, 0))  # as retention would have done
    out = run_zpd("rollback", "--state-dir", str(state), "--round", "0")
    assert out.returncode == 2 and "pruned" in out.stderr
    after = tree_digest(state / "rounds")
    assert after == {k: v for k, v in before.items() if not k.startswith("round_000000/")}
    assert status(state)["last_committed_round"] == 3


def test_rollback_refuses_while_the_daemon_runs(state: Path, tmp_path: Path) -> None:
    proc = spawn_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), log=tmp_path / "d.log")
    try:
        wait_for(lambda: status(state)["running"], 120, what="daemon running")
        out = run_zpd("rollback", "--state-dir", str(state), "--round", "1")
        assert out.returncode == 3 and f"pid {proc.pid}" in out.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    assert status(state)["last_committed_round"] >= 3


def test_export_sets_in_verl_messages_schema(state: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    for what in ("train", "exam", "pretrain", "review"):
        for fmt in ("parquet", "jsonl"):
            out = tmp_path / f"{what}.{fmt}"
            res = run_zpd("export", "--state-dir", str(state), "--round", "3", "--what", what, "--format",
                          fmt, "--out", str(out))
            assert res.returncode == 0, res.stderr
            assert out.is_file()
    rows = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["task_id"] and row["round"] == 3
    if rows:
        ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "train.parquet"), split="train")
        assert ds.num_rows == len(rows) and ds[0]["messages"][1]["role"] == "assistant"
    bad = run_zpd("export", "--state-dir", str(state), "--round", "7", "--what", "train", "--format", "jsonl",
                  "--out", str(tmp_path / "nope.jsonl"))
    assert bad.returncode == 2 and "not committed" in bad.stderr and not (tmp_path / "nope.jsonl").exists()
