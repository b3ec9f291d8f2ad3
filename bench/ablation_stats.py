"""The statistics of ``bench/ablation.py``: pure functions on plain numbers, importable and unit-tested
(``tests/test_ablation_stats.py``).

* ``bootstrap_ci``: a two-level bootstrap, seeds resampled with replacement, then items within each drawn
  seed; the statistic is the mean over seeds of each seed's accuracy (so each seed weighs the same, and
  both the item noise and the seed-to-seed spread widen the interval).
* ``bootstrap_diff_ci``: the same on paired differences (arm A minus arm B on the same test items of a
  seed): the bar's "CI that excludes 0".
* ``mcnemar``: the exact McNemar test (a binomial test on the discordant pairs), one- or two-sided.
* ``step_curve`` / ``normalised_auc`` / ``tokens_to_target`` / ``at_budget``: an arm's accuracy as a
  function of training tokens after round 0. The curve is a step function: after a round the learner one
  has is that round's current learner (a rejected candidate leaves its parent's accuracy in place), so a
  rejected round is not a collapse of the curve.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

# The daemon's gate counts and tests the same way (one implementation of each).
from zpd.loop.measure import binomial_tail, discordant  # noqa: F401  (discordant: part of this API)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    mean: float
    """The statistic on the data as observed."""
    lo: float
    """The lower end of the interval (a percentile of the bootstrap distribution)."""
    hi: float
    """The upper end."""


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) by linear interpolation between order statistics."""
    if not sorted_values:
        raise ValueError("no values")
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _two_level(per_seed: Sequence[Sequence[float]], n_boot: int, seed: int, level: float) -> Interval:
    groups = [list(g) for g in per_seed]
    if not groups or any(not g for g in groups):
        raise ValueError("every seed needs at least one item")
    if not 0 < level < 1:
        raise ValueError("level must lie in (0, 1)")
    observed = sum(sum(g) / len(g) for g in groups) / len(groups)
    rng = random.Random(seed)
    stats = []
    for _ in range(n_boot):
        total = 0.0
        for _ in groups:
            g = groups[rng.randrange(len(groups))]
            total += sum(g[rng.randrange(len(g))] for _ in g) / len(g)
        stats.append(total / len(groups))
    stats.sort()
    tail = (1 - level) / 2
    return Interval(observed, _percentile(stats, tail), _percentile(stats, 1 - tail))


