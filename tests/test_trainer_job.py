"""Training in a child process: success, failure, timeout and stop, and no process left behind."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psutil
import pytest

from zpd.configs.schema import LearnerConfig
from zpd.trainer.job import TrainJob, TrainJobFailed, TrainJobStopped, run_job
from zpd.trainer.model import create_learner
from zpd.trainer.spec import GRPOParams, SFTParams

TINY = LearnerConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=128)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _hanging_job(tmp_path: Path) -> TrainJob:
    """A job whose child blocks forever opening its data file (a FIFO nobody writes)."""
    fifo = tmp_path / "data.fifo"
    os.mkfifo(fifo)
    return TrainJob("embedded-sft", str(tmp_path / "nowhere"), str(tmp_path / "out"), str(fifo),
                    SFTParams(epochs=1, batch_size=1, learning_rate=1e-3), str(tmp_path / "result.json"))


def test_sft_job_succeeds_and_streams_steps(tmp_path: Path) -> None:
    create_learner(tmp_path / "learner", TINY, seed=0)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i}+1",
                                        "response": str(i + 1)}) + "\n" for i in range(8)))
    job = TrainJob("embedded-sft", str(tmp_path / "learner"), str(tmp_path / "out"), str(data),
                   SFTParams(epochs=2, batch_size=4, learning_rate=1e-3, seed=1), str(tmp_path / "r.json"))
    events: list[dict] = []
    result = run_job(job, timeout_seconds=120, on_progress=events.append)
    steps = [e for e in events if e["event"] == "step"]
    assert result.num_steps == 4 == len(steps) and steps[-1]["total"] == 4
    assert (tmp_path / "out" / "model.safetensors").exists()
    assert json.loads((tmp_path / "r.json").read_text())["num_tokens"] == result.num_tokens


def test_grpo_job_grades_through_the_domain(tmp_path: Path) -> None:
    create_learner(tmp_path / "learner", TINY, seed=0)
    task = {"domain": "arithmetic", "difficulty": 1.0, "prompt": "2+3", "answer": "5", "guidance": "5",
            "canonical": "2+3", "meta": {}}
    row = {"prompt": "2+3", "answer": "5", "domain": "arithmetic", "task_json": json.dumps(task)}
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(row) + "\n")
    job = TrainJob("embedded-grpo", str(tmp_path / "learner"), str(tmp_path / "out"), str(data),
                   GRPOParams(num_samples=4, steps=2, prompts_per_step=1, learning_rate=1e-3,
                              max_tokens=3), str(tmp_path / "r.json"))
    result = run_job(job, timeout_seconds=120)
    assert result.num_steps == 2 and (tmp_path / "out" / "config.json").exists()


def test_failing_job_raises_with_log_tail(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"prompt": "1", "response": "1"}) + "\n")
    job = TrainJob("embedded-sft", str(tmp_path / "missing-learner"), str(tmp_path / "out"), str(data),
                   SFTParams(epochs=1, batch_size=1, learning_rate=1e-3), str(tmp_path / "r.json"))
    with pytest.raises(TrainJobFailed) as info:
        run_job(job, timeout_seconds=120)
    assert "status 1" in str(info.value)
    assert "training job failed" in info.value.log_tail
    assert _gone(info.value.pid)


def test_hanging_job_is_killed_at_timeout(tmp_path: Path) -> None:
    events: list[dict] = []
    began = time.monotonic()
    with pytest.raises(TrainJobFailed) as info:
        run_job(_hanging_job(tmp_path), timeout_seconds=2.0, on_progress=events.append)
    assert "timed out" in str(info.value)
    assert time.monotonic() - began < 10
    assert events and events[0]["event"] == "start" and events[0]["pid"] == info.value.pid
    assert _gone(info.value.pid)


def test_should_stop_kills_the_job(tmp_path: Path) -> None:
    began = time.monotonic()
    with pytest.raises(TrainJobStopped) as info:
        run_job(_hanging_job(tmp_path), timeout_seconds=60,
                should_stop=lambda: time.monotonic() - began > 1.0)
    assert time.monotonic() - began < 10
    assert _gone(info.value.pid)
