"""Threads by design: the count follows the model's size and the CPUs that are free, a number overrides it,
and the parameter count it sizes by matches a real learner's."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from zpd.configs.schema import LearnerConfig, ZpdConfig
from zpd.trainer import threads
from zpd.trainer.model import create_learner, num_parameters


@pytest.fixture
def four_cpus(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})

    def with_load(load: float) -> None:
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))

    return with_load


def test_small_models_get_one_thread_however_idle_the_machine(four_cpus) -> None:
    four_cpus(0.0)
    assert threads.choose_threads("auto", num_params=500_000) == 1


def test_big_models_get_the_free_cpus_and_no_more(four_cpus) -> None:
    big = 100 * threads.PARAMS_PER_THREAD
    four_cpus(0.0)
    assert threads.choose_threads("auto", num_params=big) == 4
    four_cpus(1.0)  # one other CPU-bound process
    assert threads.choose_threads("auto", num_params=big) == 3
    four_cpus(9.0)  # overloaded: one thread, never zero
    assert threads.choose_threads("auto", num_params=big) == 1
    four_cpus(2.0)  # two of the busy ones are the caller's own work
    assert threads.choose_threads("auto", num_params=big, own_load=2.0) == 4
    assert threads.choose_threads("auto", num_params=3 * threads.PARAMS_PER_THREAD) == 2  # size-bound


def test_a_running_childs_cpu_is_the_callers_own_load_when_named() -> None:
    """The persistent worker generates between training jobs: its CPU is the run's own work, so the next
    job's thread count must not see it as competition (a real child burning one CPU for about 1.5 s)."""
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                             "while time.process_time() - t < 1.5: pass\ntime.sleep(30)"])
    try:
        threads.own_load([busy.pid])  # the first sample
        time.sleep(2.0)
        named = threads.own_load([busy.pid])
        time.sleep(0.6)
        unnamed = threads.own_load()  # the child idles now, and unnamed it never counts
    finally:
        busy.kill()
        busy.wait()
    assert 0.4 < named <= threads.usable_cpus()
    assert unnamed < 0.3
    assert threads._process_cpu_seconds(busy.pid) == 0.0  # gone: nothing to read


def test_a_number_overrides_auto(four_cpus) -> None:
    four_cpus(9.0)
    assert threads.choose_threads(3, num_params=1000) == 3


def test_the_parameter_count_matches_a_real_learner(tmp_path: Path) -> None:
    cfg = LearnerConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, max_positions=128)
    create_learner(tmp_path / "m", cfg, seed=0)
    real = num_parameters(tmp_path / "m")
    assert threads.learner_parameters(tmp_path / "m", 1, 1, 1) == real  # read from the weights' header
    estimate = threads.estimate_parameters(cfg.hidden_size, cfg.num_layers, cfg.intermediate_size)
    assert abs(estimate - real) / real < 0.02
    # Not a model directory: the configured sizes.
    assert threads.learner_parameters(tmp_path / "none", 64, 2, 128) == estimate


def test_apply_sets_torchs_thread_count() -> None:
    before = torch.get_num_threads()
    try:
        assert threads.apply_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_config_key_takes_auto_or_a_count() -> None:
    assert ZpdConfig().runtime.torch_threads == "auto"
    assert ZpdConfig.model_validate({"runtime": {"torch_threads": 2}}).runtime.torch_threads == 2
    for bad in (0, 2000, True, "many", 1.5):
        with pytest.raises(ValidationError):
            ZpdConfig.model_validate({"runtime": {"torch_threads": bad}})
    cfg = ZpdConfig.model_validate({"runtime": {"torch_threads": 3}})
    assert threads.threads_for(cfg) == 3
