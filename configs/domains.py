"""The ``[domains]`` section: which task domains run, each with its own subsection.

The arithmetic and dataset domains are here; the knowledge domain's section is ``configs/knowledge.py``,
reasoning-gym's ``configs/reasoning_gym.py``. This module imports nothing of zpd but its sibling sections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .base import Strict
from .knowledge import KnowledgeConfig
from .reasoning_gym import ReasoningGymConfig

Operation = Literal["+", "-"]
"""An arithmetic operation."""

# A typed tuple, copied by the default_factory: a lambda's bare list literal would be list[str] to mypy.
DEFAULT_OPERATIONS: tuple[Operation, ...] = ("+",)


class ArithmeticConfig(Strict):
    enabled: bool = True
    """Use the built-in arithmetic domain."""

    min_difficulty: float = Field(1.0, ge=1)
    """Easiest difficulty made (1 = one-digit addition)."""

    max_difficulty: float = Field(8.0, ge=1, le=40)
    """Hardest difficulty made. Difficulty ~ digits per operand, plus knobs for operands and operations."""

    operations: list[Operation] = Field(default_factory=lambda: list(DEFAULT_OPERATIONS))
    """Operations tasks may use; '-' adds 0.5 difficulty."""

    max_operands: int = Field(2, ge=2, le=4)
    """Operands per task; each operand past two adds 1 difficulty."""

    guidance: Literal["columns", "digits", "hint"] = "columns"
    """Guidance scaffold: 'columns' (column sums with carries, right to left), 'digits' (answer digits
    reversed) or 'hint' (each column's digits and carry-in, no sums: no digit of the answer)."""

    response: Literal["worked", "answer"] = "worked"
    """Answer format: 'worked' (the work, then '>' and the answer; only the answer is graded) or 'answer'
    (bare)."""

    eval_per_level: int = Field(20, ge=1, le=10_000)
    """Frozen eval items (validation and test together) per integer level outside 2..``eval_top_level``,
    made once at round 0 and split half and half; capped at a third of the level's distinct tasks."""

    eval_top_level: int = Field(3, ge=1, le=40)
    """L: levels 2..L get ``eval_validation_per_level`` + ``eval_test_per_level`` items. 3: in the stored
    results (bench/results/rounds.md, bench/results/curriculum) no learner passed 0.05 above level 3. 1:
    no level gets the large sizes."""

    eval_test_per_level: int = Field(100, ge=1, le=100_000)
    """Test items per level 2..L (reported, read by no decision)."""

    eval_validation_per_level: int = Field(100, ge=1, le=100_000)
    """Validation items per level 2..L (the promotion gate and the frontier estimate read them)."""

    @model_validator(mode="after")
    def _range(self) -> ArithmeticConfig:
        if self.min_difficulty > self.max_difficulty:
            raise ValueError("domains.arithmetic.min_difficulty must be <= max_difficulty")
        if not self.operations:
            raise ValueError("domains.arithmetic.operations must not be empty")
        return self


class DatasetConfig(Strict):
    """The user's own problems from a file (loop/domains/dataset.py). Field names map the file's columns."""

    enabled: bool = False
    """Use the dataset domain."""

    path: Path | None = None
    """A JSONL, CSV/TSV or parquet file, or a directory saved by HF ``datasets`` (``save_to_disk``).
    Relative to the config file."""

    format: Literal["auto", "jsonl", "csv", "parquet", "hf"] = "auto"
    """File format. auto: from the suffix (.jsonl/.json/.ndjson, .csv/.tsv, .parquet/.pq) or a directory
    (hf)."""

    split: str = "train"
    """The split used when an HF directory holds several."""

    question_field: str = Field("question", min_length=1)
    """Field (column) holding the question: the bare prompt."""

    answer_field: str = Field("answer", min_length=1)
    """Field holding the reference answer (a string or a number). GSM8K style 'work #### 72' is split at
    ``answer_marker``: the part after it is the answer, the part before the guidance."""

    solution_field: str | None = None
    """Optional field holding a worked solution, used as the guidance of guided attempts."""

    difficulty_field: str | None = None
    """Optional field holding a numeric difficulty. None: the worked solution's length, as a quantile over
    the file scaled to 0..levels (frozen: it never moves with the learner)."""

    category_field: str | None = None
    """Optional field holding a category (kept in each task's meta, for reports and exports)."""

    grader: Literal["exact", "numeric", "math-verify", "llm-judge"] = "exact"
    """How answers are graded: exact (normalised text), numeric (the last number, within the tolerances),
    math-verify (symbolic, with a time limit) or llm-judge (not available yet: refused)."""

    tolerance: float = Field(1e-6, ge=0)
    """numeric: absolute tolerance."""

    rel_tolerance: float = Field(0.0, ge=0, le=1)
    """numeric: tolerance relative to |reference answer|, added to ``tolerance``."""

    case_sensitive: bool = False
    """exact: compare case-sensitively."""

    answer_marker: str = "####"
    """The final answer of a response follows the last occurrence of this marker (the whole response when
    absent). Empty: the whole response is the answer."""

    response: Literal["worked", "answer"] = "worked"
    """Bootstrap target format: 'worked' (the solution, the marker, the answer) or 'answer' (bare)."""

    on_bad_row: Literal["reject", "skip"] = "reject"
    """A malformed row stops the start naming file and line (reject), or is skipped and counted (skip)."""

    max_row_bytes: int = Field(1_000_000, ge=64, le=1_000_000_000)
    """A line (row) longer than this is a bad row; it is never held in memory whole."""

    eval_size: int = Field(40, ge=1, le=1_000_000)
    """Items carved out as the frozen eval set (made once at round 0)."""

    bootstrap_size: int = Field(100, ge=0, le=10_000_000)
    """Items set aside for the round-0 warm-up (never calibrated, never in the eval set or the exam)."""

    split_seed: int = Field(0, ge=0)
    """Seed of the deterministic eval / bootstrap / pool split (by content hash)."""

    levels: int = Field(10, ge=2, le=1000)
    """Without difficulty_field, difficulty runs over 0..levels in whole levels (solution-length quantile)."""

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        if not self.enabled:
            return self
        if self.path is None:
            raise ValueError("domains.dataset.path must be set when the dataset domain is enabled")
        if not self.path.exists():
            raise ValueError(f"domains.dataset.path: {self.path} does not exist")
        if self.format == "hf" and not self.path.is_dir():
            raise ValueError(f"domains.dataset.path: {self.path} is not a directory (format 'hf')")
        if self.format in ("jsonl", "csv", "parquet") and self.path.is_dir():
            raise ValueError(f"domains.dataset.path: {self.path} is a directory (format {self.format!r})")
        # Refused by name, so the error says why (no LLM judge ships) rather than listing the literals.
        if self.grader == "llm-judge":
            raise ValueError("domains.dataset.grader: 'llm-judge' is not available for the dataset domain "
                             "yet; use 'exact', 'numeric' or 'math-verify'")
        fields = [f for f in (self.question_field, self.answer_field, self.solution_field,
                              self.difficulty_field, self.category_field) if f is not None]
        if len(set(fields)) != len(fields):
            raise ValueError("domains.dataset: question_field, answer_field, solution_field, "
                             "difficulty_field and category_field must name different fields")
        return self


class DomainsConfig(Strict):
    arithmetic: ArithmeticConfig = Field(default_factory=ArithmeticConfig)
    """Arithmetic with difficulty knobs (digits, operands, operations); guidance is a worked scaffold."""

    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    """The user's own problems from a file (JSONL, CSV, parquet, HF datasets directory), off by default."""

    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    """Multi-hop questions over a (synthetic) corpus with open-book guidance: the AgentFrontier engine, off
    by default."""

    reasoning_gym: ReasoningGymConfig = Field(default_factory=ReasoningGymConfig)
    """reasoning-gym's task families, each its own domain ``rg:<family>`` (configs/reasoning_gym.py), off by
    default."""

    @model_validator(mode="after")
    def _some(self) -> DomainsConfig:
        if not self.enabled_names():
            raise ValueError("domains: at least one domain must be enabled")
        return self

    def enabled_names(self) -> list[str]:
        return [name for name in type(self).model_fields if getattr(self, name).enabled]
