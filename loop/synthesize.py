"""SYNTHESIZE: candidates around each domain's frontier, plus escalations of last round's tasks.

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

from .context import RunContext, rng_for


def frontier_of(ctx: RunContext, domain: str, before_round: int) -> float | None:
    """The frontier measured for the current learner (None before any measurement)."""
    current = ctx.current_learner_round()
    if current is None:
        return None
    row = ctx.db.execute("SELECT value FROM frontier WHERE round = ? AND domain = ?", [current, domain]).fetchone()
    return None if row is None else row[0]


def solo_stats(ctx: RunContext, domain: str) -> dict[str, tuple[int, int]]:
    """Per content hash of ``domain``: (solo answers correct, solo answers) over all rounds, from the
    learner's calibration attempts and its eval and exam answers in MEASURE (all solo)."""
    out: dict[str, tuple[int, int]] = {}
    for sql in (
        """SELECT t.content_hash, sum(a.correct), count(*) FROM attempts a JOIN tasks t ON t.id = a.task_id
           WHERE t.domain = ? AND a.mode = 'solo' AND a.role = 'learner' GROUP BY t.content_hash""",
        """SELECT t.content_hash, sum(m.correct), count(*) FROM measurements m JOIN tasks t ON t.id = m.task_id
           WHERE t.domain = ? GROUP BY t.content_hash""",
    ):
        for h, s, n in ctx.db.execute(sql, [domain]).fetchall():
            s0, n0 = out.get(h, (0, 0))
            out[h] = (s0 + int(s), n0 + int(n))
    return out


def observe(ctx: RunContext, name: str, domain: object) -> None:
    """The observation hook (module docstring); a no-op for domains without ``observe``."""
    hook = getattr(domain, "observe", None)
    if hook is None:
        return
    used = {r[0] for r in ctx.db.execute("SELECT content_hash FROM tasks WHERE domain = ?", [name]).fetchall()}
    hook(solo_stats(ctx, name), used)
    estimate = getattr(domain, "estimated_difficulty", None)
    if estimate is None:
        return
    for task_id, h, old in ctx.db.execute(
        "SELECT id, content_hash, difficulty FROM tasks WHERE domain = ? AND fate = 'eval'", [name]
    ).fetchall():
        new = estimate(h)
        if new is not None and new != old:
            ctx.db.execute("UPDATE tasks SET difficulty = ? WHERE id = ?", [new, task_id])


def run(ctx: RunContext, round_n: int) -> None:
    cfg = ctx.cfg.synthesis
    made: dict[str, int] = {}
    duplicates = 0
    with ctx.db.atomic():
        for name, domain in ctx.domains.items():
            rng = rng_for(ctx.cfg.run.seed, round_n, "synthesize", name)
            observe(ctx, name, domain)
            frontier = frontier_of(ctx, name, round_n)
            center = domain.min_difficulty if frontier is None else frontier
            # Draw from the band around the frontier *after* clipping to the domain, so a frontier near
            # the easy end does not pile candidates (mostly duplicates) onto the easiest level.
            lo = max(domain.min_difficulty, center - cfg.spread)
            hi = min(domain.max_difficulty, max(center + cfg.spread, lo + 1.0))
            # Parents to escalate (mastered last round) or simplify (beyond last round).
            parents = list(
                ctx.db.query(
                    "SELECT * FROM tasks WHERE domain = ? AND round = ? AND fate IN ('mastered', 'beyond') ORDER BY id",
                    [name, round_n - 1],
                )
            )
            rng.shuffle(parents)
            num_derived = min(len(parents), round(cfg.num_candidates * cfg.escalate_fraction))
            count = 0
            # 1. Escalate or simplify last round's tasks, a few tries per parent (a derived task may be a
            #    duplicate: a one-digit task simplified lands among the few one-digit tasks there are).
            for parent in parents:
                if count >= num_derived:
                    break
                parent_task = ctx.task_from_row(parent)
                derive = domain.escalate if parent["fate"] == "mastered" else domain.simplify
                for _ in range(3):
                    if ctx.insert_task(derive(parent_task, rng), round_n=round_n, fate="pending",
                                       parent_id=parent["id"]) is not None:
                        count += 1
                        break
                    duplicates += 1
            # 2. Fresh candidates in the band around the frontier.
            tries = 0
            while count < cfg.num_candidates and tries < cfg.num_candidates * cfg.max_tries_factor:
                tries += 1
                if ctx.insert_task(domain.make_task(rng.uniform(lo, hi), rng), round_n=round_n,
                                   fate="pending") is None:
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
