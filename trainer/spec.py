"""What crosses the process boundary of a training job: the job, its typed parameters, and its file names.

The daemon writes a ``TrainJob`` as JSON (``TrainJob.to_json``); the child (``python -m zpd.trainer.job``)
or the persistent worker reads it back (``TrainJob.from_json``) with the parameters typed for its backend.
Torch-free: the daemon side imports it cheaply.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


# -- parameters, one class per kind of training step ------------------------------------------------
@dataclass(frozen=True, slots=True)
class SFTParams:
    """Keyword arguments of ``train_sft`` (``trainer/sft.py``): fine-tuning on (prompt, response) pairs."""

    epochs: float
    """Passes over the examples (fractional: a prefix of the last pass)."""
    batch_size: int
    learning_rate: float
    """Peak learning rate of the warm-up/cosine schedule."""
    weight_decay: float = 0.0
    seed: int = 0
    """Shuffling and initialisation seed (deterministic on the CPU)."""
    device: str = "cpu"
    """A resolved torch device (``cpu``, ``cuda``)."""

    def kwargs(self) -> dict[str, Any]:
        """The trainer function's keyword arguments."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CPTParams(SFTParams):
    """Keyword arguments of ``train_cpt`` (``trainer/cpt.py``): causal-LM training on plain texts; the
    same fields as SFT."""


@dataclass(frozen=True, slots=True)
class GRPOParams:
    """Keyword arguments of ``train_grpo`` (``trainer/grpo.py``): on-line GRPO with the domains' graders."""

    num_samples: int
    """Samples per prompt (one group), at least 2."""
    steps: int
    prompts_per_step: int
    learning_rate: float
    max_tokens: int
    """Longest sampled completion."""
    temperature: float = 1.0
    seed: int = 0
    device: str = "cpu"

    def kwargs(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class GroupsParams:
    """Keyword arguments of ``train_grpo_groups``: the self-play proposer's GRPO update on groups sampled
    and scored before the job (``loop/selfplay.py``)."""

    steps: int
    learning_rate: float
    seed: int = 0
    device: str = "cpu"
    format: SFTParams | None = None
    """A format fine-tune on the job's ``format`` rows first (the proposer's cold start); None: none."""

    def kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "format"}


TrainParams = SFTParams | GRPOParams | GroupsParams
"""The parameters of a job's main step; which class a backend takes is its ``params_type``."""


@dataclass(frozen=True, slots=True)
class Pretrain:
    """Continued pre-training in the same job, before its main step (``trainer/cpt.py``)."""

    data_path: str
    """JSONL of {"text"} rows."""
    params: CPTParams


# -- file names -------------------------------------------------------------------------------------
SUFFIXES = {
    "tmp": ".tmp",
    "data": ".data.jsonl",
    "result": ".result.json",
    "checkpoints": ".ckpt",
    "cpt_data": ".cpt.jsonl",
    "spec": ".job.json",
    "cpt_model": ".cpt",
    "cpt_result": ".cpt.json",
    "format_model": ".format",
}
"""Every file name the daemon and the job share, as a suffix of another (see ``JobFiles``)."""


def _suffixed(path: str | Path, name: str) -> Path:
    return Path(f"{path}{SUFFIXES[name]}")


