"""The arithmetic ``hint`` guidance: the column procedure without any digit of the answer (issue 13's rerun
with guidance that does not spell out the answer)."""

from __future__ import annotations

import random
import re

from zpd.configs.schema import ArithmeticConfig
from zpd.loop.domains.arithmetic import Arithmetic, hint_scaffold


def test_hint_by_hand() -> None:
    assert hint_scaffold([57, 68], ["+"]) == "7+8;5+6+1"  # sums 15 and 12 are left out
    assert hint_scaffold([5, 123], ["+"]) == "5+3;0+2;0+1"
    assert hint_scaffold([90, 7], ["-"]) == "0-7;9-0"  # no borrows either


def test_hint_never_contains_the_answer() -> None:
    cfg = ArithmeticConfig(guidance="hint", operations=["+", "-"], max_operands=3, max_difficulty=8)
    dom, rng = Arithmetic(cfg), random.Random(13)
    multi = 0
    for _ in range(2000):
        task = dom.make_task(rng.uniform(1, 8), rng)
        assert "=" not in task.guidance and ">" not in task.guidance
        # Every run of digits in the hint is one operand digit or a carry, so no answer of two or more
        # digits can occur in it; a one-digit answer can only occur as an operand digit of the prompt.
        assert re.findall(r"[0-9]{2,}", task.guidance) == []
        if len(task.answer) >= 2:
            multi += 1
            assert task.answer not in task.guidance
        else:
            assert task.answer not in task.guidance or task.answer in task.prompt
        assert dom.grade(task, dom.solution(task))
    assert multi > 1500


def test_hint_reference_answer_does_the_work() -> None:
    dom = Arithmetic(ArithmeticConfig(guidance="hint"))
    task = dom.task_for([57, 68], ["+"])
    assert dom.guided_prompt(task) == "57+68|7+8;5+6+1"
    assert dom.solution(task) == "7+8=15;5+6+1=12>125"  # the reference answer computes every column
    assert "carry" in dom.instruction(task, guided=True)
    columns = Arithmetic(ArithmeticConfig())
    assert columns.solution(columns.task_for([57, 68], ["+"])) == "7+8=15;5+6+1=12>125"
