"""What every phase is handed: the state directory, the store, the round's config, domains, metrics.

Phases are plain functions ``run(ctx, round_n)`` that commit their outputs to the store in the same
transaction that advances ``rounds.phase``; they never keep state of their own between calls. The
``ctx`` a phase gets is the round's view (``RunContext.for_round``): ``ctx.cfg`` is the config the round
stored when it began, read-only. Every statement on the store is a function of ``zpd.store.ledger_*``
(``round_row``/``advance`` here are typed shorthands for ``zpd.store.ledger_rounds``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Unpack

from zpd.configs.schema import ZpdConfig
from zpd.store import ledger_rounds, ledger_tasks
from zpd.store import rounds as rounds_store
from zpd.store.db import Database

from .domains.base import Task
from .domains.prompting import Styled
from .errors import Stopped
from .metrics import DaemonMetrics


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from the master seed and a purpose, e.g. (seed, round, 'synthesize', domain)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def rng_for(*parts: object) -> random.Random:
    return random.Random(derive_seed(*parts))


@dataclass
class _Engines:
    """What every round's view of the run shares: the generators made so far and the trainer worker."""

    generators: dict[str, Any] = field(default_factory=dict)
    """Generators by (role, backend, learner), reused until ``release_generators``."""
    trainer_worker: Any = None
    """The persistent trainer worker (``trainer/worker.py``) once a job has started it; None: none."""


