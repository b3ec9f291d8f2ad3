"""CALIBRATE: solo attempts by the learner, guided attempts (by the teacher when one is configured, else by
the learner reading the guidance), graded, and a fate for every candidate.

Work goes in batches of ``calibration.batch_size`` tasks; each batch's attempts, fates, exam
admissions, failed samples and generation ledger commit in one transaction, and only tasks still
``pending`` are picked up, so a kill loses at most the batch in flight and never duplicates an attempt
(attempts are also unique per task, round, mode and sample).

Failed samples (finish_reason "error": endpoint down after retries, malformed reply) are recorded in
``failed_attempts`` and counted in ``zpd_failures_total{component="generator"|"teacher"}``; they are
never graded and never enter a pass rate. A task is routed on its answered samples; a task left with no
answered sample in a mode it needs stays ``pending`` (none of its attempts are kept), the phase goes on
with the rest, and at the end fails (``PhaseFailed``) so that the daemon retries it: a retry, or a
restart, picks up exactly the tasks still pending. An answer cut at max tokens is graded as given.

Tasks that need the teacher while its spending cap pauses it also stay ``pending``, without failing
the phase: every round's CALIBRATE also picks up earlier rounds' pending tasks, so they are calibrated
afresh (solo by the then-current learner) once the cap allows (``loop/usage.py``).
"""

from __future__ import annotations

from typing import Any

from . import curriculum, exam
from .context import RunContext, derive_seed
from .logs import Progress
from .train import PhaseFailed
from .usage import TeacherBudget, add_usage, count_generated, record_failures

FATES_AFTER_CALIBRATION = ("mastered", "zpd", "beyond", "review", "exam")


class _Call:
    """One generation call over some tasks: its completions, graded, and what it cost."""

    def __init__(self, role: str, mode: str, model: str) -> None:
        self.role, self.mode, self.model = role, mode, model
        self.outs: dict[int, list[Any]] = {}  # task id -> completions
        self.cost_usd = 0.0

    def all(self) -> list[Any]:
        return [c for cs in self.outs.values() for c in cs]


def _generate(ctx: RunContext, call: _Call, gen: Any, tasks: list, prompts: list[str], *, n: int,
              temperature: float, max_tokens: int, seed: int) -> None:
    if not tasks:
        return
    outs = gen.generate(prompts, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed)
    for (row, _task), completions in zip(tasks, outs, strict=True):
        call.outs[row["id"]] = completions


def _graded(ctx: RunContext, call: _Call, row: dict, task: Any, round_n: int, learner_ref: str) -> tuple[list[dict], float | None]:
    """Attempt rows and pass rate of one task's answered samples; (rows, None) when none was answered."""
    domain = ctx.domains[task.domain]
    grader = getattr(domain, "grader_name", None)
    rows, oks = [], []
    for i, c in enumerate(call.outs.get(row["id"], [])):
        if c.failed:
            continue
        ok = bool(domain.grade(task, c.text))
        oks.append(ok)
        rows.append(dict(task_id=row["id"], round=round_n, learner_ref=call.model if call.role == "teacher" else learner_ref,
                         role=call.role, mode=call.mode, sample_idx=i, output=c.text, correct=int(ok),
                         num_tokens=c.num_tokens, latency_seconds=c.latency_seconds, finish_reason=c.finish_reason,
                         grader=grader))
    return rows, (sum(oks) / len(oks) if oks else None)


