"""The frozen eval set's split into validation (read by decisions) and test (read by reports only).

Each domain's eval items are split per level (``floor(difficulty)``), in an order fixed by the run seed
and each item's content hash, so the split depends on nothing a round does: validation takes the first
``round(n * v / (v + t))`` of a level's ``n`` items, where (v, t) are the domain's sizes at that level
(``SizesEvalSet``: arithmetic) or ``measure.validation_fraction`` of them; a level of two or more items
keeps at least one of each. Items a domain tagged itself (reasoning-gym's ``validation_ratio``) keep
their tags. MEASURE assigns the splits of eval items that have none, before it reads
them: a new run's round 0 (right after the eval sets are made), or the first round after a store made
before the split (m010) resumes, with the same rule. A split, once stored, never changes.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping

from zpd.store import ledger_exam
from zpd.store.ledger_tasks import TaskRow

from .context import RunContext, derive_seed
from .domains.base import SizesEvalSet, capability


def validation_count(n: int, validation: float, test: float) -> int:
    """Validation items among a level's ``n``, in the proportion validation : test."""
    if n <= 1:
        return n  # a lone item serves the decisions: the frontier estimate needs a point at every level
    return min(n - 1, max(1, round(n * validation / (validation + test))))


def own_tag(row: TaskRow) -> str | None:
    """The split a domain tagged its eval item with itself, if any: reasoning-gym tags each level's first
    ``validation_ratio`` of items ``validation`` (``meta["rg"]["split"]``), and that tag is kept."""
    try:
        meta = json.loads(row.get("meta_json") or "{}")
    except json.JSONDecodeError:
        return None
    nested = meta.get("rg") if isinstance(meta, dict) else None
    tag = nested.get("split") if isinstance(nested, dict) else None
    return tag if tag in ledger_exam.SPLITS else None


def split_of(
    domains: Mapping[str, object], seed: int, fraction: float, rows: list[TaskRow]
) -> dict[int, str]:
    """Task id -> ``validation`` or ``test`` for the eval items ``rows``, by the rule above (``seed``: the
    run seed; ``fraction``: ``measure.validation_fraction``)."""
    by_level: dict[tuple[str, int], list[TaskRow]] = defaultdict(list)
    for r in rows:
        by_level[(r["domain"], math.floor(r["difficulty"]))].append(r)
    out: dict[int, str] = {}
    for (domain_name, level), items in sorted(by_level.items()):
        tagged = {r["id"]: tag for r in items if (tag := own_tag(r)) is not None}
        if tagged:  # the domain split this level itself (reasoning-gym: validation_ratio)
            out.update(tagged)
            items = [r for r in items if r["id"] not in tagged]
            if not items:
                continue
        domain = domains.get(domain_name)
        sizes = None if domain is None else capability(domain, SizesEvalSet)
        v, t = sizes.eval_sizes(float(level)) if sizes is not None else (fraction, 1.0 - fraction)
        order = sorted(items, key=lambda r: derive_seed(seed, "split", r["content_hash"]))
        k = validation_count(len(order), v, t)
        out.update({r["id"]: "validation" if i < k else "test" for i, r in enumerate(order)})
    return out


def assign(ctx: RunContext, rows: list[TaskRow]) -> dict[int, str]:
    """Store the splits of the eval items among ``rows`` that have none (inside the caller's
    transaction); returns every row's split. Stored splits are kept as they are: the rule runs over the
    items without one only (all of them at round 0, or in the first round of a store made before m010)."""
    stored = ledger_exam.eval_splits(ctx.db)
    missing = [r for r in rows if r["id"] not in stored]
    if missing:
        fresh = split_of(ctx.domains, ctx.cfg.run.seed, ctx.cfg.measure.validation_fraction, missing)
        ledger_exam.set_splits(ctx.db, fresh)
        stored = {**stored, **fresh}
    return {r["id"]: stored[r["id"]] for r in rows}
