"""How a domain's tasks are put to the learner and its answers read back: the prompt style.

    domain = Styled(Arithmetic(cfg), "instruct")
    domain.solo_prompt(task)    # 'Compute 57+68. End your reply with "Answer: <number>".'
    domain.grade(task, "The answer is 125.")   # True

``bare`` is the embedded learner's format, unchanged: the task itself (``57+68``), the guided prompt
``57+68|7+8=15;5+6+1=12``, worked answers ``7+8=15;5+6+1=12>125`` graded after the last ``>``; the
learning figures in ``bench/results`` were measured with it. ``instruct`` is a chat model's format: an
instruction that states the answer format (``Answer: <...>``) and grading on the final answer
extracted from the reply, so a model answering in prose ("The answer is 125.") is graded on 125.

A domain may define the instruct hooks itself, the capability :class:`InstructFormat`:
``instruction(task, guided) -> str`` (the user message), ``instruct_solution(task) -> str`` (a reference
reply in that format) and ``grade_final(task, text)`` (grades an extracted answer). Without them a generic
instruction and the domain's own ``grade`` on the extracted answer (or the whole reply) serve.
``registry.build_domains`` wraps every domain.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Protocol, runtime_checkable

PromptStyle = Literal["bare", "instruct"]

ANSWER_FORMAT = 'End your reply with "Answer: <answer>".'
"""The generic instruction's answer format (a domain's own ``instruction`` states its own)."""

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_MARKED = re.compile(r"(?:final answer|answer)\s*(?:is|:|=)\s*:?\s*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def prompt_style(cfg: Any) -> PromptStyle:
    """The run's prompt style (``cfg``: the whole ZpdConfig): ``learner.prompt_style``, where auto means
    bare for the embedded learner and instruct for the user's model (``learner.path``)."""
    style = cfg.learner.prompt_style
    if style == "auto":
        return "bare" if cfg.learner.path is None else "instruct"
    return style


def final_answer(text: str) -> str:
    """The final answer of a reply: a ``\\boxed{}``, else what follows the last "answer is" / "Answer:"
    (to the end of its line, trailing punctuation and markup dropped), else after the last ``####`` or
    ``>`` (the worked formats), else the whole reply, stripped."""
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1].strip()
    marked = list(_MARKED.finditer(text))
    if marked:
        line = marked[-1].group(1).splitlines()[0] if marked[-1].group(1).strip() else ""
        return line.strip().strip("*_`$ ").rstrip(".!;,").strip()
    for marker in ("####", ">"):
        if marker in text:
            return text.rsplit(marker, 1)[1].strip()
    return text.strip()


def last_number(text: str) -> str | None:
    """The last number in ``text``, thousands separators removed ("1,234" -> "1234"), or None."""
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "").lstrip("+") if found else None


@runtime_checkable
class InstructFormat(Protocol):
    """The domain's own instruct prompt style (a capability: ``base.py``). ``task``: a ``base.Task``."""

    def instruction(self, task: Any, guided: bool) -> str:
        """The user message: the task, with its guidance when ``guided``, stating the answer format."""
        ...

    def instruct_solution(self, task: Any) -> str:
        """A reference reply in that format."""
        ...

    def grade_final(self, task: Any, answer: str) -> bool:
        """Whether an extracted final answer is right."""
        ...


def styled(domain: Any) -> Styled:
    """``domain`` as :func:`build_domains` hands it out: itself when styled already, else bare."""
    return domain if isinstance(domain, Styled) else Styled(domain, "bare")


class Styled:
    """A domain as a learner of one prompt style sees it. Prompts, reference answers and grading go
    through the style; every other attribute is the domain's own (its hooks, ``cfg``, ``parse``...)."""

    def __init__(self, domain: Any, style: PromptStyle) -> None:
        self.domain = domain
        self.style = style
        # The Domain protocol's attributes and task makers, spelled out so that a Styled domain is a
        # ``base.Domain`` to the type checker too (``base`` imports this module, so no import back).
        self.name: str = domain.name
        self.min_difficulty: float = domain.min_difficulty
        self.max_difficulty: float = domain.max_difficulty
        self.cfg: Any = domain.cfg

    def make_task(self, difficulty: float, rng: Any) -> Any:
        return self.domain.make_task(difficulty, rng)

    def escalate(self, task: Any, rng: Any) -> Any:
        return self.domain.escalate(task, rng)

    def simplify(self, task: Any, rng: Any) -> Any:
        return self.domain.simplify(task, rng)

    def eval_levels(self) -> list[float]:
        return list(self.domain.eval_levels())

    def __getattr__(self, name: str) -> Any:  # only reached for what Styled does not define itself
        if name in ("domain", "style"):  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.domain, name)

    def solo_prompt(self, task: Any) -> str:
        """The prompt of a solo attempt (and of measurement and training)."""
        return task.prompt if self.style == "bare" else self._instruction(task, guided=False)

    def guided_prompt(self, task: Any) -> str:
        """The prompt of a guided attempt: the task with its guidance."""
        if self.style == "bare":
            return self.domain.guided_prompt(task)
        return self._instruction(task, guided=True)

    def prompt(self, task: Any, guided: bool) -> str:
        return self.guided_prompt(task) if guided else self.solo_prompt(task)

    def solution(self, task: Any) -> str:
        """A reference answer in the style (the warm-up's target)."""
        if self.style == "bare":
            return self.domain.solution(task)
        if isinstance(self.domain, InstructFormat):
            return self.domain.instruct_solution(task)
        return f"Answer: {task.answer}"

    def grade(self, task: Any, output: str) -> bool:
        if self.style == "bare":
            return self.domain.grade(task, output)
        answer = final_answer(output)
        if isinstance(self.domain, InstructFormat):
            return bool(self.domain.grade_final(task, answer))
        return bool(self.domain.grade(task, answer) or self.domain.grade(task, output))

    def _instruction(self, task: Any, guided: bool) -> str:
        if isinstance(self.domain, InstructFormat):
            return self.domain.instruction(task, guided)
        hint = f"\nHint: {task.guidance}" if guided and task.guidance else ""
        return f"{task.prompt}{hint}\n{ANSWER_FORMAT}"
