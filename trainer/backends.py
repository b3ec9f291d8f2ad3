"""The trainer backends, one registry: what TRAIN asks of a backend, on both sides of the process boundary.

    backend = backend_for(cfg.train.backend)           # unknown name: ValueError naming the known ones
    params = backend.round_params(cfg, seed, device)   # the round's typed parameters (None: from [verl])
    result = backend.train(request, run_job)           # daemon side: one training run, a TrainResult

* ``embedded-sft``, ``embedded-grpo``: a zpd training job (``trainer/spec.py:TrainJob``) run in a child
  process or the persistent worker (``run_job``, chosen by the caller); in the child, ``execute`` runs it
  (``trainer/job.py``).
* ``embedded-grpo-groups``: the self-play proposer's update (``loop/selfplay.py``), a job like the others;
  not a ``train.backend`` choice.
* ``verl-sft``, ``verl-grpo``: a verl run, locally or as a Ray job (``trainer/verl/``).

A new backend is a class with the ``TrainerBackend`` members plus ``register``; an embedded one also has
``params_type`` and ``execute`` (``EmbeddedBackend``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

from .process import emit
from .result import TrainResult
from .spec import GroupsParams, GRPOParams, JobFiles, Pretrain, SFTParams, TrainJob, TrainParams

if TYPE_CHECKING:
    from zpd.configs.schema import ZpdConfig

ExampleKind = Literal["sft", "rl"]
StepCallback = Callable[[int, int, float, int], None]
"""on_step(step, total, loss, tokens so far), as the embedded trainers call it."""
ResumeArgs = Callable[[str], dict[str, Any]]
"""The checkpoint keyword arguments of one named step of a job (``main``, ``cpt``, ``format``)."""
JobRunner = Callable[[TrainJob], TrainResult]
"""Runs a job to its end: ``run_job`` in a fresh child, or the persistent worker's ``run``."""


@dataclass(frozen=True)
class TrainRequest:
    """One training run as TRAIN (or the bootstrap, or the proposer step) asks for it."""

    cfg: ZpdConfig
    learner: Path
    """The model trained from."""
    rows: list[dict[str, Any]]
    """The training rows (their fields: ``TrainJob.data_path``)."""
    files: JobFiles
    """The run's files; the trained model goes into ``files.tmp``."""
    round_n: int
    params: TrainParams | None
    """The main step's parameters (None for verl, which reads ``[verl]``)."""
    pretrain: Pretrain | None = None
    resume: bool = False
    """This round's training was interrupted before (verl resumes from its checkpoint)."""
    threads: int = 0
    on_progress: Callable[[dict[str, Any]], None] | None = None
    should_stop: Callable[[], bool] | None = None


@runtime_checkable
class TrainerBackend(Protocol):
    """What the daemon asks of a trainer backend."""

    name: str
    example_kind: ExampleKind
    """The examples TRAIN stores for it: ``sft`` (prompt and target answer) or ``rl`` (prompt and reward)."""
    embedded: bool
    """Runs as a zpd training job: continued pre-training and the proposer's update need it."""

    def round_params(self, cfg: ZpdConfig, seed: int, device: str) -> TrainParams | None:
        """The parameters of a round's training under ``cfg`` (None: the backend reads its own config)."""
        ...

    def train(self, request: TrainRequest, run_job: JobRunner) -> TrainResult:
        """Train ``request.learner`` into ``request.files.tmp``; raises TrainJobFailed or TrainJobStopped."""
        ...


@runtime_checkable
class EmbeddedBackend(TrainerBackend, Protocol):
    """A backend whose training runs inside a zpd job child (``trainer/job.py``)."""

    params_type: type[TrainParams]

    def execute(self, job: TrainJob, rows: list[dict[str, Any]], on_step: StepCallback,
                resume: ResumeArgs) -> TrainResult:
        """In the child: run ``job``'s main step on ``rows`` (its data file's)."""
        ...


BACKENDS: dict[str, TrainerBackend] = {}
PROPOSER_BACKEND = "embedded-grpo-groups"
"""The backend of the self-play proposer's update (TRAIN's second step under self-play)."""

_B = TypeVar("_B", bound=TrainerBackend)


def register(cls: type[_B]) -> type[_B]:
    """Class decorator: one instance of ``cls`` is the backend named ``cls.name``."""
    BACKENDS[cls.name] = cls()
    return cls


