"""An LLM judge for free-form answers, after HLE's strict judge prompt (``prompts/hle_judge.txt``).

    judge = LLMJudge(build_generator("openai", model=cfg.judge.model, settings=cfg.judge), cfg.judge.model)
    grades = judge.grade_many([("What is 2+2?", "It is four.", "4")])
    grades[0].correct, grades[0].grader            # True, "llm-judge:gpt-4o-2024-08-06"

The judge answers in the prompt's fixed format; only a final ``correct: yes|no`` line counts. A reply
without one (or a failed request) is ``correct=False`` with ``error`` set: not a verdict, so the caller
counts it as a grader failure rather than a wrong answer. The judge model is pinned in config
(``[judge].model``) and carried in every grade (``grader = "llm-judge:<model>"``), so grades made by
different judges are never mixed up. Judging is greedy (temperature 0) with a fixed seed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROMPT_FILE = Path(__file__).resolve().parent / "prompts" / "hle_judge.txt"
_CORRECT = re.compile(r"^\W*correct\W*:\W*(yes|no)\b", re.IGNORECASE | re.MULTILINE)
_EXTRACTED = re.compile(r"^\W*extracted_final_answer\W*:\s*(.*)$", re.IGNORECASE | re.MULTILINE)
_CONFIDENCE = re.compile(r"^\W*confidence\W*:\s*(\d+(?:\.\d+)?)\s*%?", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class JudgeGrade:
    correct: bool
    grader: str
    """``llm-judge:<pinned model>``."""
    extracted_answer: str | None = None
    confidence: float | None = None
    error: str | None = None
    """Set when there is no verdict (failed request, reply without a ``correct:`` line)."""
    raw: str = ""


def parse_verdict(text: str, grader: str) -> JudgeGrade:
    """Read the judge's reply. The *last* ``correct:`` line wins (a judge may quote the format first)."""
    verdicts = _CORRECT.findall(text)
    extracted = _EXTRACTED.findall(text)
    confidence = _CONFIDENCE.findall(text)
    if not verdicts:
        return JudgeGrade(False, grader, error="no 'correct: yes|no' line in the judge's reply", raw=text)
    return JudgeGrade(verdicts[-1].lower() == "yes", grader,
                      extracted_answer=extracted[-1].strip() if extracted else None,
                      confidence=float(confidence[-1]) if confidence else None, raw=text)


class LLMJudge:
    def __init__(self, generator: Any, model: str, prompt_template: str | None = None, *, max_tokens: int = 1024,
                 seed: int = 0) -> None:
        self.generator, self.model = generator, model
        self.grader = f"llm-judge:{model}"
        self.template = prompt_template if prompt_template is not None else PROMPT_FILE.read_text()
        for field in ("{question}", "{response}", "{correct_answer}"):
            if field not in self.template:
                raise ValueError(f"judge prompt lacks {field}")
        self.max_tokens, self.seed = max_tokens, seed

    def prompt(self, question: str, response: str, correct_answer: str) -> str:
        # str.replace, not format(): answers may hold braces (LaTeX, code).
        return (self.template.replace("{question}", question).replace("{response}", response)
                .replace("{correct_answer}", correct_answer))

    def grade_many(self, items: list[tuple[str, str, str]]) -> list[JudgeGrade]:
        """``items``: (question, response, correct_answer). One greedy judge call each, batched."""
        if not items:
            return []
        outs = self.generator.generate([self.prompt(*item) for item in items], n=1, temperature=0.0,
                                       max_tokens=self.max_tokens, seed=self.seed)
        grades = []
        for (completion,) in outs:
            if completion.failed:
                grades.append(JudgeGrade(False, self.grader, error=f"judge request failed: {completion.error}"))
            else:
                grades.append(parse_verdict(completion.text, self.grader))
        return grades


def build_judge(cfg: Any) -> LLMJudge:
    """An ``LLMJudge`` from a ``[judge]`` section (an OpenAI-compatible endpoint)."""
    from .generation import build_generator

    template = Path(cfg.prompt_file).read_text() if cfg.prompt_file else None
    return LLMJudge(build_generator("openai", model=cfg.model, settings=cfg), cfg.model, template,
                    max_tokens=cfg.max_tokens)
