"""One training run from the loop's side: rows out, the backend's run, the trained learner in.

TRAIN, the round-0 bootstrap and the self-play proposer step all train through ``run_trainer``; the
backend (``trainer/backends.py``) decides how. Its files are ``trainer/spec.py:JobFiles`` of the output
directory: the model is trained into ``<out>.tmp`` and renamed to ``<out>`` only when complete, so a rerun
after a kill retrains from the same rows (resuming from ``<out>.ckpt``) or finds the learner complete.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from zpd.store.atomic import atomic_write_text
from zpd.trainer.backends import TrainRequest, backend_for
from zpd.trainer.process import TrainJobFailed, TrainJobStopped, run_job
from zpd.trainer.result import TrainResult
from zpd.trainer.spec import JobFiles, Pretrain, TrainJob, TrainParams
from zpd.trainer.worker import TrainerWorker

from .context import RunContext
from .errors import PhaseFailed, Stopped
from .logs import Progress


class _ProgressLog:
    """A run's progress events as heartbeats, a progress bar, the training metrics and a log line a
    half-minute (and at the last step)."""

    def __init__(self, ctx: RunContext, round_n: int) -> None:
        self.ctx, self.round_n = ctx, round_n
        self.last_tokens = 0
        self.last_log = time.monotonic()
        self.bar: Progress | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        ctx = self.ctx
        ctx.beat()
        if event.get("event") == "resumed":
            ctx.log.info("training resumed from its checkpoint", extra={
                "part": event.get("part"), "step": event.get("step"), "total": event.get("total"),
                "seconds_saved": event.get("seconds_saved")})
        if event.get("event") == "step":
            if self.bar is None:
                self.bar = Progress(f"round {self.round_n} train", int(event.get("total") or 1),
                                    ctx.cfg.logging.progress)
            self.bar.update(int(event.get("step") or 0))
            tokens = int(event.get("tokens", 0))
            ctx.metrics.train_progress(float(event.get("loss", 0.0)), max(0, tokens - self.last_tokens))
            self.last_tokens = tokens
            if time.monotonic() - self.last_log >= 30 or event.get("step") == event.get("total"):
                self.last_log = time.monotonic()
                ctx.log.info("training progress", extra={
                    "step": event.get("step"), "total": event.get("total"), "loss": event.get("loss"),
                    "tokens": tokens})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_trainer(ctx: RunContext, *, backend: str, learner: Path, data: list[dict[str, Any]], out: Path,
                params: TrainParams | None, round_n: int, resume: bool = False,
                pretrain: Pretrain | None = None) -> dict[str, Any]:
    """Run one training job with ``backend`` (a child process, the persistent worker, or a verl run: local
    or on Ray) from ``learner`` into ``out``; returns its result (loss, num_tokens, num_steps, seconds).
    ``resume``: this round's training was interrupted before. ``pretrain``: continued pre-training first,
    in the same job (``loop/pretrain.py``)."""
    from zpd.trainer.threads import threads_for

    files = JobFiles(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(files.data, "".join(json.dumps(row) + "\n" for row in data))
    if files.tmp.exists():
        shutil.rmtree(files.tmp)
    progress = _ProgressLog(ctx, round_n)
    # The persistent worker's generation since the last job is this run's own work, not competition.
    worker_pid = ctx.trainer_worker.pid if ctx.trainer_worker is not None else None
    threads = threads_for(ctx.cfg, [worker_pid] if worker_pid else [])
    request = TrainRequest(cfg=ctx.cfg, learner=learner, rows=data, files=files, round_n=round_n,
                           params=params, pretrain=pretrain, resume=resume, threads=threads,
                           on_progress=progress, should_stop=ctx.stop.is_set)
    ctx.release_generators()  # give the memory back before training
    began = time.monotonic()
    try:
        result = backend_for(backend).train(request, lambda job: _run_job(ctx, job, progress))
    except TrainJobStopped:
        raise Stopped() from None
    except TrainJobFailed as exc:
        tail = "\n".join(exc.log_tail.splitlines()[-5:]) if getattr(exc, "log_tail", "") else ""
        raise PhaseFailed("trainer", f"training failed: {exc}" + (f"\n{tail}" if tail else "")) from None
    finally:
        progress.close()
    files.tmp.rename(out)
    shutil.rmtree(files.checkpoints, ignore_errors=True)  # survived a kill; not needed once complete
    # compute_seconds: inside the trainer (load, steps, save); wall_seconds adds start-up and hand-over.
    ctx.log.info("training job finished", extra={
        "backend": backend, "compute_seconds": round(result.seconds, 3),
        "wall_seconds": round(time.monotonic() - began, 3)})
    return {"loss": result.loss, "num_tokens": result.num_tokens, "num_steps": result.num_steps,
            "seconds": result.seconds}


def _run_job(ctx: RunContext, job: TrainJob, progress: _ProgressLog) -> TrainResult:
    """An embedded job, in the run's persistent worker or in a fresh child."""
    worker = trainer_worker(ctx)
    if worker is not None:
        return worker.run(job, timeout_seconds=ctx.cfg.train.timeout_seconds, on_progress=progress,
                          should_stop=ctx.stop.is_set)
    return run_job(job, timeout_seconds=ctx.cfg.train.timeout_seconds, on_progress=progress,
                   should_stop=ctx.stop.is_set)


def trainer_worker(ctx: RunContext) -> TrainerWorker | None:
    """The run's persistent trainer worker; None when jobs get a fresh child each (``RunContext.worker``)."""
    worker: TrainerWorker | None = ctx.worker()
    return worker


def reuse_learner(source: Path, out: Path) -> None:
    """``out`` becomes ``source`` unchanged (hard-linked or copied through ``<out>.tmp``): a step that has
    nothing to train on keeps its learner."""
    from zpd.store.rounds import link_or_copy_tree

    tmp = JobFiles(out).tmp
    if tmp.exists():
        shutil.rmtree(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    link_or_copy_tree(source, tmp)
    tmp.rename(out)
