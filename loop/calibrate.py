"""CALIBRATE: solo and guided attempts by the current learner, graded, and a fate for every candidate.

Work goes in batches of ``calibration.batch_size`` tasks; each batch's attempts, fates and exam
admissions commit in one transaction, and only tasks still ``pending`` are picked up, so a kill
loses at most the batch in flight and never duplicates an attempt (attempts are also unique per
task, round, mode and sample).
"""

from __future__ import annotations

from typing import Any

from . import curriculum, exam
from .context import RunContext, derive_seed
from .logs import Progress

FATES_AFTER_CALIBRATION = ("mastered", "zpd", "beyond", "review", "exam")


def _attempt_rows(ctx, tasks, prompts, n, mode, round_n, learner_ref, seed) -> tuple[list[dict[str, Any]], list[float]]:
    cal = ctx.cfg.calibration
    gen = ctx.generator(ctx.learner_dir(int(learner_ref)))
    outs = gen.generate(prompts, n=n, temperature=cal.temperature, max_tokens=cal.max_tokens, seed=seed)
    rows, rates = [], []
    for (row, task), completions in zip(tasks, outs, strict=True):
        correct = [ctx.domains[task.domain].grade(task, c.text) for c in completions]
        rates.append(sum(correct) / len(correct))
        for i, (c, ok) in enumerate(zip(completions, correct, strict=True)):
            rows.append(
                dict(task_id=row["id"], round=round_n, learner_ref=learner_ref, mode=mode, sample_idx=i,
                     output=c.text, correct=int(ok), num_tokens=c.num_tokens,
                     latency_seconds=c.latency_seconds, finish_reason=c.finish_reason)
            )
    return rows, rates


def run(ctx: RunContext, round_n: int) -> None:
    cal, cur = ctx.cfg.calibration, ctx.cfg.curriculum
    learner_round = ctx.round_row(round_n)["parent_learner_round"]
    learner_ref = str(learner_round)
    total = ctx.db.execute("SELECT count(*) FROM tasks WHERE round = ? AND fate != 'eval'", [round_n]).fetchone()[0]
    progress = Progress(f"round {round_n} calibrate", total, ctx.cfg.logging.progress)
    while True:
        ctx.check_stop()
        batch = list(
            ctx.db.query(
                "SELECT * FROM tasks WHERE round = ? AND fate = 'pending' ORDER BY id LIMIT ?", [round_n, cal.batch_size]
            )
        )
        if not batch:
            break
        tasks = [(row, ctx.task_from_row(row)) for row in batch]
        seed = derive_seed(ctx.cfg.run.seed, round_n, "calibrate", batch[0]["id"])
        solo_rows, p_solo = _attempt_rows(
            ctx, tasks, [t.prompt for _, t in tasks], cal.num_solo, "solo", round_n, learner_ref, seed
        )
        failing = [i for i, p in enumerate(p_solo) if curriculum.needs_guided(cur, p)]
        guided_rows, guided_rates = [], []
        if failing:
            sub = [tasks[i] for i in failing]
            guided_rows, guided_rates = _attempt_rows(
                ctx, sub, [ctx.domains[t.domain].guided_prompt(t) for _, t in sub],
                cal.num_guided, "guided", round_n, learner_ref, seed + 1,
            )
        p_guided: list[float | None] = [None] * len(tasks)
        for i, rate in zip(failing, guided_rates, strict=True):
            p_guided[i] = rate
        with ctx.db.atomic():
            ctx.db["attempts"].insert_all(solo_rows + guided_rows, ignore=True)
            routed: dict[str, int] = {}
            for (row, task), ps, pg in zip(tasks, p_solo, p_guided, strict=True):
                fate = curriculum.route(cur, ps, pg)
                if exam.admissible(ps, pg) and exam.try_admit(ctx, row["id"], task.domain, round_n):
                    fate = "exam"
                ctx.db.execute(
                    "UPDATE tasks SET fate = ?, fate_round = ?, p_solo = ?, p_guided = ? WHERE id = ?",
                    [fate, round_n, ps, pg, row["id"]],
                )
                routed[fate] = routed.get(fate, 0) + 1
        ctx.metrics.attempts("solo", len(solo_rows))
        ctx.metrics.attempts("guided", len(guided_rows))
        ctx.metrics.generated_tokens("learner", sum(r["num_tokens"] for r in solo_rows + guided_rows))
        for fate, n in routed.items():
            ctx.metrics.tasks_routed(fate, n)
        done = ctx.db.execute("SELECT count(*) FROM tasks WHERE round = ? AND fate NOT IN ('pending', 'eval')", [round_n]).fetchone()[0]
        progress.update(done)
        ctx.beat()
    progress.close()
    with ctx.db.atomic():
        ctx.advance(round_n, "train")
    fates = dict(ctx.db.execute("SELECT fate, count(*) FROM tasks WHERE round = ? GROUP BY fate", [round_n]).fetchall())
    ctx.log.info("calibrated", extra={"fates": fates})