def backend_for(name: str) -> TrainerBackend:
    """The backend registered as ``name``."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown trainer backend {name!r} (known: {', '.join(sorted(BACKENDS))})") from None


def embedded_backend(name: str) -> EmbeddedBackend:
    """The embedded backend ``name`` (the child side of a job)."""
    backend = backend_for(name)
    if not isinstance(backend, EmbeddedBackend):
        raise ValueError(f"unknown trainer backend {name!r}: not one a training job runs")
    return backend


def bootstrap_params(cfg: ZpdConfig, device: str) -> SFTParams:
    """Round 0's warm-up on the bootstrap set (``loop/bootstrap.py``), with the run's seed."""
    return SFTParams(epochs=cfg.bootstrap.epochs, batch_size=cfg.train.batch_size,
                     learning_rate=cfg.bootstrap.learning_rate, weight_decay=cfg.train.weight_decay,
                     seed=cfg.run.seed, device=device)


def proposer_params(cfg: ZpdConfig, seed: int, device: str, *, format_first: bool) -> GroupsParams:
    """The self-play proposer's update; ``format_first``: with the format fine-tune of its cold start
    (the bootstrap's epochs, TRAIN's batch size and learning rate)."""
    c = cfg.curriculum
    fmt = SFTParams(epochs=cfg.bootstrap.epochs, batch_size=cfg.train.batch_size,
                    learning_rate=cfg.train.learning_rate, seed=seed, device=device) if format_first else None
    return GroupsParams(steps=c.selfplay_steps, learning_rate=c.selfplay_learning_rate, seed=seed,
                        device=device, format=fmt)


# -- embedded ---------------------------------------------------------------------------------------
class _Embedded:
    """A zpd training job, run by the caller's ``run_job``."""

    name: str
    example_kind: ExampleKind
    params_type: type[TrainParams]
    embedded = True

    def round_params(self, cfg: ZpdConfig, seed: int, device: str) -> TrainParams | None:
        t = cfg.train
        return SFTParams(epochs=t.epochs, batch_size=t.batch_size, learning_rate=t.learning_rate,
                         weight_decay=t.weight_decay, seed=seed, device=device)

    def train(self, request: TrainRequest, run_job: JobRunner) -> TrainResult:
        if not isinstance(request.params, self.params_type):
            raise TypeError(f"{self.name} takes {self.params_type.__name__}, "
                            f"not {type(request.params).__name__}")
        f = request.files
        return run_job(TrainJob(
            backend=self.name, learner_dir=str(request.learner), out_dir=str(f.tmp), data_path=str(f.data),
            params=request.params, result_path=str(f.result), pretrain=request.pretrain,
            threads=request.threads, checkpoint_dir=str(f.checkpoints),
            checkpoint_seconds=request.cfg.train.checkpoint_seconds))


@register
class EmbeddedSFT(_Embedded):
    name = "embedded-sft"
    example_kind: ExampleKind = "sft"
    params_type = SFTParams

    def execute(self, job: TrainJob, rows: list[dict[str, Any]], on_step: StepCallback,
                resume: ResumeArgs) -> TrainResult:
        from .sft import SFTExample, train_sft

        assert isinstance(job.params, SFTParams)
        examples = [SFTExample(r["prompt"], r["response"]) for r in rows]
        return train_sft(Path(job.learner_dir), examples, Path(job.out_dir), on_step=on_step,
                         **job.params.kwargs(), **resume("main"))


@register
class EmbeddedGRPO(_Embedded):
    name = "embedded-grpo"
    example_kind: ExampleKind = "rl"
    params_type = GRPOParams

    def round_params(self, cfg: ZpdConfig, seed: int, device: str) -> TrainParams | None:
        t = cfg.train
        return GRPOParams(num_samples=t.grpo_num_samples, steps=t.grpo_steps,
                          prompts_per_step=t.grpo_prompts_per_step, learning_rate=t.learning_rate,
                          max_tokens=cfg.calibration.max_tokens,
                          temperature=max(cfg.calibration.temperature, 0.5), seed=seed, device=device)

    def execute(self, job: TrainJob, rows: list[dict[str, Any]], on_step: StepCallback,
                resume: ResumeArgs) -> TrainResult:
        from .grpo import train_grpo

        assert isinstance(job.params, GRPOParams)
        return train_grpo(Path(job.learner_dir), [r["prompt"] for r in rows], grpo_reward(rows),
                          Path(job.out_dir), on_step=on_step, **job.params.kwargs(), **resume("main"))


