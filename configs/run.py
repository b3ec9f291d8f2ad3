"""The ``[run]``, ``[storage]``, ``[metrics]`` and ``[logging]`` sections: how the daemon runs.

Seed and stop conditions, retention and disk checks, the Prometheus endpoint, and logs. This module
imports nothing of zpd but ``Strict``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from .base import Strict


class RunConfig(Strict):
    seed: int = Field(0, ge=0)
    """Master seed. Every random choice (tasks, sampling, training order) derives from it and the round."""

    max_wall_seconds: float | None = Field(None, gt=0)
    """Stop at a safe point once the daemon has run this long (per process start). None: no limit."""

    max_train_tokens: int | None = Field(None, gt=0)
    """Stop at a safe point once this many training tokens have been consumed over the run. None: no limit."""


class StorageConfig(Strict):
    keep_last: int = Field(3, ge=2, le=1_000_000)
    """Committed rounds kept on disk (at least 2: the newest may be mid-commit). Round 0 (the
    bootstrap, the root of every lineage) and the current learner's round are always kept."""

    keep_every: int = Field(0, ge=0)
    """Also keep every N-th round for good (0: none)."""

    keep_all: bool = False
    """Keep every round (tests and short runs that roll back to any)."""

    shared_dir: Path | None = None
    """A filesystem every node sees, for training data and new learners when training runs elsewhere."""

    min_free_ratio: float = Field(2.0, ge=0, le=1000)
    """Before a round, stop cleanly if free disk < this multiple of the last round's size."""


class MetricsConfig(Strict):
    enabled: bool = True
    """Serve /metrics, /healthz and /readyz from the daemon."""

    host: str = "127.0.0.1"
    """Bind address. Anything but loopback requires the bearer token below."""

    port: int = Field(9464, ge=0, le=65535)
    """Port; 0 picks a free one (status reports the real URL)."""

    token_env: str = "ZPD_METRICS_TOKEN"
    """Environment variable holding the bearer token required when bound beyond loopback."""


class LoggingConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level logged."""

    max_bytes: int = Field(10_000_000, ge=10_000)
    """Rotate logs/zpd.jsonl at this size."""

    backups: int = Field(5, ge=1, le=1000)
    """Rotated log files kept."""

    progress: bool = True
    """Show progress of long phases on a terminal (stderr, only when it is a TTY)."""
