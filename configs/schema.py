"""The run configuration: every key an operator may set, with its bounds and meaning.

Each model forbids unknown keys, so a typo fails at start-up with its dotted path. The resolved
config (file + ``--set`` overrides, defaults filled in) is saved as ``config.json`` in every round.
This module imports nothing of zpd.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(Strict):
    seed: int = Field(0, ge=0)
    """Master seed. Every random choice (tasks, sampling, training order) derives from it and the round."""

    max_wall_seconds: float | None = Field(None, gt=0)
    """Stop at a safe point once the daemon has run this long (per process start). None: no limit."""

    max_train_tokens: int | None = Field(None, gt=0)
    """Stop at a safe point once this many training tokens have been consumed over the run. None: no limit."""


class LearnerConfig(Strict):
    path: Path | None = None
    """An HF model directory to start from. None: create the embedded tiny model below."""

    architecture: Literal["qwen2", "llama"] = "qwen2"
    """Architecture of the embedded model (a transformers config family)."""

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


class ArithmeticConfig(Strict):
    enabled: bool = True
    """Use the built-in arithmetic domain."""

    min_difficulty: float = Field(1.0, ge=1)
    """Easiest difficulty made (1 = one-digit addition)."""

    max_difficulty: float = Field(8.0, ge=1, le=40)
    """Hardest difficulty made. Difficulty ~ digits per operand, plus knobs for operands and operations."""

    operations: list[Literal["+", "-"]] = Field(default_factory=lambda: ["+"])
    """Operations tasks may use; '-' adds 0.5 difficulty."""

    max_operands: int = Field(2, ge=2, le=4)
    """Operands per task; each operand past two adds 1 difficulty."""

    guidance: Literal["columns", "digits"] = "columns"
    """Guidance scaffold: 'columns' (column sums with carries, right to left) or 'digits' (answer digits reversed)."""

    eval_per_level: int = Field(20, ge=1, le=10_000)
    """Frozen eval items per integer difficulty level, made once at round 0."""

    @model_validator(mode="after")
    def _range(self) -> ArithmeticConfig:
        if self.min_difficulty > self.max_difficulty:
            raise ValueError("domains.arithmetic.min_difficulty must be <= max_difficulty")
        if not self.operations:
            raise ValueError("domains.arithmetic.operations must not be empty")
        return self


class DomainsConfig(Strict):
    arithmetic: ArithmeticConfig = Field(default_factory=ArithmeticConfig)
    """Arithmetic with difficulty knobs (digits, operands, operations); guidance is a worked scaffold."""

    @model_validator(mode="after")
    def _some(self) -> DomainsConfig:
        if not self.enabled_names():
            raise ValueError("domains: at least one domain must be enabled")
        return self

    def enabled_names(self) -> list[str]:
        return [name for name in type(self).model_fields if getattr(self, name).enabled]


class SynthesisConfig(Strict):
    num_candidates: int = Field(96, ge=1, le=1_000_000)
    """New candidate tasks per domain per round."""

    spread: float = Field(1.5, ge=0, le=40)
    """Candidates' difficulty is drawn from [frontier - spread, frontier + spread], clipped to the domain."""

    escalate_fraction: float = Field(0.25, ge=0, le=1)
    """Share of candidates made by escalating last round's mastered tasks (the rest sampled fresh)."""

    max_tries_factor: int = Field(20, ge=1, le=1000)
    """Give up after num_candidates * this many draws (all duplicates: the domain is exhausted)."""


class CalibrationConfig(Strict):
    num_solo: int = Field(4, ge=1, le=64)
    """Solo attempts per task (the learner alone: the paper's LKP)."""

    num_guided: int = Field(3, ge=1, le=64)
    """Guided attempts per task (with guidance: the paper's MKO gets 3)."""

    temperature: float = Field(0.7, ge=0, le=5)
    """Sampling temperature of calibration attempts."""

    max_tokens: int = Field(24, ge=1, le=65536)
    """Longest answer generated, in tokens."""

    batch_size: int = Field(64, ge=1, le=65536)
    """Tasks calibrated (and committed to the store) per batch: the resume granularity."""


