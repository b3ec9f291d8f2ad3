"""CALIBRATE: solo attempts by the learner, guided attempts (by the teacher when one is configured, else by
the learner reading the guidance), graded, and a fate for every candidate.

Work goes in batches of ``calibration.batch_size`` tasks; each batch's attempts, fates, exam
admissions, failed samples and generation ledger commit in one transaction, and only tasks still
``pending`` are picked up, so a kill loses at most the batch in flight and never duplicates an attempt
(attempts are also unique per task, round, mode and sample).
Once every batch is in, the round's selection (``loop/selection.py``: which calibrated tasks are
trained on, and each one's target source) is made from the store and commits with the phase advance.

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
drawn (sources and selections that read the solo pass rate itself, bandit, self-play, r-zero and
learnability, get all k solo samples).
Optional truncation (``calibration.solo_stop_after_failures`` / ``guided_stop_after_failures``): a task
whose first f answered samples all fail is decided failing in that mode, fixed k notwithstanding; it
trades exact agreement for calls (measured by ``bench/curriculum.py``): adaptive and fixed-k decide alike
up to floating-point batch effects. ``rounds.num_attempts`` counts the samples drawn,
``rounds.num_attempts_fixed`` what fixed k (``num_solo + num_guided`` for every task) would have drawn.
"""


from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zpd.configs.schema import CalibrationConfig, CurriculumConfig, TeacherConfig
from zpd.store import ledger_exam, ledger_rounds, ledger_tasks
from zpd.store.connect import batch_durability
from zpd.store.stats import insert_attempts

from . import curriculum, exam
from .calibrate_samples import Samples, decided, sample, successes_needed
from .context import RunContext, derive_seed
from .domains.base import Domain, NamesGrader, Scores, Task, TeacherHints, capability
from .errors import PhaseFailed
from .logs import Progress
from .selection import Selection, build_selection, select_round
from .usage import TeacherBudget, add_usage, count_generated, record_failures

__all__ = ["Samples", "decided", "run", "sample", "successes_needed"]


def _rows(tid: int, s: Samples, *, role: str, mode: str, model: str, round_n: int,
          grader: str | None, score: Callable[[str], float] | None = None) -> list[dict[str, Any]]:
    """Attempt rows; ``score``: the domain's raw score of an answer (partial credit, reasoning-gym)."""
    return [dict(task_id=tid, round=round_n, learner_ref=model, role=role, mode=mode, sample_idx=i,
                 output=c.text, correct=int(g), num_tokens=c.num_tokens, latency_seconds=c.latency_seconds,
                 finish_reason=c.finish_reason, grader=grader, score=None if score is None else score(c.text))
            for i, (c, g) in enumerate(zip(s.completions, s.grades, strict=True)) if g is not None]


def _exam_room(ctx: RunContext, round_n: int, domain: str) -> int:
    cfg = ctx.cfg.exam
    admitted = ledger_exam.admitted_in(ctx.db, round_n, domain)
    size = len(ledger_exam.version_items(ctx.db, round_n))
    return max(0, min(cfg.admit_per_round - admitted, cfg.max_items - size))


@dataclass
class _Pass:
    """What one CALIBRATE pass keeps fixed: the round's settings, the learner and the teacher's budget."""

    ctx: RunContext
    round_n: int
    cal: CalibrationConfig
    cur: CurriculumConfig
    teacher: TeacherConfig | None
    source: curriculum.Source
    """The candidate source (``loop/curriculum.py``): whether it reads the pass rate."""
    selection: Selection
    """The selection (``loop/selection.py``), made once the round is calibrated."""
    learner_round: int
    budget: TeacherBudget | None
    need_solo: int
    """More solo successes than this: mastered."""
    need_guided: int
    """At least this many guided successes: zpd."""

    @property
    def needs_pass_rate(self) -> bool:
        """Whether adaptive calibration must still draw all solo samples (the exact solo pass rate)."""
        return self.source.needs_pass_rate or self.selection.needs_pass_rate

    @property
    def learner_ref(self) -> str:
        return str(self.learner_round)

    def seed_of(self, mode: str) -> Callable[[int, int], int]:
        return lambda tid, j: derive_seed(self.ctx.cfg.run.seed, self.round_n, "calibrate", tid, mode, j)

    def grade_fn(self, task: Task) -> Callable[[str], bool]:
        return lambda text: self.ctx.domains[task.domain].grade(task, text)

    def guided_prompt(self, task: Task) -> str:
        use_guidance = self.teacher is None or self.teacher.use_guidance
        domain = self.ctx.domains[task.domain]
        return domain.guided_prompt(task) if use_guidance else domain.solo_prompt(task)


