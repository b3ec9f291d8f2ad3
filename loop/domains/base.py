"""The domain plug-in interface, its optional hooks, and its registry.

A domain makes tasks at a difficulty, escalates or simplifies a task, gives guidance, grades an
answer and deduplicates by a canonical form: the required methods of :class:`Domain`. Domains are pure
logic: they import nothing of zpd but ``zpd.configs`` and this package (what they need of the running
daemon comes through ``attach``: ``services.py``). A new domain is one module plus one
``@register("name")`` line (and its config section in ``configs/domains.py``).

**Optional hooks are small capability protocols**, each one or a few methods a phase calls when the
domain has them (the table below). A domain declares the ones it implements by naming them as bases
(``class Dataset(Domain, OwnEvalSet, Observes): ...``), so mypy checks each hook's signature; a phase asks
``capability(domain, OwnEvalSet)``, which sees through the prompt style wrapper (``prompting.Styled``) and
returns the domain as that capability, or None. Protocols rather than a base class with no-op defaults,
because most hooks switch a phase to another path (a dataset's own eval set instead of one made by
level; the proposer only over domains that can ``parse``), and a no-op default cannot say "absent"
without a flag beside it; a missing hook also costs nothing (no store read for a domain that does not
observe).

=====================  =====================================  =========================================
capability             hook                                   called by
=====================  =====================================  =========================================
``Attaches``           ``attach(services)``                   start-up, once the run context exists
``OwnEvalSet``         ``eval_items()``                       the frozen eval set (instead of by level)
``SizesEvalSet``       ``eval_sizes(level)``                  eval set and its split: sizes per level
``OwnBootstrap``       ``bootstrap_task(rng)``                the warm-up set (instead of make_task)
``Observes``           ``observe(stats, used)``               SYNTHESIZE, before making candidates
``EstimatesDifficulty`` ``estimated_difficulty(hash)``        SYNTHESIZE: re-rates eval items (observers)
``Remembers``          ``remember(prompts)``                  SYNTHESIZE: near-duplicates of the stored
``FlagsNearDuplicates`` ``near_duplicates(prompts, held)``    the train/held-out overlap check
``Parses``             ``parse(text)``                        self-play: the proposer's samples
``HasCorpus``          ``corpus_texts()``                     continued pre-training's texts
``NamesGrader``        ``grader_name`` (attribute)            calibration: stored with each attempt
``Scores``             ``score(task, output)``                calibration: the raw score of an attempt
``TeacherHints``       ``teacher_hints`` (attribute)          calibration: the learner reads the hints
``InstructFormat``     ``instruction``, ``instruct_solution``, the instruct style (``prompting.py``)
                       ``grade_final``
=====================  =====================================  =========================================

A factory that makes several instances may register a config-independent ``grade_task`` with
``register(..., grade_task=f)``; :func:`registry.grader_for` then grades without building the domain.
``registry.py`` builds the enabled domains of a config (``build_domains``); it imports every built-in
domain, so it sits above them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast, runtime_checkable

from .prompting import InstructFormat, Styled  # noqa: F401  (InstructFormat: a capability too)

if TYPE_CHECKING:
    from .services import DomainServices


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
    """The required part of every domain. ``make_task``, ``escalate`` and ``simplify`` may return None: no
    candidate this time (a near-duplicate of something stored, a teacher reply dropped, a spent pool)."""

    name: str
    min_difficulty: float
    max_difficulty: float
    cfg: Any
    """The domain's config section (``configs/domains.py``); phases read its ``eval_per_level``."""

    def make_task(self, difficulty: float, rng: random.Random) -> Task | None:
        """A task near ``difficulty`` (the task's own difficulty is what it really is)."""
        ...

    def escalate(self, task: Task, rng: random.Random) -> Task | None:
        """A related, harder task."""
        ...

    def simplify(self, task: Task, rng: random.Random) -> Task | None:
        """A related, easier task."""
        ...

    def guided_prompt(self, task: Task) -> str:
        """The prompt of a guided attempt: the task with its guidance."""
        ...

    def solution(self, task: Task) -> str:
        """A reference answer in the domain's response format (what a correct guided answer looks like)."""
        ...

    def grade(self, task: Task, output: str) -> bool:
        """Whether ``output`` answers ``task`` correctly."""
        ...

    def eval_levels(self) -> list[float]:
        """Difficulties at which the frozen eval set is made (spanning the domain's range)."""
        ...


# -- the optional hooks (capabilities) ---------------------------------------------------------------
@runtime_checkable
class Attaches(Protocol):
    def attach(self, services: DomainServices) -> None:
        """The daemon's services (``services.py``), once the run context is built, before any phase."""
        ...


