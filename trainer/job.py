"""A training job's child side: ``python -m zpd.trainer.job JOB.json``, so the daemon can time it out and
kill it as a whole tree (``trainer/process.py:run_job`` starts and supervises it).

The child prints one JSON line per event on stdout (``{"event": "start", "pid"}`` first, then
``{"event": "step", "step", "total", "loss", "tokens"}``), writes ``result_path`` (the TrainResult as
JSON) atomically at the end and exits 0; on any exception it prints the traceback on stderr and
exits 1. What a job runs is its backend's ``execute`` (``trainer/backends.py``); its files are named in
``trainer/spec.py:JobFiles``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from zpd.store.atomic import atomic_write_text

from .backends import embedded_backend
from .process import (
    TrainJobFailed,
    TrainJobStopped,
    child_argv,
    emit,
    kill_tree,
    run_job,
)
from .result import TrainResult
from .spec import TrainJob

__all__ = ["TrainJob", "TrainJobFailed", "TrainJobStopped", "child_argv", "execute_job", "kill_tree",
           "run_job", "run_job_child"]
"""Re-exported: the daemon side's names, where callers of a job have always found them."""


def _read_rows(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _resume_args(job: TrainJob, name: str) -> dict[str, Any]:
    """The checkpoint arguments of one training step of ``job`` (none without ``checkpoint_dir``); a resume
    is reported as a "resumed" event (step, total, seconds_saved: training time not redone)."""
    if not job.checkpoint_dir:
        return {}

    def on_resume(step: int, total: int, seconds: float) -> None:
        emit({"event": "resumed", "part": name, "step": step, "total": total,
              "seconds_saved": round(seconds, 3)})

    return {"checkpoint": str(Path(job.checkpoint_dir) / f"{name}.pt"),
            "checkpoint_seconds": job.checkpoint_seconds, "on_resume": on_resume}


def _pretrained(job: TrainJob) -> TrainJob:
    """``job`` itself, or with ``job.pretrain``: CPT into ``job.cpt_out_dir`` (its result at
    ``job.cpt_result_path``, its steps as "cpt-step" events) and the job starting from there."""
    if job.pretrain is None:
        return job
    from .cpt import train_cpt

    def on_step(step: int, total: int, loss: float, tokens: int) -> None:
        emit({"event": "cpt-step", "step": step, "total": total, "loss": loss, "tokens": tokens})

    out = job.cpt_out_dir
    shutil.rmtree(out, ignore_errors=True)
    texts = [r["text"] for r in _read_rows(job.pretrain.data_path)]
    result = train_cpt(Path(job.learner_dir), texts, out, on_step=on_step, **job.pretrain.params.kwargs(),
                       **_resume_args(job, "cpt"))
    if job.result_path:
        atomic_write_text(job.cpt_result_path, json.dumps(asdict(result)))
    return replace(job, learner_dir=str(out), pretrain=None)


def _run(job: TrainJob) -> TrainResult:
    if job.threads:
        from .threads import apply_threads

        apply_threads(job.threads)
    job = _pretrained(job)

    def on_step(step: int, total: int, loss: float, tokens: int) -> None:
        emit({"event": "step", "step": step, "total": total, "loss": loss, "tokens": tokens})

    return embedded_backend(job.backend).execute(job, _read_rows(job.data_path), on_step,
                                                 lambda name: _resume_args(job, name))


def execute_job(job_path: Path) -> None:
    """Run the job described in ``job_path`` and write its result atomically (a child per job and the
    persistent worker both run jobs through this; each reports failures its own way)."""
    text = Path(job_path).read_text()
    job = TrainJob.from_json(text, embedded_backend(TrainJob.backend_of(text)).params_type)
    result = _run(job)
    atomic_write_text(Path(job.result_path), json.dumps(asdict(result)))


def run_job_child(job_path: Path) -> int:
    """Run the job described in ``job_path``; 0 on success (result written), 1 on any error."""
    emit({"event": "start", "pid": os.getpid()})
    try:
        execute_job(job_path)
    except BaseException as exc:  # noqa: BLE001  (the parent only sees the exit code and the log)
        import traceback

        traceback.print_exc(file=sys.stderr)
        sys.stderr.write(f"training job failed: {type(exc).__name__}: {exc}\n")
        sys.stderr.flush()
        return 1
    emit({"event": "done"})
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m zpd.trainer.job JOB.json\n")
        sys.exit(2)
    from zpd.trainer.quick_exit import exit_now  # the result is written: the torch teardown is skipped

    exit_now(run_job_child(Path(sys.argv[1])))
