"""The knowledge domain with its questions written by the run's teacher (``generator = "teacher"``).

``TeacherKnowledge`` is the class the registered factory makes for that generator (``__init__.py``). The
teacher writes a seed question from the documents of the entities a chain passes (one per hop) and
escalates it by one of the four operators (``llm.TeacherQuestions``: prompts in files, JSON replies);
with ``source = "corpus"`` it writes from the composite units of the ingested corpus instead
(``corpus_units.py``). The frozen eval set and the bootstrap set stay offline (written from the world's
facts): a deterministic yardstick, and the bootstrap replayed every round costs no teacher call; with
``source = "corpus"`` the eval set is teacher-written from held-out units at round 0, then frozen.

The teacher is the daemon's (``attach``: ``services.teacher``): its calls are in the round's teacher
ledger (tokens, cost: cost per accepted item counts them) and under ``teacher.max_cost_usd`` (a call that
does not fit is not made: the question is dropped). A test hands ``use_teacher`` any ``complete(prompt)``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from zpd.configs.schema import KnowledgeConfig

from ..base import OwnBootstrap, OwnEvalSet, Task
from ..services import DomainServices, DomainStore, Embedder
from .corpus_units import CorpusUnits
from .domain import Knowledge
from .llm import TeacherQuestions

log = logging.getLogger("zpd.knowledge")

Reply = dict[str, Any]
"""A teacher reply's JSON object (``llm.parse_reply``: non-empty "question" and "answer")."""


