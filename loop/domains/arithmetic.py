"""Arithmetic: integer expressions whose difficulty is one scalar over three knobs.

difficulty = digits per operand + (operands - 2) + 0.5 if the expression has a '-'.
So with the defaults (addition of two operands) difficulty 3 is three-digit addition.

Guidance is a worked scaffold. ``columns`` (addition only) lists each column's sum, right to left,
with the carry it takes in: ``7+8=15;5+6+1=12`` for 57+68; the learner still has to assemble the
answer from the last digits. ``digits`` lists the answer's digits right to left (``5;2;1``): the
learner has to reverse them. ``hint`` spells out no digit of the result: each column's digits and the
carry it takes in, right to left, without the sums (``7+8;5+6+1`` for 57+68); the learner has to do
every column's sum and the final carry itself, and its worked answer is the full ``columns`` work.

The response format (``response``): ``worked`` answers show the work, then ``>`` and the answer
(``7+8=15;5+6+1=12>125``); ``answer`` answers are the bare number. Only the final answer is graded.
With ``worked``, a successful guided answer is a full worked solution, so training the bare task on
it teaches the learner a procedure (column by column) rather than a lookup of whole sums: that is
what lets a tiny model climb from one digit to several (bench/results/rounds.md). Deduplication is by
canonical form: operands of an all-'+' expression are sorted ("23+45" and "45+23" are the same task;
"23+45" and "23+46" are different).

For a user's chat model (the instruct prompt style, ``prompting.py``) the same task reads
``Compute 57+68. End your reply with "Answer: <number>".`` and the last number of the reply's final
answer is graded ("The answer is 125." is right).
"""

from __future__ import annotations

import math
import random
import re

from zpd.configs.schema import ArithmeticConfig

from .base import Domain, InstructFormat, Parses, SizesEvalSet, Task, register
from .prompting import last_number

_EXPRESSION = re.compile(r"[0-9]+(?:[+-][0-9]+)+")


def _operand(digits: int, rng: random.Random) -> int:
    if digits == 1:
        return rng.randint(0, 9)
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def column_scaffold(operands: list[int]) -> str:
    """Right-to-left column sums with carries, e.g. [57, 68] -> '7+8=15;5+6+1=12'."""
    width = max(len(str(x)) for x in operands)
    padded = [str(x).zfill(width) for x in operands]
    carry, steps = 0, []
    for col in range(width - 1, -1, -1):
        digits = [int(p[col]) for p in padded]
        total = sum(digits) + carry
        terms = "+".join(str(d) for d in digits) + (f"+{carry}" if carry else "")
        steps.append(f"{terms}={total}")
        carry = total // 10
    return ";".join(steps)


def hint_scaffold(values: list[int], ops: list[str]) -> str:
    """Each column's digits right to left, with the carry taken in (addition only) and without any sum:
    [57, 68] -> '7+8;5+6+1'. With a '-' the columns carry their operators and no borrows. No result digit
    is in it: every run of digits in it is a single operand digit or a carry."""
    width = max(len(str(x)) for x in values)
    padded = [str(x).zfill(width) for x in values]
    all_plus = all(op == "+" for op in ops)
    carry, steps = 0, []
    for col in range(width - 1, -1, -1):
        digits = [int(p[col]) for p in padded]
        terms = str(digits[0]) + "".join(f"{op}{d}" for op, d in zip(ops, digits[1:], strict=True))
        steps.append(terms + (f"+{carry}" if all_plus and carry else ""))
        carry = (sum(digits) + carry) // 10
    return ";".join(steps)


def digit_scaffold(value: int) -> str:
    """The answer's digits right to left, e.g. 125 -> '5;2;1' (a leading '-' stays in front)."""
    sign = "-" if value < 0 else ""
    return sign + ";".join(reversed(str(abs(value))))


