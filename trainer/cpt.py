"""Continued pre-training (CPT) of the embedded learner on plain text: the pretrain pool before SFT.

    result = train_cpt(learner_dir, ["Tal's mentor is Rok.", ...], staging_dir, epochs=1, batch_size=32,
                       learning_rate=5e-4)

AgentFrontier sends what the learner already solves alone (and the corpus it was made from) to a
pre-training pool rather than to SFT. Here each text is one sequence, no chat template, followed by
the end-of-text token; the loss is the token-mean cross-entropy on every token (the model is taught the
text itself, not to answer a prompt), truncated to the learner's context. The loop is SFT's
(``trainer/sft.py:train_sequences``). The model and tokenizer are saved into ``out_dir``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .result import TrainResult
from .sft import train_sequences

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str],
                 max_len: int) -> list[tuple[list[int], list[int]]]:
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
    **resume: Any,
) -> TrainResult:
    """Causal-LM training of the learner at ``learner_dir`` on ``texts``; the result saved into ``out_dir``.
    ``resume``: ``train_sequences``' checkpoint arguments (a killed run resumes from its checkpoint)."""
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("train_cpt needs at least one non-empty text")

    def encode(model: PreTrainedModel,
               tokenizer: PreTrainedTokenizerBase) -> list[tuple[list[int], list[int]]]:
        max_len = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        return encode_texts(tokenizer, texts, max_len)

    return train_sequences(learner_dir, encode, out_dir, epochs=epochs, batch_size=batch_size,
                           learning_rate=learning_rate, weight_decay=weight_decay, seed=seed, device=device,
                           on_step=on_step, **resume)
