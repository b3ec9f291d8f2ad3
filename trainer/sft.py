"""Rejection-sampling fine-tuning (SFT) of the embedded learner.

    result = train_sft(learner_dir, [SFTExample("57+68", "125")], staging_dir, epochs=4,
                       batch_size=32, learning_rate=1e-3)

Each example is the chat-formatted user prompt followed by the response and the template's end-of-turn
token (``<|im_end|>`` for ChatML, ``trainer/chat.py``); the loss
is the token-mean cross-entropy on the response and end-of-turn tokens only (the model is not taught
to write prompts). AdamW, a short linear warm-up then cosine decay to 10% of the peak, gradient norm
clipped at 1.0, examples shuffled with ``seed``. The new model and tokenizer are saved into
``out_dir`` (the caller passes a fresh staging directory and commits it).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .chat import end_of_turn
from .checkpoint import Checkpointer, fingerprint
from .model import load_learner
from .result import TrainResult
from .schedule import default_warmup, warmup_cosine
from .tokenizer import encode_user_prompts

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE = -100


@dataclass(slots=True)
class SFTExample:
    prompt: str
    """The user message (bare task, or guided prompt in the bootstrap)."""
    response: str
    """The assistant's answer (without the end-of-turn token: it is appended here)."""


def encode_examples(tokenizer: PreTrainedTokenizerBase,
                    examples: list[SFTExample]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per example; labels are IGNORE on the prompt."""
    prompts = encode_user_prompts(tokenizer, [e.prompt for e in examples])
    responses = tokenizer([e.response for e in examples], add_special_tokens=False)["input_ids"]
    # The template's end-of-turn token (``<|im_end|>``...), which is the eos only for some templates.
    eot = end_of_turn(tokenizer).ids
    out = []
    for p, r in zip(prompts, responses, strict=True):
        target = list(r) + eot
        out.append((list(p) + target, [IGNORE] * len(p) + target))
    return out


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The pad id, or the eos id for a tokenizer without a pad token (padding is masked out)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded input ids, attention mask and shifted-by-the-model labels."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return ids, mask, labels


def token_mean_loss(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor,
                    labels: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1, :]
    target = labels[:, 1:]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), target.reshape(-1), ignore_index=IGNORE
    )


def epoch_order(num_examples: int, epochs: float, seed: int) -> list[int]:
    """Indices for ``epochs`` passes (a fraction runs part of a last pass), each pass freshly shuffled."""
    rng = random.Random(seed)
    total = max(1, round(num_examples * epochs))
    order: list[int] = []
    while len(order) < total:
        perm = list(range(num_examples))
        rng.shuffle(perm)
        order.extend(perm)
    return order[:total]


def train_sft(
    learner_dir: Path,
    examples: list[SFTExample],
    out_dir: Path,
    *,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str = "cpu",
    on_step: Callable[[int, int, float, int], None] | None = None,
    **resume: Any,
) -> TrainResult:
    """Fine-tune the learner at ``learner_dir`` on ``examples``; save the result into ``out_dir``.

    ``on_step(step, total_steps, loss, tokens_so_far)`` is called after every optimiser step (1-based).
    Deterministic for a seed on CPU. ``resume``: ``train_sequences``' checkpoint arguments.
    """
    if not examples:
        raise ValueError("train_sft needs at least one example")
    return train_sequences(learner_dir, lambda model, tokenizer: encode_examples(tokenizer, examples),
                           out_dir, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                           weight_decay=weight_decay, seed=seed, device=device, on_step=on_step, **resume)


def train_sequences(
    learner_dir: Path,
    encode: Callable[[Any, Any], list[tuple[list[int], list[int]]]],
    out_dir: Path,
    *,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str = "cpu",
    on_step: Callable[[int, int, float, int], None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_seconds: float = 60.0,
    on_resume: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """The token-mean cross-entropy loop SFT and CPT share: ``encode(model, tokenizer)`` gives (input ids,
    labels) per sequence; AdamW, warm-up then cosine, gradient clipping at 1; the result saved into
    ``out_dir``. ``loss`` is the mean of the last tenth of the steps.

    ``checkpoint``: a file for resumable checkpoints (``trainer/checkpoint.py``), saved at least every
    ``checkpoint_seconds``; a run of the same job finding one resumes from it and calls
    ``on_resume(step, total_steps, seconds_saved)`` first, ending with the weights an uninterrupted run
    ends with."""
    began = time.perf_counter()
    torch.manual_seed(seed)
    model, tokenizer = load_learner(Path(learner_dir), device)
    model.train()
    encoded = encode(model, tokenizer)
    order = epoch_order(len(encoded), epochs, seed)
    total_steps = math.ceil(len(order) / batch_size)
    warmup = default_warmup(total_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay,
                                  betas=(0.9, 0.98))
    history: list[float] = []
    num_tokens = start = 0
    ckpt = Checkpointer(checkpoint, every_seconds=checkpoint_seconds, fingerprint=fingerprint(
        learner_dir, encoded, dict(epochs=epochs, batch_size=batch_size, lr=learning_rate, wd=weight_decay,
                                   seed=seed)))
    if (state := ckpt.load()) is not None:
        ckpt.restore(state, model, optimizer)
        start, history, num_tokens = state["step"], list(state["history"]), int(state["num_tokens"])
        if on_resume is not None:
            on_resume(start, total_steps, float(state["seconds"]))
    try:
        num_tokens = _sequence_steps(model, tokenizer, optimizer, encoded, order, range(start, total_steps),
                                     batch_size, learning_rate, warmup, history, num_tokens, ckpt, on_step)
    finally:
        ckpt.close()
    model.eval()
    save_learner(model, tokenizer, Path(out_dir))
    tail = history[-max(1, len(history) // 10) :]
    return TrainResult(sum(tail) / len(tail), num_tokens, total_steps, time.perf_counter() - began, history)


def _sequence_steps(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    optimizer: torch.optim.Optimizer, encoded: list[tuple[list[int], list[int]]],
                    order: list[int], steps: range, batch_size: int,
                    learning_rate: float, warmup: int, history: list[float], num_tokens: int,
                    ckpt: Checkpointer, on_step: Callable[[int, int, float, int], None] | None) -> int:
    """Steps ``steps`` of the loop (appending to ``history``), checkpointing when due; the tokens so far."""
    total_steps = steps.stop
    for step in steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * warmup_cosine(step, total_steps, warmup)
        batch = [encoded[i] for i in order[step * batch_size : (step + 1) * batch_size]]
        ids, mask, labels = (t.to(model.device) for t in collate(batch, pad_id(tokenizer)))
        loss = token_mean_loss(model, ids, mask, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        num_tokens += int(mask.sum())
        history.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, total_steps, history[-1], num_tokens)
        if ckpt.due():
            ckpt.save(step=step + 1, model=model, optimizer=optimizer,
                      extra={"history": history, "num_tokens": num_tokens})
    return num_tokens


def save_learner(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """save_pretrained of model (safetensors) and tokenizer into ``out_dir`` (created if missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