class TeacherKnowledge(Knowledge, OwnEvalSet, OwnBootstrap):
    """The knowledge domain whose candidates the teacher writes; its eval and bootstrap sets are its own."""

    def __init__(self, cfg: KnowledgeConfig, embedder: Callable[[], Embedder] | None = None) -> None:
        super().__init__(cfg, embedder)
        self.questions: TeacherQuestions | None = None
        self._units: CorpusUnits | None = None
        self._teacher_seed = 0

    # -- the daemon's teacher and store --------------------------------------------------------
    def attach(self, services: DomainServices) -> None:
        """The daemon's services: the question writer is its [teacher]; with ``source = "corpus"``, the
        corpus is the one ingested into its store."""
        super().attach(services)
        cfg = self.cfg
        if cfg.source == "corpus":
            self.use_corpus(services)

        def complete(prompt: str) -> str:
            self._teacher_seed += 1
            return services.teacher(prompt, seed=self._teacher_seed, temperature=cfg.teacher_temperature,
                                    max_tokens=cfg.teacher_max_tokens)

        self.use_teacher(complete)

    def use_corpus(self, store: DomainStore) -> None:
        """Write the questions from the corpus ingested into ``store`` (``source = "corpus"``)."""
        self._units = CorpusUnits(store, self.cfg, self._load_embedder)

    def use_teacher(self, complete: Callable[[str], str]) -> None:
        """Write questions with ``complete(prompt) -> reply text`` (``llm.TeacherQuestions``)."""
        self.questions = TeacherQuestions(complete, max_retries=self.cfg.teacher_retries)

    @property
    def teacher_dropped(self) -> int:
        """Questions dropped because the teacher's reply was not the expected JSON (after its retries)."""
        return 0 if self.questions is None else self.questions.dropped

    def _ask(self, call: Callable[[TeacherQuestions], Reply | None], rng: random.Random) -> Reply | None:
        if self.questions is None:
            raise RuntimeError("domains.knowledge.generator = 'teacher' but no teacher is attached")
        self._teacher_seed = rng.randrange(2**31)
        before = self.questions.dropped
        reply = call(self.questions)
        if self.questions.dropped > before:
            log.warning("teacher reply was not the expected JSON after its retries; question dropped",
                        extra={"dropped_total": self.questions.dropped})
            if self.services is not None:  # the round's report: meta teacher_dropped:<round> (same txn)
                key = f"teacher_dropped:{self.services.current_round()}"
                self.services.set_meta(key, str(int(self.services.get_meta(key) or 0) + 1))
        return reply

    # -- the Domain interface, and the offline eval and bootstrap sets --------------------------
    def make_task(self, difficulty: float, rng: random.Random) -> Task | None:
        if self.cfg.source == "corpus":
            return self._keep(self._corpus_seed_task(difficulty, rng))
        return self._keep(self._teacher_seed_task(difficulty, rng))

    def eval_items(self) -> list[Task]:
        if self.cfg.source == "corpus":  # teacher-written from held-out units at round 0 (then frozen)
            return self._corpus_eval_items()
        return self._offline_eval_items()

    def bootstrap_task(self, rng: random.Random) -> Task | None:
        return self._offline_bootstrap_task(rng)

    # -- questions from the world's documents -------------------------------------------------
    def _teacher_task(self, reply: Reply, entities: list[str], difficulty: float, operator: str,
                      steps: int) -> Task | None:
        return self._written(reply, " ".join(self._docs[e].strip() for e in entities), difficulty, operator,
                             steps, {"documents": entities})

    def _written(self, reply: Reply, guidance: str, difficulty: float, operator: str, steps: int,
                 where: dict[str, object]) -> Task | None:
        """The task of a teacher reply; ``guidance``: the documents it was written from; ``where``: their
        names in ``meta`` (world entities, or corpus chunks)."""
        question, answer = reply["question"].strip(), reply["answer"].strip()
        meta: dict[str, object] = {}
        program = str(reply.get("code") or "").strip()
        if operator == "computational-formulation":
            if not program or not self.can_compute():
                return None
            result = self._run(program)  # the code's output is the answer, whatever the teacher wrote
            if result is None:
                return None
            answer, meta["code"], meta["teacher_answer"] = result, program, reply["answer"].strip()
        return Task(
            domain=self.name, difficulty=float(difficulty), prompt=question, answer=answer,
            guidance=guidance,
            canonical="teacher|" + " ".join(question.lower().split()),
            meta={"generator": "teacher", **where, "operator": operator, "steps": steps, "chain": [answer],
                  **meta},
        )

    def _teacher_seed_task(self, difficulty: float, rng: random.Random) -> Task | None:
        """One question fusing one document per hop of a chain (the documents of the entities it passes)."""
        hops = self._clip(difficulty)
        start = rng.choice(self._starts)
        facts = self.world.resolve(start, self.world.walk(start, hops, rng))
        entities = [f.subject for f in facts]
        reply = self._ask(lambda q: q.seed([self._docs[e] for e in entities]), rng)
        return None if reply is None else self._teacher_task(reply, entities, hops, "seed", 0)

    def _operators(self) -> list[str]:
        return [o for o in self.cfg.operators if o != "computational-formulation" or self.can_compute()]

    def _escalate_written(self, task: Task, rng: random.Random) -> Task | None:
        steps = int(task.meta.get("steps", 0))
        if task.difficulty + 1 > self.max_difficulty or steps >= self.cfg.max_escalation_steps:
            return self.make_task(self.max_difficulty, rng)
        if "chunks" in task.meta:
            return self._corpus_step(task, rng)
        operator = rng.choice(self._operators())
        entities = list(task.meta["documents"])
        if operator == "knowledge-expansion":  # one more document: an entity the last one's facts name
            near = [f.obj for (s, _r), f in sorted(self.world.facts.items()) if s == entities[-1]]
            near = [e for e in near if e not in entities] or [e for e in self._starts if e not in entities]
            entities.append(rng.choice(near))
        reply = self._ask(lambda q: q.escalate(task.prompt, task.answer, operator,
                                                [self._docs[e] for e in entities]), rng)
        if reply is None:
            return None
        return self._teacher_task(reply, entities, task.difficulty + 1, operator, steps + 1)

    # -- the teacher over the ingested corpus (source = "corpus") ---------------------------------
    def _corpus(self) -> CorpusUnits:
        if self._units is None:
            raise RuntimeError("domains.knowledge.source = 'corpus' but no store is attached (use_corpus)")
        return self._units

    def _corpus_task(self, reply: Reply, unit: list[int], chunks: list[int], difficulty: float, operator: str,
                     steps: int) -> Task | None:
        corpus = self._corpus()
        return self._written(reply, "\n\n".join(corpus.texts(chunks)), difficulty, operator, steps,
                             {"source": "corpus", "unit": list(unit), "chunks": list(chunks),
                              "provenance": corpus.provenance(chunks)})

    def _corpus_seed(self, unit: tuple[int, int, int], rng: random.Random) -> Task | None:
        """The teacher's question fusing the three chunks of ``unit``."""
        ids = list(unit)
        reply = self._ask(lambda q: q.seed(self._corpus().texts(ids)), rng)
        return None if reply is None else self._corpus_task(reply, ids, ids, self.min_difficulty, "seed", 0)

    def _corpus_step(self, task: Task, rng: random.Random) -> Task | None:
        """One operator step over the task's chunks; knowledge expansion and factual grounding (the paper's
        search operators) add the ``retrieve_k`` chunks retrieval finds nearest to the question first."""
        operator = rng.choice(self._operators())
        ids = list(task.meta["chunks"])
        if operator in ("knowledge-expansion", "factual-grounding"):
            ids += self._corpus().search(f"{task.prompt} {task.answer}", self.cfg.retrieve_k, set(ids))
        reply = self._ask(lambda q: q.escalate(task.prompt, task.answer, operator, self._corpus().texts(ids)),
                          rng)
        if reply is None:
            return None
        return self._corpus_task(reply, task.meta["unit"], ids, task.difficulty + 1, operator,
                                 int(task.meta.get("steps", 0)) + 1)

    def _corpus_question(self, unit: tuple[int, int, int], level: int, rng: random.Random) -> Task | None:
        """A seed from ``unit`` escalated ``level - 1`` steps (None when a reply was dropped)."""
        task = self._corpus_seed(unit, rng)
        for _ in range(level - 1):
            if task is None or int(task.meta["steps"]) >= self.cfg.max_escalation_steps:
                break
            task = self._corpus_step(task, rng)
        return task

    def _corpus_seed_task(self, difficulty: float, rng: random.Random) -> Task | None:
        """A question from a unit not yet used this round and not held out for the eval set (None: none
        left)."""
        units = self._corpus().refresh()
        if self._used_round != self._round():
            self._used, self._used_round = set(), self._round()
        held = self._corpus().held_out()
        free = [u for u in units if u not in held and u not in self._used]
        if not free:
            return None
        unit = free[rng.randrange(len(free))]
        self._used.add(unit)
        return self._corpus_question(unit, self._clip(difficulty), rng)

    def _corpus_eval_items(self) -> list[Task]:
        """The frozen eval set (round 0): ``eval_per_level`` units per level, drawn with a fixed seed and held
        out for good (meta ``knowledge_eval_units``), each a teacher question escalated to its level."""
        corpus = self._corpus()
        rng = random.Random(f"knowledge-eval-corpus:{self.cfg.world_seed}")
        order = list(corpus.refresh())
        rng.shuffle(order)
        levels = [int(v) for v in self.eval_levels()]
        held = order[: self.cfg.eval_per_level * len(levels)]
        corpus.hold_out(held)
        if len(held) < self.cfg.eval_per_level * len(levels):
            log.warning("the corpus has fewer composite units than the eval set wants",
                        extra={"units": len(order), "wanted": self.cfg.eval_per_level * len(levels)})
        out: list[Task] = []
        for i, unit in enumerate(held):
            task = self._corpus_question(unit, levels[i // self.cfg.eval_per_level], rng)
            if task is not None:
                out.append(task)
        return out