@dataclass
class _Guide:
    """Who makes a batch's guided samples: the teacher when one is configured, else the learner."""

    role: str
    model: str
    gen: Any
    """The generator (None: the teacher, needed by no task of the batch, was not started)."""
    temperature: float
    max_tokens: int


@dataclass
class _Sampled:
    """A batch's samples and who made the guided ones."""

    solo: dict[int, Samples]
    guided: dict[int, Samples]
    guide: _Guide
    cost: float
    """The teacher's dollars for the guided samples (0 without a teacher)."""
    drawn: int
    """Samples drawn (what ``rounds.num_attempts`` counts)."""


@dataclass
class _Routed:
    """What a batch's transaction decided."""

    routed: dict[str, int]
    num_solo: int
    num_guided: int
    decided: int


def _hinted(domain: Domain) -> bool:
    hints = capability(domain, TeacherHints)
    return hints is not None and hints.teacher_hints


def _start_pass(ctx: RunContext, round_n: int) -> _Pass:
    cal, cur, teacher = ctx.cfg.calibration, ctx.cfg.curriculum, ctx.cfg.teacher
    if teacher is not None and all(_hinted(d) for d in ctx.domains.values()):
        teacher = None  # the teacher wrote the tasks' guidance (hints): the learner makes the guided attempts
    learner_round = ctx.round_row(round_n).parent_learner_round
    if learner_round is None:
        raise ValueError(f"round {round_n} has no parent learner: CALIBRATE runs in rounds after round 0")
    return _Pass(
        ctx, round_n, cal, cur, teacher, curriculum.build_source(ctx.cfg), build_selection(cur),
        learner_round,
        budget=TeacherBudget(ctx, round_n) if teacher is not None else None,
        need_solo=successes_needed(cur.solo_max_ratio, cal.num_solo, strict=True),  # more than this: mastered
        need_guided=successes_needed(cur.guided_min_ratio, cal.num_guided, strict=False),  # at least: zpd
    )


def run(ctx: RunContext, round_n: int) -> None:
    p = _start_pass(ctx, round_n)
    cal = p.cal
    total = ledger_tasks.count_pending(ctx.db, round_n)
    progress = Progress(f"round {round_n} calibrate", total, ctx.cfg.logging.progress)
    last_id, num_done, unanswered = 0, 0, {"generator": 0, "teacher": 0}
    row = ctx.round_row(round_n)
    drawn_total, fixed_total = row.num_attempts or 0, row.num_attempts_fixed or 0
    # Batch commits without an fsync each; the phase's closing commit below (FULL) makes them durable
    # against power loss too (``store/connect.py: batch_durability``).
    with batch_durability(ctx.db.conn):
        while True:
            ctx.check_stop()
            # Earlier rounds' pending tasks too (left by a paused teacher); the id cursor skips tasks this
            # pass left pending, so each is tried once per pass.
            batch = ledger_tasks.pending_batch(ctx.db, round_n, last_id, cal.batch_size)
            if not batch:
                break
            last_id = batch[-1]["id"]
            tasks = {row["id"]: ctx.task_from_row(row) for row in batch}
            sampled = _sample_batch(p, tasks)
            with ctx.db.atomic():  # attempts, fates, exam admissions, failures, ledger: one commit
                routed = _route(p, tasks, sampled, unanswered)
                _record_usage(p, sampled)
                if p.budget is not None:
                    p.budget.write_state()
                drawn_total += sampled.drawn
                fixed_total += routed.decided * (cal.num_solo + cal.num_guided)
                ledger_rounds.update_round(ctx.db, round_n, num_attempts=drawn_total,
                                           num_attempts_fixed=fixed_total)
            _count(p, sampled, routed)
            num_done += sum(routed.routed.values())
            progress.update(num_done)
            ctx.beat()
    progress.close()
    if any(unanswered.values()):
        component = "teacher" if unanswered["teacher"] else "generator"
        raise PhaseFailed(component, f"calibrate: {sum(unanswered.values())} tasks got no answer from the "
                                     f"{' / '.join(k for k, v in unanswered.items() if v)} "
                                     "(see failed_attempts); they stay pending and a retry picks them up")
    with ctx.db.atomic():  # the round's selection commits with the phase advance (a rerun redoes it alike)
        targets = select_round(ctx, round_n)
        ctx.advance(round_n, "train")
    row = ctx.round_row(round_n)
    extra: dict[str, Any] = {"fates": ledger_tasks.fates_of_round(ctx.db, round_n),
                             "selection": p.selection.name, "selected_targets": targets,
                             "attempts": row.num_attempts, "attempts_fixed_k": row.num_attempts_fixed}
    if p.budget is not None:
        extra["teacher"] = {"paused": p.budget.paused, "spent_usd": round(p.budget.spent(), 6),
                            "awaiting_tasks": p.budget.awaiting}
    ctx.log.info("calibrated", extra=extra)


