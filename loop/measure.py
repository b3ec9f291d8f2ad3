"""MEASURE: the new learner takes the frozen eval set and the current exam; the exam evolves.

* eval set: greedy, every item of both splits (``loop/eval_split.py``), each answer stored per item
  (``measurements``), so any two rounds can be compared item by item. The *test* part gives the
  reported accuracy (``rounds.eval_accuracy``, ``status`` ``eval``); the *validation* part is what the
  decisions below read (``rounds.validation_accuracy``);
* frontier probe: per domain, the difficulty where the validation solo accuracy crosses 0.5
  (``estimate_frontier``), from the same answers;
* exam: version N (this round's) is taken before graduation; items solved solo at
  ``exam.graduate_ratio`` graduate;
* promotion gate (``measure.gate``): ``mcnemar`` holds a new learner when a one-sided exact McNemar test
  on the validation items, paired with the parent learner's stored answers, gives p < ``measure.gate_p``
  for "worse" (``mcnemar_p``); ``tolerance`` holds it when its validation accuracy fell by more than
  ``measure.promotion_tolerance`` below the parent's. A held learner stays in its round but is not made
  current, so the next round trains from the parent's.

The item budget per round: every eval item once (greedy) plus every exam item ``exam.num_samples``
times. configs/default.toml: 518 eval items (arithmetic levels 1-8: 9 + 9 at level 1, 100 + 100 at
levels 2 and 3, 10 + 10 at levels 4-8) plus at most 200 exam items; configs/smoke.toml: 16 eval items
(2 + 2 at levels 1-4) plus at most 20 exam items.

The answers commit one batch at a time (a kill loses at most the batch in flight); the figures, graduation
and promotion commit in one transaction with the phase advance.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from zpd.store import ledger_exam, ledger_rounds, ledger_tasks
from zpd.store.ledger_rounds import RoundRow
from zpd.store.ledger_tasks import TaskRow

from . import eval_split
from .context import RunContext, derive_seed
from .errors import PhaseFailed
from .usage import add_usage, count_generated, record_failures


def estimate_frontier(by_level: dict[float, float]) -> float:
    """Difficulty at which solo accuracy crosses 0.5, linearly interpolated on the running minimum of
    the accuracy curve (a virtual level one below the easiest is taken as solved)."""
    levels = sorted(by_level)
    if not levels:
        return 0.0
    prev_level, prev_acc = levels[0] - 1.0, 1.0
    for level in levels:
        acc = min(prev_acc, by_level[level])
        if acc < 0.5:
            return prev_level + (prev_acc - 0.5) / (prev_acc - acc) * (level - prev_level)
        prev_level, prev_acc = level, acc
    return levels[-1]


def discordant(a: Mapping[int, bool], b: Mapping[int, bool]) -> tuple[int, int]:
    """(A right and B wrong, A wrong and B right) over the items both were measured on."""
    common = a.keys() & b.keys()
    return (sum(1 for i in common if a[i] and not b[i]), sum(1 for i in common if b[i] and not a[i]))


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2): the exact McNemar test's tail (1 when n = 0)."""
    return sum(math.comb(n, i) for i in range(max(k, 0), n + 1)) / 2**n


def mcnemar_p(parent: dict[int, bool], new: dict[int, bool]) -> float:
    """One-sided exact McNemar p-value for "the new learner is worse", over the items both answered:
    b = parent right and new wrong, c = the reverse, p = P(Binom(b + c, 1/2) >= b) (1 without any
    discordant pair)."""
    b, c = discordant(parent, new)
    return binomial_tail(b, b + c)


def _accuracy(rows: list[TaskRow], outcomes: dict[int, bool]) -> tuple[float, dict[str, float]]:
    """Accuracy overall and per domain of the items ``rows`` (those without an outcome are not counted)."""
    by_domain: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        if r["id"] in outcomes:
            by_domain[r["domain"]].append(outcomes[r["id"]])
    every = [ok for oks in by_domain.values() for ok in oks]
    return (sum(every) / len(every) if every else 0.0), {d: sum(v) / len(v) for d, v in by_domain.items()}