@dataclass
class RunContext:
    """The run's services (daemon-wide) and the config of the round being run. The daemon makes one with
    its own config; ``round.run_round`` hands the phases ``for_round(config the round stored)``, a view
    with the round's config and the same store, domains, metrics and engines (nothing is swapped)."""

    state_dir: Path
    _cfg: ZpdConfig
    db: Database
    domains: dict[str, Styled]
    """The run's domains, each seen through the prompt style (``domains.prompting.Styled``)."""
    metrics: DaemonMetrics
    log: logging.Logger
    stop: threading.Event = field(default_factory=threading.Event)
    beat: Callable[[], None] = lambda: None
    """Called at progress points: feeds /healthz and the systemd watchdog."""
    _engines: _Engines = field(default_factory=_Engines)

    @property
    def cfg(self) -> ZpdConfig:
        """The config in force: the round's (``for_round``), else the daemon's. Read-only."""
        return self._cfg

    def for_round(self, cfg: ZpdConfig) -> RunContext:
        """A view of this context running with ``cfg`` (a round's stored config); engines are shared."""
        return dataclasses.replace(self, _cfg=cfg)

    @property
    def trainer_worker(self) -> Any:
        """The persistent trainer worker (``trainer/worker.py``) once a job has started it; None: none."""
        return self._engines.trainer_worker

    @trainer_worker.setter
    def trainer_worker(self, worker: Any) -> None:
        self._engines.trainer_worker = worker

    @property
    def _generators(self) -> dict[str, Any]:
        return self._engines.generators

    # -- stopping -----------------------------------------------------------------------
    def check_stop(self) -> None:
        if self.stop.is_set():
            raise Stopped()

    # -- learners -----------------------------------------------------------------------
    def learner_dir(self, round_n: int) -> Path:
        """Where round ``round_n``'s learner is: its committed directory, or its work dir before SNAPSHOT."""
        committed = rounds_store.round_dir(self.state_dir, round_n) / "learner"
        if committed.is_dir():
            return committed
        return rounds_store.work_dir(self.state_dir, round_n) / "learner"

    def current_learner_round(self) -> int | None:
        """The round whose learner is current: that of the newest committed round's promotion decision."""
        return ledger_rounds.current_learner_round(self.db)

    def generator(self, learner_dir: Path, *, phase: str = "calibrate") -> Any:
        """The learner's generator (``generation.backend``; ``generation.measure_backend`` in MEASURE), made
        once per (backend, learner) and reused until ``release_generators``. With the openai backend
        ``learner_dir`` is not read: the server serves the learner."""
        gen_cfg = self.cfg.generation
        name = gen_cfg.backend
        if phase == "measure" and gen_cfg.measure_backend != "same":
            name = gen_cfg.measure_backend
        key = f"learner:{name}:{learner_dir}"
        if key not in self._generators:
            self.release_trainer(exit=name == "vllm")
            for old in [k for k in self._generators if k.startswith("learner:")]:
                self._generators.pop(old).close()
            from zpd.trainer.device import resolve_device
            from zpd.trainer.generation import build_generator

            if (worker := self._generating_worker(name)) is not None:
                self._generators[key] = self._worker_generator(worker, learner_dir)
                return self._generators[key]
            settings: Any = gen_cfg.openai if name == "openai" else gen_cfg.vllm
            model = gen_cfg.openai.model if name == "openai" else learner_dir
            # served: replicas on this learner (trainer/served.py); their registry in the state dir
            if name == "served":
                from zpd.trainer.served import ServedSettings

                settings = ServedSettings(
                    self.cfg.served,
                    self.state_dir / "served",
                    self.cfg.storage.shared_dir,
                    self.cfg.run.seed,
                    self.metrics,
                )
            self._generators[key] = build_generator(
                name,
                model=model,
                settings=settings,
                device=resolve_device(self.cfg.learner.device),
                batch_size=self.cfg.calibration.batch_size,
            )
        return self._generators[key]

    def _generating_worker(self, backend: str) -> Any:
        """The trainer worker when it serves this generation (the embedded backend on the CPU), else None."""
        from zpd.trainer.device import resolve_device

        if backend != "embedded" or resolve_device(self.cfg.learner.device) != "cpu":
            return None
        return self.worker()

    def _worker_generator(self, worker: Any, model: str | Path) -> Any:
        from zpd.trainer.threads import learner_size
        from zpd.trainer.worker import WorkerGenerator

        cfg = self.cfg
        return WorkerGenerator(worker, model, device="cpu", batch_size=cfg.calibration.batch_size,
                               torch_threads=cfg.runtime.torch_threads, num_params=learner_size(cfg),
                               timeout_seconds=cfg.train.timeout_seconds)

    def worker(self) -> Any:
        """The run's persistent trainer worker (``train.persistent_worker``; auto: on for a CPU learner),
        made on first use and shared by every round's view; None when each training job gets a fresh
        child (then no worker runs). It trains, and on the CPU it serves the embedded generation too."""
        from zpd.trainer.device import resolve_device
        from zpd.trainer.worker import TrainerWorker

        setting = self.cfg.train.persistent_worker
        if setting == "off" or (setting == "auto" and resolve_device(self.cfg.learner.device) != "cpu"):
            self.close_trainer()
            return None
        if self.trainer_worker is None:
            self.trainer_worker = TrainerWorker(cwd=self.state_dir)
        return self.trainer_worker

    def teacher_generator(self) -> Any:
        """The teacher's generator (``[teacher]``); None when no teacher is configured."""
        t = self.cfg.teacher
        if t is None:
            return None
        key = f"teacher:{t.backend}:{t.model}"
        if key not in self._generators:
            self.release_trainer(exit=t.backend == "vllm")
            from zpd.trainer.device import resolve_device
            from zpd.trainer.generation import build_generator

            if (worker := self._generating_worker(t.backend)) is not None:
                self._generators[key] = self._worker_generator(worker, t.model)
                return self._generators[key]
            settings = t if t.backend == "openai" else self.cfg.generation.vllm
            self._generators[key] = build_generator(
                t.backend,
                model=t.model,
                settings=settings,
                device=resolve_device(self.cfg.learner.device),
                batch_size=self.cfg.calibration.batch_size,
            )
        return self._generators[key]

    def release_trainer(self, *, exit: bool = False) -> None:
        """Before a generator is made on a GPU: the trainer worker drops its model and frees CUDA's cache
        (``exit``, for vLLM, which sizes itself to the free memory: the worker exits). On the CPU: nothing."""
        from zpd.trainer.device import resolve_device

        if self.trainer_worker is not None and resolve_device(self.cfg.learner.device) == "cuda":
            self.trainer_worker.release(exit=exit)

    def close_trainer(self) -> None:
        """Stop the trainer worker, if one runs (the daemon stops)."""
        if self.trainer_worker is not None:
            self.trainer_worker.close()
            self.trainer_worker = None

    def release_generators(self, final: bool = False) -> None:
        """Close every generator (a vllm child exits here, served replicas stop: before TRAIN, the GPU memory
        comes back). ``final`` (the daemon exits): also the replicas parked for a LoRA reload."""
        for gen in self._generators.values():
            gen.close()
        self._generators.clear()
        served = sys.modules.get("zpd.trainer.served")
        if final and served is not None:
            served.stop_parked()

    # -- rounds -------------------------------------------------------------------------
    def round_row(self, round_n: int) -> ledger_rounds.RoundRow:
        return ledger_rounds.read_round(self.db, round_n)

    def parent_learner_round(self, round_n: int) -> int:
        """The round whose learner round ``round_n`` starts from (every round after round 0 has one)."""
        parent = self.round_row(round_n).parent_learner_round
        if parent is None:
            raise ValueError(f"round {round_n} has no parent learner: only round 0 starts from none")
        return parent

    def advance(self, round_n: int, next_phase: str, **fields: Unpack[ledger_rounds.RoundUpdate]) -> None:
        """Set the round's next phase and the phase's figures (call inside the phase's final transaction;
        the names are checked against ``zpd.store.ledger_rounds.RoundUpdate``)."""
        ledger_rounds.advance(self.db, round_n, next_phase, **fields)

    # -- tasks --------------------------------------------------------------------------
    def task_from_row(self, row: dict[str, Any]) -> Task:
        return Task(
            domain=row["domain"],
            difficulty=row["difficulty"],
            prompt=row["prompt"],
            answer=row["answer"],
            guidance=row["guidance"],
            canonical=row["canonical"],
            meta=json.loads(row["meta_json"] or "{}"),
        )

    def insert_task(self, task: Task, *, round_n: int, fate: str, parent_id: int | None = None) -> int | None:
        """Insert a task unless one with the same content hash exists; returns its id or None (duplicate)."""
        return ledger_tasks.insert_task(
            self.db,
            domain=task.domain,
            difficulty=task.difficulty,
            prompt=task.prompt,
            answer=task.answer,
            guidance=task.guidance,
            canonical=task.canonical,
            content_hash=task.content_hash,
            parent_id=parent_id,
            round_n=round_n,
            fate=fate,
            meta_json=json.dumps(task.meta, sort_keys=True),
        )

    def known_hashes(self) -> set[str]:
        return ledger_tasks.known_hashes(self.db)