def _sample_batch(p: _Pass, tasks: dict[int, Task]) -> _Sampled:
    """Solo samples of every task, guided ones of those failed alone, exam hopefuls to k/k."""
    ctx, cal, teacher = p.ctx, p.cal, p.teacher
    k_solo, k_guided = cal.num_solo, cal.num_guided
    learner = ctx.generator(ctx.learner_dir(p.learner_round))
    drawn = 0
    # 1. Solo: the learner alone.
    solo: dict[int, Samples] = {}
    solo_items = {tid: (ctx.domains[t.domain].solo_prompt(t), p.grade_fn(t)) for tid, t in tasks.items()}
    drawn += sample(learner, solo_items, solo, k=k_solo,
                    keep_going=(lambda s: not decided(s, k_solo, p.need_solo, cal.solo_stop_after_failures))
                    if cal.adaptive and not p.needs_pass_rate else None,
                    seed_of=p.seed_of("solo"), temperature=cal.temperature, max_tokens=cal.max_tokens)
    # 2. Guided: tasks failed alone (every task under fixed k), by the teacher when one is configured.
    failing = [tid for tid in tasks if (rate := solo[tid].rate) is not None
               and (not cal.adaptive or curriculum.needs_guided(p.cur, rate))]
    guided: dict[int, Samples] = {}
    if teacher is not None and p.budget is not None:
        t_max = teacher.max_tokens or cal.max_tokens
        failing = failing[: p.budget.plan([p.guided_prompt(tasks[t]) for t in failing], k_guided, t_max)]
        guide = _Guide("teacher", teacher.model, ctx.teacher_generator() if failing else None,
                       cal.temperature if teacher.temperature is None else teacher.temperature, t_max)
    else:
        guide = _Guide("learner", p.learner_ref, learner, cal.temperature, cal.max_tokens)
    guided_items = {t: (p.guided_prompt(tasks[t]), p.grade_fn(tasks[t])) for t in failing}
    if guided_items:
        stop_after = cal.guided_stop_after_failures
        drawn += sample(guide.gen, guided_items, guided, k=k_guided,
                        keep_going=(lambda s: not decided(s, k_guided, p.need_guided, stop_after))
                        if cal.adaptive else None,
                        seed_of=p.seed_of("guided"), temperature=guide.temperature,
                        max_tokens=guide.max_tokens)
    # 3. Adaptive: tasks that may still enter the exam are sampled to k/k while it has room.
    if cal.adaptive and ctx.cfg.exam.admit_per_round > 0:
        room = {d: _exam_room(ctx, p.round_n, d) for d in {t.domain for t in tasks.values()}}
        hopefuls = []
        for tid in failing:
            d = tasks[tid].domain
            g = guided.get(tid)
            if (solo[tid].successes == 0 and g is not None and g.answered and g.successes == g.answered
                    and room[d] > 0):
                room[d] -= 1
                hopefuls.append(tid)
        if hopefuls:
            drawn += sample(learner, {t: solo_items[t] for t in hopefuls}, solo,
                            k=k_solo, keep_going=lambda s: s.successes == 0, seed_of=p.seed_of("solo"),
                            temperature=cal.temperature, max_tokens=cal.max_tokens)
            hopefuls = [t for t in hopefuls if solo[t].successes == 0]
            drawn += sample(guide.gen, {t: guided_items[t] for t in hopefuls}, guided, k=k_guided,
                            keep_going=lambda s: s.successes == s.answered, seed_of=p.seed_of("guided"),
                            temperature=guide.temperature, max_tokens=guide.max_tokens)
    guided_out = [c for s in guided.values() for c in s.completions]
    cost = p.budget.cost(guided_out) if p.budget is not None and guided else 0.0
    return _Sampled(solo, guided, guide, cost, drawn)


