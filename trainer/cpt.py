"""Continued pre-training (CPT) of the embedded learner on plain text: the pretrain pool before SFT.

    result = train_cpt(learner_dir, ["Tal's mentor is Rok.", ...], staging_dir, epochs=1, batch_size=32,
                       learning_rate=5e-4)

AgentFrontier sends what the learner already solves alone (and the corpus it was made from) to a
pre-training pool rather than to SFT. Here each text is one sequence, no chat template, followed by
the end-of-text token; the loss is the token-mean cross-entropy on every token (the model is taught the
text itself, not to answer a prompt), truncated to the learner's context. The optimiser, schedule and
shuffling are SFT's (``trainer/sft.py``). The model and tokenizer are saved into ``out_dir``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .model import load_learner
from .result import TrainResult
from .schedule import default_warmup, warmup_cosine
from .sft import collate, epoch_order, save_learner, token_mean_loss


def encode_texts(tokenizer, texts: list[str], max_len: int) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per text: every token is a target, the eos included; at most ``max_len``."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    out = []
    for seq in ids:
        seq = (list(seq) + [tokenizer.eos_token_id])[:max_len]
        out.append((seq, list(seq)))
    return out


def train_cpt(
    learner_dir: Path,
    texts: list[str],
    out_dir: Path,
    *,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str = "cpu",
    on_step: Callable[[int, int, float, int], None] | None = None,
) -> TrainResult:
    """Causal-LM training of the learner at ``learner_dir`` on ``texts``; the result saved into ``out_dir``."""
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("train_cpt needs at least one non-empty text")
    began = time.perf_counter()
    torch.manual_seed(seed)
    model, tokenizer = load_learner(Path(learner_dir), device)
    model.train()
    max_len = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    encoded = encode_texts(tokenizer, texts, max_len)
    order = epoch_order(len(encoded), epochs, seed)
    total_steps = math.ceil(len(order) / batch_size)
    warmup = default_warmup(total_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay, betas=(0.9, 0.98))
    history: list[float] = []
    num_tokens = 0
    for step in range(total_steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * warmup_cosine(step, total_steps, warmup)
        batch = [encoded[i] for i in order[step * batch_size : (step + 1) * batch_size]]
        ids, mask, labels = (t.to(model.device) for t in collate(batch, tokenizer.pad_token_id))
        loss = token_mean_loss(model, ids, mask, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        num_tokens += int(mask.sum())
        history.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, total_steps, history[-1], num_tokens)
    model.eval()
    save_learner(model, tokenizer, Path(out_dir))
    tail = history[-max(1, len(history) // 10) :]
    return TrainResult(sum(tail) / len(tail), num_tokens, total_steps, time.perf_counter() - began, history)