class CurriculumConfig(Strict):
    policy: Literal["zpd-band"] = "zpd-band"
    """How fates are assigned. zpd-band: AgentFrontier's routing with a configurable band."""

    solo_max_ratio: float = Field(0.25, ge=0, le=1)
    """A task 'fails alone' when its solo pass rate is at most this (else it is mastered)."""

    guided_min_ratio: float = Field(0.3, ge=0, le=1)
    """A task failed alone is in the ZPD when its guided pass rate is at least this (1 of 3 by default)."""

    beyond_fate: Literal["beyond", "review"] = "beyond"
    """Where a task failed even with guidance goes: deferred, or the human-review queue (the paper's D_human)."""


class ExamConfig(Strict):
    admit_per_round: int = Field(12, ge=0, le=100_000)
    """Frontier items admitted to the exam per domain per round (0/k solo and k/k guided), instead of training."""

    max_items: int = Field(200, ge=1, le=1_000_000)
    """Upper bound on exam size; admission pauses while it is full."""

    graduate_ratio: float = Field(1.0, gt=0, le=1)
    """An exam item graduates (leaves the exam) when the learner solves it solo at this rate in MEASURE."""

    num_samples: int = Field(1, ge=1, le=64)
    """Solo samples per exam item in MEASURE (1 = greedy)."""


class TrainConfig(Strict):
    backend: Literal["embedded-sft", "embedded-grpo"] = "embedded-sft"
    """Trainer backend. embedded-sft: rejection-sampling fine-tuning; embedded-grpo: group-normalised RL."""

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


class MeasureConfig(Strict):
    promotion_tolerance: float = Field(0.05, ge=0, le=1)
    """A new learner whose eval accuracy drops by more than this is kept in its round but not made current."""

    max_tokens: int = Field(24, ge=1, le=65536)
    """Longest answer generated in MEASURE."""


class StorageConfig(Strict):
    keep_last: int = Field(3, ge=2, le=1_000_000)
    """Committed rounds kept on disk (at least 2: the newest may be mid-commit)."""

    keep_every: int = Field(0, ge=0)
    """Also keep every N-th round for good (0: none)."""

    keep_all: bool = False
    """Keep every round (tests and short runs that roll back to any)."""

    shared_dir: Path | None = None
    """A filesystem every node sees, for training data and new learners when training runs elsewhere."""

    min_free_ratio: float = Field(2.0, ge=0, le=1000)
    """Before a round, stop cleanly if free disk < this multiple of the last round's size."""


class MetricsConfig(Strict):
    enabled: bool = True
    """Serve /metrics, /healthz and /readyz from the daemon."""

    host: str = "127.0.0.1"
    """Bind address. Anything but loopback requires the bearer token below."""

    port: int = Field(9464, ge=0, le=65535)
    """Port; 0 picks a free one (status reports the real URL)."""

    token_env: str = "ZPD_METRICS_TOKEN"
    """Environment variable holding the bearer token required when bound beyond loopback."""


class LoggingConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level logged."""

    max_bytes: int = Field(10_000_000, ge=10_000)
    """Rotate logs/zpd.jsonl at this size."""

    backups: int = Field(5, ge=1, le=1000)
    """Rotated log files kept."""

    progress: bool = True
    """Show progress of long phases on a terminal (stderr, only when it is a TTY)."""


class ZpdConfig(Strict):
    """The whole run."""

    run: RunConfig = Field(default_factory=RunConfig)
    """Seed and stop conditions."""

    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    """The model being trained."""

    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    """Round 0."""

    domains: DomainsConfig = Field(default_factory=DomainsConfig)
    """Task domains (the set cannot change mid-run)."""

    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    """SYNTHESIZE."""

    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    """CALIBRATE."""

    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    """Routing of calibrated tasks to fates."""

    exam: ExamConfig = Field(default_factory=ExamConfig)
    """The evolving exam."""

    train: TrainConfig = Field(default_factory=TrainConfig)
    """TRAIN."""

    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    """MEASURE."""

    storage: StorageConfig = Field(default_factory=StorageConfig)
    """Retention and disk checks."""

    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    """Prometheus endpoint."""

    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    """Logs."""


# Keys whose change mid-run would make the stored state meaningless; a resume refuses them.
IMMUTABLE_KEYS: tuple[str, ...] = (
    "learner.path",
    "learner.architecture",
    "learner.hidden_size",
    "learner.num_layers",
    "learner.num_heads",
    "learner.intermediate_size",
    "learner.max_positions",
    "domains.enabled",
)
