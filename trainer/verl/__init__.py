"""Training with verl: the verl-sft and verl-grpo trainer backends.

    preflight(cfg)               before the first round: raise VerlUnavailable with what to do
    train_with_verl(cfg, ...)    one round: parquet out, verl run (local child or Ray job), learner in

Nothing here imports verl, torch or ray at import time: verl runs in its own process (locally, or
as a Ray job), so the daemon's environment needs verl only for local placement.
"""

from __future__ import annotations

from .overrides import RoundPaths, build_grpo_overrides, build_sft_overrides
from .preflight import VerlUnavailable, preflight
from .run import train_with_verl

__all__ = ["RoundPaths", "VerlUnavailable", "build_grpo_overrides", "build_sft_overrides", "preflight",
           "train_with_verl"]
