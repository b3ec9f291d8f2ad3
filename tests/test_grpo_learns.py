"""The embedded GRPO learns: a seeded, single-threaded run raises the reward of a verifiable task.

The task: answer with one even digit (checked by a rule, as a verifiable reward is). A short SFT warm-up
on every digit as the answer leaves the learner at about half the reward; GRPO must lift the reward,
measured before and after by the same seeded sampling, by at least 0.1. (The rule does not depend on the
prompt: a learner this small does not tell such short prompts apart within this step budget, and the
test is about GRPO's update, not the model's capacity.) A GRPO that changes nothing, or pushes the wrong
way, fails it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zpd.configs.schema import LearnerConfig
from zpd.trainer.generate import sample_rows
from zpd.trainer.grpo import train_grpo
from zpd.trainer.model import create_learner, load_learner
from zpd.trainer.sft import SFTExample, train_sft
from zpd.trainer.tokenizer import encode_user_prompts

TINY = LearnerConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=64)
PROMPTS = [f"{d}?" for d in range(10)]
SAMPLES = 32


def _reward(text: str) -> float:
    text = text.strip()
    return float(len(text) == 1 and text in "02468")


def _mean_reward(learner: Path) -> float:
    model, tok = load_learner(learner, "cpu")
    enc = encode_user_prompts(tok, PROMPTS)
    rows = sample_rows(model, tok, [ids for ids in enc for _ in range(SAMPLES)], temperature=1.0,
                       max_tokens=3,
                       generator=torch.Generator().manual_seed(123))
    return sum(_reward(r.text) for r in rows) / len(rows)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_embedded_grpo_raises_the_reward(tmp_path: Path, one_thread) -> None:
    create_learner(tmp_path / "base", TINY, seed=0)
    warm_up = [SFTExample(p, str(d)) for p in PROMPTS for d in range(10)]
    train_sft(tmp_path / "base", warm_up, tmp_path / "warm", epochs=8, batch_size=20, learning_rate=1e-2,
              seed=0)
    base = _mean_reward(tmp_path / "warm")
    assert 0.2 <= base <= 0.8, f"the warm-up should leave the reward in the middle, got {base}"
    result = train_grpo(tmp_path / "warm", PROMPTS, lambda i, text: _reward(text), tmp_path / "grpo",
                        num_samples=8, steps=15, prompts_per_step=10, learning_rate=3e-3, max_tokens=3,
                        seed=0)
    after = _mean_reward(tmp_path / "grpo")
    assert after >= base + 0.1, f"GRPO moved the reward from {base:.3f} to {after:.3f}"
    # The on-policy reward GRPO saw rose too (its own record of the run).
    assert sum(result.loss_history[-3:]) / 3 > sum(result.loss_history[:3]) / 3
