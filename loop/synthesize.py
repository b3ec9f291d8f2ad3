"""SYNTHESIZE: candidates where the curriculum's source says (``curriculum.source``; by default around each
domain's frontier, plus escalations of last round's tasks), as many per domain as the allocation gives.

Deterministic for (seed, round, domain), and committed in one transaction with the phase advance, so
a kill before the commit simply re-makes the same candidates. Duplicates of anything stored (earlier
candidates, eval and exam items) are never inserted: tasks are unique by content hash.

Observation hook: a domain with an ``observe(stats, used)`` method (the dataset domain) is handed, before
it makes candidates, its per-item solo statistics from the store (content hash -> (correct, answers)
over every round's solo calibration attempts and eval/exam answers) and the content hashes it already
has stored; with ``estimated_difficulty(content_hash)`` too, its eval items' stored difficulty is
relabelled with the new estimates (same transaction), so MEASURE's frontier follows them. Both are
pure functions of the store, so a rerun after a kill sees the same state.
"""

from __future__ import annotations

from collections.abc import Mapping

from zpd.store import ledger_tasks, stats

from .allocation import build_allocation
from .context import RunContext, rng_for
from .curriculum import build_source
from .domains.base import EstimatesDifficulty, Observes, Remembers, capability


def solo_stats(ctx: RunContext, domain: str) -> Mapping[str, tuple[int, int]]:
    """Per content hash of ``domain``: (solo answers correct, solo answers) over all rounds, from the
    learner's calibration attempts and its eval and exam answers in MEASURE (all solo); kept as totals
    in the store and read incrementally (``store/stats.py``); a read-only mapping."""
    return stats.solo_stats(ctx.db, domain)


def observe(ctx: RunContext, name: str, domain: object) -> None:
    """The observation hook (module docstring); a no-op for domains without ``observe``."""
    observer = capability(domain, Observes)
    hook = None if observer is None else observer.observe
    if hook is None:
        return
    used = ledger_tasks.known_hashes(ctx.db, name)
    hook(solo_stats(ctx, name), used)
    estimator = capability(domain, EstimatesDifficulty)
    estimate = None if estimator is None else estimator.estimated_difficulty
    if estimate is None:
        return
    for task_id, h, old in ledger_tasks.eval_difficulties(ctx.db, name):
        new = estimate(h)
        if new is not None and new != old:
            ledger_tasks.set_difficulty(ctx.db, task_id, new)


def remember(ctx: RunContext, name: str, domain: object) -> None:
    """Hand a domain with a ``remember(prompts)`` method (near-duplicate detection by similarity, e.g.
    the knowledge domain's embeddings) the prompts of everything of it already stored, eval and exam
    items included; its ``make_task``/``escalate``/``simplify`` then return None for a near-duplicate."""
    rememberer = capability(domain, Remembers)
    hook = None if rememberer is None else rememberer.remember
    if hook is not None:
        hook(ledger_tasks.prompts_of(ctx.db, name))


def run(ctx: RunContext, round_n: int) -> None:
    cfg = ctx.cfg.synthesis
    source = build_source(ctx.cfg)
    allocation = build_allocation(ctx.cfg.curriculum)
    made: dict[str, int] = {}
    duplicates = 0
    with ctx.db.atomic():
        # Candidates per domain (curriculum.allocation; loop/allocation.py): num_candidates each by default.
        quota = allocation.split(ctx.db, round_n, list(ctx.domains), cfg.num_candidates)
        for name, domain in ctx.domains.items():
            wanted = quota[name]
            rng = rng_for(ctx.cfg.run.seed, round_n, "synthesize", name)
            observe(ctx, name, domain)
            remember(ctx, name, domain)
            count = 0
            # 1. Escalate last round's mastered tasks, simplify its beyond tasks (sources that derive), a
            #    few tries per parent (a derived task may be a duplicate: a one-digit task simplified lands
            #    among the few one-digit tasks there are).
            parents = [] if not source.derives else ledger_tasks.derivable_parents(ctx.db, name, round_n - 1)
            rng.shuffle(parents)
            num_derived = min(len(parents), round(wanted * cfg.escalate_fraction))
            for parent in parents:
                if count >= num_derived:
                    break
                parent_task = ctx.task_from_row(parent)
                derive = domain.escalate if parent["fate"] == "mastered" else domain.simplify
                for _ in range(3):
                    task = derive(parent_task, rng)
                    if task is not None and ctx.insert_task(task, round_n=round_n, fate="pending",
                                                            parent_id=parent["id"]) is not None:
                        count += 1
                        break
                    duplicates += 1
            # 2. Fresh candidates at the difficulties the source draws (a duplicate costs one more draw),
            #    or proposed by the source itself (self-play, pool).
            tries = 0
            proposed = source.propose(ctx, round_n, name, domain, wanted - count, rng)
            for task in proposed or []:
                if ctx.insert_task(task, round_n=round_n, fate="pending") is None:
                    duplicates += 1
                    continue
                count += 1
            if proposed is not None:
                tries = wanted * cfg.max_tries_factor  # what the proposer did not make stays unmade
            while count < wanted and tries < wanted * cfg.max_tries_factor:
                want = wanted - count
                for difficulty in source.difficulties(ctx, round_n, name, domain.min_difficulty,
                                                      domain.max_difficulty, want, rng):
                    tries += 1
                    task = domain.make_task(difficulty, rng)
                    if task is None or ctx.insert_task(task, round_n=round_n, fate="pending") is None:
                        duplicates += 1
                        continue
                    count += 1
            made[name] = count
            if count < wanted and source.quota:
                ctx.log.warning(
                    "domain exhausted near its frontier",
                    extra={"domain": name, "made": count, "wanted": wanted},
                )
        ctx.advance(round_n, "calibrate", num_candidates=sum(made.values()), num_duplicates=duplicates)
    for name, n in made.items():
        ctx.metrics.tasks_synthesized(name, n)
    ctx.log.info("synthesized", extra={"candidates": made, "duplicates": duplicates, "source": source.name,
                                       "allocation": allocation.name, "quota": quota})
