"""A fictional world made from a seed: entities, relations, and the documents that state them.

The offline generator's corpus. Entities (people, organisations, cities, countries) get short
made-up names, so a char-level learner cannot know anything about them before training, and every
fact is one short sentence ``"<subject>'s <relation> is <object>."``; every entity also has one
number (``ATTRIBUTES``: a person's birth year, a city's population, ...) stated the same way. A
multi-hop question follows a chain of relations from a start entity, written left to right in the
order it is resolved (``"Tal's mentor's birthplace?"``), and its answer is the entity at the end of the chain.

Retrieval (``World.search``) is lexical: a passage scores by the unigrams and adjacent word pairs
it shares with the query, so ``"Tal's mentor"`` finds ``"Tal's mentor is Rok."`` first, ahead of
``"Vex's mentor is Tal."``. Pure logic: no disk, deterministic for (seed, sizes).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

# entity type -> [(relation, type of its object)]
SCHEMA: dict[str, list[tuple[str, str]]] = {
    "person": [("mentor", "person"), ("birthplace", "city"), ("employer", "org")],
    "org": [("home", "city"), ("founder", "person")],
    "city": [("country", "country"), ("mayor", "person")],
    "country": [("capital", "city")],
}
# entity type -> its numeric attribute (factual grounding and computational formulation ask about these)
ATTRIBUTES: dict[str, tuple[str, int, int]] = {
    "person": ("birth year", 1900, 1999),
    "org": ("founding year", 1800, 1990),
    "city": ("population", 1_000, 99_000),
    "country": ("area", 1_000, 99_000),
}
_ONSETS = "b d f g k l m n p r s t v z".split()
_VOWELS = "a e i o u".split()
_CODAS = ["", "", "n", "r", "s", "k", "l"]
_WORD = re.compile(r"[a-z0-9]+(?:'s)?")


def fact_sentence(subject: str, relation: str, obj: str) -> str:
    return f"{subject}'s {relation} is {obj}."


def question_text(start: str, relations: list[str]) -> str:
    return start + "".join(f"'s {r}" for r in relations) + "?"


def _terms(text: str) -> set[str]:
    words = _WORD.findall(text.lower())
    return set(words) | {f"{a} {b}" for a, b in zip(words, words[1:], strict=False)}


@dataclass(frozen=True, slots=True)
class Fact:
    subject: str
    relation: str
    obj: str

    @property
    def text(self) -> str:
        return fact_sentence(self.subject, self.relation, self.obj)


class World:
    """Entities and facts for ``seed`` and the four population sizes."""

    def __init__(self, seed: int, num_people: int, num_orgs: int, num_cities: int,
                 num_countries: int) -> None:
        rng = random.Random(f"knowledge-world:{seed}")
        sizes = {"person": num_people, "org": num_orgs, "city": num_cities, "country": num_countries}
        names: set[str] = set()
        self.entities: dict[str, list[str]] = {}
        for kind, n in sizes.items():
            self.entities[kind] = [self._name(rng, names) for _ in range(n)]
        self.kind_of = {e: k for k, es in self.entities.items() for e in es}
        self.facts: dict[tuple[str, str], Fact] = {}
        for kind, es in self.entities.items():
            for e in es:
                for rel, target in SCHEMA[kind]:
                    choices = [x for x in self.entities[target] if x != e]
                    self.facts[(e, rel)] = Fact(e, rel, rng.choice(choices))
        # Numbers from their own stream, so the names and relations above stay what they were before them.
        num_rng = random.Random(f"knowledge-world-numbers:{seed}")
        self.numbers: dict[str, int] = {}
        for kind, es in self.entities.items():
            _attr, lo, hi = ATTRIBUTES[kind]
            for e in es:
                self.numbers[e] = num_rng.randint(lo, hi)
        self.passages: list[str] = [f.text for f in self.facts.values()]
        self.passages += [self.number_fact(e) for es in self.entities.values() for e in es]
        self._terms = [_terms(p) for p in self.passages]

    @staticmethod
    def _name(rng: random.Random, taken: set[str]) -> str:
        while True:
            syllables = rng.choice([1, 2, 2])
            stem = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables))
            name = stem + rng.choice(_CODAS)
            name = name.capitalize()
            if len(name) >= 3 and name not in taken:
                taken.add(name)
                return name

    # -- chains -------------------------------------------------------------------------------
    def walk(self, start: str, hops: int, rng: random.Random) -> list[str]:
        """``hops`` relations followed from ``start`` (a random walk over the schema)."""
        rels, entity = [], start
        for _ in range(hops):
            rel, _target = rng.choice(SCHEMA[self.kind_of[entity]])
            rels.append(rel)
            entity = self.facts[(entity, rel)].obj
        return rels

    def resolve(self, start: str, relations: list[str]) -> list[Fact]:
        """The facts along a chain, in order (KeyError for a relation the entity does not have)."""
        out, entity = [], start
        for rel in relations:
            fact = self.facts[(entity, rel)]
            out.append(fact)
            entity = fact.obj
        return out

    def attribute(self, entity: str) -> str:
        return ATTRIBUTES[self.kind_of[entity]][0]

    def number_fact(self, entity: str) -> str:
        return fact_sentence(entity, self.attribute(entity), str(self.numbers[entity]))

    def described_by(self, entity: str) -> list[tuple[str, str]]:
        """(relation, object) pairs that single ``entity`` out among its kind ("the person whose mentor is
        Rok" when Rok mentors nobody else): the descriptions conceptual abstraction may use."""
        kind = self.kind_of[entity]
        out = []
        for rel, _target in SCHEMA[kind]:
            obj = self.facts[(entity, rel)].obj
            if sum(self.facts[(e, rel)].obj == obj for e in self.entities[kind]) == 1:
                out.append((rel, obj))
        return out

    # -- documents ----------------------------------------------------------------------------
    def documents(self) -> dict[str, str]:
        """One document per entity (its profile: every fact with it as subject), keyed by file name."""
        docs: dict[str, list[str]] = {}
        for (subject, _rel), fact in self.facts.items():
            docs.setdefault(subject, []).append(fact.text)
        for subject in docs:
            docs[subject].append(self.number_fact(subject))
        return {f"{self.kind_of[s]}_{s.lower()}.txt": f"{s} ({self.kind_of[s]}). " + " ".join(fs) + "\n"
                for s, fs in docs.items()}

    def search(self, query: str, k: int = 1) -> list[str]:
        """The ``k`` passages sharing the most terms (words and adjacent word pairs, pairs count double)."""
        q = _terms(query)
        scored = []
        for i, terms in enumerate(self._terms):
            shared = q & terms
            score = sum(2 if " " in t else 1 for t in shared)
            if score:
                scored.append((-score, i))
        scored.sort()
        return [self.passages[i] for _, i in scored[:k]]
