"""verl's Hydra overrides for one round: pure functions of the config and the round's paths.

Every override names a key of verl 0.9.1's own config (``sft_trainer_engine.yaml`` for SFT,
``ppo_trainer.yaml`` for GRPO); tests compose them with verl's Hydra config and run its
``validate_config``. The traps they avoid (see the verl reference): a per-round absolute checkpoint
directory (a reused one makes round k+1 resume round k's optimizer and step counter, and a relative
one lands in each Ray node's working dir), resume only when re-running the same round, ``optim.lr``
always set (verl's SFT default is 1e-3), full HF weights in the checkpoint (not with LoRA: verl
would write the PEFT-keyed state dict there, so ingest runs verl's model merger instead), sdpa
attention (no flash-attn needed), ``no_padding`` (``right`` fails in the FSDP engine), a save every
``verl.checkpoint_interval_minutes`` (``trainer.save_freq=-1`` would make GRPO save nothing at all),
and batch sizes verl's own checks and micro-batch split accept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from zpd.configs.schema import ZpdConfig

SAVE_CONTENTS = "[model,optimizer,extra,hf_model]"
# With LoRA, hf_model would save the PEFT model's state dict (base_model.model...lora_A...) as if it were
# a plain model; without it verl.model_merger splits base weights and adapter (ingest merges them).
SAVE_CONTENTS_LORA = "[model,optimizer,extra]"


@dataclass(frozen=True, slots=True)
class RoundPaths:
    """Absolute paths one verl run reads and writes (all on storage every node sees)."""

    train_file: Path
    model_dir: Path
    """The parent learner (an HF directory)."""
    ckpt_dir: Path
    """trainer.default_local_dir: this round's own checkpoint directory."""
    tokenizer_dir: Path | None = None
    """model.tokenizer_path when it must differ from model_dir (see trainer/autotokenizer.py)."""
    reward_file: Path | None = None
    """GRPO: the reward module's file."""


@dataclass(frozen=True, slots=True)
class Schedule:
    batch_size: int
    micro_batch_size_per_gpu: int
    total_steps: int
    total_epochs: int


def world_size(cfg: ZpdConfig) -> int:
    return cfg.verl.nnodes * cfg.verl.n_gpus_per_node


def sft_schedule(cfg: ZpdConfig, num_rows: int) -> Schedule:
    """Global batch, micro batch, and steps for train.epochs passes, as verl's SFT trainer runs them.

    verl gives each of the ``world`` ranks ``train_batch_size // world`` rows per step (its sampler and
    loader drop the remainder) and asserts that the micro batch divides them
    (``verl/workers/engine/utils.py:prepare_micro_batches``). So the per-GPU batch is a multiple of
    the micro batch, the global batch ``world`` per-GPU batches, and it never exceeds the row count.
    """
    world = world_size(cfg)
    if num_rows < world:
        raise ValueError(f"verl-sft needs at least {world} examples (one per GPU); the round has {num_rows}")
    per_gpu = min(cfg.train.batch_size, num_rows) // world
    per_gpu = max(1, per_gpu)
    micro = max(1, min(cfg.verl.micro_batch_size_per_gpu, per_gpu))
    per_gpu = per_gpu // micro * micro
    batch = per_gpu * world
    steps_per_epoch = num_rows // batch
    total = max(1, round(cfg.train.epochs * steps_per_epoch))
    return Schedule(batch, micro, total, math.ceil(total / steps_per_epoch))