def grpo_reward(rows: list[dict[str, Any]]) -> Callable[[int, str], float]:
    """reward(i, text): 1.0 when the row's domain grades ``text`` correct, else 0.0.

    Rows carry their task (``task_json``: the ``Task`` fields); it is graded by its domain's own grader
    (``zpd.loop.domains.registry.grader_for``, built with the default config: graders do not depend on it),
    so a worked answer ("...>125") or a dataset item's numeric tolerance is judged exactly as calibration
    judged it. A row without ``task_json`` is graded by exact match with its ``answer``."""
    from zpd.loop.domains.base import Task
    from zpd.loop.domains.registry import grader_for

    graders: dict[str, Callable[[Task, str], bool]] = {}
    tasks: list[Task | None] = []
    for row in rows:
        spec = row.get("task_json")
        if spec is None:
            tasks.append(None)
            continue
        task = Task(**(json.loads(spec) if isinstance(spec, str) else spec))
        if task.domain not in graders:  # graded in the prompt style the learner was prompted in
            graders[task.domain] = grader_for(task.domain, row.get("prompt_style", "bare"))
        tasks.append(task)

    def reward(index: int, text: str) -> float:
        task = tasks[index]
        if task is None:
            return 1.0 if text.strip() == str(rows[index]["answer"]).strip() else 0.0
        return 1.0 if graders[task.domain](task, text) else 0.0

    return reward


@register
class EmbeddedGRPOGroups(_Embedded):
    """The self-play proposer's GRPO update on groups scored before the job; optionally a format
    fine-tune first, in the same job (its steps reported as "format-step" events)."""

    name = "embedded-grpo-groups"
    example_kind: ExampleKind = "rl"
    params_type = GroupsParams

    def round_params(self, cfg: ZpdConfig, seed: int, device: str) -> TrainParams | None:
        return proposer_params(cfg, seed, device, format_first=False)

    def execute(self, job: TrainJob, rows: list[dict[str, Any]], on_step: StepCallback,
                resume: ResumeArgs) -> TrainResult:
        import shutil

        from .grpo import train_grpo_groups

        params = job.params
        assert isinstance(params, GroupsParams)
        start, format_tokens = Path(job.learner_dir), 0
        fmt = [r for r in rows if r.get("format")]
        if fmt:  # the proposer's cold start (loop/selfplay.py)
            from .sft import SFTExample, train_sft

            if params.format is None:
                raise ValueError("format rows in the data, but no GroupsParams.format")

            def on_format_step(step: int, total: int, loss: float, tokens: int) -> None:
                emit({"event": "format-step", "step": step, "total": total, "loss": loss, "tokens": tokens})

            start = job.format_out_dir
            shutil.rmtree(start, ignore_errors=True)
            lesson = [SFTExample(r["prompt"], r["response"]) for r in fmt]
            format_tokens = train_sft(Path(job.learner_dir), lesson, start, on_step=on_format_step,
                                      **params.format.kwargs(), **resume("format")).num_tokens
        groups: dict[object, list[tuple[str, str, bool, float]]] = {}
        for r in rows:
            if not r.get("format"):
                groups.setdefault(r["group"], []).append(
                    (r["prompt"], r["completion"], bool(r["ended"]), float(r["reward"])))
        result = train_grpo_groups(start, list(groups.values()), Path(job.out_dir), on_step=on_step,
                                   **params.kwargs(), **resume("main"))
        result.num_tokens += format_tokens  # every token the job trained on
        return result


# -- verl -------------------------------------------------------------------------------------------
class _Verl:
    """A verl run (``trainer/verl/run.py``): its parameters are the ``[verl]`` and ``[train]`` config."""

    name: str
    example_kind: ExampleKind
    embedded = False

    def round_params(self, cfg: ZpdConfig, seed: int, device: str) -> TrainParams | None:
        return None

    def train(self, request: TrainRequest, run_job: JobRunner) -> TrainResult:
        from .verl import train_with_verl

        return train_with_verl(request.cfg, backend=self.name, learner_dir=request.learner, rows=request.rows,
                               out_dir=request.files.tmp, work_dir=request.files.out.parent,
                               round_n=request.round_n, on_progress=request.on_progress,
                               should_stop=request.should_stop, resume=request.resume)


@register
class VerlSFT(_Verl):
    name = "verl-sft"
    example_kind: ExampleKind = "sft"


@register
class VerlGRPO(_Verl):
    name = "verl-grpo"
    example_kind: ExampleKind = "rl"
