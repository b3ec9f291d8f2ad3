"""The ``[learner]`` and ``[bootstrap]`` sections: the model being trained and its round 0.

This module imports nothing of zpd but ``Strict``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .base import Strict


class LearnerConfig(Strict):
    path: Path | None = None
    """An HF model directory to start from. None: create the embedded tiny model below."""

    architecture: Literal["llama", "qwen2"] = "llama"
    """Architecture of the embedded model (a transformers config family). llama by default: with
    transformers 5, ``AutoTokenizer`` forces Qwen2's own tokenizer class on a qwen2 directory, which
    drops the char tokenizer's spaces and newlines for every tool that loads it that way (verl, vLLM)."""

    hidden_size: int = Field(128, ge=8, le=8192)
    """Embedded model width."""

    num_layers: int = Field(4, ge=1, le=128)
    """Embedded model depth."""

    num_heads: int = Field(4, ge=1, le=128)
    """Attention heads of the embedded model (hidden_size must divide by it)."""

    intermediate_size: int = Field(512, ge=8, le=65536)
    """MLP width of the embedded model."""

    max_positions: int = Field(256, ge=32, le=131072)
    """Longest sequence (prompt + answer, in tokens) the embedded model handles."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the embedded trainer and generator run. auto: cuda when available."""

    chat_template: str | None = None
    """With ``path``: the chat template to use, a name ("chatml") or a Jinja template string; it replaces
    the model's own and is written into round 0's copy. None: the model's own (required then)."""

    prompt_style: Literal["auto", "bare", "instruct"] = "auto"
    """How tasks are put to the learner. bare: the task itself (``57+68``, the embedded learner's format);
    instruct: an instruction that states the answer format, graded on the extracted final answer (a chat
    model's format). auto: bare for the embedded learner, instruct with ``path``."""

    warmup: bool = False
    """With ``path``: run round 0's warm-up ([bootstrap], in the prompt style) on the model. False: round
    0 is the model as given, measured. The embedded learner always warms up (``bootstrap.enabled``)."""

    @model_validator(mode="after")
    def _heads_divide(self) -> LearnerConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError("learner.hidden_size must be divisible by learner.num_heads")
        return self


class BootstrapConfig(Strict):
    enabled: bool = True
    """Round 0 trains the learner on the bootstrap curriculum (the embedded model needs it)."""

    num_examples: int = Field(4000, ge=0, le=10_000_000)
    """Training examples in the bootstrap set."""

    max_solo_difficulty: float = Field(1.0, ge=0)
    """Bare (solo-format) examples are drawn up to this difficulty: what the learner may know alone."""

    max_guided_difficulty: float = Field(4.0, ge=0)
    """Guided-format examples are drawn up to this difficulty, so the learner can read guidance."""

    guided_fraction: float = Field(0.5, ge=0, le=1)
    """Share of bootstrap examples in the guided format (the rest bare)."""

    epochs: float = Field(3.0, gt=0, le=1000)
    """Passes over the bootstrap set."""

    learning_rate: float = Field(3e-3, gt=0, le=1)
    """Peak learning rate of the bootstrap."""
