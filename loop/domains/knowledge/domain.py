"""The knowledge domain: multi-hop questions over a corpus, open-book guidance, escalation by hops.

AgentFrontier's engine on a CPU (reference/agentfrontier.md, Stage I-III), with the offline
generator over the synthetic world (``world.py``):

* a task is a chain of relations from a start entity; difficulty = number of hops;
* the **solo** attempt is closed-book: the bare question (``"Tal's mentor's birthplace?"``);
* the **guided** attempt is open-book: the question with the passages that retrieval over the corpus
  returns for each hop (``"Tal's mentor's birthplace?|Tal's mentor is Rok. Rok's birthplace is Vem."``),
  so a learner that can read can copy the answer;
* **escalation** is knowledge expansion: one more hop from the answer entity (the other three operators
  need a teacher, see ``llm.py``); **simplification** drops the last hop;
* answers: ``worked`` responses name each entity along the chain, ``>``-separated (``Rok>Vem``), so the
  bare-prompt training target carries every intermediate fact; only the last one is graded, exactly
  after normalisation (case, surrounding blanks and punctuation).

Deduplication is structural (start entity + relation chain), as DESIGN asks of procedural domains;
the embedding near-duplicate filter (``units.py``) is for free-text questions from an LLM generator.
"""

from __future__ import annotations

import random
import string

from ..base import Task, register
from .world import World, question_text


def normalise(text: str) -> str:
    return text.strip().strip(string.punctuation + " ").lower()


class Knowledge:
    name = "knowledge"

    def __init__(self, cfg) -> None:  # cfg: zpd.configs.schema.KnowledgeConfig
        self.cfg = cfg
        self.min_difficulty = 1.0
        self.max_difficulty = float(cfg.max_hops)
        self.world = World(cfg.world_seed, cfg.num_people, cfg.num_orgs, cfg.num_cities, cfg.num_countries)
        self._starts = [e for kind in cfg.start_kinds for e in self.world.entities[kind]]

    def _clip(self, hops: float) -> int:
        return int(min(self.max_difficulty, max(self.min_difficulty, round(hops))))

    def task_for(self, start: str, relations: list[str]) -> Task:
        facts = self.world.resolve(start, relations)
        passages: list[str] = []
        entity = start
        for rel, fact in zip(relations, facts, strict=True):
            for p in self.world.search(f"{entity}'s {rel}", k=self.cfg.retrieve_k):
                if p not in passages:
                    passages.append(p)
            entity = fact.obj
        return Task(
            domain=self.name,
            difficulty=float(len(relations)),
            prompt=question_text(start, relations),
            answer=facts[-1].obj,
            guidance=" ".join(passages),
            canonical=f"{start}|{'/'.join(relations)}",
            meta={"hops": len(relations), "start": start, "relations": relations,
                  "chain": [f.obj for f in facts], "operator": "seed"},
        )

    # -- the Domain interface -------------------------------------------------------------------
    def make_task(self, difficulty: float, rng: random.Random) -> Task:
        start = rng.choice(self._starts)
        return self.task_for(start, self.world.walk(start, self._clip(difficulty), rng))

    def escalate(self, task: Task, rng: random.Random) -> Task:
        """Knowledge expansion: one more hop from the answer entity (a fresh task at the top level)."""
        relations = list(task.meta["relations"])
        if len(relations) >= self.max_difficulty:
            return self.make_task(self.max_difficulty, rng)
        relations += self.world.walk(task.answer, 1, rng)
        out = self.task_for(task.meta["start"], relations)
        out.meta["operator"] = "knowledge-expansion"
        return out

    def simplify(self, task: Task, rng: random.Random) -> Task:
        relations = list(task.meta["relations"])
        if len(relations) <= 1:
            return self.make_task(1.0, rng)
        return self.task_for(task.meta["start"], relations[:-1])

    def guided_prompt(self, task: Task) -> str:
        return f"{task.prompt}|{task.guidance}"

    def solution(self, task: Task) -> str:
        if self.cfg.response == "worked":
            return ">".join(task.meta["chain"])
        return task.answer

    def grade(self, task: Task, output: str) -> bool:
        return normalise(output.rsplit(">", 1)[-1]) == normalise(task.answer)

    def eval_levels(self) -> list[float]:
        return [float(h) for h in range(1, int(self.max_difficulty) + 1)]


@register("knowledge")
def _make(cfg) -> Knowledge:
    return Knowledge(cfg)
