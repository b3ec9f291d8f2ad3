"""preflight: a verl backend on a machine that cannot run it fails fast with what to do.

Runs in every environment: without verl it checks the install message, with verl (and no GPU, as
in CI) the GPU message; a bare venv stands in for "an interpreter without verl" in both.
"""

from __future__ import annotations

import importlib.util
import sys
import venv
from pathlib import Path

import pytest

from zpd.configs.schema import ZpdConfig
from zpd.trainer.verl import VerlUnavailable, preflight


def _cfg(**verl) -> ZpdConfig:
    cfg = ZpdConfig()
    cfg.train.backend = "verl-sft"
    for key, value in verl.items():
        setattr(cfg.verl, key, value)
    return cfg


def test_preflight_here_says_what_is_missing():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(VerlUnavailable) as err:
        preflight(_cfg())
    message = str(err.value)
    assert "\n" not in message
    if importlib.util.find_spec("verl") is None:
        assert "pip install 'zpd[verl]'" in message
    else:
        assert "needs 1 CUDA GPU(s) and this machine has 0" in message and 'placement = "ray"' in message


def test_preflight_names_the_install_when_the_interpreter_lacks_verl(tmp_path: Path):
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)
    with pytest.raises(VerlUnavailable, match=r"verl is not importable by .*pip install 'zpd\[verl\]'"):
        preflight(_cfg(python=str(bare / "bin" / "python")))


def test_preflight_refuses_ray_without_shared_storage_and_a_dead_address(tmp_path: Path):
    with pytest.raises(VerlUnavailable, match="storage.shared_dir"):
        preflight(_cfg(placement="ray"))
    cfg = _cfg(placement="ray", ray_address="http://127.0.0.1:9")
    cfg.storage.shared_dir = tmp_path
    with pytest.raises(VerlUnavailable, match="no Ray cluster answers at verl.ray_address"):
        preflight(cfg)


def test_multi_node_needs_ray():
    with pytest.raises(VerlUnavailable, match='placement = "ray"'):
        preflight(_cfg(nnodes=2, python=sys.executable))


@pytest.mark.parametrize("name", ["verl-sft.toml", "verl-grpo.toml"])
def test_shipped_verl_configs_load(name: str):
    from zpd.configs.load import SHIPPED_DIR, load_config

    cfg = load_config(SHIPPED_DIR / name, [])
    assert cfg.train.backend == name.removesuffix(".toml") and cfg.verl.learning_rate is not None


def test_zpd_start_with_a_verl_backend_fails_fast_here_and_creates_nothing(tmp_path: Path):
    """No GPU on this machine (and in the main venv no verl): `zpd start` refuses before the first
    round with one line that says what to install or where to run, and writes nothing."""
    from harness import ROOT, run_zpd

    state = tmp_path / "state"
    out = run_zpd("start", "--config", str(ROOT / "configs" / "verl-sft.toml"), "--state-dir", str(state),
                  "--rounds", "1", timeout=240)
    assert out.returncode == 1
    assert "verl-sft" in out.stderr and ("pip install" in out.stderr or "GPU" in out.stderr)
    assert len(out.stderr.strip().splitlines()) == 1
    assert not state.exists()


def test_grpo_batch_that_does_not_divide_by_the_gpus_exits_2_before_anything(tmp_path: Path):
    """verl asserts train_batch_size * rollout.n % GPUs == 0 (validate_config) only once the job runs:
    zpd refuses the config before launch, with one line naming the keys, exit 2, nothing created."""
    from harness import ROOT, run_zpd

    from zpd.configs.load import ConfigError, load_config

    sets = ["train.grpo_num_samples=3", "train.grpo_prompts_per_step=3"]  # 9 samples on 8 GPUs
    with pytest.raises(ConfigError, match=r"grpo_prompts_per_step: 3 prompts x train.grpo_num_samples 3 = 9"):
        load_config(ROOT / "configs" / "verl-grpo.toml", sets)
    load_config(ROOT / "configs" / "verl-grpo.toml",
                ["train.grpo_num_samples=4", "train.grpo_prompts_per_step=2"])
    state = tmp_path / "state"
    out = run_zpd("start", "--config", str(ROOT / "configs" / "verl-grpo.toml"), "--state-dir", str(state),
                  "--rounds", "1", *[a for s in sets for a in ("--set", s)], timeout=240)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "verl.nnodes * verl.n_gpus_per_node = 8" in lines[0]
    assert "verl-grpo.toml" in lines[0]
    assert not state.exists()
