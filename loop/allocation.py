"""Candidate allocation: how a round's candidates are split across domains (``curriculum.allocation``).

With many domains (reasoning-gym's families are one domain each), which domains get a round's candidates
is a curriculum decision of its own, beside the policy's choice of difficulties within a domain.

* ``even`` (default; zpd's behaviour before allocations existed): every domain gets
  ``synthesis.num_candidates``.
* ``yield``: the round total (``num_candidates`` x the number of domains, the same budget as ``even``) is
  split in proportion to each domain's ZPD-yield estimate Y_d, after a floor of
  ``allocation_floor_ratio`` x ``num_candidates`` for every domain (at least one candidate when the ratio
  is positive: a domain that gets none would never be measured again). Y_d starts at
  ``allocation_initial_value`` and follows each round's measured yield (zpd + exam) / calibrated of the
  domain with Y <- Y + alpha (yield - Y) (SEC's TD(0) update, the families as arms), so the split
  moves to the domain whose tasks land in the band, and back when yields swap.

Every estimate is re-derived from the store (``store/yields.py``), so a resumed or repeated run splits
alike. A new allocation is a subclass of ``Allocation`` (hooks with no-op defaults) plus ``@register``.
"""

from __future__ import annotations

import math
from typing import Any

from zpd.configs.schema import CurriculumConfig
from zpd.store.yields import domain_yields


class Allocation:
    """The ``even`` allocation; subclasses override the hooks that differ."""

    name = "even"

    def __init__(self, cfg: CurriculumConfig) -> None:
        self.cfg = cfg

    def estimates(self, db: Any, round_n: int, domains: list[str]) -> dict[str, float]:
        """Per-domain figures the split is made from (logged with it); none for ``even``."""
        return {}

    def split(self, db: Any, round_n: int, domains: list[str], per_domain: int) -> dict[str, int]:
        """Candidates per domain for round ``round_n`` (``per_domain``: ``synthesis.num_candidates``)."""
        return {d: per_domain for d in domains}


ALLOCATIONS: dict[str, type[Allocation]] = {}


def register(cls: type[Allocation]) -> type[Allocation]:
    ALLOCATIONS[cls.name] = cls
    return cls


register(Allocation)


@register
class YieldAllocation(Allocation):
    name = "yield"

    def estimates(self, db: Any, round_n: int, domains: list[str]) -> dict[str, float]:
        """Y_d after rounds 1..round_n-1 (rounds where a domain had no calibrated task leave Y_d as is)."""
        y = {d: self.cfg.allocation_initial_value for d in domains}
        for _, by_domain in sorted(domain_yields(db, 1, round_n - 1).items()):
            for d, (accepted, calibrated) in by_domain.items():
                if d in y and calibrated:
                    y[d] += self.cfg.allocation_step * (accepted / calibrated - y[d])
        return y

    def split(self, db: Any, round_n: int, domains: list[str], per_domain: int) -> dict[str, int]:
        total = per_domain * len(domains)
        floor = math.floor(self.cfg.allocation_floor_ratio * per_domain)
        if self.cfg.allocation_floor_ratio > 0:
            floor = max(1, floor)
        floor = min(floor, per_domain)
        rest = total - floor * len(domains)
        y = self.estimates(db, round_n, domains)
        weight = sum(y.values())
        shares = {d: rest * (y[d] / weight if weight > 0 else 1 / len(domains)) for d in domains}
        out = {d: floor + math.floor(shares[d]) for d in domains}
        # Largest remainder, ties by name: the counts add up to the total, deterministically.
        by_remainder = sorted(domains, key=lambda d: (-(shares[d] - math.floor(shares[d])), d))
        for d in by_remainder[: total - sum(out.values())]:
            out[d] += 1
        return out


def build_allocation(cfg: CurriculumConfig) -> Allocation:
    return ALLOCATIONS[cfg.allocation](cfg)
