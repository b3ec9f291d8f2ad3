"""The arithmetic domain: difficulty knobs, guidance scaffolds, grading and canonical deduplication."""

from __future__ import annotations

import random

from zpd.configs.schema import ArithmeticConfig, DomainsConfig
from zpd.loop.domains.arithmetic import Arithmetic, column_scaffold, digit_scaffold
from zpd.loop.domains.registry import build_domains, registered


def test_registry_builds_enabled_domains() -> None:
    assert "arithmetic" in registered()
    assert list(build_domains(DomainsConfig())) == ["arithmetic"]


def test_difficulty_is_digits_for_two_operand_addition() -> None:
    dom, rng = Arithmetic(ArithmeticConfig()), random.Random(1)
    for d in (1, 2, 3, 6):
        task = dom.make_task(d, rng)
        a, b = (int(x) for x in task.prompt.split("+"))
        assert task.difficulty == d
        assert max(len(str(a)), len(str(b))) == d
        assert int(task.answer) == a + b


def test_knobs_fold_into_one_scalar() -> None:
    cfg = ArithmeticConfig(operations=["+", "-"], max_operands=3, max_difficulty=6)
    dom, rng = Arithmetic(cfg), random.Random(2)
    seen = set()
    for _ in range(300):
        task = dom.make_task(rng.uniform(1, 6), rng)
        assert eval(task.prompt) == int(task.answer) >= 0  # noqa: S307 (our own digits and +/-)
        meta = task.meta
        assert task.difficulty == meta["digits"] + (meta["operands"] - 2) + (0.5 if meta["minus"] else 0)
        seen.add((meta["operands"], meta["minus"]))
    assert len(seen) == 4


def test_scaffolds() -> None:
    assert column_scaffold([57, 68]) == "7+8=15;5+6+1=12"
    assert column_scaffold([5, 123]) == "5+3=8;0+2=2;0+1=1"
    assert digit_scaffold(125) == "5;2;1"


def test_guided_prompt_and_grading() -> None:
    dom, rng = Arithmetic(ArithmeticConfig()), random.Random(3)
    task = dom.make_task(2, rng)
    assert dom.guided_prompt(task) == f"{task.prompt}|{task.guidance}"
    assert dom.grade(task, f" {task.answer}\n")
    assert not dom.grade(task, task.answer + "0")
    assert not dom.grade(task, "")


def test_dedup_by_canonical_form_not_similarity() -> None:
    dom = Arithmetic(ArithmeticConfig(operations=["+", "-"]))
    a = dom.task_for([23, 45], ["+"])
    assert dom.task_for([45, 23], ["+"]).content_hash == a.content_hash  # the same sum
    assert dom.task_for([23, 46], ["+"]).content_hash != a.content_hash  # close, but another task
    assert dom.task_for([45, 23], ["-"]).content_hash != dom.task_for([23, 45], ["-"]).content_hash


def test_escalate_and_simplify_move_difficulty() -> None:
    dom, rng = Arithmetic(ArithmeticConfig()), random.Random(4)
    task = dom.make_task(3, rng)
    assert dom.escalate(task, rng).difficulty == 4
    assert dom.simplify(task, rng).difficulty == 2
    assert dom.simplify(dom.make_task(1, rng), rng).difficulty == 1


def test_eval_levels_span_the_range() -> None:
    assert Arithmetic(ArithmeticConfig(max_difficulty=5)).eval_levels() == [1, 2, 3, 4, 5]
