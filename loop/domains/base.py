"""The domain plug-in interface and its registry.

A domain makes tasks at a difficulty, escalates or simplifies a task, gives guidance, grades an
answer and deduplicates by a canonical form. Domains are pure logic: no model, no disk. A new domain
is one module plus one ``@register("name")`` line (and its config section in ``configs/schema.py``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Task:
    """A prompt with a checkable answer. ``prompt`` is the bare task; ``guidance`` helps solve it."""

    domain: str
    difficulty: float
    prompt: str
    answer: str
    guidance: str
    canonical: str
    """A canonical form: two tasks with the same canonical form are the same task."""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(f"{self.domain}\x00{self.canonical}".encode()).hexdigest()


class Domain(Protocol):
    name: str
    min_difficulty: float
    max_difficulty: float

    def make_task(self, difficulty: float, rng: random.Random) -> Task:
        """A task near ``difficulty`` (the task's own difficulty is what it really is)."""

    def escalate(self, task: Task, rng: random.Random) -> Task:
        """A related, harder task."""

    def simplify(self, task: Task, rng: random.Random) -> Task:
        """A related, easier task."""

    def guided_prompt(self, task: Task) -> str:
        """The prompt of a guided attempt: the task with its guidance."""

    def solution(self, task: Task) -> str:
        """A reference answer in the domain's response format (what a correct guided answer looks like)."""

    def grade(self, task: Task, output: str) -> bool:
        """Whether ``output`` answers ``task`` correctly."""

    def eval_levels(self) -> list[float]:
        """Difficulties at which the frozen eval set is made (spanning the domain's range)."""


DomainFactory = Callable[[Any], "Domain | dict[str, Domain]"]
_REGISTRY: dict[str, DomainFactory] = {}
_PREFIXES: dict[str, str] = {}
"""Instance-name prefix -> registered name, for factories that make several instances ("rg:chain_sum")."""


def register(name: str, prefix: str | None = None) -> Callable[[DomainFactory], DomainFactory]:
    """Register a domain factory. A factory that returns a dict makes several domain instances, named
    ``<prefix>:<instance>`` (reasoning-gym's families); its module's ``grade_task`` grades them all."""
    def deco(factory: DomainFactory) -> DomainFactory:
        _REGISTRY[name] = factory
        if prefix is not None:
            _PREFIXES[prefix] = name
        return factory

    return deco


def build_domains(domains_cfg: Any, prompt_style: str = "bare") -> dict[str, Any]:
    """Instantiate every enabled domain of a ``DomainsConfig``, each seen through ``prompt_style``
    (``prompting.Styled``: what phases call for prompts, reference answers and grades)."""
    from .prompting import Styled

    registered()  # import the built-in domains

    out: dict[str, Any] = {}
    for name in domains_cfg.enabled_names():
        if name not in _REGISTRY:
            raise KeyError(f"domains.{name}: no such domain is registered")
        made = _REGISTRY[name](getattr(domains_cfg, name))
        instances = made if isinstance(made, dict) else {name: made}  # reasoning-gym: one per family
        for key, domain in instances.items():
            out[key] = Styled(domain, prompt_style)  # type: ignore[arg-type]
    return out


def grader_for(name: str, prompt_style: str = "bare") -> Callable[[Task, str], bool]:
    """A grader for tasks of domain ``name`` outside the daemon (the GRPO reward in a training child).

    A domain module may register a config-independent ``grade_task(task, output)``; otherwise the
    domain is built with its default config section. Either is seen through ``prompt_style``."""
    import importlib

    from zpd.configs.schema import DomainsConfig

    from .prompting import Styled, final_answer

    registered()  # import the built-in domains
    if name not in _REGISTRY and name.split(":", 1)[0] in _PREFIXES:
        name = _PREFIXES[name.split(":", 1)[0]]
    if name not in _REGISTRY:
        raise KeyError(f"no domain {name!r} is registered")
    module = importlib.import_module(_REGISTRY[name].__module__)
    if hasattr(module, "grade_task"):
        grade = module.grade_task
        if prompt_style == "bare":
            return grade
        return lambda task, output: bool(grade(task, final_answer(output)) or grade(task, output))
    domain = _REGISTRY[name](getattr(DomainsConfig(), name))
    return Styled(domain, prompt_style).grade  # type: ignore[arg-type]


def registered() -> list[str]:
    from . import arithmetic, dataset, knowledge, reasoning_gym  # noqa: F401

    return sorted(_REGISTRY)
