"""SYNTHESIZE: candidates around each domain's frontier, plus escalations of last round's tasks.

Deterministic for (seed, round, domain), and committed in one transaction with the phase advance, so
a kill before the commit simply re-makes the same candidates. Duplicates of anything stored (earlier
candidates, eval and exam items) are never inserted: tasks are unique by content hash.
"""

from __future__ import annotations

from .context import RunContext, rng_for


def frontier_of(ctx: RunContext, domain: str, before_round: int) -> float | None:
    """The frontier measured for the current learner (None before any measurement)."""
    current = ctx.current_learner_round()
    if current is None:
        return None
    row = ctx.db.execute("SELECT value FROM frontier WHERE round = ? AND domain = ?", [current, domain]).fetchone()
    return None if row is None else row[0]


def run(ctx: RunContext, round_n: int) -> None:
    cfg = ctx.cfg.synthesis
    made: dict[str, int] = {}
    duplicates = 0
    with ctx.db.atomic():
        for name, domain in ctx.domains.items():
            rng = rng_for(ctx.cfg.run.seed, round_n, "synthesize", name)
            frontier = frontier_of(ctx, name, round_n)
            center = domain.min_difficulty if frontier is None else frontier
            # Parents to escalate (mastered last round) or simplify (beyond last round).
            parents = list(
                ctx.db.query(
                    "SELECT * FROM tasks WHERE domain = ? AND round = ? AND fate IN ('mastered', 'beyond') ORDER BY id",
                    [name, round_n - 1],
                )
            )
            rng.shuffle(parents)
            num_derived = min(len(parents), round(cfg.num_candidates * cfg.escalate_fraction))
            count, tries = 0, 0
            while count < cfg.num_candidates and tries < cfg.num_candidates * cfg.max_tries_factor:
                tries += 1
                parent_id = None
                if count < num_derived and parents:
                    parent = parents[count % len(parents)]
                    parent_task = ctx.task_from_row(parent)
                    fn = domain.escalate if parent["fate"] == "mastered" else domain.simplify
                    task, parent_id = fn(parent_task, rng), parent["id"]
                else:
                    difficulty = rng.uniform(center - cfg.spread, center + cfg.spread)
                    task = domain.make_task(difficulty, rng)
                if ctx.insert_task(task, round_n=round_n, fate="pending", parent_id=parent_id) is None:
                    duplicates += 1
                    continue
                count += 1
            made[name] = count
            if count < cfg.num_candidates:
                ctx.log.warning(
                    "domain exhausted near its frontier",
                    extra={"domain": name, "made": count, "wanted": cfg.num_candidates},
                )
        ctx.advance(round_n, "calibrate", num_candidates=sum(made.values()), num_duplicates=duplicates)
    for name, n in made.items():
        ctx.metrics.tasks_synthesized(name, n)
    ctx.log.info("synthesized", extra={"candidates": made, "duplicates": duplicates})
