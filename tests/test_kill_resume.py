"""SIGKILL in the middle of CALIBRATE and again in the middle of TRAIN (a real subprocess, a real
signal); the same command resumes and the round completes with nothing lost or duplicated."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import psutil
from harness import SMOKE, query, run_zpd, spawn_zpd, status, trainer_children, wait_for

from zpd.store.rounds import committed_on_disk, round_dir, verify_round

# Small calibration batches widen the CALIBRATE window so the kill lands between two batch commits.
ARGS = ["--set", "calibration.batch_size=4", "--set", "synthesis.num_candidates=48", "--set", "train.epochs=8"]


def start(state: Path, log: Path, archive: Path):
    # Seeded from a round-0 snapshot; on the restarts the flag is ignored (the directory was seeded by it).
    return spawn_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "1", *ARGS,
                     "--from-snapshot", str(archive), log=log)


def phase_of(state: Path, round_n: int) -> str | None:
    rows = query(state, "SELECT phase FROM rounds WHERE id = ?", (round_n,))
    return rows[0][0] if rows else None



def test_sigkill_in_calibrate_and_in_train_then_resume(tmp_path: Path, round0_archive: Path) -> None:
    state = tmp_path / "state"

    # 1. Kill in the middle of CALIBRATE: some batches committed, some tasks still pending.
    proc = start(state, tmp_path / "a.log", round0_archive)
    wait_for(lambda: phase_of(state, 1) == "calibrate"
             and query(state, "SELECT count(*) FROM attempts WHERE round = 1")[0][0] > 0, 240, 0.02,
             what="CALIBRATE under way")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    pending = query(state, "SELECT count(*) FROM tasks WHERE round = 1 AND fate = 'pending'")[0][0]
    assert pending > 0, "the kill landed after CALIBRATE had finished; widen the window"
    assert phase_of(state, 1) == "calibrate"

    # 2. Restart with the same command; kill in the middle of TRAIN, while the trainer child runs.
    proc = start(state, tmp_path / "b.log", round0_archive)
    children = wait_for(lambda: phase_of(state, 1) == "train" and trainer_children(proc.pid), 240, 0.02,
                        what="TRAIN under way")
    examples_before = query(state, "SELECT count(*) FROM train_examples WHERE round = 1")[0][0]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # The trainer dies with the daemon (PR_SET_PDEATHSIG): nothing is left writing into work/.
    wait_for(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children), 30,
             what="trainer child gone")
    assert phase_of(state, 1) == "train"

    # 3. The same command again completes the round.
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "1", *ARGS,
                  "--from-snapshot", str(round0_archive))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert status(state)["last_committed_round"] == 1
    assert committed_on_disk(state) == [0, 1] and verify_round(round_dir(state, 1)) == []

    conn = sqlite3.connect(state / "state.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Exactly the attempts calibration owes: num_solo per task, plus num_guided for those it failed alone.
    per_task = conn.execute(
        """SELECT t.id, t.p_solo, sum(a.mode = 'solo'), sum(a.mode = 'guided')
           FROM tasks t LEFT JOIN attempts a ON a.task_id = t.id AND a.round = 1
           WHERE t.round = 1 AND t.fate != 'eval' GROUP BY t.id"""
    ).fetchall()
    assert per_task and all(solo == 2 for _, _, solo, _ in per_task)
    assert all(guided == (2 if p_solo <= 0.25 else 0) for _, p_solo, _, guided in per_task)
    assert conn.execute("SELECT count(*) FROM tasks WHERE fate = 'pending'").fetchone()[0] == 0
    dup = conn.execute("SELECT count(*) FROM (SELECT task_id, round, mode, sample_idx FROM attempts "
                       "GROUP BY 1, 2, 3, 4 HAVING count(*) > 1)").fetchone()[0]
    assert dup == 0
    # One training example per ZPD task with a correct guided attempt, the same rows as before the kill.
    examples = conn.execute("SELECT count(*), count(DISTINCT task_id) FROM train_examples WHERE round = 1").fetchone()
    zpd_with_answer = conn.execute(
        """SELECT count(*) FROM tasks t WHERE t.fate = 'zpd' AND t.fate_round = 1 AND EXISTS
           (SELECT 1 FROM attempts a WHERE a.task_id = t.id AND a.mode = 'guided' AND a.correct = 1)"""
    ).fetchone()[0]
    assert examples[0] == examples[1] == zpd_with_answer == examples_before > 0
    assert conn.execute("SELECT train_tokens FROM rounds WHERE id = 1").fetchone()[0] > 0
