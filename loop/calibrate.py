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

Adaptive calibration (``calibration.adaptive``, the default) draws a task's samples one at a time and
stops as soon as the fixed-k rule's decision can no longer change (a curtailed sequential test): solo
"mastered" needs more than ``solo_max_ratio * num_solo`` successes, so sampling stops at that many
successes or once too few samples are left to reach it; guided "zpd" needs ``guided_min_ratio *
num_guided`` successes, likewise. A solo pass thus rules out the ZPD without a guided attempt. Tasks
that may still enter the exam (no solo success, every guided sample correct) are sampled to the full
k/k while the exam has room this round, so exam admission stays 0/k solo and k/k guided. Sample j of a
task in a mode has its own seed (``sample_seeds``), so it is the same sample a fixed-k call would have
drawn (policies that read the solo pass rate itself, bandit and learnability, get all k solo samples).
Optional truncation (``calibration.solo_stop_after_failures`` / ``guided_stop_after_failures``): a task
whose first f answered samples all fail is decided failing in that mode, fixed k notwithstanding; it
trades exact agreement for calls (measured by ``bench/curriculum.py``): adaptive and fixed-k decide alike up to floating-point batch effects. ``rounds.num_attempts``
counts the samples drawn, ``rounds.num_attempts_fixed`` what fixed k (``num_solo + num_guided`` for
every task) would have drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zpd.store.stats import insert_attempts

from . import curriculum, exam
from .context import RunContext, derive_seed, rng_for
from .errors import PhaseFailed
from .logs import Progress
from .usage import TeacherBudget, add_usage, count_generated, record_failures

FATES_AFTER_CALIBRATION = ("mastered", "zpd", "beyond", "review", "exam")


@dataclass
class Samples:
    """One task's samples in one mode, graded (None: a failed sample, never graded)."""

    completions: list[Any] = field(default_factory=list)
    grades: list[bool | None] = field(default_factory=list)

    @property
    def successes(self) -> int:
        return sum(1 for g in self.grades if g)

    @property
    def answered(self) -> int:
        return sum(1 for g in self.grades if g is not None)

    @property
    def rate(self) -> float | None:
        return self.successes / self.answered if self.answered else None


def successes_needed(ratio: float, k: int, strict: bool) -> int:
    """Successes out of k that make the rate > ratio (strict) or >= ratio (may be 0 or k + 1: decided
    whatever the samples say, after the one answered sample a pass rate needs)."""
    return math.floor(ratio * k + 1e-9) + 1 if strict else max(0, math.ceil(ratio * k - 1e-9))


def decided(s: Samples, k: int, need: int, stop_after: int | None = None) -> bool:
    """Whether the fixed-k rule "at least ``need`` successes in k" can no longer change (and the task
    has a pass rate: at least one answered sample, unless all k were drawn). With ``stop_after``, also
    once that many answered samples are all failures (truncation: may disagree with fixed k)."""
    if len(s.grades) >= k:
        return True
    if s.answered == 0:
        return False
    if stop_after is not None and s.successes == 0 and s.answered >= stop_after:
        return True
    return s.successes >= need or s.successes + (k - len(s.grades)) < need


def sample(gen: Any, items: dict[int, tuple[str, Callable[[str], bool]]], out: dict[int, Samples], *, k: int,
           keep_going: Callable[[Samples], bool] | None, seed_of: Callable[[int, int], int],
           temperature: float, max_tokens: int) -> int:
    """Draw samples for ``items`` (task id -> (prompt, grade)) into ``out`` up to k each. Fixed k when
    ``keep_going`` is None (one call, n = k); else one sample per task per wave while ``keep_going``
    says so. Returns the number of samples drawn."""
    drawn = 0
    for tid in items:
        out.setdefault(tid, Samples())
    if keep_going is None:  # fixed k for tasks not sampled yet in this mode
        results = gen.generate([p for p, _ in items.values()], n=k, temperature=temperature, max_tokens=max_tokens,
                               sample_seeds=[[seed_of(t, j) for j in range(k)] for t in items])
        for t, cs in zip(items, results, strict=True):
            for c in cs:
                _add(out[t], c, items[t][1])
        return k * len(items)
    while True:
        active = [t for t in items if len(out[t].grades) < k and keep_going(out[t])]
        if not active:
            return drawn
        results = gen.generate([items[t][0] for t in active], n=1, temperature=temperature, max_tokens=max_tokens,
                               sample_seeds=[[seed_of(t, len(out[t].grades))] for t in active])
        for t, cs in zip(active, results, strict=True):
            _add(out[t], cs[0], items[t][1])
            drawn += 1


def _add(s: Samples, completion: Any, grade: Callable[[str], bool]) -> None:
    s.completions.append(completion)
    s.grades.append(None if completion.failed else bool(grade(completion.text)))


