"""The ``[runtime]`` section: how zpd uses the machine it runs on (CPU threads).

This module imports nothing of zpd but ``base.Strict``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import Strict


class RuntimeConfig(Strict):
    torch_threads: Literal["auto"] | Annotated[int, Field(strict=True, ge=1, le=1024)] = "auto"
    """Intra-op threads of torch's CPU kernels in the daemon (generation) and the trainer. auto: chosen from
    the model's size and the CPUs actually free (affinity mask less the load average), decided again for
    every round and training job (``trainer/threads.py``): one thread for models under 2M parameters, whose
    ops are too small to split, and never more threads than idle CPUs, since an op waits for its slowest
    thread. A number (1-1024): exactly that many."""

