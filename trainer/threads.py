"""How many threads torch's CPU kernels get: chosen from the model's size and the CPUs actually free.

    n = choose_threads("auto", num_params=estimate_parameters(cfg.learner))   # or an int: taken as is
    apply_threads(n)                                                         # daemon and trainer child

Why not torch's default (one OpenMP thread per core): the embedded learner is tiny, so each op is a few
microseconds of work, and an OpenMP region waits for *every* one of its threads. On a busy machine one of
them is descheduled behind another process and every op waits for it: measured on a loaded 2-core machine,
one ``[8x64]x[64x128]`` linear took 3-41 ms with 2 threads against 3 us with 1, and generation ran 70-250x
faster with 1 thread (issue 15; ``bench/threads.py`` prints today's figures). More threads pay only when an
op is big enough to split, and only with idle cores to run them.

The rule: at most one thread per ``PARAMS_PER_THREAD`` parameters (smaller models get one thread), and no
more than the CPUs this process may run on (``os.sched_getaffinity``) minus the busy ones (the 1-minute
load average, less the caller's own share). Torch-free until ``apply_threads``, so the daemon can decide
before it imports torch.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from zpd.configs.schema import ZpdConfig

PARAMS_PER_THREAD = 2_000_000
"""Below this many parameters per thread an op's work is smaller than OpenMP's fork-join cost."""
CHAR_VOCAB = 100
"""The embedded char tokenizer's vocabulary (trainer/tokenizer.py: 4 special tokens + 96 characters)."""


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a cgroup's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def free_cpus(own_load: float = 0.0) -> int:
    """Usable CPUs not busy with other work: ``usable_cpus() - (load average - own_load)``, rounded to the
    nearest whole CPU, at least 1. ``own_load``: runnable threads of the caller's own that the load
    average already counts (0 for a process that was idle)."""
    cpus = usable_cpus()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cpus
    busy = max(0.0, load - own_load)
    return max(1, min(cpus, math.floor(cpus - busy + 0.5)))


def estimate_parameters(hidden_size: int, num_layers: int, intermediate_size: int,
                        vocab_size: int = CHAR_VOCAB) -> int:
    """A decoder-only transformer's parameter count from its sizes (tied embeddings, gated MLP)."""
    per_layer = 4 * hidden_size * hidden_size + 3 * hidden_size * intermediate_size + 2 * hidden_size
    return vocab_size * hidden_size + num_layers * per_layer + hidden_size


def learner_parameters(path: Path | None, hidden_size: int, num_layers: int, intermediate_size: int) -> int:
    """The learner's size: read from its weights when it is a model directory (``learner.path``), else
    estimated from the embedded learner's configured sizes."""
    files = sorted(Path(path).glob("*.safetensors")) if path is not None else []
    try:
        if files:
            return sum(_safetensors_parameters(f) for f in files)
    except (OSError, ValueError):
        pass
    return estimate_parameters(hidden_size, num_layers, intermediate_size)


def _safetensors_parameters(file: Path) -> int:
    """Elements in a safetensors file, from its header alone (8-byte length, then JSON: name -> shape)."""
    import json

    with open(file, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if not 0 < size <= 100_000_000:
            raise ValueError(f"{file}: not a safetensors header")
        header = json.loads(f.read(size))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def choose_threads(setting: Literal["auto"] | int, *, num_params: int, own_load: float = 0.0) -> int:
    """``setting`` when it is a number; for "auto", min(what the model's size can use, the free CPUs)."""
    if setting != "auto":
        return max(1, int(setting))
    by_size = max(1, num_params // PARAMS_PER_THREAD)
    return max(1, min(by_size, free_cpus(own_load)))


_last_sample: tuple[float, float] | None = None


def _process_cpu_seconds(pid: int) -> float:
    """CPU seconds of a live process and its reaped children (``/proc/PID/stat``; 0 where unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def own_load(live_children: Iterable[int] = ()) -> float:
    """CPUs this process, its reaped children and ``live_children`` (pids of children still running, e.g.
    the persistent trainer worker, which generates between training jobs) kept busy since the previous
    call (0 on the first): the share of the load average that is the caller's own work, not competition."""
    global _last_sample
    t = os.times()
    now, cpu = time.monotonic(), t.user + t.system + t.children_user + t.children_system
    cpu += sum(_process_cpu_seconds(pid) for pid in live_children)
    last, _last_sample = _last_sample, (now, cpu)
    if last is None or now - last[0] < 0.5:
        return 0.0
    return max(0.0, min(float(usable_cpus()), (cpu - last[1]) / (now - last[0])))


def learner_size(cfg: ZpdConfig) -> int:
    """The run's learner's parameter count (read from a user model's files, else estimated)."""
    learner = cfg.learner
    return learner_parameters(learner.path, learner.hidden_size, learner.num_layers,
                              learner.intermediate_size)


def threads_for(cfg: ZpdConfig, live_children: Iterable[int] = ()) -> int:
    """``runtime.torch_threads`` of the run resolved for its learner and this machine now
    (``live_children``: the caller's running children, whose work is not competition)."""
    return choose_threads(cfg.runtime.torch_threads, num_params=learner_size(cfg),
                          own_load=own_load(live_children))


def apply_threads(num_threads: int) -> int:
    """Set torch's intra-op threads (and one inter-op thread, where it can still be set) in this process.
    Before torch is imported the OpenMP/MKL variables are set instead, which torch reads at import; they
    are inherited by children, which set their own count anyway. Returns ``num_threads``."""
    num_threads = max(1, int(num_threads))
    if "torch" not in sys.modules:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(num_threads)
        return num_threads
    import torch

    if torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
    try:
        # The inter-op pool runs independent ops side by side; the learner's forward has none worth it,
        # and it can be sized only before its first use (RuntimeError after).
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    return num_threads
