"""The ``[train]`` section (with ``[train.cpt]``): how a round's training set trains the next learner.

The verl backends' launch settings are ``configs/verl.py``. This module imports nothing of zpd but ``Strict``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Strict

CptSource = Literal["mastered", "corpus"]
"""Where continued pre-training texts come from."""

# A typed tuple, copied by the default_factory: a lambda's bare list literal would be list[str] to mypy.
ALL_CPT_SOURCES: tuple[CptSource, ...] = ("mastered", "corpus")


class CptConfig(Strict):
    """Continued pre-training (trainer/cpt.py): before the round's SFT / GRPO step, in the same trainer job,
    the learner is trained as a plain language model on the pretrain pool (AgentFrontier's D_pretrain:
    tasks the learner solved alone) and/or the domains' corpus text. Embedded backends only."""

    enabled: bool = False
    """Run CPT before the main training step each round."""

    sources: list[CptSource] = Field(default_factory=lambda: list(ALL_CPT_SOURCES))
    """mastered: every task routed to the pretrain pool so far, as "prompt\nanswer" (what ``zpd export
    --what pretrain`` writes); corpus: the documents of domains that have one (the knowledge domain's
    synthetic world) and the ingested corpus chunks in the store."""

    epochs: float = Field(1.0, gt=0, le=1000)
    """Passes over the CPT texts per round."""

    batch_size: int = Field(32, ge=1, le=65536)
    """Texts per optimiser step."""

    learning_rate: float = Field(5e-4, gt=0, le=1)
    """Peak learning rate (cosine decay, short warm-up)."""

    max_texts: int = Field(20_000, ge=1, le=100_000_000)
    """Cap on the CPT texts per round (corpus first, then the most recent pool items)."""


class TrainConfig(Strict):
    backend: Literal["embedded-sft", "embedded-grpo", "verl-sft", "verl-grpo"] = "embedded-sft"
    """Trainer backend. embedded-sft: rejection-sampling fine-tuning in plain torch; embedded-grpo:
    group-normalised RL in plain torch; verl-sft / verl-grpo: verl's trainers (GPU nodes; see [verl])."""

    epochs: float = Field(4.0, gt=0, le=1000)
    """Passes over the round's training set."""

    batch_size: int = Field(32, ge=1, le=65536)
    """Examples per optimiser step."""

    learning_rate: float = Field(1e-3, gt=0, le=1)
    """Peak learning rate (cosine decay, short warm-up)."""

    weight_decay: float = Field(0.0, ge=0, le=1)
    """AdamW weight decay."""

    replay_ratio: float = Field(1.0, ge=0, le=100)
    """Earlier training examples replayed per new example (guards a tiny model against forgetting)."""

    min_examples: int = Field(1, ge=0, le=1_000_000)
    """With fewer new examples than this, TRAIN keeps the learner unchanged."""

    max_examples: int = Field(4096, ge=1, le=100_000_000)
    """Cap on the training set (new + replay) per round."""

    cpt: CptConfig = Field(default_factory=CptConfig)
    """Optional continued pre-training on the pretrain pool before the main step (off by default)."""

    grpo_num_samples: int = Field(8, ge=2, le=256)
    """GRPO: samples per prompt (the group)."""

    grpo_steps: int = Field(20, ge=1, le=1_000_000)
    """GRPO: optimiser steps per round."""

    grpo_prompts_per_step: int = Field(8, ge=1, le=65536)
    """GRPO: prompts per step."""

    timeout_seconds: float = Field(3600.0, gt=0)
    """A training run longer than this is a failure."""

    max_retries: int = Field(2, ge=0, le=100)
    """Retries of a failed round (with backoff) before it counts as failed."""

    retry_backoff_seconds: float = Field(2.0, ge=0, le=3600)
    """First backoff between retries; doubles each time."""

    checkpoint_seconds: float = Field(60.0, gt=0, le=86400)
    """Embedded trainers: a resumable checkpoint (weights, optimizer, RNG, data position) at most this many
    seconds apart, written atomically beside the job; a rerun of the same job resumes from it."""

    persistent_worker: Literal["auto", "on", "off"] = "auto"
    """Embedded trainers: on: one worker process lives across rounds (torch imported once); off: a fresh
    child per job. auto: on when the learner runs on the CPU. On CUDA the worker drops its model and frees
    the GPU's cached memory before every generation phase."""