def _frontier(rows: list[TaskRow], outcomes: dict[int, bool]) -> dict[str, float]:
    """Per domain, ``estimate_frontier`` over the accuracy per level of the items ``rows``."""
    by_level: dict[str, dict[float, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_level[r["domain"]][r["difficulty"]].append(outcomes[r["id"]])
    return {
        d: estimate_frontier({lvl: sum(v) / len(v) for lvl, v in levels.items()})
        for d, levels in by_level.items()
    }


def gate(ctx: RunContext, row: RoundRow, validation: dict[int, bool]) -> tuple[bool, float | None]:
    """Whether round ``row``'s learner is promoted, and the gate's p-value (mcnemar) or None. The parent's
    validation answers are read from the store (``item_outcomes``), so a round measured before the split
    (an old store resumed) is paired item by item like any other."""
    parent = row.parent_learner_round
    if parent is None:
        return True, None
    before = ledger_exam.item_outcomes(ctx.db, parent, "validation")
    if ctx.cfg.measure.gate == "mcnemar":
        p = mcnemar_p(before, validation)
        return p >= ctx.cfg.measure.gate_p, p
    prev = ctx.round_row(parent).validation_accuracy
    if prev is None and before:  # measured before m010: its validation accuracy, from its answers
        prev = sum(before.values()) / len(before)
    now = sum(validation.values()) / len(validation) if validation else 0.0
    return prev is None or now >= prev - ctx.cfg.measure.promotion_tolerance, None


def _answer(
    ctx: RunContext,
    learner: Path,
    rows: list[TaskRow],
    n: int,
    temperature: float,
    seed: int,
    round_n: int,
    kind: str,
) -> list[list[tuple[str, bool]]]:
    """Per row, ``n`` graded answers, made and committed (``measurements``, with their usage) one batch of
    ``calibration.batch_size`` rows at a time, so a kill loses at most the batch in flight: a rerun takes the
    batches already stored from the store. Batches are fixed slices of ``rows`` (the frozen eval set, the
    round's exam version) with a seed each, so a rerun makes the same answers. Any sample without an answer
    (a failed generation) fails the phase: an eval accuracy over a subset would not be the fixed yardstick.
    Failed samples are recorded first."""
    stored = ledger_exam.stored_answers(ctx.db, round_n, kind)
    size = max(1, ctx.cfg.calibration.batch_size)
    out: list[list[tuple[str, bool]]] = []
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        if all((r["id"], i) in stored for r in chunk for i in range(n)):
            out += [[stored[(r["id"], i)] for i in range(n)] for r in chunk]
            continue
        ctx.check_stop()
        out += _answer_batch(ctx, learner, chunk, n, temperature, derive_seed(seed, start), round_n, kind)
        ctx.beat()
    return out


def _answer_batch(
    ctx: RunContext,
    learner: Path,
    rows: list[TaskRow],
    n: int,
    temperature: float,
    seed: int,
    round_n: int,
    kind: str,
) -> list[list[tuple[str, bool]]]:
    tasks = [ctx.task_from_row(r) for r in rows]
    if not tasks:
        return []
    prompts = [ctx.domains[t.domain].solo_prompt(t) for t in tasks]  # in the run's prompt style
    outs = ctx.generator(learner, phase="measure").generate(
        prompts, n=n, temperature=temperature, max_tokens=ctx.cfg.measure.max_tokens, seed=seed
    )
    flat = [c for cs in outs for c in cs]
    count_generated(ctx, "learner", flat)
    failed = [
        (r["id"], None, i, c) for r, cs in zip(rows, outs, strict=True) for i, c in enumerate(cs) if c.failed
    ]
    graded = (
        []
        if failed
        else [
            [(c.text, ctx.domains[t.domain].grade(t, c.text)) for c in completions]
            for t, completions in zip(tasks, outs, strict=True)
        ]
    )
    with ctx.db.atomic():
        add_usage(ctx, round_n, "learner", str(round_n), flat)
        record_failures(ctx, round_n, "measure", "learner", failed)
        ledger_exam.insert_answers(
            ctx.db,
            [
                dict(round=round_n, kind=kind, task_id=r["id"], sample_idx=i, output=text, correct=int(ok))
                for r, answers in zip(rows, graded, strict=True)
                for i, (text, ok) in enumerate(answers)
            ],
        )
    if failed:
        raise PhaseFailed(
            "generator",
            f"measure: {len(failed)} of {len(flat)} samples got no answer "
            f"(first: {failed[0][3].error}); the phase is retried",
        )
    return graded


def run(ctx: RunContext, round_n: int) -> None:
    learner = ctx.learner_dir(round_n)
    row = ctx.round_row(round_n)
    eval_rows = ledger_tasks.eval_tasks(ctx.db, list(ctx.domains))
    with ctx.db.atomic():  # round 0, or the first round of a store made before the split (m010)
        splits = eval_split.assign(ctx, eval_rows)
    eval_results = _answer(
        ctx, learner, eval_rows, 1, 0.0, derive_seed(ctx.cfg.run.seed, round_n, "eval"), round_n, "eval"
    )
    ctx.check_stop()
    exam_ids = ledger_exam.version_items(ctx.db, round_n)
    exam_rows = [ledger_tasks.task_row(ctx.db, i) for i in exam_ids]
    n_exam = ctx.cfg.exam.num_samples
    exam_results = _answer(
        ctx,
        learner,
        exam_rows,
        n_exam,
        0.0 if n_exam == 1 else ctx.cfg.calibration.temperature,
        derive_seed(ctx.cfg.run.seed, round_n, "exam"),
        round_n,
        "exam",
    )
    ctx.check_stop()

    outcomes = {r["id"]: answers[0][1] for r, answers in zip(eval_rows, eval_results, strict=True)}
    part = {s: [r for r in eval_rows if splits[r["id"]] == s] for s in ledger_exam.SPLITS}
    test_acc, test_by_domain = _accuracy(part["test"], outcomes)
    val_acc, val_by_domain = _accuracy(part["validation"], outcomes)
    frontier = _frontier(part["validation"], outcomes)
    exam_rates = [sum(ok for _, ok in answers) / len(answers) for answers in exam_results]
    exam_acc = sum(exam_rates) / len(exam_rates) if exam_rates else 0.0
    graduated = [
        r["id"] for r, rate in zip(exam_rows, exam_rates, strict=True) if rate >= ctx.cfg.exam.graduate_ratio
    ]
    promoted, p_value = gate(ctx, row, {r["id"]: outcomes[r["id"]] for r in part["validation"]})
    current = round_n if promoted else row.parent_learner_round

    with ctx.db.atomic():  # the answers are stored already (``_answer``)
        for task_id in graduated:
            ledger_exam.graduate(ctx.db, task_id, round_n)
        for d, value in frontier.items():
            ledger_rounds.set_frontier(ctx.db, round_n, d, value)
        ctx.advance(
            round_n,
            "snapshot",
            eval_accuracy=test_acc,
            eval_by_domain_json=json.dumps(test_by_domain),
            validation_accuracy=val_acc,
            validation_by_domain_json=json.dumps(val_by_domain),
            exam_accuracy=exam_acc,
            exam_items=len(exam_rows),
            promoted=int(promoted),
            current_learner_round=current,
        )
    ctx.log.info(
        "measured",
        extra={
            "eval_accuracy": round(test_acc, 4),
            "validation_accuracy": round(val_acc, 4),
            "exam_accuracy": round(exam_acc, 4),
            "exam_items": len(exam_rows),
            "graduated": len(graduated),
            "frontier": {d: round(v, 3) for d, v in frontier.items()},
            "promoted": promoted,
            "gate_p": None if p_value is None else round(p_value, 4),
        },
    )
    if not promoted:
        ctx.log.warning("promotion gate held the previous learner", extra={"current_learner_round": current})
