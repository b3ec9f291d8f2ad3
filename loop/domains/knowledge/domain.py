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
  generated code run in the sandbox (``loop/tools/sandbox.py``);
* answers: ``worked`` responses name each entity (and number) along the chain, ``>``-separated
  (``Rok>Vem``), so the bare-prompt training target carries every intermediate fact; only the last one is
  graded, exactly after normalisation (case, surrounding blanks and punctuation).

With ``source = "corpus"`` (``generator = "teacher"``) the questions come from the ingested corpus instead
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
"""

from __future__ import annotations

import hashlib
import logging
import random
import string
from dataclasses import asdict
from typing import Any

from ..base import Task, register
from . import operators as ops
from .corpus_units import CorpusUnits
from .dedup import PromptIndex
from .llm import TeacherQuestions
from .world import World

log = logging.getLogger("zpd.knowledge")


def normalise(text: str) -> str:
    return text.strip().strip(string.punctuation + " ").lower()


class Knowledge:
    name = "knowledge"

    def __init__(self, cfg, embedder=None) -> None:  # cfg: zpd.configs.schema.KnowledgeConfig
        """``embedder``: a zero-argument loader of the dedup embedder (default: ``cfg.embedder``)."""
        self.cfg = cfg
        self.min_difficulty = 1.0
        self.max_difficulty = float(cfg.max_hops)
        self.world = World(cfg.world_seed, cfg.num_people, cfg.num_orgs, cfg.num_cities, cfg.num_countries)
        self._starts = [e for kind in cfg.start_kinds for e in self.world.entities[kind]]
        self._embedder = embedder
        self._embedder_obj = None
        self._index: PromptIndex | None = None
        self._units: CorpusUnits | None = None
        self._used: set[tuple[int, int, int]] = set()
        self._used_round: object = None
        self._remembering = False
        self._can_compute: bool | None = None
        self.questions: TeacherQuestions | None = None
        self._ctx = None
        self._teacher_seed = 0
        self._replies: tuple[int, Any] | None = None
        docs = self.world.documents()
        self._docs = {e: docs[f"{kind}_{e.lower()}.txt"] for e, kind in self.world.kind_of.items()}
        if cfg.generator == "teacher":
            # The frozen eval set and the bootstrap set stay offline (written from the world's facts): a
            # deterministic yardstick, and the bootstrap replayed every round costs no teacher call.
            self.eval_items = self._offline_eval_items
            self.bootstrap_task = self._offline_bootstrap_task
        if cfg.source == "corpus":  # teacher-written from held-out units at round 0 (then frozen)
            self.eval_items = self._corpus_eval_items

    def _clip(self, hops: float) -> int:
        return int(min(self.max_difficulty, max(self.min_difficulty, round(hops))))

    def task_for(self, start: str, relations: list[str]) -> Task:
        return self.build(ops.Spec(start, tuple(relations)))

    def build(self, spec: ops.Spec, operator: str = "seed") -> Task | None:
        """The task of ``spec`` (None when its computation fails in the sandbox)."""
        world, k = self.world, self.cfg.retrieve_k
        ents = ops.entities(world, spec)
        queries = [f"{spec.whose[0]} is {spec.whose[1]}"] if spec.whose else []
        queries += [f"{e}'s {rel}" for e, rel in zip(ents, spec.relations, strict=False)]
        worked = ([spec.start] if spec.whose else []) + ents[1:]
        answer = ents[-1]
        meta: dict = {}
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
            meta={"hops": len(spec.relations), **spec.to_meta(), "chain": worked, "operator": operator, **meta},
        )

    def _run(self, program: str) -> str | None:
        from zpd.loop.tools.sandbox import SandboxLimits, run_python

        sb = self.cfg.sandbox
        r = run_python(program, limits=SandboxLimits.from_config(sb), python=sb.python,
                       allow_unsandboxed=sb.allow_unsandboxed)
        return r.stdout.strip() if r.ok and r.stdout.strip() else None

    def can_compute(self) -> bool:
        """Whether computational questions can be made: the sandbox isolates here, or unsandboxed is allowed."""
        if self._can_compute is None:
            from zpd.loop.tools.sandbox import isolation_available

            self._can_compute = isolation_available() is not None or self.cfg.sandbox.allow_unsandboxed
        return self._can_compute

    # -- near-duplicates -------------------------------------------------------------------------
    def embedding_dedup(self) -> bool:
        return self.cfg.dedup == "embedding" or (self.cfg.dedup == "auto" and self.cfg.generator != "synthetic")

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

    def _load_embedder(self):
        """The embedder (dedup, composite units, retrieval), loaded once."""
        if self._embedder_obj is None:
            from zpd.trainer.embed import load_embedder

            self._embedder_obj = (self._embedder or (lambda: load_embedder(self.cfg.embedder)))()
        return self._embedder_obj

    def _keep(self, task: Task | None, parent: Task | None = None) -> Task | None:
        if task is None or not self._remembering:
            return task
        return task if self._index.admit(task.prompt, exclude=None if parent is None else parent.prompt) else None

    # -- the teacher generator (generator = "teacher") ------------------------------------------
    def attach(self, ctx) -> None:
        """The run context, from the daemon once it is built: the question writer is ctx's [teacher]. Its
        calls are in the round's teacher ledger (tokens, cost: cost per accepted item counts them) and under
        ``teacher.max_cost_usd`` (a call that does not fit is not made: the question is dropped)."""
        if self.cfg.generator != "teacher":
            return
        from zpd.loop.logs import CONTEXT
        from zpd.loop.usage import TeacherBudget, add_usage
        from zpd.trainer.generate import Completion

        cfg = self.cfg
        self._ctx = ctx
        if cfg.source == "corpus":
            self.use_corpus(ctx.db)

        def complete(prompt: str) -> str:
            self._teacher_seed += 1
            # A reply a killed SYNTHESIZE already paid for is replayed (store/replies.py); its usage is added
            # again, since the killed phase's ledger rows were rolled back with its transaction.
            key = f"{self._teacher_seed}:{hashlib.sha256(prompt.encode('utf-8', 'replace')).hexdigest()}"
            replies = self._reply_log(ctx, CONTEXT.round)
            stored = replies.get(key)
            budget = TeacherBudget(ctx, CONTEXT.round)
            if stored is not None:
                out = Completion(**stored["completion"])
                add_usage(ctx, CONTEXT.round, "teacher", ctx.cfg.teacher.model, [out], stored["cost_usd"])
                return "" if out.finish_reason == "error" else out.text
            if not budget.plan([prompt], 1, cfg.teacher_max_tokens):
                log.warning("teacher paused by teacher.max_cost_usd; question not written")
                return ""
            out = ctx.teacher_generator().generate([prompt], n=1, temperature=cfg.teacher_temperature,
                                                   max_tokens=cfg.teacher_max_tokens, seed=self._teacher_seed)[0][0]
            cost = budget.cost([out])
            if out.finish_reason != "error":
                replies.put(key, {"completion": asdict(out), "cost_usd": cost})
            add_usage(ctx, CONTEXT.round, "teacher", ctx.cfg.teacher.model, [out], cost)
            return "" if out.finish_reason == "error" else out.text

        self.use_teacher(complete)

    def _reply_log(self, ctx, round_n: int):
        """The round's durable log of teacher replies (one per round, in its work directory)."""
        from zpd.store.replies import ReplyLog
        from zpd.store.rounds import work_dir

        if self._replies is None or self._replies[0] != round_n:
            self._replies = (round_n, ReplyLog(work_dir(ctx.state_dir, round_n) / "teacher_replies.jsonl"))
        return self._replies[1]

    def use_corpus(self, db) -> None:
        """Write the questions from the corpus ingested into ``db`` (``source = "corpus"``)."""
        self._units = CorpusUnits(db, self.cfg, self._load_embedder)

    def use_teacher(self, complete) -> None:
        """Write questions with ``complete(prompt) -> reply text`` (``llm.TeacherQuestions``)."""
        self.questions = TeacherQuestions(complete, max_retries=self.cfg.teacher_retries)

    @property
    def teacher_dropped(self) -> int:
        """Questions dropped because the teacher's reply was not the expected JSON (after its retries)."""
        return 0 if self.questions is None else self.questions.dropped

    def _ask(self, call, rng: random.Random) -> dict | None:
        if self.questions is None:
            raise RuntimeError("domains.knowledge.generator = 'teacher' but no teacher is attached")
        self._teacher_seed = rng.randrange(2**31)
        before = self.questions.dropped
        reply = call()
        if self.questions.dropped > before:
            log.warning("teacher reply was not the expected JSON after its retries; question dropped",
                        extra={"dropped_total": self.questions.dropped})
            if self._ctx is not None:  # the round's report: meta teacher_dropped:<round> (same transaction)
                from zpd.loop.logs import CONTEXT
                from zpd.store.db import get_meta, set_meta

                key = f"teacher_dropped:{CONTEXT.round}"
                set_meta(self._ctx.db, key, str(int(get_meta(self._ctx.db, key) or 0) + 1))
        return reply

    def _teacher_task(self, reply: dict, entities: list[str], difficulty: float, operator: str,
                      steps: int) -> Task | None:
        return self._written(reply, " ".join(self._docs[e].strip() for e in entities), difficulty, operator,
                             steps, {"documents": entities})

    def _written(self, reply: dict, guidance: str, difficulty: float, operator: str, steps: int,
                 where: dict) -> Task | None:
        """The task of a teacher reply; ``guidance``: the documents it was written from; ``where``: their
        names in ``meta`` (world entities, or corpus chunks)."""
        question, answer = reply["question"].strip(), reply["answer"].strip()
        meta: dict = {}
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
            meta={"generator": "teacher", **where, "operator": operator, "steps": steps, "chain": [answer], **meta},
        )

    def _teacher_seed_task(self, difficulty: float, rng: random.Random) -> Task | None:
        """One question fusing one document per hop of a chain (the documents of the entities it passes)."""
        hops = self._clip(difficulty)
        start = rng.choice(self._starts)
        facts = self.world.resolve(start, self.world.walk(start, hops, rng))
        entities = [f.subject for f in facts]
        reply = self._ask(lambda: self.questions.seed([self._docs[e] for e in entities]), rng)
        return None if reply is None else self._teacher_task(reply, entities, hops, "seed", 0)

    def _operators(self) -> list[str]:
        return [o for o in self.cfg.operators if o != "computational-formulation" or self.can_compute()]

    def _teacher_escalate(self, task: Task, rng: random.Random) -> Task | None:
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
        reply = self._ask(lambda: self.questions.escalate(task.prompt, task.answer, operator,
                                                          [self._docs[e] for e in entities]), rng)
        return None if reply is None else self._teacher_task(reply, entities, task.difficulty + 1, operator, steps + 1)

    # -- the teacher over the ingested corpus (source = "corpus") ---------------------------------
    def _corpus(self) -> CorpusUnits:
        if self._units is None:
            raise RuntimeError("domains.knowledge.source = 'corpus' but no store is attached (use_corpus)")
        return self._units

    @staticmethod
    def _round() -> object:
        from zpd.loop.logs import CONTEXT

        return CONTEXT.round

    def _corpus_task(self, reply: dict, unit: list[int], chunks: list[int], difficulty: float, operator: str,
                     steps: int) -> Task | None:
        corpus = self._corpus()
        return self._written(reply, "\n\n".join(corpus.texts(chunks)), difficulty, operator, steps,
                             {"source": "corpus", "unit": list(unit), "chunks": list(chunks),
                              "provenance": corpus.provenance(chunks)})

    def _corpus_seed(self, unit: tuple[int, int, int], rng: random.Random) -> Task | None:
        """The teacher's question fusing the three chunks of ``unit``."""
        ids = list(unit)
        reply = self._ask(lambda: self.questions.seed(self._corpus().texts(ids)), rng)
        return None if reply is None else self._corpus_task(reply, ids, ids, self.min_difficulty, "seed", 0)

    def _corpus_step(self, task: Task, rng: random.Random) -> Task | None:
        """One operator step over the task's chunks; knowledge expansion and factual grounding (the paper's
        search operators) add the ``retrieve_k`` chunks retrieval finds nearest to the question first."""
        operator = rng.choice(self._operators())
        ids = list(task.meta["chunks"])
        if operator in ("knowledge-expansion", "factual-grounding"):
            ids += self._corpus().search(f"{task.prompt} {task.answer}", self.cfg.retrieve_k, set(ids))
        reply = self._ask(lambda: self.questions.escalate(task.prompt, task.answer, operator,
                                                          self._corpus().texts(ids)), rng)
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
        """A question from a unit not yet used this round and not held out for the eval set (None: none left)."""
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
        out = []
        for i, unit in enumerate(held):
            task = self._corpus_question(unit, levels[i // self.cfg.eval_per_level], rng)
            if task is not None:
                out.append(task)
        return out

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
        return self.task_for(start, self.world.walk(start, rng.randint(1, min(3, int(self.max_difficulty))), rng))

    # -- the Domain interface -------------------------------------------------------------------
    def make_task(self, difficulty: float, rng: random.Random) -> Task | None:
        if self.cfg.generator == "teacher":
            if self.cfg.source == "corpus":
                return self._keep(self._corpus_seed_task(difficulty, rng))
            return self._keep(self._teacher_seed_task(difficulty, rng))
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
            return self._keep(self._teacher_escalate(task, rng), parent=task)
        spec = ops.Spec.from_meta(task.meta)
        choices = ops.applicable(self.world, spec, int(self.max_difficulty), self.cfg.operators, self.can_compute())
        if not choices or spec.steps >= self.cfg.max_escalation_steps:
            return self.make_task(self.max_difficulty, rng)
        return self._keep(self.apply(rng.choice(choices), task, rng), parent=task)

    def simplify(self, task: Task, rng: random.Random) -> Task | None:
        if task.meta.get("generator") == "teacher":  # the operators only add: a fresh question one step easier
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


@register("knowledge")
def _make(cfg) -> Knowledge:
    return Knowledge(cfg)
