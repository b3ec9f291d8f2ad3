"""zpd's verl batch schedules and checkpoint frequency against verl 0.9.1's own code (CPU).

* SFT: every row count 1..300 on 1, 2 and 8 GPUs goes through verl's SFT loader (its sampler and
  StatefulDataLoader built as ``verl/trainer/sft_trainer.py`` builds them) and verl's
  ``prepare_micro_batches``, which asserts that the micro batch divides each GPU's batch.
* GRPO: the composed config passes verl's ``validate_config`` (train_batch_size * rollout.n divides by
  the GPU count) for rounds with fewer prompts than a step asks for.
* Saving: verl's own save conditions (read from its trainer sources, not copied) at every step; GRPO
  saved nothing with ``save_freq=-1``.

Skipped without verl unless ZPD_REQUIRE_VERL=1.
"""

from __future__ import annotations

import ast
import inspect
import os
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from optional import require

require("verl")

from zpd.configs.schema import ZpdConfig  # noqa: E402
from zpd.trainer.verl import build_grpo_overrides, build_sft_overrides  # noqa: E402
from zpd.trainer.verl.overrides import RoundPaths, grpo_schedule, save_freq, sft_schedule  # noqa: E402


def _compose(config_name: str, overrides: list[str]):
    import verl
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=os.path.join(os.path.dirname(verl.__file__), "trainer", "config"),
                               version_base=None):
        return compose(config_name=config_name, overrides=overrides)


def _paths(tmp_path: Path) -> RoundPaths:
    return RoundPaths(train_file=tmp_path / "t.parquet", model_dir=tmp_path / "m", ckpt_dir=tmp_path / "ckpt",
                      reward_file=tmp_path / "reward.py")


def _cfg(world: int, batch_size: int, micro: int) -> ZpdConfig:
    cfg = ZpdConfig()
    cfg.verl.n_gpus_per_node = world
    cfg.train.batch_size = batch_size
    cfg.verl.micro_batch_size_per_gpu = micro
    return cfg


def _verl_first_batch(num_rows: int, world: int, global_batch: int) -> tuple[int, int]:
    """(rows of rank 0's first batch, steps per epoch) with verl's SFT sampler and loader settings."""
    import torch
    from torch.utils.data import DistributedSampler
    from torchdata.stateful_dataloader import StatefulDataLoader

    rows = list(range(num_rows))
    sampler = DistributedSampler(rows, shuffle=True, num_replicas=world, rank=0, drop_last=True)
    loader = StatefulDataLoader(dataset=rows, batch_size=global_batch // world, sampler=sampler,
                                collate_fn=torch.tensor, num_workers=0, drop_last=True)
    return len(next(iter(loader))), len(loader)


def test_sft_batches_split_into_verls_micro_batches_for_every_row_count():
    import torch
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine.utils import prepare_micro_batches

    checked = 0
    for world in (1, 2, 8):
        for batch_size, micro in ((32, 4), (16, 3)):
            cfg = _cfg(world, batch_size, micro)
            for num_rows in range(1, 301):
                if num_rows < world:
                    with pytest.raises(ValueError, match="at least"):
                        sft_schedule(cfg, num_rows)
                    continue
                s = sft_schedule(cfg, num_rows)
                per_gpu, steps_per_epoch = _verl_first_batch(num_rows, world, s.batch_size)
                assert per_gpu * world == s.batch_size <= num_rows
                # verl's own micro-batch preparation (the meta_info its SFT trainer attaches to each batch).
                data = tu.get_tensordict(tensor_dict={"input_ids": torch.zeros(per_gpu, 1, dtype=torch.long)},
                                         non_tensor_dict={
                                             "use_dynamic_bsz": False,
                                             "micro_batch_size_per_gpu": s.micro_batch_size_per_gpu})
                micro_batches, _ = prepare_micro_batches(data)
                assert sum(len(m) for m in micro_batches) == per_gpu
                # verl's loop (total_epochs passes over the loader) reaches the last step, where it saves.
                assert s.total_epochs * steps_per_epoch >= s.total_steps >= 1
                checked += 1
    assert checked == 2 * (300 + 299 + 293)


