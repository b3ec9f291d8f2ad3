"""TRAIN: the round's ZPD tasks become training data, and a trainer backend makes the next learner.

The training set (``loop/training_set.py``) is checked against the exam and eval sets
(``loop/integrity.py``), then trained on by the configured backend (``loop/trainjob.py``,
``trainer/backends.py``), after continued pre-training when ``[train.cpt]`` asks for it; the curriculum
policy may add a step of its own (``Policy.after_train``: self-play's proposer update). The trainer
writes into ``work/round_N/<out>.tmp``, renamed to ``<out>`` only when complete. A rerun after a kill
therefore retrains from the same examples, or reuses a learner that was already complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zpd.store.ledger_rounds import RoundUpdate
from zpd.store.rounds import work_dir
from zpd.trainer.backends import backend_for
from zpd.trainer.spec import JobFiles, TrainParams

from . import integrity, pretrain
from .context import RunContext, rng_for
from .curriculum import build_source
from .training_set import build_examples, round_yield, training_set
from .trainjob import reuse_learner, run_trainer


def train_params(ctx: RunContext, round_n: int) -> TrainParams | None:
    """The round's parameters for the configured backend (seeded by round)."""
    from zpd.trainer.device import resolve_device

    seed = rng_for(ctx.cfg.run.seed, round_n, "train").randrange(2**31)
    device = resolve_device(ctx.cfg.learner.device)
    return backend_for(ctx.cfg.train.backend).round_params(ctx.cfg, seed, device)


def _train_learner(ctx: RunContext, round_n: int, parent: Path, out: Path, num_new: int,
                   data: list[dict[str, Any]]) -> dict[str, Any]:
    """The learner's training from ``parent`` into ``out`` (or ``parent`` kept, with too few new examples);
    its result (loss, num_tokens)."""
    work, files = out.parent, JobFiles(out)
    untrained: dict[str, Any] = {"loss": None, "num_tokens": 0}
    # Trained before a kill that came ahead of the phase commit: its result, when it was written.
    if out.is_dir() or (work / "learner").is_dir():
        return json.loads(files.result.read_text()) if files.result.is_file() else untrained
    if num_new < max(ctx.cfg.train.min_examples, 1):
        ctx.log.info("too few new examples; the learner is kept", extra={"new_examples": num_new})
        reuse_learner(parent, out)
        return untrained
    backend = ctx.cfg.train.backend
    ctx.log.info("training", extra={"new_examples": num_new, "examples": len(data), "backend": backend})
    result = run_trainer(ctx, backend=backend, learner=parent, data=data, out=out,
                         params=train_params(ctx, round_n), round_n=round_n, resume=files.tmp.exists(),
                         pretrain=pretrain.job_fields(ctx, round_n, out))
    result["num_tokens"] = (result.get("num_tokens") or 0) + pretrain.finish(ctx, out).get("num_tokens", 0)
    return result


def run(ctx: RunContext, round_n: int) -> None:
    parent = ctx.learner_dir(ctx.parent_learner_round(round_n))
    work = work_dir(ctx.state_dir, round_n)
    policy = build_source(ctx.cfg)
    out = policy.train_output(work)
    num_new = build_examples(ctx, round_n)
    # Exam integrity: the training set (new, replayed and bootstrap examples) against the exam and eval.
    data, decontamination = integrity.check(ctx.db, round_n, training_set(ctx, round_n), ctx.domains)
    result = _train_learner(ctx, round_n, parent, out, num_new, data)
    extra = policy.after_train(ctx, round_n, trained=out, out=work / "learner")
    figures = round_yield(ctx, round_n)
    with ctx.db.atomic():
        update = RoundUpdate(train_loss=result.get("loss"),
                             train_tokens=(result.get("num_tokens") or 0) + extra.num_tokens,
                             num_train_examples=num_new, decontamination_json=json.dumps(decontamination))
        update.update(figures)
        update.update(extra.columns)  # the policy's own step (self-play's proposer figures)
        ctx.advance(round_n, "measure", **update)
    ctx.metrics.set_yield(figures["yield_ratio"], figures["cost_per_accepted_usd"])
    ctx.log.info("trained", extra={"loss": result.get("loss"), "tokens": result.get("num_tokens"),
                                   "decontamination": decontamination, **figures})