def grpo_schedule(cfg: ZpdConfig, num_rows: int) -> Schedule:
    """Prompts per step: at most train.grpo_prompts_per_step and the row count, rounded down so that
    prompts * rollout.n divides by the GPU count (verl's ``validate_config`` asserts it)."""
    if num_rows < 1:
        raise ValueError("verl-grpo needs at least one prompt")
    world, n = world_size(cfg), cfg.train.grpo_num_samples
    unit = world // math.gcd(world, n)  # the smallest prompt count whose samples spread evenly over the GPUs
    batch = min(cfg.train.grpo_prompts_per_step, num_rows) // unit * unit
    if batch < 1:
        raise ValueError(f"verl-grpo needs at least {unit} prompts so that prompts * train.grpo_num_samples "
                         f"divides by the {world} GPUs; the round has {num_rows}")
    # Each GPU updates on batch * n / world sampled sequences; the micro batch must divide them.
    per_gpu = batch * n // world
    micro = max(d for d in range(1, min(cfg.verl.micro_batch_size_per_gpu, per_gpu) + 1) if per_gpu % d == 0)
    total = cfg.train.grpo_steps
    return Schedule(batch, micro, total, math.ceil(total / (num_rows // batch)))


def save_freq(cfg: ZpdConfig, total_steps: int) -> int:
    """trainer.save_freq: the steps that fit in verl.checkpoint_interval_minutes at the slowest step
    pace that still finishes within train.timeout_seconds; at least 1, at most the last step.

    verl's GRPO saves only when save_freq > 0 (then every save_freq steps and at the last step); its
    SFT saves at the last step and every save_freq steps."""
    interval = 60.0 * cfg.verl.checkpoint_interval_minutes
    steps = math.floor(total_steps * interval / cfg.train.timeout_seconds)
    return max(1, min(total_steps, steps))


def _save_contents(cfg: ZpdConfig) -> str:
    return SAVE_CONTENTS_LORA if cfg.verl.lora_rank > 0 else SAVE_CONTENTS


def _lr(cfg: ZpdConfig) -> float:
    return cfg.verl.learning_rate if cfg.verl.learning_rate is not None else cfg.train.learning_rate


def _common_trainer(cfg: ZpdConfig, paths: RoundPaths, round_n: int, sched: Schedule,
                    resume: bool) -> list[str]:
    v = cfg.verl
    return [
        f"trainer.default_local_dir={paths.ckpt_dir}",
        f"trainer.resume_mode={'auto' if resume else 'disable'}",
        f"trainer.total_training_steps={sched.total_steps}",
        f"trainer.total_epochs={sched.total_epochs}",
        # Periodic saves (a killed run loses at most verl.checkpoint_interval_minutes) and the last step.
        f"trainer.save_freq={save_freq(cfg, sched.total_steps)}",
        "trainer.test_freq=-1",
        "trainer.logger=[console]",
        "trainer.project_name=zpd",
        f"trainer.experiment_name=round_{round_n:06d}",
        f"trainer.nnodes={v.nnodes}",
        f"trainer.n_gpus_per_node={v.n_gpus_per_node}",
    ]


def build_sft_overrides(cfg: ZpdConfig, paths: RoundPaths, *, num_rows: int, round_n: int, resume: bool,
                        seed: int = 1) -> list[str]:
    """Overrides for ``torchrun -m verl.trainer.sft_trainer`` (or ``verl.trainer.sft_trainer_ray``)."""
    v, sched = cfg.verl, sft_schedule(cfg, num_rows)
    out = [
        f"data.train_files={paths.train_file}",
        "data.val_files=null",
        "data.messages_key=messages",
        f"data.train_batch_size={sched.batch_size}",
        f"data.micro_batch_size_per_gpu={sched.micro_batch_size_per_gpu}",
        "data.use_dynamic_bsz=False",
        f"data.max_length={v.max_length}",
        "data.truncation=right",
        "data.pad_mode=no_padding",
        "data.num_workers=0",
        f"model.path={paths.model_dir}",
        "model.use_remove_padding=True",
        f"model.enable_gradient_checkpointing={v.gradient_checkpointing}",
        f"+model.override_config.attn_implementation={v.attn_implementation}",
        f"engine.strategy={v.strategy}",
        f"optim.lr={_lr(cfg)!r}",
        f"optim.weight_decay={cfg.train.weight_decay!r}",
        f"checkpoint.save_contents={_save_contents(cfg)}",
        f"trainer.seed={seed}",
    ]
    if paths.tokenizer_dir is not None:
        out.append(f"model.tokenizer_path={paths.tokenizer_dir}")
    if v.lora_rank > 0:
        out += [f"model.lora_rank={v.lora_rank}", f"model.lora_alpha={v.lora_alpha}",
                f"model.target_modules={v.lora_target_modules}"]
    return out + _common_trainer(cfg, paths, round_n, sched, resume) + list(v.extra_overrides)


def build_grpo_overrides(cfg: ZpdConfig, paths: RoundPaths, *, num_rows: int, round_n: int, resume: bool,
                         seed: int = 1) -> list[str]:
    """Overrides for ``python -m verl.trainer.main_ppo`` running GRPO with zpd's reward module."""
    if paths.reward_file is None:
        raise ValueError("GRPO needs the reward module's file")
    v, sched = cfg.verl, grpo_schedule(cfg, num_rows)
    actor, rollout, model = "actor_rollout_ref.actor", "actor_rollout_ref.rollout", "actor_rollout_ref.model"
    use_kl = v.kl_loss_coef > 0
    out = [
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=False",
        f"algorithm.filter_groups.enable={v.filter_groups}",
        f"algorithm.filter_groups.metric={v.filter_groups_metric}",
        f"data.train_files={paths.train_file}",
        f"data.val_files={paths.train_file}",
        "data.prompt_key=prompt",
        f"data.train_batch_size={sched.batch_size}",
        f"data.max_prompt_length={v.max_prompt_length}",
        f"data.max_response_length={v.max_response_length}",
        "data.filter_overlong_prompts=True",
        "data.truncation=error",
        f"data.seed={seed}",
        f"{model}.path={paths.model_dir}",
        f"{model}.use_remove_padding=True",
        f"{model}.enable_gradient_checkpointing={v.gradient_checkpointing}",
        f"+{model}.override_config.attn_implementation={v.attn_implementation}",
        f"{actor}.strategy={v.strategy}",
        f"{actor}.optim.lr={_lr(cfg)!r}",
        f"{actor}.ppo_mini_batch_size={sched.batch_size}",
        f"{actor}.ppo_micro_batch_size_per_gpu={sched.micro_batch_size_per_gpu}",
        f"{actor}.use_kl_loss={use_kl}",
        f"{actor}.kl_loss_coef={v.kl_loss_coef!r}",
        f"{actor}.kl_loss_type=low_var_kl",
        f"{actor}.entropy_coeff=0",
        f"{actor}.loss_agg_mode=token-mean",
        f"{actor}.checkpoint.save_contents={_save_contents(cfg)}",
        f"{rollout}.name={v.rollout}",
        f"{rollout}.n={cfg.train.grpo_num_samples}",
        f"{rollout}.tensor_model_parallel_size={v.rollout_tensor_parallel_size}",
        f"{rollout}.gpu_memory_utilization={v.rollout_gpu_memory_utilization!r}",
        f"{rollout}.log_prob_micro_batch_size_per_gpu={sched.micro_batch_size_per_gpu}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={sched.micro_batch_size_per_gpu}",
        f"reward.custom_reward_function.path={paths.reward_file}",
        "reward.custom_reward_function.name=compute_score",
        "trainer.critic_warmup=0",
        "trainer.val_before_train=False",
    ]
    if v.filter_groups:
        out.append("algorithm.filter_groups.max_inflight_gen_batches=2")
    if paths.tokenizer_dir is not None:
        out.append(f"{model}.tokenizer_path={paths.tokenizer_dir}")
    if v.lora_rank > 0:
        out += [f"{model}.lora_rank={v.lora_rank}", f"{model}.lora_alpha={v.lora_alpha}",
                f"{model}.target_modules={v.lora_target_modules}"]
    return out + _common_trainer(cfg, paths, round_n, sched, resume) + list(v.extra_overrides)
