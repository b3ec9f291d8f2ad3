"""Group-normalised policy-gradient RL (GRPO without the KL term) with a verifiable reward.

    result = train_grpo(learner_dir, ["57+68", ...], lambda i, text: float(text.strip() == answers[i]),
                        staging_dir, num_samples=8, steps=20, prompts_per_step=8,
                        learning_rate=1e-4, max_tokens=24)

Each step takes the next ``prompts_per_step`` prompts (cycling through a seeded shuffle), samples
``num_samples`` completions per prompt in one batch, scores them with ``reward(prompt_index, text)``
and computes advantages ``(r - mean_group) / (std_group + 1e-4)``. Groups whose rewards are all equal
carry no signal and are skipped. One AdamW update per step (strictly on-policy, so no ratio clipping
and no reference model) on the token-mean of ``-advantage * log p(token)`` over the sampled response
tokens (the end-of-turn token included). ``TrainResult.loss`` is the last step's policy loss and
``loss_history`` the mean reward of each step (the number worth plotting for RL).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .checkpoint import Checkpointer, fingerprint
from .generate import SampledRow, sample_rows
from .model import load_learner
from .sft import IGNORE, TrainResult, collate, save_learner
from .tokenizer import encode_user_prompts

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def train_grpo(
    learner_dir: Path,
    prompts: list[str],
    reward: Callable[[int, str], float],
    out_dir: Path,
    *,
    num_samples: int,
    steps: int,
    prompts_per_step: int,
    learning_rate: float,
    max_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    device: str = "cpu",
    on_step: Callable[[int, int, float, int], None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_seconds: float = 60.0,
    on_resume: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Train the learner at ``learner_dir`` for ``steps`` updates; save the result into ``out_dir``.

    ``on_step(step, steps, policy_loss, tokens_so_far)`` after every step (1-based). ``checkpoint``,
    ``checkpoint_seconds``, ``on_resume``: as ``trainer/sft.py:train_sequences`` (the sampling generator's
    state and the prompt cursor are saved too, so a resumed run samples what an uninterrupted one would).
    """
    if not prompts:
        raise ValueError("train_grpo needs at least one prompt")
    if num_samples < 2:
        raise ValueError("train_grpo needs num_samples >= 2 (a group of one has no variance)")
    began = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model, tokenizer = load_learner(Path(learner_dir), device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    encoded = encode_user_prompts(tokenizer, prompts)
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    cursor = start = 0
    mean_rewards: list[float] = []
    last_loss = 0.0
    num_tokens = 0
    ckpt = Checkpointer(checkpoint, every_seconds=checkpoint_seconds, fingerprint=fingerprint(
        learner_dir, prompts, dict(num_samples=num_samples, steps=steps, prompts_per_step=prompts_per_step,
                                   lr=learning_rate, max_tokens=max_tokens, temperature=temperature,
                                   seed=seed)))
    if (state := ckpt.load()) is not None:
        ckpt.restore(state, model, optimizer)
        generator.set_state(state["generator"])
        start, cursor, mean_rewards = state["step"], state["cursor"], list(state["history"])
        last_loss, num_tokens = state["last_loss"], state["num_tokens"]
        if on_resume is not None:
            on_resume(start, steps, float(state["seconds"]))
    for step in range(start, steps):
        picked = [order[(cursor + k) % len(order)] for k in range(min(prompts_per_step, len(order)))]
        cursor += len(picked)
        model.eval()
        rows = sample_rows(model, tokenizer, [encoded[i] for i in picked for _ in range(num_samples)],
                           temperature=temperature, max_tokens=max_tokens, generator=generator)
        rewards = [float(reward(picked[j // num_samples], row.text)) for j, row in enumerate(rows)]
        mean_rewards.append(sum(rewards) / len(rewards))
        batch, advantages = _advantage_batch(rows, rewards, len(picked), num_samples)
        if batch:
            model.train()
            last_loss = _policy_step(model, optimizer, batch, advantages, tokenizer.pad_token_id)
            num_tokens += sum(len(ids) for ids, _ in batch)
        else:
            last_loss = 0.0
        if on_step is not None:
            on_step(step + 1, steps, last_loss, num_tokens)
        if ckpt.due():
            ckpt.save(step=step + 1, model=model, optimizer=optimizer, extra={
                "generator": generator.get_state(), "cursor": cursor, "history": mean_rewards,
                "last_loss": last_loss, "num_tokens": num_tokens})
    ckpt.close()
    model.eval()
    save_learner(model, tokenizer, Path(out_dir))
    return TrainResult(last_loss, num_tokens, steps, time.perf_counter() - began, mean_rewards)


def _advantage_batch(rows: list[SampledRow], rewards: list[float], num_groups: int,
                     num_samples: int) -> tuple[list[tuple[list[int], list[int]]], list[float]]:
    """The sampled rows (``num_samples`` per group, in order) as a training batch with their
    group-normalised advantages; groups whose rewards are all equal, and empty completions, are left out."""
    batch: list[tuple[list[int], list[int]]] = []
    advantages: list[float] = []
    for g in range(num_groups):
        group = rewards[g * num_samples : (g + 1) * num_samples]
        std = statistics.pstdev(group)
        if std == 0:
            continue
        mean = sum(group) / len(group)
        for k in range(num_samples):
            row = rows[g * num_samples + k]
            if not row.completion_ids:
                continue
            ids = row.prompt_ids + row.completion_ids
            batch.append((ids, [IGNORE] * len(row.prompt_ids) + row.completion_ids))
            advantages.append((group[k] - mean) / (std + 1e-4))
    return batch, advantages


def _policy_step(model: PreTrainedModel, optimizer: torch.optim.Optimizer,
                 batch: list[tuple[list[int], list[int]]], advantages: list[float], pad_id: int) -> float:
    ids, mask, labels = (t.to(model.device) for t in collate(batch, pad_id))
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1, :].float()
    target = labels[:, 1:]
    valid = target != IGNORE
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    adv = torch.tensor(advantages, device=logp.device).unsqueeze(1)
    loss = -(adv * logp * valid).sum() / valid.sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())


def train_grpo_groups(
    learner_dir: Path,
    groups: list[list[tuple[str, str, bool, float]]],
    out_dir: Path,
    *,
    steps: int,
    learning_rate: float,
    seed: int = 0,
    device: str = "cpu",
    on_step: Callable[[int, int, float, int], None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_seconds: float = 60.0,
    on_resume: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """The GRPO update of ``train_grpo`` on groups sampled and scored elsewhere (the self-play proposer's
    proposals, ``loop/selfplay.py``): each group is ``[(prompt, completion text, ended, reward), ...]``,
    ``ended`` meaning the sample stopped at the end-of-turn token (which is then trained on too). The
    completion is re-tokenised from its text (the character tokenizer maps it back to the same ids).
    Advantages are group-normalised as in ``train_grpo``; groups whose rewards are all equal are skipped.
    ``steps`` AdamW updates over all groups at once (the first strictly on the sampled policy; later ones
    reuse the samples without ratio clipping). ``loss_history`` holds the mean reward over all samples."""
    began = time.perf_counter()
    torch.manual_seed(seed)
    model, tokenizer = load_learner(Path(learner_dir), device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    batch, advantages, all_rewards = [], [], []
    for group in groups:
        rewards = [float(r) for *_, r in group]
        all_rewards.extend(rewards)
        std = statistics.pstdev(rewards) if len(rewards) > 1 else 0.0
        if std == 0:
            continue
        mean = sum(rewards) / len(rewards)
        prompt_ids = encode_user_prompts(tokenizer, [prompt for prompt, *_ in group])
        for (_, text, ended, r), p_ids in zip(group, prompt_ids, strict=True):
            c_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
            c_ids += [tokenizer.eos_token_id] if ended else []
            if not c_ids:
                continue
            batch.append((list(p_ids) + c_ids, [IGNORE] * len(p_ids) + c_ids))
            advantages.append((r - mean) / (std + 1e-4))
    last_loss, num_tokens, start = 0.0, 0, 0
    ckpt = Checkpointer(checkpoint, every_seconds=checkpoint_seconds, fingerprint=fingerprint(
        learner_dir, (batch, advantages), dict(steps=steps, lr=learning_rate, seed=seed)))
    if (state := ckpt.load()) is not None:
        ckpt.restore(state, model, optimizer)
        start, last_loss, num_tokens = state["step"], state["last_loss"], state["num_tokens"]
        if on_resume is not None:
            on_resume(start, steps, float(state["seconds"]))
    for step in range(start, steps):
        if batch:
            model.train()
            last_loss = _policy_step(model, optimizer, batch, advantages, tokenizer.pad_token_id)
            num_tokens += sum(len(ids) for ids, _ in batch)
        if on_step is not None:
            on_step(step + 1, steps, last_loss, num_tokens)
        if ckpt.due():
            ckpt.save(step=step + 1, model=model, optimizer=optimizer,
                      extra={"last_loss": last_loss, "num_tokens": num_tokens})
    ckpt.close()
    model.eval()
    save_learner(model, tokenizer, Path(out_dir))
    mean_reward = sum(all_rewards) / len(all_rewards) if all_rewards else 0.0
    return TrainResult(last_loss, num_tokens, steps, time.perf_counter() - began, [mean_reward])
