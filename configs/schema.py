"""The run configuration: every key an operator may set, with its bounds and meaning.

Each model forbids unknown keys, so a typo fails at start-up with its dotted path. The resolved
config (file + ``--set`` overrides, defaults filled in) is saved as ``config.json`` in every round.
The sections live in modules named for their owner beside this one (``run.py``, ``learner.py``,
``domains.py``, ``knowledge.py``, ``curriculum.py``, ``train.py``, ``measure.py``, ``generation.py``,
``verl.py``, ``served.py``, ``runtime.py``, ``reasoning_gym.py``), all on ``base.py:Strict``; this
module assembles them into :class:`ZpdConfig` and re-exports every section class, so
``from zpd.configs.schema import LearnerConfig`` keeps working. This module imports nothing of zpd.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from .base import Strict
from .curriculum import CalibrationConfig, CurriculumConfig, SynthesisConfig
from .domains import ArithmeticConfig, DatasetConfig, DomainsConfig
from .generation import GenerationConfig, OpenAIEndpointConfig, TeacherConfig, VllmBackendConfig
from .knowledge import KnowledgeConfig, SandboxConfig
from .learner import BootstrapConfig, LearnerConfig
from .measure import ExamConfig, MeasureConfig
from .reasoning_gym import ReasoningGymConfig
from .run import LoggingConfig, MetricsConfig, RunConfig, StorageConfig
from .runtime import RuntimeConfig
from .served import ServedConfig
from .snapshot import SnapshotConfig
from .train import CptConfig, TrainConfig
from .verl import VerlConfig, check_grpo_batch

__all__ = [
    "IMMUTABLE_KEYS", "ArithmeticConfig", "BootstrapConfig", "CalibrationConfig", "CptConfig",
    "CurriculumConfig", "DatasetConfig", "DomainsConfig", "ExamConfig", "GenerationConfig", "KnowledgeConfig",
    "LearnerConfig", "LoggingConfig", "MeasureConfig", "MetricsConfig", "OpenAIEndpointConfig",
    "ReasoningGymConfig", "RunConfig", "RuntimeConfig", "SandboxConfig", "ServedConfig", "SnapshotConfig",
    "StorageConfig", "Strict", "SynthesisConfig", "TeacherConfig", "TrainConfig", "VerlConfig",
    "VllmBackendConfig", "ZpdConfig",
]


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

    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    """How the learner's attempts are generated (embedded, vllm or an OpenAI-compatible server)."""

    teacher: TeacherConfig | None = None
    """Optional stronger model that makes the guided attempts (with a spending cap). None: the learner
    does."""

    verl: VerlConfig = Field(default_factory=VerlConfig)
    """How the verl-sft / verl-grpo trainer backends launch verl (local or on a Ray cluster)."""

    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    """How zpd uses the machine (torch's CPU threads)."""

    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)
    """How SNAPSHOT stores each round's copy of the state database (full copies and deltas)."""

    served: ServedConfig = Field(default_factory=ServedConfig)
    """Replicas serving the current learner when generation.backend = "served" (local or Ray jobs)."""

    @model_validator(mode="after")
    def _question_writer(self) -> ZpdConfig:
        k = self.domains.knowledge
        if k.enabled and k.generator == "teacher" and self.teacher is None:
            raise ValueError("domains.knowledge.generator = 'teacher' needs a [teacher] section "
                             "(the question writer)")
        if self.train.backend == "verl-grpo":
            check_grpo_batch(self.train.grpo_prompts_per_step, self.train.grpo_num_samples, self.verl)
        return self


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
    "domains.reasoning_gym.families",
    # The synthetic world is made from these: another world would make every stored question meaningless.
    # Compared only while the knowledge domain is enabled.
    "domains.knowledge.world_seed",
    "domains.knowledge.num_people",
    "domains.knowledge.num_orgs",
    "domains.knowledge.num_cities",
    "domains.knowledge.num_countries",
)