@pytest.mark.parametrize(("gpus", "n", "prompts", "rows"),
                         [(8, 3, 32, 13), (8, 8, 32, 5), (2, 3, 5, 5), (4, 2, 8, 3)])
def test_grpo_batch_passes_verls_checks_with_few_prompts(tmp_path: Path, gpus: int, n: int, prompts: int,
                                                         rows: int):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    cfg = ZpdConfig()
    cfg.train.backend = "verl-grpo"
    cfg.verl.n_gpus_per_node, cfg.train.grpo_num_samples, cfg.train.grpo_prompts_per_step = gpus, n, prompts
    sched = grpo_schedule(cfg, rows)
    c = _compose("ppo_trainer", build_grpo_overrides(cfg, _paths(tmp_path), num_rows=rows, round_n=1,
                                                     resume=False))
    validate_config(c, use_reference_policy=need_reference_policy(c), use_critic=need_critic(c))
    assert c.data.train_batch_size == sched.batch_size <= rows
    per_gpu = sched.batch_size * n // gpus
    assert per_gpu % c.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu == 0


def test_grpo_with_too_few_prompts_for_the_gpus_is_refused():
    cfg = ZpdConfig()
    cfg.verl.n_gpus_per_node, cfg.train.grpo_num_samples = 8, 3
    with pytest.raises(ValueError, match="at least 8 prompts"):
        grpo_schedule(cfg, 7)


def _save_test(module, method: str) -> ast.expr:
    """The condition of the ``if`` in verl's ``method`` whose body saves a checkpoint."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(getattr(module, method))))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and any("save_checkpoint" in ast.unparse(b) for b in node.body):
            return ast.Expression(node.test)
    raise AssertionError(f"no save condition in {module.__name__}.{method}")


def _saved_steps(test: ast.Expression, names: dict, total: int, freq: int) -> list[int]:
    code = compile(test, "<verl save condition>", "eval")
    out = []
    for step in range(1, total + 1):
        cfg = SimpleNamespace(trainer=SimpleNamespace(save_freq=freq))
        env = {"self": SimpleNamespace(config=cfg, global_steps=step, save_freq=freq),
               "is_last_step": step >= total,
               "global_step": step, "is_save_step": freq > 0 and step % freq == 0, **names}
        if eval(code, {}, env):
            out.append(step)
    return out


def test_grpo_and_sft_save_at_the_last_step_and_within_the_interval(tmp_path: Path):
    from verl.trainer import sft_trainer
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    cfg = ZpdConfig()
    cfg.train.backend = "verl-grpo"
    cfg.train.grpo_steps, cfg.train.timeout_seconds, cfg.verl.checkpoint_interval_minutes = 40, 3600.0, 10.0
    c = _compose("ppo_trainer", build_grpo_overrides(cfg, _paths(tmp_path), num_rows=64, round_n=1,
                                                     resume=False))
    freq = c.trainer.save_freq
    assert freq == save_freq(cfg, 40) == 6  # 40 steps in at most 60 min: 6 steps take at most 9 min
    saved = _saved_steps(_save_test(PPOTrainer, "fit"), {}, 40, freq)
    assert saved[-1] == 40 and saved[0] == freq
    assert max(b - a for a, b in zip([0, *saved], saved, strict=False)) * 3600 / 40 <= 600
    # What the old override did: verl's GRPO saved nothing, not even the last step.
    assert _saved_steps(_save_test(PPOTrainer, "fit"), {}, 40, -1) == []

    cfg.train.backend = "verl-sft"
    cfg.train.epochs, cfg.train.timeout_seconds = 3.0, 600.0
    cfg.verl.checkpoint_interval_minutes = 2.0
    c = _compose("sft_trainer_engine", build_sft_overrides(cfg, _paths(tmp_path), num_rows=320, round_n=1,
                                                           resume=False))
    total = sft_schedule(cfg, 320).total_steps
    assert c.trainer.save_freq == save_freq(cfg, total) < total
    saved = _saved_steps(_save_test(sft_trainer.SFTTrainer, "fit"), {}, total, c.trainer.save_freq)
    assert saved[-1] == total and len(saved) > 1
    assert max(b - a for a, b in zip([0, *saved], saved, strict=False)) * 600 / total <= 120
