"""CALIBRATE's sampling: a task's graded samples in one mode (``Samples``), the fixed-k rule's decision
(``decided``), and drawing samples in waves until it is reached (``sample``). See ``loop/calibrate.py``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Samples:
    """One task's samples in one mode, graded (None: a failed sample, never graded)."""

    completions: list[Any] = field(default_factory=list)
    grades: list[bool | None] = field(default_factory=list)

    @property
    def successes(self) -> int:
        return sum(1 for g in self.grades if g)

    @property
    def answered(self) -> int:
        return sum(1 for g in self.grades if g is not None)

    @property
    def rate(self) -> float | None:
        return self.successes / self.answered if self.answered else None


def successes_needed(ratio: float, k: int, strict: bool) -> int:
    """Successes out of k that make the rate > ratio (strict) or >= ratio (may be 0 or k + 1: decided
    whatever the samples say, after the one answered sample a pass rate needs)."""
    return math.floor(ratio * k + 1e-9) + 1 if strict else max(0, math.ceil(ratio * k - 1e-9))


def decided(s: Samples, k: int, need: int, stop_after: int | None = None) -> bool:
    """Whether the fixed-k rule "at least ``need`` successes in k" can no longer change (and the task
    has a pass rate: at least one answered sample, unless all k were drawn). With ``stop_after``, also
    once that many answered samples are all failures (truncation: may disagree with fixed k)."""
    if len(s.grades) >= k:
        return True
    if s.answered == 0:
        return False
    if stop_after is not None and s.successes == 0 and s.answered >= stop_after:
        return True
    return s.successes >= need or s.successes + (k - len(s.grades)) < need


def sample(gen: Any, items: dict[int, tuple[str, Callable[[str], bool]]], out: dict[int, Samples], *,
           k: int, keep_going: Callable[[Samples], bool] | None, seed_of: Callable[[int, int], int],
           temperature: float, max_tokens: int) -> int:
    """Draw samples for ``items`` (task id -> (prompt, grade)) into ``out`` up to k each. Fixed k when
    ``keep_going`` is None (one call, n = k); else one sample per task per wave while ``keep_going``
    says so. Returns the number of samples drawn."""
    drawn = 0
    for tid in items:
        out.setdefault(tid, Samples())
    if keep_going is None:  # fixed k for tasks not sampled yet in this mode
        results = gen.generate([p for p, _ in items.values()], n=k, temperature=temperature,
                               max_tokens=max_tokens,
                               sample_seeds=[[seed_of(t, j) for j in range(k)] for t in items])
        for t, cs in zip(items, results, strict=True):
            for c in cs:
                _add(out[t], c, items[t][1])
        return k * len(items)
    while True:
        active = [t for t in items if len(out[t].grades) < k and keep_going(out[t])]
        if not active:
            return drawn
        results = gen.generate([items[t][0] for t in active], n=1, temperature=temperature,
                               max_tokens=max_tokens,
                               sample_seeds=[[seed_of(t, len(out[t].grades))] for t in active])
        for t, cs in zip(active, results, strict=True):
            _add(out[t], cs[0], items[t][1])
            drawn += 1


def _add(s: Samples, completion: Any, grade: Callable[[str], bool]) -> None:
    s.completions.append(completion)
    s.grades.append(None if completion.failed else bool(grade(completion.text)))

