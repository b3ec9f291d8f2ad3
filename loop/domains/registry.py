"""The registry's read side: build the enabled domains of a config, or a grader outside the daemon.

It imports every built-in domain module (each registers itself with ``base.register``), so it sits above
them: domain modules import ``base``, never this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from zpd.configs.schema import DomainsConfig

from . import arithmetic, dataset, knowledge, reasoning_gym  # noqa: F401  (each registers its domains)
from .base import _GRADERS, _PREFIXES, _REGISTRY, Grader
from .prompting import PromptStyle, Styled, final_answer


def build_domains(domains_cfg: DomainsConfig, prompt_style: str = "bare") -> dict[str, Any]:
    """Instantiate every enabled domain of a ``DomainsConfig``, each seen through ``prompt_style``
    (``prompting.Styled``: what phases call for prompts, reference answers and grades)."""
    out: dict[str, Any] = {}
    for name in domains_cfg.enabled_names():
        if name not in _REGISTRY:
            raise KeyError(f"domains.{name}: no such domain is registered")
        made = _REGISTRY[name](getattr(domains_cfg, name))
        instances = made if isinstance(made, Mapping) else {name: made}  # reasoning-gym: one per family
        for key, domain in instances.items():
            out[key] = Styled(domain, cast(PromptStyle, prompt_style))
    return out


def grader_for(name: str, prompt_style: str = "bare") -> Grader:
    """A grader for tasks of domain ``name`` outside the daemon (the GRPO reward in a training child).

    A domain may register a config-independent ``grade_task(task, output)``; otherwise the domain is
    built with its default config section. Either is seen through ``prompt_style``."""
    if name not in _REGISTRY and name.split(":", 1)[0] in _PREFIXES:
        name = _PREFIXES[name.split(":", 1)[0]]
    if name not in _REGISTRY:
        raise KeyError(f"no domain {name!r} is registered")
    grade = _GRADERS.get(name)
    if grade is not None:
        if prompt_style == "bare":
            return grade
        return lambda task, output: bool(grade(task, final_answer(output)) or grade(task, output))
    domain = _REGISTRY[name](getattr(DomainsConfig(), name))
    return Styled(domain, cast(PromptStyle, prompt_style)).grade


def registered() -> list[str]:
    """The names of the registered domains."""
    return sorted(_REGISTRY)
