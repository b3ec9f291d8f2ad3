"""Graders of the dataset domain: a registry from name to ``grade(answer, output, settings) -> bool``.

A grader sees only the reference answer, the learner's final answer (the text after the last
``answer_marker`` of its output, see ``final_answer``) and the settings recorded in the task's
``meta`` (``tolerance``, ``rel_tolerance``, ``case_sensitive``), never the config: a task rebuilt from
the store or from a trainer's JSONL row grades the same way as when it was made.

Built in: ``exact`` (whitespace-collapsed, case-insensitive unless ``case_sensitive``, a trailing
period ignored) and ``numeric`` (the last number in the answer, within ``tolerance`` +
``rel_tolerance`` x |reference|) and ``math-verify`` (symbolic equivalence through the math-verify
library, in a killable worker process with a time limit: it is known to hang on some inputs; a
timeout grades as wrong and is logged). ``llm-judge`` is named in the config schema and refused
there (no LLM judge ships; the [judge] section was removed as dead code).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

Grader = Callable[[str, str, dict[str, Any]], bool]
GRADERS: dict[str, Grader] = {}

_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def register_grader(name: str) -> Callable[[Grader], Grader]:
    def deco(fn: Grader) -> Grader:
        GRADERS[name] = fn
        return fn

    return deco


def final_answer(output: str, marker: str) -> str:
    """The part of ``output`` that is graded: after the last ``marker`` (all of it when absent)."""
    if marker and marker in output:
        output = output.rsplit(marker, 1)[1]
    return output.strip()


def parse_number(text: str) -> float | None:
    """The last number in ``text`` ('1,234.5' -> 1234.5; '$12' -> 12; '3/4' -> 0.75); None if none."""
    frac = re.search(r"([-+]?\d+)\s*/\s*(\d+)\s*$", text.strip().rstrip("."))
    if frac:
        try:  # "1000...0/3": more than 4300 digits (ValueError), or a quotient past float (OverflowError)
            num, den = int(frac.group(1)), int(frac.group(2))
            if den != 0:
                value = num / den
                return value if math.isfinite(value) else None
        except (ValueError, OverflowError):
            return None
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        value = float(found[-1].replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _norm(text: str, case_sensitive: bool) -> str:
    text = " ".join(text.split()).rstrip(".")
    return text if case_sensitive else text.casefold()


@register_grader("exact")
def grade_exact(answer: str, given: str, settings: dict[str, Any]) -> bool:
    cs = bool(settings.get("case_sensitive", False))
    return _norm(given, cs) == _norm(answer, cs)


@register_grader("numeric")
def grade_numeric(answer: str, given: str, settings: dict[str, Any]) -> bool:
    ref, got = parse_number(answer), parse_number(given)
    if ref is None or got is None:
        return False
    tol = float(settings.get("tolerance", 1e-6)) + float(settings.get("rel_tolerance", 0.0)) * abs(ref)
    return abs(got - ref) <= tol


_MATH: Any = None


@register_grader("math-verify")
def grade_math_verify(answer: str, given: str, settings: dict[str, Any]) -> bool:
    global _MATH
    from .math_grader import MathVerifyGrader

    if _MATH is None:
        _MATH = MathVerifyGrader(timeout_seconds=float(settings.get("math_timeout_seconds", 5.0)))
    return _MATH.grade(answer, given).correct


def get_grader(name: str) -> Grader:
    try:
        return GRADERS[name]
    except KeyError:
        known = ", ".join(sorted(GRADERS))
        raise KeyError(f"grader {name!r} is not available (registered: {known})") from None