@runtime_checkable
class OwnEvalSet(Protocol):
    def eval_items(self) -> list[Task]:
        """The frozen eval set, carved out by the domain itself (a finite dataset's held-out share)."""
        ...


@runtime_checkable
class SizesEvalSet(Protocol):
    def eval_sizes(self, level: float) -> tuple[int, int]:
        """(validation, test) eval items made at ``level`` (instead of ``eval_per_level``, half and half)."""
        ...


@runtime_checkable
class OwnBootstrap(Protocol):
    def bootstrap_task(self, rng: random.Random) -> Task | None:
        """A warm-up task from the domain's own bootstrap share (None: skip this draw)."""
        ...


@runtime_checkable
class Observes(Protocol):
    def observe(self, stats: Mapping[str, tuple[int, int]], used: set[str]) -> None:
        """Before SYNTHESIZE makes candidates: the learner's solo (correct, answers) per content hash, and
        the content hashes already stored for this domain."""
        ...


@runtime_checkable
class EstimatesDifficulty(Protocol):
    def estimated_difficulty(self, content_hash: str) -> float | None:
        """The difficulty a stored eval item of this domain has now (None: unknown, left as stored).
        Asked only of a domain that also ``Observes``, right after ``observe``."""
        ...


@runtime_checkable
class Remembers(Protocol):
    def remember(self, prompts: list[str]) -> None:
        """The prompts of everything of this domain stored (SYNTHESIZE, before making candidates): from then
        on ``make_task``/``escalate``/``simplify`` return None for a near-duplicate of one of them."""
        ...


@runtime_checkable
class FlagsNearDuplicates(Protocol):
    def near_duplicates(self, prompts: list[str], held: list[str]) -> set[int]:
        """The indices of ``prompts`` (training prompts) too close to one of ``held`` (eval and exam)."""
        ...


@runtime_checkable
class Parses(Protocol):
    def parse(self, text: str) -> Task | None:
        """The task a proposer's sample stands for, or None when it is not one the domain could make."""
        ...


@runtime_checkable
class HasCorpus(Protocol):
    def corpus_texts(self) -> list[str]:
        """The texts the domain's questions are made from (continued pre-training's corpus)."""
        ...


@runtime_checkable
class NamesGrader(Protocol):
    grader_name: str
    """The grader's name, stored with each calibration attempt."""


@runtime_checkable
class TeacherHints(Protocol):
    teacher_hints: bool
    """True once the [teacher] writes this domain's guidance (reasoning-gym's ``teacher_guidance = "hint"``):
    the learner then makes the guided attempts, reading the hint."""


@runtime_checkable
class Scores(Protocol):
    def score(self, task: Task, output: str) -> float:
        """The raw score of an answer (stored with each calibration attempt; ``grade`` decides)."""
        ...


H = TypeVar("H")


def capability(domain: object, hook: Callable[..., H]) -> H | None:
    """``domain`` as the capability ``hook`` (one of the protocol classes above) when it implements it, else
    None. A styled domain (``prompting.Styled``, what ``build_domains`` hands out) is looked through: hooks
    are the domain's own."""
    # Typed Callable[..., H], not type[H]: mypy accepts no protocol class where a type[H] is expected.
    inner = domain.domain if isinstance(domain, Styled) else domain
    return cast(H, inner) if isinstance(inner, cast(type, hook)) else None


DomainFactory = Callable[[Any], "Domain | Mapping[str, Domain]"]
Grader = Callable[[Task, str], bool]
_REGISTRY: dict[str, DomainFactory] = {}
_GRADERS: dict[str, Grader] = {}
"""Registered name -> config-independent grader (``register(..., grade_task=...)``)."""
_PREFIXES: dict[str, str] = {}
"""Instance-name prefix -> registered name, for factories that make several instances ("rg:chain_sum")."""


def register(name: str, prefix: str | None = None,
             grade_task: Grader | None = None) -> Callable[[DomainFactory], DomainFactory]:
    """Register a domain factory. A factory that returns a dict makes several domain instances, named
    ``<prefix>:<instance>`` (reasoning-gym's families). ``grade_task(task, output)``: a grader that needs
    no config (everything in the task's meta), for :func:`grader_for`."""
    def deco(factory: DomainFactory) -> DomainFactory:
        _REGISTRY[name] = factory
        if prefix is not None:
            _PREFIXES[prefix] = name
        if grade_task is not None:
            _GRADERS[name] = grade_task
        return factory

    return deco