@dataclass(frozen=True, slots=True)
class JobFiles:
    """The files of the training job that makes the learner directory ``out``, all beside it and named
    after it, so a rerun after a kill finds them. For ``out = work/round_N/learner``:

    * ``learner.tmp/`` (``tmp``): the job's output directory, renamed to ``learner`` once complete;
    * ``learner.data.jsonl`` (``data``): the training rows, written by the daemon before the job;
    * ``learner.result.json`` (``result``): the ``TrainResult``, written atomically by the job at its end
      (read back by TRAIN after a kill that came ahead of the phase commit);
    * ``learner.ckpt/`` (``checkpoints``): each step's resumable checkpoint; removed once complete;
    * ``learner.cpt.jsonl`` (``cpt_data``): continued pre-training's texts (``loop/pretrain.py``);
    * ``learner.result.json.job.json`` (``spec``): the job itself, as the child reads it;
    * ``learner.tmp.cpt/`` (``cpt_model``): continued pre-training's model, where the main step starts;
    * ``learner.result.json.cpt.json`` (``cpt_result``): continued pre-training's ``TrainResult``;
    * ``learner.tmp.format/`` (``format_model``): the proposer's format fine-tune, before its GRPO update.

    The last four are derived from the job's ``out_dir`` and ``result_path`` (``TrainJob``'s properties),
    so the child names them alike for a job whose paths were chosen freely.
    """

    out: Path

    @property
    def tmp(self) -> Path:
        return _suffixed(self.out, "tmp")

    @property
    def data(self) -> Path:
        return _suffixed(self.out, "data")

    @property
    def result(self) -> Path:
        return _suffixed(self.out, "result")

    @property
    def checkpoints(self) -> Path:
        return _suffixed(self.out, "checkpoints")

    @property
    def cpt_data(self) -> Path:
        return _suffixed(self.out, "cpt_data")

    @property
    def spec(self) -> Path:
        return _suffixed(self.result, "spec")

    @property
    def cpt_model(self) -> Path:
        return _suffixed(self.tmp, "cpt_model")

    @property
    def cpt_result(self) -> Path:
        return _suffixed(self.result, "cpt_result")

    @property
    def format_model(self) -> Path:
        return _suffixed(self.tmp, "format_model")


# -- the job ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainJob:
    """One embedded training job, as the daemon hands it to a child or the worker."""

    backend: str
    """The name of an embedded backend of ``trainer/backends.py`` (it runs the job in the child)."""
    learner_dir: str
    """The model trained from."""
    out_dir: str
    """Where the trained model is saved (``JobFiles.tmp``)."""
    data_path: str
    """JSONL. sft rows: {"prompt", "response"}; grpo rows: {"prompt", "answer", "domain", "task_json"};
    grpo-groups rows (already sampled and scored): {"group", "prompt", "completion", "ended", "reward"}, and
    optionally {"format": true, "prompt", "response"} rows fine-tuned on first (``GroupsParams.format``)."""
    params: TrainParams
    """The main step's parameters, of the class the backend takes."""
    result_path: str = ""
    """Where the job writes its ``TrainResult`` (JSON, atomically) at its end."""
    pretrain: Pretrain | None = None
    """Continued pre-training first; the main step then starts from its model. None: none."""
    threads: int = 0
    """torch's intra-op threads in the child (``trainer/threads.py``); 0: torch's default."""
    checkpoint_dir: str = ""
    """Where each training step of the job keeps its resumable checkpoint (``main.pt``, ``cpt.pt``,
    ``format.pt``; ``trainer/checkpoint.py``); a rerun of the same job resumes from them. Empty: none."""
    checkpoint_seconds: float = 60.0
    """At most this long between two checkpoints."""

    @property
    def spec_path(self) -> Path:
        return _suffixed(self.result_path, "spec")

    @property
    def cpt_out_dir(self) -> Path:
        return _suffixed(self.out_dir, "cpt_model")

    @property
    def cpt_result_path(self) -> Path:
        return _suffixed(self.result_path, "cpt_result")

    @property
    def format_out_dir(self) -> Path:
        return _suffixed(self.out_dir, "format_model")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, params_type: type[TrainParams]) -> TrainJob:
        """The job written by ``to_json``, its parameters read as ``params_type``."""
        raw = json.loads(text)
        params = dict(raw.pop("params"))
        if params_type is GroupsParams and params.get("format") is not None:
            params["format"] = SFTParams(**params["format"])
        pretrain = raw.pop("pretrain")
        if pretrain is not None:
            pretrain = Pretrain(pretrain["data_path"], CPTParams(**pretrain["params"]))
        return cls(params=params_type(**params), pretrain=pretrain, **raw)

    @staticmethod
    def backend_of(text: str) -> str:
        """The backend named in a job's JSON (to pick its parameters' class before reading it)."""
        return str(json.loads(text)["backend"])
