"""The paper's four escalation operators, offline, on the synthetic world (pure: no model, no disk).

A question is a ``Spec``: a chain of relations from a start entity, plus what the operators added. Each
operator adds one step of difficulty (one more fact to find or one more thing to do with them):

* **knowledge expansion**: one more hop from the answer entity (``Tal's mentor?`` -> ``Tal's mentor's
  employer?``);
* **conceptual abstraction**: the start entity is no longer named but described by a fact that singles it
  out (``[the person whose mentor is Rok]'s employer?``): the solver must first find who that is;
* **factual grounding**: the question asks for the number the documents state about the chain's last
  entity (``Tal's mentor's birth year?``): the answer is a datum to look up and quote, not a name;
* **computational formulation**: arithmetic over the numbers of two entities of the chain (``Tal's birth
  year minus Tal's employer's founding year?``); the answer is computed by running generated Python
  code (``code``) in the sandbox (``loop/domains/sandbox.py``), by the domain, not by the solver.

``applicable`` says which operators can still apply (a question that ends in a number takes no more hops;
one abstraction per question); ``simplify`` undoes the most recent kind of step.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .world import World

OPERATORS = ("knowledge-expansion", "conceptual-abstraction", "factual-grounding",
             "computational-formulation")
_WORDS = {"+": "plus", "-": "minus"}


@dataclass(frozen=True, slots=True)
class Spec:
    start: str
    relations: tuple[str, ...]
    whose: tuple[str, str] | None = None
    """(relation, object) describing the start entity instead of its name (conceptual abstraction)."""
    number: bool = False
    """The question asks for the last entity's number (factual grounding)."""
    calc: tuple[int, int, str] | None = None
    """(chain position a, chain position b, '+' or '-'): a's number op b's number (computational formulation);
    position 0 is the start entity, n the entity after n hops."""
    steps: int = 0
    """Escalation steps taken from the seed question."""

    @property
    def difficulty(self) -> int:
        return len(self.relations) + (self.whose is not None) + self.number + (self.calc is not None)

    @property
    def canonical(self) -> str:
        out = f"{self.start}|{'/'.join(self.relations)}"
        if self.whose:
            out += f"|whose:{self.whose[0]}"
        if self.number:
            out += "|number"
        if self.calc:
            out += f"|calc:{self.calc[0]}{self.calc[2]}{self.calc[1]}"
        return out

    def to_meta(self) -> dict[str, object]:
        return {"start": self.start, "relations": list(self.relations),
                "whose": list(self.whose) if self.whose else None, "number": self.number,
                "calc": list(self.calc) if self.calc else None, "steps": self.steps}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Spec:
        whose = tuple(meta["whose"]) if meta.get("whose") else None
        return cls(meta["start"], tuple(meta["relations"]), whose,
                   bool(meta.get("number")), tuple(meta["calc"]) if meta.get("calc") else None,
                   int(meta.get("steps", 0)))


def entities(world: World, spec: Spec) -> list[str]:
    """The entities along the chain, the start first (position n = after n hops)."""
    return [spec.start] + [f.obj for f in world.resolve(spec.start, list(spec.relations))]


def subject(world: World, spec: Spec) -> str:
    if spec.whose is None:
        return spec.start
    rel, obj = spec.whose
    return f"[the {world.kind_of[spec.start]} whose {rel} is {obj}]"


def question(world: World, spec: Spec) -> str:
    ents = entities(world, spec)

    def ref(n: int, name: str = subject(world, spec)) -> str:
        return name + "".join(f"'s {r}" for r in spec.relations[:n])

    if spec.calc is not None:
        a, b, op = spec.calc
        # A described start is named once (X), not twice: the question must fit the learner's context.
        intro, name = (f"X is {subject(world, spec)}. ", "X") if spec.whose else ("", spec.start)
        return (f"{intro}{ref(a, name)}'s {world.attribute(ents[a])} {_WORDS[op]} "
                f"{ref(b, name)}'s {world.attribute(ents[b])}?")
    if spec.number:
        return f"{ref(len(spec.relations))}'s {world.attribute(ents[-1])}?"
    return f"{ref(len(spec.relations))}?"


def code(world: World, spec: Spec) -> str:
    """The Python program that computes a computational-formulation answer from the documents' numbers."""
    assert spec.calc is not None
    ents = entities(world, spec)
    a, b, op = spec.calc
    return (f"# {world.number_fact(ents[a])}\na = {world.numbers[ents[a]]}\n"
            f"# {world.number_fact(ents[b])}\nb = {world.numbers[ents[b]]}\nprint(a {op} b)\n")


def applicable(world: World, spec: Spec, max_difficulty: int, allowed: Sequence[str],
               can_compute: bool) -> list[str]:
    if spec.difficulty + 1 > max_difficulty:
        return []
    ends_in_number = spec.number or spec.calc is not None
    ok = {
        "knowledge-expansion": not ends_in_number,
        "conceptual-abstraction": spec.whose is None and bool(world.described_by(spec.start)),
        "factual-grounding": not ends_in_number,
        "computational-formulation": not ends_in_number and can_compute,
    }
    return [op for op in OPERATORS if op in allowed and ok[op]]


def apply(world: World, spec: Spec, operator: str, rng: random.Random) -> Spec:
    """``spec`` one step harder by ``operator`` (which must be applicable)."""
    steps = spec.steps + 1
    if operator == "knowledge-expansion":
        return replace(spec, relations=spec.relations + tuple(world.walk(entities(world, spec)[-1], 1, rng)),
                       steps=steps)
    if operator == "conceptual-abstraction":
        return replace(spec, whose=rng.choice(world.described_by(spec.start)), steps=steps)
    if operator == "factual-grounding":
        return replace(spec, number=True, steps=steps)
    if operator == "computational-formulation":
        ents = entities(world, spec)
        b = len(spec.relations)
        a = rng.randrange(b)
        op = rng.choice("+-")
        if op == "-" and world.numbers[ents[a]] < world.numbers[ents[b]]:
            a, b = b, a  # larger minus smaller: a non-negative answer
        return replace(spec, calc=(a, b, op), steps=steps)
    raise ValueError(f"operator must be one of {OPERATORS}")


def simplify(spec: Spec) -> Spec | None:
    """One step easier: drop the calculation, else the number, else the description, else the last hop;
    None for a bare one-hop question."""
    if spec.calc is not None:
        return replace(spec, calc=None)
    if spec.number:
        return replace(spec, number=False)
    if spec.whose is not None:
        return replace(spec, whose=None)
    if len(spec.relations) > 1:
        return replace(spec, relations=spec.relations[:-1])
    return None
