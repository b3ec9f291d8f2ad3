"""The knowledge domain: multi-hop questions over a corpus, open-book guidance, escalation by four operators.

AgentFrontier's engine on a CPU (reference/agentfrontier.md, Stage I-III), with the offline
generator over the synthetic world (``world.py``):

* a task is a chain of relations from a start entity; difficulty = hops + escalation steps on top;
* the **solo** attempt is closed-book: the bare question (``"Tal's mentor's birthplace?"``);
* the **guided** attempt is open-book: the question with the passages that retrieval over the corpus
  returns for each hop (``"Tal's mentor's birthplace?|Tal's mentor is Rok. Rok's birthplace is Vem."``),
  so a learner that can read can copy the answer;
* **escalation** applies one of the paper's four operators (``operators.py``: knowledge expansion,
  conceptual abstraction, factual grounding, computational formulation), picked from the run's rng among
  those that still apply, at most ``max_escalation_steps`` (K_max) steps from the seed question;
  **simplification** undoes the most recent kind of step. Computational questions get their answer from
  generated code run in the sandbox (``loop/domains/sandbox.py``);
* answers: ``worked`` responses name each entity (and number) along the chain, ``>``-separated
  (``Rok>Vem``), so the bare-prompt training target carries every intermediate fact; only the last one is
  graded, exactly after normalisation (case, surrounding blanks and punctuation).

With ``generator = "teacher"`` the questions are written by the run's teacher instead (``teacher.py``:
``TeacherKnowledge``, the class the registered factory picks then), from the documents of the entities a
chain passes. With ``source = "corpus"`` (``generator = "teacher"``) they come from the ingested corpus
(``corpus_units.py``): a seed question fuses the three chunks of one composite unit (each unit seeds at most
once per round; a harder one is the seed escalated ``difficulty - 1`` steps at once), knowledge expansion
and factual grounding add the chunks retrieval finds nearest to the question, the guidance is every chunk
the question was written from, and ``meta`` records the unit, the chunks and their provenance (file,
record, character span). The eval set is teacher-written from held-out units at round 0 and frozen.

Deduplication: structural (start entity + relation chain + operators: the canonical form, exact), and,
with ``dedup = "embedding"``, near-duplicates by MiniLM cosine against everything stored (``dedup.py``):
SYNTHESIZE calls ``remember`` with the stored prompts, after which ``make_task``, ``escalate`` and
``simplify`` return None for a candidate too close to a stored or already-made one. ``"auto"`` uses
the embedding filter for free-text generators only: the synthetic world's templated questions about
different facts sit at MiniLM cosine 0.85-0.98 from each other (bench/results/knowledge.md), so there
the filter would only throw distinct questions away.

What the domain needs of the daemon (the embedder, the round, the teacher, the store) comes through
``attach(services)`` (``loop/domains/services.py``); the sandbox it runs generated code in is its own.
"""

from __future__ import annotations

import logging
import random
import string
from collections.abc import Callable

from zpd.configs.schema import KnowledgeConfig

from ..base import Attaches, Domain, HasCorpus, Remembers, Task
from ..sandbox import SandboxLimits, isolation_available, run_python
from ..services import DomainServices, Embedder
from . import operators as ops
from .dedup import PromptIndex
from .world import World

log = logging.getLogger("zpd.knowledge")


def normalise(text: str) -> str:
    return text.strip().strip(string.punctuation + " ").lower()


