"""Exam integrity: every round's training set is checked against the held-out items (the round's exam
version and the frozen eval set) before training, and the check is recorded as the round's
decontamination report (``rounds.decontamination_json``, shown by ``zpd report``).

Two tests, as DESIGN.md asks (procedural domains deduplicate by exact or structural hash):

* exact: the training task's content hash (domain + canonical form, ``Task.content_hash``) is a held-out
  item's;
* near-duplicate: the normalised prompt (case, whitespace and punctuation folded) is a held-out item's,
  or the domain's own similarity test says so (a domain with ``near_duplicates(train_prompts,
  held_prompts) -> set[int]``, e.g. the knowledge domain's embedding cosine, returns the indexes of
  training prompts too close to a held-out prompt).

Offending examples are dropped from the training set (never trained on) and counted. SYNTHESIZE already
refuses candidates whose content hash is stored, so on a healthy run every count is 0; the report is the
evidence, and the drop the safety net (e.g. for replayed or bootstrap examples, or an exam grown since).
"""

from __future__ import annotations

import json
import re
from typing import Any

from zpd.store.db import Database
from zpd.store.ledger_exam import version_items
from zpd.store.ledger_tasks import held_out_rows

from .domains.base import FlagsNearDuplicates, Task, capability

_FOLD = re.compile(r"[\s\.,;:!?\"'`()\[\]{}]+")


def normalized(prompt: str) -> str:
    return _FOLD.sub(" ", prompt.lower()).strip()


def held_out(db: Database, round_n: int) -> list[dict[str, Any]]:
    """The exam version ``round_n`` and the eval set: task id, domain, content hash, prompt, kind."""
    exam_ids = set(version_items(db, round_n))
    rows = held_out_rows(db, exam_ids)
    return [
        {
            "id": r[0],
            "domain": r[1],
            "hash": r[2],
            "prompt": r[3],
            "kind": "eval" if r[4] == "eval" else "exam",
        }
        for r in rows
    ]


def _hash_of(example: dict[str, Any]) -> str | None:
    raw = example.get("task_json")
    if not raw:
        return None
    return Task(**json.loads(raw)).content_hash


def _bare_prompt(example: dict[str, Any]) -> str:
    """The task as stored (held-out items are compared as stored), not the prompt style's rendering."""
    raw = example.get("task_json")
    return Task(**json.loads(raw)).prompt if raw else example["prompt"]


def check(
    db: Database, round_n: int, data: list[dict[str, Any]], domains: dict[str, Any]
) -> tuple[list[dict], dict]:
    """(the training set without contaminated examples, the decontamination report)."""
    held = held_out(db, round_n)
    hashes = {h["hash"] for h in held}
    prompts = {normalized(h["prompt"]) for h in held}
    exact: set[int] = set()
    near: set[int] = set()
    for i, ex in enumerate(data):
        if _hash_of(ex) in hashes:
            exact.add(i)
        elif normalized(_bare_prompt(ex)) in prompts:
            near.add(i)
    for name, domain in domains.items():
        flags = capability(domain, FlagsNearDuplicates)
        hook = None if flags is None else flags.near_duplicates
        if hook is None:
            continue
        idx = [
            i for i, ex in enumerate(data) if ex.get("domain") == name and i not in exact and i not in near
        ]
        held_prompts = [h["prompt"] for h in held if h["domain"] == name]
        if idx and held_prompts:
            near |= {idx[j] for j in hook([_bare_prompt(data[i]) for i in idx], held_prompts)}
    clean = [ex for i, ex in enumerate(data) if i not in exact and i not in near]
    report = {
        "train_examples_checked": len(data),
        "exam_items": sum(1 for h in held if h["kind"] == "exam"),
        "eval_items": sum(1 for h in held if h["kind"] == "eval"),
        "exact_overlap": len(exact),
        "near_overlap": len(near),
        "dropped": len(data) - len(clean),
    }
    return clean, report
