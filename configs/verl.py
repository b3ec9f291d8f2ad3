"""The ``[verl]`` section: how the verl-sft and verl-grpo trainer backends launch verl.

Used only when ``train.backend`` starts with ``verl``. Every field maps to one verl Hydra key (named
in its docstring) or to how zpd places the run; ``extra_overrides`` passes anything else through.
This module imports nothing of zpd but ``base.Strict``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Strict


class VerlConfig(Strict):
    placement: Literal["local", "ray"] = "local"
    """local: verl runs as a child process group on this machine (needs its GPUs). ray: a job on an
    existing Ray cluster through the Ray Jobs API at ray_address; data and learners go through
    storage.shared_dir, which every node must see."""

    ray_address: str = "http://127.0.0.1:8265"
    """Ray Jobs API address of the cluster's head (its dashboard), used when placement = "ray"."""

    ray_poll_seconds: float = Field(2.0, gt=0, le=600)
    """How often the Ray job's status and logs are polled."""

    python: str = ""
    """Interpreter that runs verl (a venv with verl), locally or on the Ray cluster's nodes. Empty: the
    daemon's own interpreter locally, "python" on the PATH of the cluster's nodes with placement = "ray"."""

    command: list[str] = Field(default_factory=list)
    """Replaces the launch program (e.g. a wrapper script or a container exec); verl's Hydra overrides
    are appended to it. Empty: torchrun -m verl.trainer.sft_trainer / python -m verl.trainer.main_ppo."""

    nnodes: int = Field(1, ge=1, le=4096)
    """trainer.nnodes (GRPO) / torchrun --nnodes (SFT)."""

    n_gpus_per_node: int = Field(1, ge=1, le=64)
    """trainer.n_gpus_per_node, and torchrun --nproc-per-node for SFT."""

    learning_rate: float | None = Field(None, gt=0, le=1)
    """optim.lr (SFT) / actor_rollout_ref.actor.optim.lr (GRPO). None: train.learning_rate. Always
    passed: verl's own default (1e-3 for SFT) suits no pretrained model."""

    micro_batch_size_per_gpu: int = Field(4, ge=1, le=4096)
    """SFT data.micro_batch_size_per_gpu; GRPO actor ppo_micro_batch_size_per_gpu and the log-prob
    micro batches."""

    max_length: int = Field(1024, ge=16, le=1_048_576)
    """SFT data.max_length (prompt + response tokens); longer examples are truncated on the right."""

    max_prompt_length: int = Field(512, ge=8, le=1_048_576)
    """GRPO data.max_prompt_length (longer prompts are filtered out)."""

    max_response_length: int = Field(512, ge=1, le=1_048_576)
    """GRPO data.max_response_length."""

    strategy: Literal["fsdp", "fsdp2"] = "fsdp"
    """SFT engine.strategy / GRPO actor strategy."""

    attn_implementation: Literal["sdpa", "flash_attention_2", "eager"] = "sdpa"
    """+model.override_config.attn_implementation. sdpa needs no flash-attn build (which most images lack)."""

    gradient_checkpointing: bool = True
    """model.enable_gradient_checkpointing."""

    lora_rank: int = Field(0, ge=0, le=4096)
    """model.lora_rank; 0 trains every weight. With LoRA the adapter is merged into the next learner."""

    lora_alpha: int = Field(16, ge=1, le=65536)
    """model.lora_alpha."""

    lora_target_modules: str = "all-linear"
    """model.target_modules."""

    rollout: Literal["vllm", "sglang"] = "vllm"
    """GRPO actor_rollout_ref.rollout.name (verl has no transformers rollout)."""

    rollout_tensor_parallel_size: int = Field(1, ge=1, le=64)
    """GRPO actor_rollout_ref.rollout.tensor_model_parallel_size (must divide the GPU count)."""

    rollout_gpu_memory_utilization: float = Field(0.5, gt=0, le=1)
    """GRPO actor_rollout_ref.rollout.gpu_memory_utilization."""

    kl_loss_coef: float = Field(0.001, ge=0, le=100)
    """GRPO actor kl_loss_coef (low_var_kl); 0 turns the KL loss and the reference model off."""

    filter_groups: bool = True
    """GRPO algorithm.filter_groups.enable: drop groups whose samples all pass or all fail (DAPO dynamic
    sampling); they carry no advantage signal."""

    filter_groups_metric: str = "acc"
    """algorithm.filter_groups.metric: "acc" (verl records zpd's 0/1 reward under it) or "reward"."""

    checkpoint_interval_minutes: float = Field(15.0, gt=0, le=10080)
    """How much training a killed verl run may lose: verl saves a checkpoint every
    trainer.save_freq steps (and at the last step), and zpd sets save_freq to the steps that fit in
    this many minutes at the slowest pace that still ends within train.timeout_seconds
    (floor(steps * 60 * minutes / timeout), at least 1). A re-run of the crashed round resumes from
    the newest checkpoint. Smaller: less lost work, more time and disk spent saving."""

    extra_overrides: list[str] = Field(default_factory=list)
    """Hydra overrides appended last (they win), e.g. ["engine.param_offload=True"]."""

    @model_validator(mode="after")
    def _tp_divides(self) -> VerlConfig:
        if (self.nnodes * self.n_gpus_per_node) % self.rollout_tensor_parallel_size:
            raise ValueError("verl.rollout_tensor_parallel_size must divide nnodes * n_gpus_per_node")
        return self


def check_grpo_batch(prompts_per_step: int, num_samples: int, verl: VerlConfig) -> None:
    """verl's check (``validate_config``): data.train_batch_size * rollout.n divides by the GPU count.

    Raised before launch, naming the keys; zpd's GRPO schedule keeps it true for rounds with fewer
    prompts than ``train.grpo_prompts_per_step``."""
    gpus = verl.nnodes * verl.n_gpus_per_node
    if (prompts_per_step * num_samples) % gpus:
        raise ValueError(f"train.grpo_prompts_per_step: {prompts_per_step} prompts x train.grpo_num_samples "
                         f"{num_samples} = {prompts_per_step * num_samples} samples per step must divide by "
                         f"the GPU count verl.nnodes * verl.n_gpus_per_node = {gpus} "
                         "(verl's real_train_batch_size check)")
