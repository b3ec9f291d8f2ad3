"""Resumable checkpoints of the embedded trainers: a kill costs at most ``every_seconds`` of training.

    ckpt = Checkpointer(path, every_seconds=60, fingerprint=fingerprint(learner_dir, data, hyper))
    state = ckpt.load()                 # None, or the last state saved by a run of this same job
    ...
    for step in range(start, total):
        ...one optimiser step...
        if ckpt.due():
            ckpt.save(step=step + 1, model=model, optimizer=optimizer, extra={...})

One file (``torch.save``) written through ``zpd.store.atomic``, so a kill while saving leaves the previous
checkpoint. It holds the weights, the optimizer's state, torch's RNG state, the data position (the next
step; each trainer's data order is a pure function of its seed, so the step is the position) and whatever
the loop needs to report the same result (loss history, token count, seconds spent). The learning rate
schedule is a pure function of the step. The fingerprint (learner, data, hyper-parameters) makes a
checkpoint of another job worthless: ``load`` ignores it.

A SIGTERM (the daemon stopping: Ctrl-C, systemd) makes ``due`` true at once; the loop saves and
``save`` exits the process (status 143), so a stop loses no step at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch

from zpd.store.atomic import atomic_path

HASHED_FILE_BYTES = 64 * 2**20
"""Start-weight files up to this size are identified by content (a step that re-made its start model, e.g.
CPT before SFT, still resumes); bigger ones by name, size and mtime (hashing GBs per job would cost more)."""


def fingerprint(learner_dir: Path, data: Any, hyper: dict[str, Any]) -> str:
    """Identity of a training job: its start weights (the learner's files), its data (anything
    ``repr``-stable, e.g. the encoded sequences) and its hyper-parameters."""
    h = hashlib.sha256()
    for f in sorted(Path(learner_dir).glob("*")):
        if f.is_file():
            st = f.stat()
            if st.st_size <= HASHED_FILE_BYTES:
                h.update(f"{f.name}:".encode() + hashlib.sha256(f.read_bytes()).digest())
            else:
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    h.update(repr(data).encode())
    h.update(json.dumps(hyper, sort_keys=True, default=str).encode())
    return h.hexdigest()


class Checkpointer:
    """Saves and loads one job's checkpoint at ``path``; ``path`` None: checkpoints are off."""

    def __init__(self, path: Path | str | None, *, every_seconds: float, fingerprint: str) -> None:
        self.path = Path(path) if path else None
        self.every_seconds = every_seconds
        self.fingerprint = fingerprint
        self.resumed_step = 0
        self._last = time.monotonic()
        self._term = False
        self._began = time.monotonic()
        self._prior_seconds = 0.0
        self._old_handler: Any = None
        if self.path is not None:
            try:
                self._old_handler = signal.signal(signal.SIGTERM, self._on_term)
            except ValueError:  # not the main thread (an in-process caller): no early save on TERM
                pass

    def close(self) -> None:
        """Give SIGTERM its previous meaning back (the loop is over; nothing left to save)."""
        if self._old_handler is not None:
            signal.signal(signal.SIGTERM, self._old_handler)
            self._old_handler = None

    def _on_term(self, _signum: int, _frame: object) -> None:
        self._term = True

    def load(self) -> dict[str, Any] | None:
        """The saved state of this job (with torch's RNG state restored), or None."""
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001  (a torn or foreign file: start over, it is only lost time)
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            return None
        torch.set_rng_state(state["torch_rng"])
        self.resumed_step = int(state["step"])
        self._prior_seconds = float(state.get("seconds", 0.0))
        return state

    def seconds(self) -> float:
        """Training seconds of this job so far, runs before a resume included."""
        return self._prior_seconds + time.monotonic() - self._began

    def due(self) -> bool:
        return self.path is not None and (self._term or time.monotonic() - self._last >= self.every_seconds)

    def save(self, *, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             extra: dict[str, Any] | None = None) -> None:
        """Write the state after ``step`` steps atomically; after a SIGTERM, exit 143 once it is on disk."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {"fingerprint": self.fingerprint, "step": step, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                 "seconds": self.seconds(), **(extra or {})}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        self._last = time.monotonic()
        if self._term:
            os._exit(143)

    def restore(self, state: dict[str, Any], model: torch.nn.Module,
                optimizer: torch.optim.Optimizer) -> None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
