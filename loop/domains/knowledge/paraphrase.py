"""Labelled question pairs for calibrating the near-duplicate threshold, from the synthetic world.

Duplicates: the same question (start entity + relation chain) in two different surface forms.
Non-duplicates, the hard cases an embedding confuses: the same form about a different entity (MiniLM
puts templated questions about different entities at 0.6-0.7 and more), the same entity with the last
relation changed, and the chain one hop shorter.
"""

from __future__ import annotations

import random

from .world import SCHEMA, World, question_text


def forms(start: str, relations: list[str]) -> list[str]:
    nested = " of ".join(f"the {r}" for r in reversed(relations))
    possessive = question_text(start, relations)
    return [
        possessive,
        f"What is {nested} of {start}?",
        f"Tell me {nested} of {start}.",
        f"q: {possessive.lower().rstrip('?')}",
        f"Who or what is {possessive[:-1]}?",
    ]


def labelled_pairs(world: World, num: int, rng: random.Random) -> list[tuple[str, str, int]]:
    """About ``num`` (question a, question b, 1 = duplicate) pairs, half duplicates."""
    people = world.entities["person"]
    out: list[tuple[str, str, int]] = []
    while len(out) < num:
        start = rng.choice(people)
        rels = world.walk(start, rng.choice([1, 2, 3]), rng)
        fs = forms(start, rels)
        a, b = rng.sample(range(len(fs)), 2)
        out.append((fs[a], fs[b], 1))
        form = rng.randrange(len(fs))
        kind = rng.choice(["entity", "relation", "shorter"] if len(rels) > 1 else ["entity", "relation"])
        if kind == "entity":
            other = rng.choice([p for p in people if p != start])
            other_q = forms(other, rels)[form]
        elif kind == "relation":
            last_kind = world.kind_of[world.resolve(start, rels[:-1])[-1].obj] if len(rels) > 1 else "person"
            alts = [r for r, _ in SCHEMA[last_kind] if r != rels[-1]]
            if not alts:
                continue
            other_q = forms(start, rels[:-1] + [rng.choice(alts)])[form]
        else:
            other_q = forms(start, rels[:-1])[form]
        out.append((fs[form], other_q, 0))
    return out
