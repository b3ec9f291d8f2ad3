"""The self-play proposer's format: the prompt ``propose:<level>`` and, as its answer, a task's bare prompt.

Shared by round 0 (the bootstrap set's proposer share, ``loop/bootstrap.py``) and self-play itself
(``loop/selfplay.py``), so neither imports the other for it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

from .domains.base import Domain, Parses, capability

PROMPT_PREFIX = "propose:"


def proposer_prompt(level: float) -> str:
    """The proposer's prompt for a difficulty level, e.g. ``propose:3``."""
    return f"{PROMPT_PREFIX}{level:g}"


def proposer_levels(domain: Domain) -> list[float]:
    """The integer difficulty levels of a domain's range (what the proposer is asked for)."""
    lo, hi = math.ceil(domain.min_difficulty), math.floor(domain.max_difficulty)
    return [float(x) for x in range(lo, hi + 1)] or [float(domain.min_difficulty)]


def snap_level(domain: Domain, difficulty: float) -> float:
    """The proposer level nearest ``difficulty`` (the lower one on a tie)."""
    levels = proposer_levels(domain)
    return min(levels, key=lambda x: (abs(x - difficulty), x))


def proposer_examples(domains: Mapping[str, Domain], num: int, seed: int,
                      exclude: set[str]) -> list[dict[str, Any]]:
    """``num`` bootstrap rows teaching the proposer's format (domains with ``parse`` only): the prompt
    ``propose:<level>`` and, as the response, the bare prompt of a task the domain makes at that level.
    Deterministic for ``seed``; tasks in ``exclude`` (the eval sets) never appear."""
    names = sorted(n for n, d in domains.items() if capability(d, Parses) is not None)
    if not names or num <= 0:
        return []
    rng = random.Random(f"{seed}:propose")
    out: list[dict[str, Any]] = []
    for _ in range(num * 50):
        if len(out) == num:
            break
        domain = domains[rng.choice(names)]
        level = rng.choice(proposer_levels(domain))
        task = domain.make_task(level, rng)
        if task is None or task.content_hash in exclude:
            continue
        out.append({"prompt": proposer_prompt(level), "response": task.prompt, "domain": task.domain,
                    "answer": task.prompt})
    return out
