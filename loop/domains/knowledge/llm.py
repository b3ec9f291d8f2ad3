"""The teacher-endpoint generator: seed questions from composite units, escalation by the four operators.

``TeacherQuestions`` takes any ``complete(prompt) -> str`` and the prompt templates in
``trainer/prompts/knowledge_*.txt``; with ``domains.knowledge.generator = "teacher"`` the knowledge domain
builds one over the run's [teacher] generator (``Knowledge.attach``) and SYNTHESIZE's candidates come from
it. A reply that is not the expected JSON object is retried ``max_retries`` times, then dropped and counted
in ``dropped`` (logged, and in the store's ``meta`` entry ``teacher_dropped:<round>``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

OPERATORS = ("knowledge-expansion", "conceptual-abstraction", "factual-grounding",
             "computational-formulation")
PROMPTS = Path(__file__).resolve().parents[3] / "trainer" / "prompts"
_OBJECT = re.compile(r"\{.*\}", re.S)


def load_prompt(name: str, folder: Path = PROMPTS) -> str:
    return (folder / f"knowledge_{name}.txt").read_text(encoding="utf-8")


def parse_reply(text: str) -> dict | None:
    """The reply's JSON object with non-empty string "question" and "answer", else None."""
    m = _OBJECT.search(text or "")
    if not m:
        return None
    try:
        obj = json.loads(m.group(0))
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    if not all(isinstance(obj.get(k), str) and obj[k].strip() for k in ("question", "answer")):
        return None
    return obj


class TeacherQuestions:
    def __init__(self, complete: Callable[[str], str], max_retries: int = 2, prompts: Path = PROMPTS) -> None:
        self.complete, self.max_retries = complete, max_retries
        self.seed_prompt = load_prompt("seed", prompts)
        self.escalate_prompt = load_prompt("escalate", prompts)
        self.dropped = 0

    def _ask(self, prompt: str) -> dict | None:
        for _ in range(self.max_retries + 1):
            obj = parse_reply(self.complete(prompt))
            if obj is not None:
                return obj
        self.dropped += 1
        return None

    def seed(self, documents: list[str]) -> dict | None:
        """(question, answer) fusing the documents of one composite unit, or None (dropped)."""
        docs = "\n\n".join(f"[{i + 1}] {d}" for i, d in enumerate(documents))
        return self._ask(self.seed_prompt.replace("{documents}", docs))

    def escalate(self, question: str, answer: str, operator: str, documents: list[str]) -> dict | None:
        if operator not in OPERATORS:
            raise ValueError(f"operator must be one of {OPERATORS}")
        docs = "\n\n".join(f"[{i + 1}] {d}" for i, d in enumerate(documents))
        prompt = (self.escalate_prompt.replace("{operator}", operator).replace("{question}", question)
                  .replace("{answer}", answer).replace("{documents}", docs))
        return self._ask(prompt)
