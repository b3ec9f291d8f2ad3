"""The ``[snapshot]`` section: how SNAPSHOT stores each committed round's copy of the state database.

This module imports nothing of zpd but ``Strict`` (``configs/base.py``).
"""

from __future__ import annotations

from pydantic import Field

from .base import Strict


class SnapshotConfig(Strict):
    full_every: int = Field(20, ge=1, le=1_000_000)
    """A round's store is a full copy (``state.db``) at least every this many rounds; the rounds between
    hold ``store.delta``, the rows changed since the last full copy, plus ``base_round`` (DESIGN "State
    directory"), so SNAPSHOT's cost follows what the rounds changed, not the store's size. 1: every round
    full. Retention keeps each kept round's base; rollback rebuilds base + delta."""

    delta_min_bytes: int = Field(256 << 20, ge=0)
    """Below this size of ``state.db`` (bytes) every round is a full copy: copying a small store costs
    less than the bookkeeping, and every round directory then holds a self-contained ``state.db``.
    0: deltas at any size."""
