"""Child failures, for real: the trainer child exits non-zero (the learner's weights are corrupt), is
SIGKILLed by the test, or runs past ``train.timeout_seconds``. Each is retried with backoff and counted in
``zpd_failures_total{component="trainer"}`` (scraped from /metrics); a round that still fails after its
retries fails cleanly: with --rounds the daemon exits 1 with nothing committed, without it the daemon
stays up and tries again, and stops cleanly on SIGTERM."""

from __future__ import annotations

import re
import signal
import sqlite3
import urllib.request
from pathlib import Path

from harness import SMOKE, query, run_zpd, spawn_zpd, trainer_children, wait_for

from zpd.configs.load import load_config
from zpd.store.rounds import committed_on_disk, read_latest


def failures(url: str | None, component: str = "trainer") -> float:
    if not url:
        return 0.0
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    m = re.search(rf'^zpd_failures_total\{{component="{component}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def metrics_url(state: Path) -> str | None:
    if not (state / "state.db").exists():
        return None
    try:
        rows = query(state, "SELECT metrics_url FROM controller WHERE id = 1 AND pid IS NOT NULL")
    except sqlite3.Error:
        return None
    return rows[0][0] if rows else None



def corrupt_learner(path: Path) -> Path:
    """A learner whose weights only the trainer can find unreadable: zpd start checks safetensors headers
    up front (loop/learner_check.py) but only sees that a pickled pytorch_model.bin exists."""
    from zpd.trainer.model import create_learner

    create_learner(path, load_config(SMOKE).learner, seed=0)
    next(path.glob("*.safetensors")).unlink()
    (path / "pytorch_model.bin").write_bytes(b"\0garbage, not a checkpoint" * 64)
    return path


# A user's model warms up only when asked (learner.warmup), in the embedded learner's bare prompt format.
USER_MODEL = ["--set", "learner.warmup=true", "--set", "learner.prompt_style=bare"]


def nothing_committed(state: Path) -> None:
    assert committed_on_disk(state) == [] and read_latest(state) is None
    assert query(state, "SELECT count(*) FROM rounds WHERE status = 'committed'")[0][0] == 0


def test_trainer_exits_nonzero_retried_then_round_fails_exit_1(tmp_path: Path) -> None:
    learner = corrupt_learner(tmp_path / "bad-learner")
    state = tmp_path / "state"
    proc = spawn_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "0",
                     "--set", f"learner.path={learner}", *USER_MODEL, "--set", "train.max_retries=2",
                     "--set", "train.retry_backoff_seconds=1.5", log=tmp_path / "d.log")
    url = wait_for(lambda: metrics_url(state), 60, what="metrics up")
    wait_for(lambda: failures(url) >= 2, 120, 0.2, what="two trainer failures counted")
    assert proc.wait(timeout=120) == 1
    log = (tmp_path / "d.log").read_text()
    assert "round failed after its retries" in log and "training failed" in log
    assert query(state, "SELECT failures FROM rounds WHERE id = 0")[0][0] == 3
    nothing_committed(state)
    assert not list((state / "rounds").glob("round_*")) if (state / "rounds").exists() else True


def test_without_rounds_the_daemon_stays_up_and_keeps_retrying(tmp_path: Path) -> None:
    learner = corrupt_learner(tmp_path / "bad-learner")
    state = tmp_path / "state"
    proc = spawn_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--set",
                     f"learner.path={learner}",
                     *USER_MODEL, "--set", "train.max_retries=0", "--set", "train.retry_backoff_seconds=0.5",
                     log=tmp_path / "d.log")
    url = wait_for(lambda: metrics_url(state), 60, what="metrics up")
    # max_retries=0: every failure fails the round; the daemon waits with backoff and tries it again.
    wait_for(lambda: failures(url) >= 2, 180, 0.2, what="a failed round tried again, the daemon still up")
    assert proc.poll() is None
    nothing_committed(state)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert not any(trainer_children(proc.pid))


def test_trainer_killed_is_retried_and_the_round_commits(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # A short bootstrap: what is checked is the retry and the commit, not what round 0 learns.
    proc = spawn_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "0",
                     "--set", "train.retry_backoff_seconds=0.5", "--set", "bootstrap.num_examples=300",
                     "--set", "bootstrap.epochs=1.0", log=tmp_path / "d.log")
    url = wait_for(lambda: metrics_url(state), 60, what="metrics up")
    child = wait_for(lambda: trainer_children(proc.pid), 120, 0.02, what="bootstrap trainer child")[0]
    child.send_signal(signal.SIGKILL)
    wait_for(lambda: failures(url) >= 1, 60, 0.1, what="the killed trainer counted")
    assert proc.wait(timeout=240) == 0, (tmp_path / "d.log").read_text()[-3000:]
    assert committed_on_disk(state) == [0]
    assert query(state, "SELECT failures FROM rounds WHERE id = 0")[0][0] == 1


def test_trainer_past_its_timeout_is_killed_and_the_round_fails_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "0",
                  "--set", "train.timeout_seconds=0.5", "--set", "train.max_retries=1",
                  "--set", "train.retry_backoff_seconds=0.2", timeout=240)
    assert out.returncode == 1, out.stdout[-3000:]
    assert "timed out" in out.stdout or "timeout" in out.stdout, out.stdout[-3000:]
    assert query(state, "SELECT failures FROM rounds WHERE id = 0")[0][0] == 2
    nothing_committed(state)
    work = state / "rounds"
    assert not any(p.name == "learner" for p in work.rglob("learner")) if work.exists() else True
