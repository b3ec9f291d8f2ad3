"""The one generation interface and its backends, by name.

    gen = build_generator("embedded", model=learner_dir, settings=cfg.generation, device="cpu", batch_size=64)
    outs = gen.generate(["57+68"], n=4, temperature=0.7, max_tokens=24, seed=0)   # [[Completion x4]]
    gen.close()

Every backend takes user-message prompts (the chat template is the backend's business) and returns, per
prompt, ``n`` :class:`Completion` objects in order. A backend never raises for one bad request: a sample
it could not get (endpoint down after its retries, malformed response) comes back with
``finish_reason == "error"`` and ``error`` set, and the caller records it as a failed attempt. Backends
register themselves with ``@backend("name")``; a new one is one module plus one registration line.

| backend  | where the model runs                     | module                |
|----------|------------------------------------------|-----------------------|
| embedded | this process (torch, batched, KV cache)  | ``generate.py``       |
| vllm     | ``vllm.LLM`` in a child process          | ``vllm_backend.py``   |
| openai   | any OpenAI-compatible server over HTTP   | ``openai_backend.py`` |
| served   | replicas started on the learner per round | ``served.py``        |
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .completion import Completion

__all__ = ["BACKENDS", "Completion", "Generator", "backend", "build_generator", "error_completion"]


class Generator(Protocol):
    def generate(
        self,
        prompts: list[str],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int,
        seed: int = 0,
        stop: list[str] | None = None,
        sample_seeds: list[list[int]] | None = None,
    ) -> list[list[Completion]]:
        """Per prompt, ``n`` completions (failed samples have finish_reason "error"). ``sample_seeds``
        (per prompt, ``n`` seeds) makes each sample a function of its own seed, whatever else is in the
        call: adaptive calibration draws sample j of a task alone and gets what a fixed-k call would."""

    def close(self) -> None:
        """Release the model / child process / connections. Idempotent."""


Factory = Callable[..., Generator]
BACKENDS: dict[str, Factory] = {}
# Modules that register a backend when imported; imported lazily so that torch or vllm load only when used.
_MODULES = {"embedded": "zpd.trainer.generation", "vllm": "zpd.trainer.vllm_backend",
            "openai": "zpd.trainer.openai_backend", "served": "zpd.trainer.served"}


def backend(name: str) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        BACKENDS[name] = factory
        return factory

    return deco


def build_generator(name: str, *, model: str | Path, settings: Any = None, device: str = "cpu",
                    batch_size: int = 64) -> Generator:
    """A generator of backend ``name`` for ``model`` (a learner directory, or a model name at an endpoint).

    ``settings``: the backend's config section (``GenerationConfig.vllm``, an ``OpenAIEndpointConfig``...).
    """
    if name not in BACKENDS and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in BACKENDS:
        raise KeyError(f"no generation backend {name!r}; registered: {sorted(set(BACKENDS) | set(_MODULES))}")
    return BACKENDS[name](model=model, settings=settings, device=device, batch_size=batch_size)


def error_completion(error: str, latency_seconds: float = 0.0) -> Completion:
    """A failed sample: no text, no tokens, the reason kept (it is logged; it must not hold secrets)."""
    return Completion("", 0, "error", latency_seconds, 0, error)


@backend("embedded")
def _embedded(*, model: str | Path, settings: Any, device: str, batch_size: int) -> Generator:
    from .generate import EmbeddedGenerator

    return EmbeddedGenerator(Path(model), device=device, batch_size=batch_size)