class Arithmetic(Domain, Parses, InstructFormat, SizesEvalSet):
    name = "arithmetic"

    def __init__(self, cfg: ArithmeticConfig) -> None:
        self.cfg = cfg
        self.min_difficulty = float(cfg.min_difficulty)
        self.max_difficulty = float(cfg.max_difficulty)
        self.guidance_style = cfg.guidance

    # -- knobs <-> difficulty -------------------------------------------------------------
    def _knob_choices(self, difficulty: float) -> list[tuple[int, int, bool]]:
        """(digits, operands, has_minus) combinations whose difficulty is closest to the target."""
        minus_options = [m for m in (False, True) if ("-" if m else "+") in self.cfg.operations]
        combos = []
        for operands in range(2, self.cfg.max_operands + 1):
            for minus in minus_options:
                base = (operands - 2) + (0.5 if minus else 0.0)
                combos.append((max(1, round(difficulty - base)), operands, minus))
        best = min(abs(self.difficulty_of(*c) - difficulty) for c in combos)
        return [c for c in combos if abs(self.difficulty_of(*c) - difficulty) == best]

    @staticmethod
    def difficulty_of(digits: int, operands: int, minus: bool) -> float:
        return digits + (operands - 2) + (0.5 if minus else 0.0)

    def _clip(self, difficulty: float) -> float:
        return min(self.max_difficulty, max(self.min_difficulty, difficulty))

    # -- the Domain interface -------------------------------------------------------------
    def make_task(self, difficulty: float, rng: random.Random) -> Task:
        digits, operands, minus = rng.choice(self._knob_choices(self._clip(difficulty)))
        return self._build(digits, operands, minus, rng)

    def _build(self, digits: int, operands: int, minus: bool, rng: random.Random) -> Task:
        values = [_operand(digits, rng) for _ in range(operands)]
        ops = ["+"] * (operands - 1)
        if minus:
            if "+" in self.cfg.operations:
                ops[rng.randrange(operands - 1)] = "-"
            else:
                ops = ["-"] * (operands - 1)
            # Keep results non-negative: the first operand is the largest.
            values.sort(reverse=True)
            values[0] = max(values[0], sum(values[1:]) if ops.count("-") == len(ops) else values[0])
            if len(str(values[0])) > digits:
                values[0] = 10**digits - 1
        return self.task_for(values, ops)

    def task_for(self, values: list[int], ops: list[str]) -> Task:
        """The task for an expression ``values[0] ops[0] values[1] ...``."""
        expr = str(values[0]) + "".join(f"{op}{v}" for op, v in zip(ops, values[1:], strict=True))
        result = values[0]
        for op, v in zip(ops, values[1:], strict=True):
            result = result + v if op == "+" else result - v
        all_plus = all(op == "+" for op in ops)
        canonical = "+".join(str(v) for v in sorted(values)) if all_plus else expr
        columns = all_plus and self.guidance_style == "columns"
        if self.guidance_style == "hint":
            guidance = hint_scaffold(values, ops)
        else:
            guidance = column_scaffold(values) if columns else digit_scaffold(result)
        digits = max(len(str(v)) for v in values)
        minus = not all_plus
        return Task(
            domain=self.name,
            difficulty=self.difficulty_of(digits, len(values), minus),
            prompt=expr,
            answer=str(result),
            guidance=guidance,
            canonical=canonical,
            meta={"digits": digits, "operands": len(values), "minus": minus},
        )

    def parse(self, text: str) -> Task | None:
        """The task an expression such as ``123+45`` or ``90-7+3`` stands for, or None when it is not one
        this domain could have made: operands are decimal numbers without leading zeros, at most
        ``max_operands`` of them, operations among ``operations``, a non-negative result, and a difficulty
        within [min_difficulty, max_difficulty] (what the self-play proposer's samples are checked with)."""
        text = text.strip()
        if not _EXPRESSION.fullmatch(text):
            return None
        numbers, ops = re.findall(r"[0-9]+", text), re.findall(r"[+-]", text)
        if len(numbers) > self.cfg.max_operands or any(op not in self.cfg.operations for op in ops):
            return None
        leading_zero = any(len(x) > 1 and x[0] == "0" for x in numbers)
        if leading_zero or max(len(x) for x in numbers) > self.max_difficulty:
            return None
        task = self.task_for([int(x) for x in numbers], ops)
        if int(task.answer) < 0 or not self.min_difficulty <= task.difficulty <= self.max_difficulty:
            return None
        return task

    def escalate(self, task: Task, rng: random.Random) -> Task:
        return self.make_task(self._clip(task.difficulty + 1.0), rng)

    def simplify(self, task: Task, rng: random.Random) -> Task:
        return self.make_task(self._clip(task.difficulty - 1.0), rng)

    def guided_prompt(self, task: Task) -> str:
        return f"{task.prompt}|{task.guidance}"

    def solution(self, task: Task) -> str:
        """What a correct guided answer looks like (the bootstrap's target)."""
        return f"{self._work(task)}>{task.answer}" if self.cfg.response == "worked" else task.answer

    def _work(self, task: Task) -> str:
        """The worked part of a reference answer: the guidance, except that a ``hint`` (which leaves the
        sums out) is answered with the full column work the hint stands for."""
        if self.guidance_style == "hint" and "-" not in task.prompt:
            return column_scaffold([int(x) for x in re.findall(r"[0-9]+", task.prompt)])
        return task.guidance

    def grade(self, task: Task, output: str) -> bool:
        return output.rsplit(">", 1)[-1].strip() == task.answer

    # -- the instruct prompt style (loop/domains/prompting.py) ---------------------------------
    def instruction(self, task: Task, guided: bool) -> str:
        """The task as an instruction that states the answer format; guided: with the scaffold, named."""
        hint = ""
        if guided:
            what = ("Columns, right to left, with the carry each takes in" if self.guidance_style == "hint"
                    else "Column sums, right to left, with carries" if "=" in task.guidance
                    else "The answer's digits, right to left")
            hint = f" {what}: {task.guidance}."
        return f'Compute {task.prompt}.{hint} End your reply with "Answer: <number>".'

    def instruct_solution(self, task: Task) -> str:
        """A reference reply in the instruct style: the work (with ``worked``), then the answer line."""
        answer = f"Answer: {task.answer}"
        return f"{self._work(task)}\n{answer}" if self.cfg.response == "worked" else answer

    def grade_final(self, task: Task, answer: str) -> bool:
        """An extracted final answer ("125", "125.", "1,025") is right when its last number is the result."""
        number = last_number(answer)
        return number is not None and number.lstrip("-").isdigit() and int(number) == int(task.answer)

    def eval_levels(self) -> list[float]:
        lo, hi = math.ceil(self.min_difficulty), math.floor(self.max_difficulty)
        return [float(d) for d in range(lo, hi + 1)]

    # -- the frozen eval set's sizes (SizesEvalSet) ------------------------------------------------
    def distinct_tasks(self, level: float) -> int:
        """How many different tasks (canonical forms) ``make_task(level)`` can make: per knob combination,
        the multisets of its operands (an all-'+' task is deduplicated with sorted operands; a '-' task
        has its largest operand first), times the places a '-' can take among '+'. Level 1 of the
        defaults: 55 (one-digit pairs); level 2: 4095."""
        total = 0
        for digits, operands, minus in self._knob_choices(self._clip(level)):
            values = 10 if digits == 1 else 9 * 10 ** (digits - 1)
            places = operands - 1 if minus and "+" in self.cfg.operations else 1
            total += math.comb(values + operands - 1, operands) * places
        return total

    def eval_sizes(self, level: float) -> tuple[int, int]:
        """(validation, test) items at ``level``.

        Levels 2..L (``eval_top_level``) are where the learner moves (bench/results: no run passed 0.05
        above level 3), so they get ``eval_test_per_level`` test items (default 100: a level's accuracy
        to within about +-0.05 standard error) and ``eval_validation_per_level`` validation items. The
        gate is a paired test (one-sided exact McNemar, p < 0.1) on the validation items, so what it
        needs is discordant pairs: a real regression of 5 points over the 200 validation items of levels
        2-3 (with answers flipping about 5 % each way otherwise) gives some b = 20, c = 10, p = 0.05,
        held; 100 items would see b = 10, c = 5, p = 0.15, missed. Other levels get ``eval_per_level``
        items, half and half (level 1 is near solved, levels above L near zero: few discordant pairs).
        No level gives validation and test together more than a third of its distinct tasks
        (``distinct_tasks``: one-digit addition has 55), so both stay a small sample of the level, and
        most of it is left for training."""
        top = self.cfg.eval_top_level
        if 2 <= level <= top:
            validation, test = self.cfg.eval_validation_per_level, self.cfg.eval_test_per_level
        else:
            validation = self.cfg.eval_per_level // 2
            test = self.cfg.eval_per_level - validation
        cap = max(2, self.distinct_tasks(level) // 3)
        if validation + test > cap:  # shrink both in proportion, keeping at least one of each
            validation = max(1, round(cap * validation / (validation + test)))
            test = max(1, cap - validation)
        return validation, test


@register("arithmetic")
def _make(cfg: ArithmeticConfig) -> Arithmetic:
    return Arithmetic(cfg)
