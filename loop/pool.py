"""The pool source (``curriculum.source = "pool"``): a round's candidates read from a file.

Round N reads ``<curriculum.pool_dir>/round_NNNNNN.jsonl`` (zero-padded to 6, as round directories): one
JSON object per line with exactly a ``Task``'s fields ``domain, difficulty, prompt, answer, guidance,
canonical, meta`` (``meta`` an object). So several runs (the arms of ``bench/ablation.py``) calibrate the
same candidates, made once by something that does not depend on any arm's learner. The file decides how
many candidates a domain gets (``synthesis.num_candidates`` and the allocation do not apply); nothing is
derived from last round's tasks. Duplicates of stored tasks are skipped as for any source.

A missing file, a line that is not such an object, or a line of a domain that is not enabled fails the
phase with one line naming the file and the line (``PhaseFailed``: the daemon retries, so a file written
late is picked up). Reading is a pure function of the file, so a rerun after a kill makes the same
candidates.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zpd.store.atomic import atomic_write_text

from .domains.base import Task
from .errors import PhaseFailed
from .policy import Source

if TYPE_CHECKING:
    from .context import RunContext

__all__ = ["POOL_FIELDS", "PoolSource", "pool_file", "read_pool", "write_pool"]

POOL_FIELDS = ("domain", "difficulty", "prompt", "answer", "guidance", "canonical", "meta")
_TEXT_FIELDS = ("domain", "prompt", "answer", "guidance", "canonical")


def pool_file(pool_dir: Path, round_n: int) -> Path:
    return Path(pool_dir) / f"round_{round_n:06d}.jsonl"


def write_pool(path: Path, tasks: Iterable[Task]) -> None:
    """A pool file of ``tasks``, in order (what a bench writes for ``read_pool``); atomic."""
    atomic_write_text(Path(path), "".join(json.dumps(asdict(t), sort_keys=True) + "\n" for t in tasks))


def _task(obj: Any, domains: set[str]) -> Task:
    """The task a line stands for; raises ValueError saying what is wrong with it."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if set(obj) != set(POOL_FIELDS):
        missing, extra = sorted(set(POOL_FIELDS) - set(obj)), sorted(set(obj) - set(POOL_FIELDS))
        raise ValueError("; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                                   + ([f"unknown {', '.join(extra)}"] if extra else [])))
    for key in _TEXT_FIELDS:
        if not isinstance(obj[key], str):
            raise ValueError(f"{key} is not a string")
    difficulty = obj["difficulty"]
    if (isinstance(difficulty, bool) or not isinstance(difficulty, int | float)
            or not math.isfinite(difficulty)):
        raise ValueError("difficulty is not a finite number")
    if not isinstance(obj["meta"], dict):
        raise ValueError("meta is not an object")
    if obj["domain"] not in domains:
        raise ValueError(f"domain {obj['domain']!r} is not enabled (enabled: {', '.join(sorted(domains))})")
    return Task(obj["domain"], float(difficulty), obj["prompt"], obj["answer"], obj["guidance"],
                obj["canonical"], obj["meta"])


def read_pool(path: Path, domains: set[str]) -> list[Task]:
    """Every candidate of a pool file, in file order (blank lines skipped). Raises PhaseFailed naming the
    file, and the line when one is bad."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PhaseFailed("store", f"{path}: pool file not found (curriculum.source = 'pool')") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PhaseFailed("store", f"{path}: cannot read pool file: {exc}") from None
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(_task(json.loads(line), domains))
        except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError
            why = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise PhaseFailed("store", f"{path}: line {number}: {why}") from None
    return out


class PoolSource(Source):
    name = "pool"
    derives = False
    quota = False

    def __init__(self, cfg: Any, spread: float) -> None:
        super().__init__(cfg, spread)
        self._read: tuple[int, list[Task]] | None = None
        """(round, its candidates): the file is read once per round, for every domain."""

    def propose(self, ctx: RunContext, round_n: int, domain_name: str, domain: Any, n: int,
                rng: random.Random) -> list[Any] | None:
        if self._read is None or self._read[0] != round_n:
            if self.cfg.pool_dir is None:  # the config refuses this; a clear line all the same
                raise PhaseFailed("store", "curriculum.pool_dir is not set (curriculum.source = 'pool')")
            self._read = (round_n, read_pool(pool_file(self.cfg.pool_dir, round_n), set(ctx.domains)))
        return [t for t in self._read[1] if t.domain == domain_name]