def _route(p: _Pass, tasks: dict[int, Task], s: _Sampled, unanswered: dict[str, int]) -> _Routed:
    """Fates, exam admissions and attempts of a batch (inside its transaction). A task without an answered
    sample in a mode it needs stays pending, counted in ``unanswered``."""
    ctx, round_n, cal, cur = p.ctx, p.round_n, p.cal, p.cur
    out = _Routed({}, 0, 0, 0)
    batch_rows: list[dict[str, Any]] = []
    for tid, task in tasks.items():
        ps = s.solo[tid].rate
        if ps is None:
            unanswered["generator"] += 1
            continue
        pg = None
        needs = curriculum.needs_guided(cur, ps)
        if needs or tid in s.guided:
            if tid not in s.guided:
                continue  # the teacher is paused: stays pending for a later round
            pg = s.guided[tid].rate
            if pg is None:
                unanswered[s.guide.role if s.guide.role == "teacher" else "generator"] += 1
                continue
        named = capability(ctx.domains[task.domain], NamesGrader)
        grader = None if named is None else named.grader_name
        scorer = capability(ctx.domains[task.domain], Scores)
        raw = None if scorer is None else scorer.score
        score = None if raw is None else (lambda text, t=task, f=raw: f(t, text))
        solo_rows = _rows(tid, s.solo[tid], role="learner", mode="solo", model=p.learner_ref,
                          round_n=round_n, grader=grader, score=score)
        guided_rows = [] if tid not in s.guided else _rows(
            tid, s.guided[tid], role=s.guide.role, mode="guided", model=s.guide.model, round_n=round_n,
            grader=grader, score=score)
        batch_rows += solo_rows + guided_rows
        out.num_solo, out.num_guided = out.num_solo + len(solo_rows), out.num_guided + len(guided_rows)
        fate = curriculum.band_fate(cur, ps, pg if needs else None)
        complete = (len(s.solo[tid].grades) == cal.num_solo and tid in s.guided
                    and len(s.guided[tid].grades) == cal.num_guided)
        if complete and exam.admissible(ps, pg) and exam.try_admit(ctx, tid, task.domain, round_n):
            fate = "exam"
        # selected stays NULL until the round's selection (``run``, once every batch is calibrated).
        ledger_tasks.set_fate(ctx.db, tid, fate=fate, round_n=round_n, p_solo=ps, p_guided=pg,
                              selected=None)
        out.routed[fate] = out.routed.get(fate, 0) + 1
        out.decided += 1
    insert_attempts(ctx.db, batch_rows)  # the batch's attempts: one executemany, same transaction
    return out


def _modes(p: _Pass, s: _Sampled) -> list[tuple[str, str, str, dict[int, Samples], float]]:
    """(role, mode, model, samples, dollars) of the batch's solo and guided samples."""
    return [("learner", "solo", p.learner_ref, s.solo, 0.0),
            (s.guide.role, "guided", s.guide.model, s.guided, s.cost)]


def _record_usage(p: _Pass, s: _Sampled) -> None:
    """The batch's failed samples and generation ledger (inside its transaction)."""
    for role, mode, model, samples, cost in _modes(p, s):
        completions = [c for smp in samples.values() for c in smp.completions]
        record_failures(p.ctx, p.round_n, "calibrate", role,
                        [(tid, mode, i, c) for tid, smp in samples.items()
                         for i, c in enumerate(smp.completions) if c.failed])
        add_usage(p.ctx, p.round_n, role, model, completions, cost)


def _count(p: _Pass, s: _Sampled, r: _Routed) -> None:
    """The batch's metrics, once it is committed."""
    metrics = p.ctx.metrics
    metrics.attempts("solo", r.num_solo)
    metrics.attempts("guided", r.num_guided)
    for role, _mode, _model, samples, cost in _modes(p, s):
        count_generated(p.ctx, role, [c for smp in samples.values() for c in smp.completions], cost)
    for fate, n in r.routed.items():
        metrics.tasks_routed(fate, n)