def _rows(tid: int, s: Samples, *, role: str, mode: str, model: str, round_n: int,
          grader: str | None, score: Callable[[str], float] | None = None) -> list[dict]:
    """Attempt rows; ``score``: the domain's raw score of an answer (partial credit, reasoning-gym)."""
    return [dict(task_id=tid, round=round_n, learner_ref=model, role=role, mode=mode, sample_idx=i, output=c.text,
                 correct=int(g), num_tokens=c.num_tokens, latency_seconds=c.latency_seconds,
                 finish_reason=c.finish_reason, grader=grader, score=None if score is None else score(c.text))
            for i, (c, g) in enumerate(zip(s.completions, s.grades, strict=True)) if g is not None]


def _exam_room(ctx: RunContext, round_n: int, domain: str) -> int:
    cfg = ctx.cfg.exam
    admitted = ctx.db.execute("SELECT count(*) FROM exam_items WHERE admitted_round = ? AND domain = ?",
                              [round_n, domain]).fetchone()[0]
    return max(0, min(cfg.admit_per_round - admitted, cfg.max_items - len(exam.version_items(ctx.db, round_n))))


def run(ctx: RunContext, round_n: int) -> None:
    cal, cur, teacher = ctx.cfg.calibration, ctx.cfg.curriculum, ctx.cfg.teacher
    policy = curriculum.build_policy(ctx.cfg)
    learner_round = ctx.round_row(round_n)["parent_learner_round"]
    learner_ref = str(learner_round)
    budget = TeacherBudget(ctx, round_n) if teacher is not None else None
    k_solo, k_guided = cal.num_solo, cal.num_guided
    need_solo = successes_needed(cur.solo_max_ratio, k_solo, strict=True)  # more than this -> mastered
    need_guided = successes_needed(cur.guided_min_ratio, k_guided, strict=False)  # at least this -> zpd
    total = ctx.db.execute("SELECT count(*) FROM tasks WHERE round <= ? AND fate = 'pending'", [round_n]).fetchone()[0]
    progress = Progress(f"round {round_n} calibrate", total, ctx.cfg.logging.progress)
    last_id, num_done, unanswered = 0, 0, {"generator": 0, "teacher": 0}
    drawn_total = ctx.round_row(round_n)["num_attempts"] or 0
    fixed_total = ctx.round_row(round_n)["num_attempts_fixed"] or 0

    def seed_of(mode: str) -> Callable[[int, int], int]:
        return lambda tid, j: derive_seed(ctx.cfg.run.seed, round_n, "calibrate", tid, mode, j)

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
        tasks = {row["id"]: ctx.task_from_row(row) for row in batch}
        learner = ctx.generator(ctx.learner_dir(learner_round))
        drawn = 0

        def grade_fn(task: Any) -> Callable[[str], bool]:
            return lambda text: ctx.domains[task.domain].grade(task, text)

        def guided_prompt(task: Any) -> str:
            use_guidance = teacher is None or teacher.use_guidance
            domain = ctx.domains[task.domain]
            return domain.guided_prompt(task) if use_guidance else domain.solo_prompt(task)

        # 1. Solo: the learner alone.
        solo: dict[int, Samples] = {}
        solo_items = {tid: (ctx.domains[t.domain].solo_prompt(t), grade_fn(t)) for tid, t in tasks.items()}
        drawn += sample(learner, solo_items, solo, k=k_solo,
                        keep_going=(lambda s: not decided(s, k_solo, need_solo, cal.solo_stop_after_failures))
                        if cal.adaptive and not policy.needs_pass_rate else None,
                        seed_of=seed_of("solo"), temperature=cal.temperature, max_tokens=cal.max_tokens)
        # 2. Guided: tasks failed alone (every task under fixed k), by the teacher when one is configured.
        failing = [tid for tid in tasks if solo[tid].rate is not None
                   and (not cal.adaptive or curriculum.needs_guided(cur, solo[tid].rate))]
        guided: dict[int, Samples] = {}
        if teacher is not None:
            g_role, g_model, g_gen = "teacher", teacher.model, None
            t_max = teacher.max_tokens or cal.max_tokens
            failing = failing[: budget.plan([guided_prompt(tasks[t]) for t in failing], k_guided, t_max)]
            if failing:
                g_gen = ctx.teacher_generator()
            g_temp = cal.temperature if teacher.temperature is None else teacher.temperature
        else:
            g_role, g_model, g_gen, t_max, g_temp = "learner", learner_ref, learner, cal.max_tokens, cal.temperature
        guided_items = {t: (guided_prompt(tasks[t]), grade_fn(tasks[t])) for t in failing}
        if guided_items:
            drawn += sample(g_gen, guided_items, guided, k=k_guided,
                            keep_going=(lambda s: not decided(s, k_guided, need_guided, cal.guided_stop_after_failures))
                            if cal.adaptive else None,
                            seed_of=seed_of("guided"), temperature=g_temp, max_tokens=t_max)
        # 3. Adaptive: tasks that may still enter the exam are sampled to k/k while it has room.
        if cal.adaptive and ctx.cfg.exam.admit_per_round > 0:
            room = {d: _exam_room(ctx, round_n, d) for d in {t.domain for t in tasks.values()}}
            hopefuls = []
            for tid in failing:
                d = tasks[tid].domain
                g = guided.get(tid)
                if solo[tid].successes == 0 and g is not None and g.answered and g.successes == g.answered and room[d] > 0:
                    room[d] -= 1
                    hopefuls.append(tid)
            if hopefuls:
                drawn += sample(learner, {t: solo_items[t] for t in hopefuls}, solo,
                                k=k_solo, keep_going=lambda s: s.successes == 0, seed_of=seed_of("solo"),
                                temperature=cal.temperature, max_tokens=cal.max_tokens)
                hopefuls = [t for t in hopefuls if solo[t].successes == 0]
                drawn += sample(g_gen, {t: guided_items[t] for t in hopefuls}, guided, k=k_guided,
                                keep_going=lambda s: s.successes == s.answered, seed_of=seed_of("guided"),
                                temperature=g_temp, max_tokens=t_max)
        g_cost = budget.cost([c for s in guided.values() for c in s.completions]) if teacher is not None and guided else 0.0

        with ctx.db.atomic():
            routed: dict[str, int] = {}
            num_solo = num_guided = decided_here = 0
            batch_rows: list[dict] = []
            for tid, task in tasks.items():
                ps = solo[tid].rate
                if ps is None:
                    unanswered["generator"] += 1
                    continue
                pg = None
                needs = curriculum.needs_guided(cur, ps)
                if needs or tid in guided:
                    if tid not in guided:
                        continue  # the teacher is paused: stays pending for a later round
                    pg = guided[tid].rate
                    if pg is None:
                        unanswered[g_role if g_role == "teacher" else "generator"] += 1
                        continue
                grader = getattr(ctx.domains[task.domain], "grader_name", None)
                raw = getattr(ctx.domains[task.domain], "score", None)
                score = None if raw is None else (lambda text, t=task, f=raw: f(t, text))
                solo_rows = _rows(tid, solo[tid], role="learner", mode="solo", model=learner_ref,
                                  round_n=round_n, grader=grader, score=score)
                guided_rows = [] if tid not in guided else _rows(tid, guided[tid], role=g_role, mode="guided",
                                                                  model=g_model, round_n=round_n, grader=grader,
                                                                  score=score)
                batch_rows += solo_rows + guided_rows
                num_solo, num_guided = num_solo + len(solo_rows), num_guided + len(guided_rows)
                fate = curriculum.band_fate(cur, ps, pg if needs else None)
                complete = len(solo[tid].grades) == k_solo and tid in guided and len(guided[tid].grades) == k_guided
                selected = None
                if complete and exam.admissible(ps, pg) and exam.try_admit(ctx, tid, task.domain, round_n):
                    fate = "exam"
                else:
                    selected = int(policy.select(fate, ps, pg, rng_for(ctx.cfg.run.seed, round_n, "select", tid)))
                ctx.db.execute(
                    "UPDATE tasks SET fate = ?, fate_round = ?, p_solo = ?, p_guided = ?, selected = ? WHERE id = ?",
                    [fate, round_n, ps, pg, selected, tid],
                )
                routed[fate] = routed.get(fate, 0) + 1
                decided_here += 1
            insert_attempts(ctx.db, batch_rows)  # the batch's attempts: one executemany, same transaction
            for role, mode, model, samples in (("learner", "solo", learner_ref, solo), (g_role, "guided", g_model, guided)):
                completions = [c for s in samples.values() for c in s.completions]
                record_failures(ctx, round_n, "calibrate", role,
                                [(tid, mode, i, c) for tid, s in samples.items() for i, c in enumerate(s.completions)
                                 if c.failed])
                add_usage(ctx, round_n, role, model, completions, g_cost if mode == "guided" else 0.0)
            if budget is not None:
                budget.write_state()
            drawn_total += drawn
            fixed_total += decided_here * (k_solo + k_guided)
            ctx.db.execute("UPDATE rounds SET num_attempts = ?, num_attempts_fixed = ? WHERE id = ?",
                           [drawn_total, fixed_total, round_n])
        ctx.metrics.attempts("solo", num_solo)
        ctx.metrics.attempts("guided", num_guided)
        for role, mode, samples in (("learner", "solo", solo), (g_role, "guided", guided)):
            count_generated(ctx, role, [c for s in samples.values() for c in s.completions],
                            g_cost if mode == "guided" else 0.0)
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
    row = ctx.round_row(round_n)
    fates = dict(ctx.db.execute("SELECT fate, count(*) FROM tasks WHERE round = ? GROUP BY fate", [round_n]).fetchall())
    extra: dict[str, Any] = {"fates": fates, "attempts": row["num_attempts"], "attempts_fixed_k": row["num_attempts_fixed"]}
    if budget is not None:
        extra["teacher"] = {"paused": budget.paused, "spent_usd": round(budget.spent(), 6),
                            "awaiting_tasks": budget.awaiting}
    ctx.log.info("calibrated", extra=extra)
