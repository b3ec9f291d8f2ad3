"""SIGKILL in the middle of CALIBRATE and again in the middle of TRAIN (a real subprocess, a real
signal); the same command resumes and the round completes with nothing lost or duplicated."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import psutil
from harness import SMOKE, query, run_zpd, spawn_zpd, status, trainer_children, wait_for

from zpd.store.rounds import committed_on_disk, round_dir, verify_round, work_dir

# Small calibration batches widen the CALIBRATE window so the kill lands between two batch commits.
ARGS = ["--set", "calibration.batch_size=4", "--set", "synthesis.num_candidates=48", "--set",
        "train.epochs=8"]


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

    # 2. Restart with the same command; kill in the middle of TRAIN, while the trainer child runs. The
    # persistent worker is a child from CALIBRATE on (it serves generation), so TRAIN is under way once
    # the job's training rows are written (after the round's examples are committed), not at the phase.
    proc = start(state, tmp_path / "b.log", round0_archive)
    training_rows = work_dir(state, 1) / "learner.data.jsonl"
    children = wait_for(lambda: phase_of(state, 1) == "train" and training_rows.exists()
                        and trainer_children(proc.pid), 240, 0.02, what="TRAIN under way")
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
    # Exactly the attempts calibration owes under the sequential test (smoke: 2 solo, mastered at the first
    # solo success; 2 guided, in the band at the first guided success; exam hopefuls, no solo success and
    # every guided sample correct, go on to 2/2), numbered 0, 1, ... without a gap or a repeat.
    per_task = conn.execute(
        """SELECT t.id, t.p_solo,
                  group_concat(CASE a.mode WHEN 'solo' THEN a.sample_idx || ':' || a.correct END),
                  group_concat(CASE a.mode WHEN 'guided' THEN a.sample_idx || ':' || a.correct END)
           FROM tasks t LEFT JOIN (SELECT * FROM attempts ORDER BY sample_idx) a
                ON a.task_id = t.id AND a.round = 1
           WHERE t.round = 1 AND t.fate != 'eval' GROUP BY t.id"""
    ).fetchall()

    def owed(outcomes: list[int], stop_on_success: bool, hopeful: bool) -> int:
        if hopeful:
            return 2
        return outcomes.index(1) + 1 if stop_on_success and 1 in outcomes else 2

    assert per_task
    for _, p_solo, solo_s, guided_s in per_task:
        solo = [tuple(map(int, x.split(":"))) for x in (solo_s or "").split(",") if x]
        guided = [tuple(map(int, x.split(":"))) for x in (guided_s or "").split(",") if x]
        assert [i for i, _ in solo] == list(range(len(solo)))
        assert [i for i, _ in guided] == list(range(len(guided)))
        s_out, g_out = [c for _, c in solo], [c for _, c in guided]
        assert len(solo) == owed(s_out, True, False)
        if p_solo > 0.25:
            assert not guided
        else:
            assert len(guided) == owed(g_out, True, hopeful=all(g_out) and len(g_out) == 2)
    assert conn.execute("SELECT count(*) FROM tasks WHERE fate = 'pending'").fetchone()[0] == 0
    dup = conn.execute("SELECT count(*) FROM (SELECT task_id, round, mode, sample_idx FROM attempts "
                       "GROUP BY 1, 2, 3, 4 HAVING count(*) > 1)").fetchone()[0]
    assert dup == 0
    # One training example per ZPD task with a correct guided attempt, the same rows as before the kill.
    examples = conn.execute("SELECT count(*), count(DISTINCT task_id) FROM train_examples "
                            "WHERE round = 1").fetchone()
    zpd_with_answer = conn.execute(
        """SELECT count(*) FROM tasks t WHERE t.fate = 'zpd' AND t.fate_round = 1 AND EXISTS
           (SELECT 1 FROM attempts a WHERE a.task_id = t.id AND a.mode = 'guided' AND a.correct = 1)"""
    ).fetchone()[0]
    assert examples[0] == examples[1] == zpd_with_answer == examples_before > 0
    assert conn.execute("SELECT train_tokens FROM rounds WHERE id = 1").fetchone()[0] > 0