def run(ctx: RunContext, round_n: int) -> None:
    cal, cur, teacher = ctx.cfg.calibration, ctx.cfg.curriculum, ctx.cfg.teacher
    learner_round = ctx.round_row(round_n)["parent_learner_round"]
    learner_ref = str(learner_round)
    budget = TeacherBudget(ctx, round_n) if teacher is not None else None
    total = ctx.db.execute("SELECT count(*) FROM tasks WHERE round <= ? AND fate = 'pending'", [round_n]).fetchone()[0]
    progress = Progress(f"round {round_n} calibrate", total, ctx.cfg.logging.progress)
    last_id, num_done, unanswered = 0, 0, {"generator": 0, "teacher": 0}
    while True:
        ctx.check_stop()
        # Earlier rounds' pending tasks too (left by a paused teacher); the id cursor skips tasks this
        # pass left pending, so each is tried once per pass.
        batch = list(ctx.db.query(
            "SELECT * FROM tasks WHERE round <= ? AND fate = 'pending' AND id > ? ORDER BY id LIMIT ?",
            [round_n, last_id, cal.batch_size],
        ))
        if not batch:
            break
        last_id = batch[-1]["id"]
        tasks = [(row, ctx.task_from_row(row)) for row in batch]
        seed = derive_seed(ctx.cfg.run.seed, round_n, "calibrate", batch[0]["id"])
        learner = ctx.generator(ctx.learner_dir(learner_round))

        solo = _Call("learner", "solo", learner_ref)
        _generate(ctx, solo, learner, tasks, [t.prompt for _, t in tasks], n=cal.num_solo,
                  temperature=cal.temperature, max_tokens=cal.max_tokens, seed=seed)
        graded: dict[int, tuple[list[dict], float | None]] = {
            row["id"]: _graded(ctx, solo, row, task, round_n, learner_ref) for row, task in tasks
        }
        failing = [(row, t) for row, t in tasks
                   if graded[row["id"]][1] is not None and curriculum.needs_guided(cur, graded[row["id"]][1])]

        if teacher is not None:
            guided = _Call("teacher", "guided", teacher.model)
            prompts = [ctx.domains[t.domain].guided_prompt(t) if teacher.use_guidance else t.prompt for _, t in failing]
            t_max = teacher.max_tokens or cal.max_tokens
            allowed = budget.plan(prompts, cal.num_guided, t_max)
            if allowed:
                _generate(ctx, guided, ctx.teacher_generator(), failing[:allowed], prompts[:allowed],
                          n=cal.num_guided, temperature=cal.temperature if teacher.temperature is None else teacher.temperature,
                          max_tokens=t_max, seed=seed + 1)
                guided.cost_usd = budget.cost(guided.all())
        else:
            guided = _Call("learner", "guided", learner_ref)
            _generate(ctx, guided, learner, failing, [ctx.domains[t.domain].guided_prompt(t) for _, t in failing],
                      n=cal.num_guided, temperature=cal.temperature, max_tokens=cal.max_tokens, seed=seed + 1)
        needs_guided = {row["id"] for row, _ in failing}

        with ctx.db.atomic():
            routed: dict[str, int] = {}
            num_solo = num_guided = 0
            for row, task in tasks:
                solo_rows, ps = graded[row["id"]]
                if ps is None:
                    unanswered["generator"] += 1
                    continue
                guided_rows, pg = [], None
                if row["id"] in needs_guided:
                    if row["id"] not in guided.outs:
                        continue  # the teacher is paused: stays pending for a later round
                    guided_rows, pg = _graded(ctx, guided, row, task, round_n, learner_ref)
                    if pg is None:
                        unanswered[guided.role if guided.role == "teacher" else "generator"] += 1
                        continue
                ctx.db["attempts"].insert_all(solo_rows + guided_rows, ignore=True)
                num_solo, num_guided = num_solo + len(solo_rows), num_guided + len(guided_rows)
                fate = curriculum.route(cur, ps, pg)
                if exam.admissible(ps, pg) and exam.try_admit(ctx, row["id"], task.domain, round_n):
                    fate = "exam"
                ctx.db.execute(
                    "UPDATE tasks SET fate = ?, fate_round = ?, p_solo = ?, p_guided = ? WHERE id = ?",
                    [fate, round_n, ps, pg, row["id"]],
                )
                routed[fate] = routed.get(fate, 0) + 1
            for call in (solo, guided):
                record_failures(ctx, round_n, "calibrate", call.role,
                                [(tid, call.mode, i, c) for tid, cs in call.outs.items() for i, c in enumerate(cs) if c.failed])
                add_usage(ctx, round_n, call.role, call.model, call.all(), call.cost_usd)
            if budget is not None:
                budget.write_state()
        ctx.metrics.attempts("solo", num_solo)
        ctx.metrics.attempts("guided", num_guided)
        for call in (solo, guided):
            count_generated(ctx, call.role, call.all(), call.cost_usd)
        for fate, n in routed.items():
            ctx.metrics.tasks_routed(fate, n)
        num_done += sum(routed.values())
        progress.update(num_done)
        ctx.beat()
    progress.close()
    if any(unanswered.values()):
        component = "teacher" if unanswered["teacher"] else "generator"
        raise PhaseFailed(component, f"calibrate: {sum(unanswered.values())} tasks got no answer from the "
                                     f"{' / '.join(k for k, v in unanswered.items() if v)} (see failed_attempts); "
                                     "they stay pending and a retry picks them up")
    with ctx.db.atomic():
        ctx.advance(round_n, "train")
    fates = dict(ctx.db.execute("SELECT fate, count(*) FROM tasks WHERE round = ? GROUP BY fate", [round_n]).fetchall())
    extra: dict[str, Any] = {"fates": fates}
    if budget is not None:
        extra["teacher"] = {"paused": budget.paused, "spent_usd": round(budget.spent(), 6),
                            "awaiting_tasks": budget.awaiting}
    ctx.log.info("calibrated", extra=extra)
