"""Embedded training checkpoints, for real: the trainer child is SIGKILLed at a random step, the same job is
run again, it says it resumed, and it ends with the weights of a run that was never interrupted (one thread,
max |delta| < 1e-6). SFT, CPT-then-SFT and GRPO (whose sampling generator is part of the state)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from zpd.configs.schema import LearnerConfig
from zpd.trainer.job import TrainJob, child_argv, run_job
from zpd.trainer.model import create_learner
from zpd.trainer.spec import CPTParams, GRPOParams, Pretrain, SFTParams

TINY = LearnerConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=128)


def _sft_job(tmp_path: Path, name: str) -> TrainJob:
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i}+{i % 7}", "response": str(i + i % 7)}) + "\n"
                            for i in range(24)))
    return TrainJob("embedded-sft", str(tmp_path / "learner"), str(tmp_path / name / "out"), str(data),
                    SFTParams(epochs=1, batch_size=2, learning_rate=3e-3, seed=5),
                    str(tmp_path / name / "r.json"),
                    threads=1, checkpoint_dir=str(tmp_path / name / "ckpt"), checkpoint_seconds=1e-9)


def _grpo_job(tmp_path: Path, name: str) -> TrainJob:
    rows = []
    for i in range(4):
        task = {"domain": "arithmetic", "difficulty": 1.0, "prompt": f"{i}+1", "answer": str(i + 1),
                "guidance": "", "canonical": f"{i}+1", "meta": {}}
        rows.append({"prompt": f"{i}+1", "answer": str(i + 1), "domain": "arithmetic",
                     "task_json": json.dumps(task)})
    data = tmp_path / "grpo.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return TrainJob("embedded-grpo", str(tmp_path / "learner"), str(tmp_path / name / "out"), str(data),
                    GRPOParams(num_samples=4, steps=8, prompts_per_step=2, learning_rate=1e-2, max_tokens=4,
                               temperature=1.0, seed=3), str(tmp_path / name / "r.json"),
                    threads=1, checkpoint_dir=str(tmp_path / name / "ckpt"), checkpoint_seconds=1e-9)


def _kill_at_step(job: TrainJob, kill_step: int) -> int:
    """Run ``job``'s real child and SIGKILL it once it reports step ``kill_step``; the step it reached."""
    job_path = Path(job.result_path).with_name("job.json")
    job_path.parent.mkdir(parents=True, exist_ok=True)
    job_path.write_text(job.to_json())
    proc = subprocess.Popen(child_argv("zpd.trainer.job", str(job_path)), stdout=subprocess.PIPE, text=True,
                            cwd=job_path.parent)
    reached = 0
    for line in proc.stdout:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "step":
            reached = event["step"]
            if reached >= kill_step:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(timeout=60)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "the child finished before the kill"
    return reached


def _weights(out_dir: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(out_dir) / "model.safetensors"))


def _max_delta(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("make", [_sft_job, _grpo_job], ids=["sft", "grpo"])
def test_killed_at_a_random_step_resumes_to_the_uninterrupted_weights(tmp_path: Path, make) -> None:
    create_learner(tmp_path / "learner", TINY, seed=0)
    straight = make(tmp_path, "straight")
    straight = replace(straight, checkpoint_dir="")
    expected = run_job(straight, timeout_seconds=300)

    job = make(tmp_path, "killed")
    total = expected.num_steps
    kill_step = random.Random(job.backend).randint(2, total - 2)
    reached = _kill_at_step(job, kill_step)
    assert list(Path(job.checkpoint_dir).glob("main.pt")), "no checkpoint was written before the kill"

    events: list[dict] = []
    result = run_job(job, timeout_seconds=300, on_progress=events.append)
    resumed = [e for e in events if e["event"] == "resumed"]
    assert len(resumed) == 1 and 1 <= resumed[0]["step"] <= reached and resumed[0]["seconds_saved"] > 0
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps[0] == resumed[0]["step"] + 1 and steps[-1] == total  # the done steps were not redone
    assert _max_delta(_weights(job.out_dir), _weights(straight.out_dir)) < 1e-6
    assert result.num_tokens == expected.num_tokens
    assert result.loss_history == pytest.approx(expected.loss_history, abs=1e-6)


def test_a_checkpoint_of_another_job_is_ignored(tmp_path: Path) -> None:
    create_learner(tmp_path / "learner", TINY, seed=0)
    job = _sft_job(tmp_path, "a")
    _kill_at_step(job, 3)
    other = replace(job, params=replace(job.params, learning_rate=1e-3))  # same checkpoint file, another job
    events: list[dict] = []
    run_job(other, timeout_seconds=300, on_progress=events.append)
    assert not [e for e in events if e["event"] == "resumed"]
    assert [e["step"] for e in events if e["event"] == "step"][0] == 1


def test_cpt_then_sft_resumes_the_step_it_was_killed_in(tmp_path: Path) -> None:
    create_learner(tmp_path / "learner", TINY, seed=0)
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": f"fact number {i} is {i * 3}."}) + "\n" for i in range(8)))
    pretrain = Pretrain(str(texts), CPTParams(epochs=1, batch_size=2, learning_rate=1e-3, seed=1))
    job = replace(_sft_job(tmp_path, "cpt"), pretrain=pretrain)
    _kill_at_step(job, 5)  # in the SFT step: CPT (4 steps) is finished, its model re-made on the rerun
    events: list[dict] = []
    run_job(job, timeout_seconds=300, on_progress=events.append)
    parts = [(e["part"], e["step"]) for e in events if e["event"] == "resumed"]
    # CPT ended before the kill; its model is re-made from its checkpoint and SFT resumes where it stopped.
    assert [p for p, _ in parts] == ["cpt", "main"] and parts[1][1] >= 4