def bootstrap_ci(per_seed: Sequence[Sequence[bool | float]], *, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> Interval:
    """Mean over seeds of each seed's accuracy, with a percentile CI from resampling seeds, then items
    within each drawn seed. ``per_seed[s]`` holds seed s's per-item outcomes (True/1 = correct)."""
    return _two_level([[float(x) for x in g] for g in per_seed], n_boot, seed, level)


def bootstrap_diff_ci(a: Sequence[Mapping[int, bool]], b: Sequence[Mapping[int, bool]], *,
                      n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """Paired difference A - B of accuracy: per seed, on the items both arms were measured on."""
    if len(a) != len(b):
        raise ValueError("a and b need the same seeds")
    diffs = []
    for sa, sb in zip(a, b, strict=True):
        common = sorted(set(sa) & set(sb))
        diffs.append([float(sa[i]) - float(sb[i]) for i in common])
    return _two_level(diffs, n_boot, seed, level)


def mcnemar(b: int, c: int, alternative: Literal["two-sided", "greater", "less"] = "two-sided") -> float:
    """Exact McNemar p-value. b: pairs where A is right and B wrong; c: A wrong and B right.

    Under the null each discordant pair goes either way with probability 1/2. "greater": the alternative
    that A is better (small p when b >> c); "less": that B is better; "two-sided": twice the smaller tail,
    capped at 1. No discordant pairs: p = 1."""
    if b < 0 or c < 0:
        raise ValueError("counts must be >= 0")
    n = b + c
    if n == 0:
        return 1.0
    greater = binomial_tail(b, n)
    less = binomial_tail(c, n)
    if alternative == "greater":
        return greater
    if alternative == "less":
        return less
    if alternative == "two-sided":
        return min(1.0, 2 * min(greater, less))
    raise ValueError(f"unknown alternative {alternative!r}")


@dataclass(frozen=True)
class RoundPoint:
    """One round of one arm, as the curve functions read it."""

    round: int
    """The round number (0: the shared round-0 learner)."""
    tokens: int
    """Cumulative training tokens after round 0, up to and including this round."""
    accuracy: float | None
    """The accuracy of this round's measured learner (the candidate, promoted or not)."""
    promoted: bool
    """Whether the candidate became the current learner (round 0: True)."""


def step_curve(points: Sequence[RoundPoint]) -> list[tuple[int, float]]:
    """(tokens, accuracy of the current learner) after each round: a rejected round keeps the accuracy of
    the last promoted one. ``points`` in round order, the first being round 0 (promoted, tokens 0)."""
    if not points or not points[0].promoted or points[0].accuracy is None:
        raise ValueError("the first point must be a promoted round 0 with an accuracy")
    out, current = [], points[0].accuracy
    for p in points:
        if p.promoted and p.accuracy is not None:
            current = p.accuracy
        out.append((p.tokens, current))
    return out


def at_budget(points: Sequence[RoundPoint], budget: int) -> int:
    """Index into ``points`` of the last round whose cumulative tokens after round 0 are <= budget."""
    idx = [i for i, p in enumerate(points) if p.tokens <= budget]
    if not idx:
        raise ValueError("no round within the budget")
    return idx[-1]


def normalised_auc(points: Sequence[RoundPoint], budget: int) -> float:
    """(1 / budget) * the integral over [0, budget] of the current learner's accuracy as a function of
    tokens: a step function that holds each round's value until the next round's tokens; the last
    round's value holds to the budget. 1.0 = perfect accuracy from the first token."""
    if budget <= 0:
        raise ValueError("budget must be > 0")
    curve = [(t, a) for t, a in step_curve(points) if t <= budget]
    area = 0.0
    for (t0, a0), (t1, _) in zip(curve, curve[1:] + [(budget, 0.0)], strict=True):
        area += a0 * (t1 - t0)
    return area / budget


def tokens_to_target(points: Sequence[RoundPoint], target: float, budget: int) -> int | None:
    """Tokens after round 0 at the first round whose current learner reaches ``target`` within the
    budget, or None."""
    for tokens, acc in step_curve(points):
        if tokens <= budget and acc >= target:
            return tokens
    return None


def copied(guidance: str, output: str) -> bool:
    """Whether a guided answer copies its scaffold: the worked part of the output (before the last '>')
    is the guidance verbatim (whitespace at the ends ignored). An output without a worked part never
    counts as a copy (there is no work to compare)."""
    if ">" not in output:
        return False
    return output.rsplit(">", 1)[0].strip() == guidance.strip()


def work_correct(prompt: str, output: str) -> bool:
    """Whether a worked arithmetic answer's work is the right column work for an all-'+' prompt (its
    ``columns`` scaffold), whatever guidance it was given; False for other prompts or no worked part."""
    from zpd.loop.domains.arithmetic import column_scaffold

    if ">" not in output or not re.fullmatch(r"[0-9]+(\+[0-9]+)+", prompt):
        return False
    return output.rsplit(">", 1)[0].strip() == column_scaffold([int(x) for x in prompt.split("+")])


def _results(work: str) -> list[str]:
    """The numbers after each '=' of a worked part ('7+8=15;5+6+1=12' -> ['15', '12'])."""
    return [step.split("=", 1)[1] for step in work.split(";") if "=" in step]


def copied_results(guidance: str, output: str) -> bool:
    """Whether a guided answer takes its step results from the scaffold: the output's worked part has the
    same step results (the numbers after each '=') as the guidance, whatever its left-hand sides say. A
    guidance without results (``hint``) is never copied from."""
    if ">" not in output:
        return False
    given = _results(guidance)
    return bool(given) and _results(output.rsplit(">", 1)[0]) == given
