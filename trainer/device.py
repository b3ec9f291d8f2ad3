"""Which device the learner runs on: ``learner.device`` resolved, without torch where the answer is sure.

    resolve_device("auto")   # "cuda" when torch sees a GPU, else "cpu"; other values pass through

The daemon resolves the device before every generation and training step. Importing torch only for that
costs 2-3 s of CPU a process on a 2-core machine, and with the embedded generation served by the trainer
worker (``trainer/worker.py``) nothing else in the daemon needs torch. So a CPU-only build of torch (its
distribution version carries the ``+cpu`` local tag, as the wheels of PyTorch's CPU index do), which
cannot see a GPU, answers ``cpu`` without being imported; any other build is asked
(``torch.cuda.is_available()``).
"""

from __future__ import annotations

import functools
import importlib.metadata


@functools.cache
def _cpu_only_torch() -> bool:
    """True when the installed torch is a CPU-only build (read from its distribution metadata)."""
    try:
        return importlib.metadata.version("torch").endswith("+cpu")
    except importlib.metadata.PackageNotFoundError:
        return False  # torch from a source tree: ask it


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other values pass through."""
    if device != "auto":
        return device
    if _cpu_only_torch():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
