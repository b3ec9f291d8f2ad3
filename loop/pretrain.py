"""Continued pre-training in TRAIN (``[train.cpt]``): what the learner is pre-trained on before the main step.

The texts, deterministic for (store, round), so a rerun after a kill trains on the same ones:

* ``corpus``: the documents of every domain that has a ``corpus_texts()`` (the knowledge domain's
  synthetic world), then the ingested corpus chunks in the store (``store/corpus.py``);
* ``mastered``: the pretrain pool, every task routed to ``mastered`` up to this round, as
  ``"prompt\\nanswer"`` (the text ``zpd export --what pretrain`` writes), most recent first.

``job_fields`` writes them beside the round's training data and returns the ``TrainJob.pretrain`` the
trainer child runs first (``trainer/cpt.py``); ``finish`` reads the CPT result for the log and removes its
intermediate model. Their files are ``trainer/spec.py:JobFiles``'.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from zpd.store.atomic import atomic_write_text
from zpd.store.corpus import chunks
from zpd.store.examples import mastered_texts
from zpd.trainer.backends import backend_for
from zpd.trainer.spec import CPTParams, JobFiles, Pretrain

from .context import RunContext, rng_for
from .domains.base import HasCorpus, capability


def pretrain_texts(ctx: RunContext, round_n: int) -> list[str]:
    """The round's CPT texts from ``[train.cpt].sources``, at most ``max_texts``."""
    cfg = ctx.cfg.train.cpt
    texts: list[str] = []
    if "corpus" in cfg.sources:
        for name in sorted(ctx.domains):
            own_corpus = capability(ctx.domains[name], HasCorpus)
            corpus = None if own_corpus is None else own_corpus.corpus_texts
            if corpus is not None:
                texts += list(corpus())
        texts += [r["text"] for r in chunks(ctx.db)]
    if "mastered" in cfg.sources:
        texts += [f"{p}\n{a}" for p, a in mastered_texts(ctx.db, round_n)]
    return [t for t in texts if t.strip()][: cfg.max_texts]


def job_fields(ctx: RunContext, round_n: int, out: Path) -> Pretrain | None:
    """``TrainJob.pretrain`` for this round's job writing ``out`` (None when CPT is off or has no text)."""
    cfg = ctx.cfg.train.cpt
    if not cfg.enabled:
        return None
    backend = ctx.cfg.train.backend
    if not backend_for(backend).embedded:
        ctx.log.warning("train.cpt runs with the embedded backends only; skipped", extra={"backend": backend})
        return None
    texts = pretrain_texts(ctx, round_n)
    if not texts:
        return None
    from zpd.trainer.device import resolve_device

    path = JobFiles(out).cpt_data
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps({"text": t}) + "\n" for t in texts))
    params = CPTParams(epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                       seed=rng_for(ctx.cfg.run.seed, round_n, "cpt").randrange(2**31),
                       device=resolve_device(ctx.cfg.learner.device))
    ctx.log.info("continued pre-training first", extra={"texts": len(texts), "epochs": cfg.epochs})
    return Pretrain(data_path=str(path), params=params)


def finish(ctx: RunContext, out: Path) -> dict[str, Any]:
    """After the job: the CPT result ({} if none ran), logged; its intermediate model removed."""
    files = JobFiles(out)
    shutil.rmtree(files.cpt_model, ignore_errors=True)
    result_file = files.cpt_result
    if not result_file.is_file():
        return {}
    result: dict[str, Any] = json.loads(result_file.read_text())
    ctx.log.info("continued pre-training done", extra={
        "cpt_loss": result["loss"], "cpt_tokens": result["num_tokens"], "cpt_steps": result["num_steps"]})
    return result