class Knowledge(Domain, Attaches, Remembers, HasCorpus):
    """The knowledge domain with the offline generator over the synthetic world (``generator =
    "synthetic"``); ``teacher.TeacherKnowledge`` adds the teacher-written questions."""

    name = "knowledge"

    def __init__(self, cfg: KnowledgeConfig, embedder: Callable[[], Embedder] | None = None) -> None:
        """``embedder``: a zero-argument loader of the dedup embedder (default: the attached services'
        ``cfg.embedder``)."""
        self.cfg = cfg
        self.min_difficulty = 1.0
        self.max_difficulty = float(cfg.max_hops)
        self.world = World(cfg.world_seed, cfg.num_people, cfg.num_orgs, cfg.num_cities, cfg.num_countries)
        self._starts = [e for kind in cfg.start_kinds for e in self.world.entities[kind]]
        self._embedder = embedder
        self._embedder_obj: Embedder | None = None
        self._index: PromptIndex | None = None
        self._used: set[tuple[int, int, int]] = set()
        self._used_round: object = None
        self._remembering = False
        self._can_compute: bool | None = None
        self.services: DomainServices | None = None
        docs = self.world.documents()
        self._docs = {e: docs[f"{kind}_{e.lower()}.txt"] for e, kind in self.world.kind_of.items()}

    def _clip(self, hops: float) -> int:
        return int(min(self.max_difficulty, max(self.min_difficulty, round(hops))))

    def task_for(self, start: str, relations: list[str]) -> Task:
        task = self.build(ops.Spec(start, tuple(relations)))
        assert task is not None  # a chain with no computation is always built
        return task

    def build(self, spec: ops.Spec, operator: str = "seed") -> Task | None:
        """The task of ``spec`` (None when its computation fails in the sandbox)."""
        world, k = self.world, self.cfg.retrieve_k
        ents = ops.entities(world, spec)
        queries = [f"{spec.whose[0]} is {spec.whose[1]}"] if spec.whose else []
        queries += [f"{e}'s {rel}" for e, rel in zip(ents, spec.relations, strict=False)]
        worked = ([spec.start] if spec.whose else []) + ents[1:]
        answer = ents[-1]
        meta: dict[str, object] = {}
        if spec.number:
            queries.append(f"{ents[-1]}'s {world.attribute(ents[-1])}")
            answer = str(world.numbers[ents[-1]])
            worked.append(answer)
        if spec.calc is not None:
            a, b, _op = spec.calc
            queries += [f"{ents[i]}'s {world.attribute(ents[i])}" for i in (a, b)]
            program = ops.code(world, spec)
            result = self._run(program)
            if result is None:
                return None
            answer = result
            worked += [str(world.numbers[ents[a]]), str(world.numbers[ents[b]]), answer]
            meta["code"] = program
        passages: list[str] = []
        for q in queries:
            for p in world.search(q, k=k):
                if p not in passages:
                    passages.append(p)
        return Task(
            domain=self.name,
            difficulty=float(spec.difficulty),
            prompt=ops.question(world, spec),
            answer=answer,
            guidance=" ".join(passages),
            canonical=spec.canonical,
            meta={"hops": len(spec.relations), **spec.to_meta(), "chain": worked, "operator": operator,
                  **meta},
        )

    def _run(self, program: str) -> str | None:
        sb = self.cfg.sandbox
        r = run_python(program, limits=SandboxLimits.from_config(sb), python=sb.python,
                       allow_unsandboxed=sb.allow_unsandboxed)
        return r.stdout.strip() if r.ok and r.stdout.strip() else None

    def can_compute(self) -> bool:
        """Whether computational questions can be made: the sandbox isolates here, or unsandboxed is
        allowed."""
        if self._can_compute is None:
            self._can_compute = isolation_available() is not None or self.cfg.sandbox.allow_unsandboxed
        return self._can_compute

    # -- near-duplicates -------------------------------------------------------------------------
    def embedding_dedup(self) -> bool:
        free_text = self.cfg.generator != "synthetic"
        return self.cfg.dedup == "embedding" or (self.cfg.dedup == "auto" and free_text)

    def remember(self, prompts: list[str]) -> None:
        """The prompts of every stored task of this domain (SYNTHESIZE, before making candidates): from now
        on a candidate near one of them, or near one made since, is rejected (None)."""
        self._used, self._used_round = set(), self._round()  # SYNTHESIZE begins: every unit may seed again
        if not self.embedding_dedup():
            return
        if self._index is None:
            self._index = PromptIndex(self._load_embedder, self.cfg.dedup_threshold)
        self._index.remember(prompts)
        self._remembering = True

    def _load_embedder(self) -> Embedder:
        """The embedder (dedup, composite units, retrieval), loaded once."""
        if self._embedder_obj is None:
            if self._embedder is not None:
                self._embedder_obj = self._embedder()
            elif self.services is not None:
                self._embedder_obj = self.services.load_embedder(self.cfg.embedder)
            else:
                raise RuntimeError("the knowledge domain needs an embedder: attach the daemon's services "
                                   "or pass embedder=")
        return self._embedder_obj

    def _keep(self, task: Task | None, parent: Task | None = None) -> Task | None:
        if task is None or not self._remembering or self._index is None:
            return task
        exclude = None if parent is None else parent.prompt
        return task if self._index.admit(task.prompt, exclude=exclude) else None

    def attach(self, services: DomainServices) -> None:
        """The daemon's services: the embedder and the round in progress (the teacher: ``teacher.py``)."""
        self.services = services

    def _round(self) -> object:
        """The round in progress (None outside the daemon): each round, every corpus unit may seed again."""
        return None if self.services is None else self.services.current_round()

    def _escalate_written(self, task: Task, rng: random.Random) -> Task | None:
        """A teacher-written ``task`` one step harder: a fresh task at the top level at the top or K_max
        steps, else the teacher's next question (``TeacherKnowledge``; here, with no teacher: an error)."""
        steps = int(task.meta.get("steps", 0))
        if task.difficulty + 1 > self.max_difficulty or steps >= self.cfg.max_escalation_steps:
            return self.make_task(self.max_difficulty, rng)
        raise RuntimeError("domains.knowledge.generator = 'teacher' but no teacher is attached")

    def _offline_eval_items(self) -> list[Task]:
        rng, out = random.Random(f"knowledge-eval:{self.cfg.world_seed}"), []
        for level in self.eval_levels():
            seen: set[str] = set()
            for _ in range(self.cfg.eval_per_level * 50):
                if len(seen) == self.cfg.eval_per_level:
                    break
                start = rng.choice(self._starts)
                t = self.task_for(start, self.world.walk(start, int(level), rng))
                if t.canonical not in seen:
                    seen.add(t.canonical)
                    out.append(t)
        return out

    def _offline_bootstrap_task(self, rng: random.Random) -> Task:
        start = rng.choice(self._starts)
        hops = rng.randint(1, min(3, int(self.max_difficulty)))
        return self.task_for(start, self.world.walk(start, hops, rng))

    # -- the Domain interface -------------------------------------------------------------------
    def make_task(self, difficulty: float, rng: random.Random) -> Task | None:
        start = rng.choice(self._starts)
        return self._keep(self.task_for(start, self.world.walk(start, self._clip(difficulty), rng)))

    def apply(self, operator: str, task: Task, rng: random.Random) -> Task | None:
        """``task`` escalated by ``operator`` (None when it does not apply or its computation fails)."""
        spec = ops.Spec.from_meta(task.meta)
        if operator not in ops.applicable(self.world, spec, int(self.max_difficulty), self.cfg.operators,
                                          self.can_compute()):
            return None
        return self.build(ops.apply(self.world, spec, operator, rng), operator)

    def escalate(self, task: Task, rng: random.Random) -> Task | None:
        """One operator step (picked from ``rng`` among those that apply); a fresh task at the top level
        when none applies or K_max steps were taken. None: a near-duplicate of something stored."""
        if task.meta.get("generator") == "teacher":
            return self._keep(self._escalate_written(task, rng), parent=task)
        spec = ops.Spec.from_meta(task.meta)
        choices = ops.applicable(self.world, spec, int(self.max_difficulty), self.cfg.operators,
                                 self.can_compute())
        if not choices or spec.steps >= self.cfg.max_escalation_steps:
            return self.make_task(self.max_difficulty, rng)
        return self._keep(self.apply(rng.choice(choices), task, rng), parent=task)

    def simplify(self, task: Task, rng: random.Random) -> Task | None:
        if task.meta.get("generator") == "teacher":  # operators only add: a fresh question one step easier
            return self.make_task(max(self.min_difficulty, task.difficulty - 1), rng)
        easier = ops.simplify(ops.Spec.from_meta(task.meta))
        if easier is None:
            return self.make_task(1.0, rng)
        return self._keep(self.build(easier, "simplify"), parent=task)

    def guided_prompt(self, task: Task) -> str:
        return f"{task.prompt}|{task.guidance}"

    def solution(self, task: Task) -> str:
        if self.cfg.response == "worked":
            return ">".join(task.meta["chain"])
        return task.answer

    def grade(self, task: Task, output: str) -> bool:
        return normalise(output.rsplit(">", 1)[-1]) == normalise(task.answer)

    def corpus_texts(self) -> list[str]:
        """The corpus the questions are made from (one document per entity): continued pre-training's text.
        With source = "corpus", none: pre-training reads the ingested chunks from the store itself."""
        if self.cfg.source == "corpus":
            return []
        docs = self.world.documents()
        return [docs[name] for name in sorted(docs)]

    def eval_levels(self) -> list[float]:
        return [float(h) for h in range(1, int(self.max_difficulty) + 1)]

