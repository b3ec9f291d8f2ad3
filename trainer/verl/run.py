"""One round of training with verl: data out, verl run (local or Ray), next learner in.

Layout of a round's verl directory (``<storage.shared_dir>/verl/round_NNNNNN`` when training runs on
other nodes, else ``<work_dir>/verl``)::

    train.parquet    the round's rows in verl's schema
    base/            the parent learner (Ray placement only: a copy on shared storage)
    tokenizer/       the learner's tokenizer files alone, when AutoTokenizer would misread them
    zpd_reward.py    GRPO on Ray: the reward module, where every node finds it
    ckpt/            trainer.default_local_dir (this round only)
    verl.log         everything verl printed

A re-run of the same crashed round (``resume``) keeps ``ckpt/`` and lets verl resume from it; any
other run starts from an empty ``ckpt/``.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from zpd.configs.schema import ZpdConfig
from zpd.trainer.autotokenizer import stage_tokenizer
from zpd.trainer.process import TrainJobFailed
from zpd.trainer.result import TrainResult

from . import data, ingest, overrides
from .launch import run_local
from .progress import StepTracker
from .ray_jobs import run_ray_job

GRPO = {"verl-sft": False, "verl-grpo": True}
"""The verl backends (``trainer/backends.py``), by whether they run GRPO (else SFT)."""


def round_dir(cfg: ZpdConfig, work_dir: Path, round_n: int) -> Path:
    if cfg.storage.shared_dir is not None:
        return (Path(cfg.storage.shared_dir) / "verl" / f"round_{round_n:06d}").resolve()
    return (Path(work_dir) / "verl").resolve()


def reward_file(cfg: ZpdConfig, rdir: Path) -> Path:
    """The reward module's path as verl's workers will open it.

    Locally: the module itself. On a Ray cluster the daemon's path of zpd may not exist on the nodes
    (zpd installed elsewhere, another venv, a container): a copy goes to the round's directory on
    storage.shared_dir, which every node sees at the same path (it imports zpd, installed on the nodes)."""
    own = Path(__file__).resolve().with_name("reward.py")
    if cfg.verl.placement != "ray":
        return own
    dest = rdir / "zpd_reward.py"
    tmp = rdir / ".zpd_reward.py.tmp"
    shutil.copyfile(own, tmp)
    tmp.replace(dest)
    return dest


def launch_argv(cfg: ZpdConfig, grpo: bool) -> list[str]:
    """The program part of the command (verl's Hydra overrides are appended); ``grpo``: verl's PPO trainer."""
    v = cfg.verl
    if v.command:
        return list(v.command)
    python = v.python or (sys.executable if v.placement == "local" else "python")
    if grpo:
        return [python, "-m", "verl.trainer.main_ppo"]
    if v.placement == "ray":  # one Ray-driven SPMD group over the cluster's GPUs
        return [python, "-m", "verl.trainer.sft_trainer_ray"]
    return [python, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            f"--nproc-per-node={v.n_gpus_per_node}", "-m", "verl.trainer.sft_trainer"]


def train_with_verl(cfg: ZpdConfig, *, backend: str, learner_dir: Path, rows: list[dict], out_dir: Path,
                    work_dir: Path, round_n: int, on_progress: Callable[[dict], None] | None,
                    should_stop: Callable[[], bool] | None, resume: bool) -> TrainResult:
    """Train the next learner from ``learner_dir`` on ``rows`` with verl; write it into ``out_dir``.

    Raises TrainJobFailed (verl exited non-zero, was killed, timed out, or left no usable
    checkpoint; ``log_tail`` holds verl's last lines) or TrainJobStopped. No child process or Ray
    job outlives the call.
    """
    if backend not in GRPO:
        raise ValueError(f"not a verl backend: {backend!r}")
    started = time.monotonic()
    grpo = GRPO[backend]
    rdir = round_dir(cfg, work_dir, round_n)
    ckpt = rdir / "ckpt"
    if not resume and ckpt.exists():
        shutil.rmtree(ckpt)
    rdir.mkdir(parents=True, exist_ok=True)
    learner_dir = Path(learner_dir).resolve()
    model_dir = learner_dir
    if cfg.verl.placement == "ray" and cfg.storage.shared_dir is not None:
        model_dir = rdir / "base"  # the cluster's nodes cannot see the daemon's local disk
        if not model_dir.is_dir():
            tmp = rdir / "base.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(learner_dir, tmp)
            tmp.rename(model_dir)
    try:
        train_file = (data.write_rl_parquet if grpo else data.write_sft_parquet)(rows, rdir / "train.parquet")
        paths = overrides.RoundPaths(
            train_file=train_file, model_dir=model_dir, ckpt_dir=ckpt,
            tokenizer_dir=stage_tokenizer(learner_dir, rdir / "tokenizer"),
            reward_file=reward_file(cfg, rdir) if grpo else None,
        )
        build = overrides.build_grpo_overrides if grpo else overrides.build_sft_overrides
        ovr = build(cfg, paths, num_rows=len(rows), round_n=round_n, resume=resume)
        total = (overrides.grpo_schedule if grpo else overrides.sft_schedule)(cfg, len(rows)).total_steps
    except ValueError as exc:
        raise TrainJobFailed(f"verl run not started: {exc}") from None

    tracker = StepTracker(total)

    def on_line(line: str) -> None:
        event = tracker.feed(line)
        if event is not None and on_progress is not None:
            on_progress(event)

    argv = launch_argv(cfg, grpo) + ovr
    env = {"VERL_FILE_LOGGER_PATH": str(rdir / "metrics.jsonl"), "WANDB_MODE": "disabled",
           "TOKENIZERS_PARALLELISM": "false"}
    log_path = rdir / "verl.log"
    if cfg.verl.placement == "ray":
        run_ray_job(argv, address=cfg.verl.ray_address,
                    submission_id=f"zpd-r{round_n:06d}-{int(time.time())}", env=env, log_path=log_path,
                    timeout_seconds=cfg.train.timeout_seconds,
                    poll_seconds=cfg.verl.ray_poll_seconds, on_line=on_line, should_stop=should_stop)
    else:
        run_local(argv, cwd=rdir, env=env, log_path=log_path, timeout_seconds=cfg.train.timeout_seconds,
                  on_line=on_line, should_stop=should_stop)
    try:
        ingest.ingest_checkpoint(ckpt, Path(out_dir), parent_learner=learner_dir, actor=grpo,
                                 python=cfg.verl.python or sys.executable)
    except (ingest.IngestError, OSError, ValueError) as exc:
        raise TrainJobFailed(f"verl finished but its checkpoint could not be taken: {exc}",
                             log_path.read_text()[-4000:] if log_path.is_file() else "") from None
    return TrainResult(loss=tracker.last_loss if tracker.last_loss is not None else float("nan"),
                       num_tokens=tracker.tokens, num_steps=tracker.num_steps,
                       seconds=time.monotonic() - started)
