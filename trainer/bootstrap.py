"""Round 0's curriculum for a fresh embedded learner: what it needs to follow guidance.

A freshly created model knows nothing, not even the answer format. The bootstrap set mixes

* bare tasks up to ``max_solo_difficulty`` (prompt -> answer): what the learner may know alone, and
* guided tasks up to ``max_guided_difficulty`` (guided prompt -> answer): how to read guidance,

so that afterwards tasks just above the solo level fail alone but succeed with guidance: the ZPD the
loop starts from. Difficulty levels are drawn uniformly among the integer levels in range.
``bench/bootstrap.py`` measured the mix and the defaults (see ``bench/results/bootstrap.md``).
"""

from __future__ import annotations

import math
import random

from zpd.configs.schema import BootstrapConfig
from zpd.loop.domains.base import Domain

from .sft import SFTExample

SOLO_FRACTION = 0.25
"""Share of bare examples in the bootstrap set (the rest are guided)."""


def bootstrap_examples(domain: Domain, cfg: BootstrapConfig, seed: int,
                       solo_fraction: float = SOLO_FRACTION) -> list[SFTExample]:
    """``cfg.num_examples`` examples for ``domain``, deterministic for ``seed``."""
    rng = random.Random(seed)
    lo = math.ceil(domain.min_difficulty)
    solo_levels = _levels(lo, cfg.max_solo_difficulty, domain.max_difficulty)
    guided_levels = _levels(lo, cfg.max_guided_difficulty, domain.max_difficulty)
    out: list[SFTExample] = []
    for _ in range(cfg.num_examples):
        if solo_levels and (not guided_levels or rng.random() < solo_fraction):
            task = domain.make_task(rng.choice(solo_levels), rng)
            out.append(SFTExample(task.prompt, task.answer))
        else:
            task = domain.make_task(rng.choice(guided_levels), rng)
            out.append(SFTExample(domain.guided_prompt(task), task.answer))
    return out


def _levels(lo: int, hi: float, domain_max: float) -> list[float]:
    return [float(d) for d in range(lo, math.floor(min(hi, domain_max)) + 1)]
