"""The selection comparison's shared pool: one per (seed, round), independent of every arm's learner.

A pool is drawn with zpd's own domain code (``zpd.loop.domains``) from a fixed difficulty window, uniformly,
with a generator seeded by (seed, round) alone. It leaves out every task stored in any run of that seed
(a superset of "any arm has trained on": tasks an arm calibrated and did not train on are left out too, so
that no arm's daemon drops a pool item as a duplicate and every arm calibrates exactly the same items) and
the shared round 0's eval items. It is written in the ``pool`` source's format (``curriculum.pool_dir``:
``round_NNNNNN.jsonl``, one ``Task``'s fields a line) by write-then-rename, so a killed bench never leaves a
half pool, and a pool once written is reused on resume.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from zpd.configs.schema import ZpdConfig
from zpd.loop.domains.base import Task
from zpd.loop.domains.registry import build_domains


def pool_path(pool_dir: Path, round_n: int) -> Path:
    """Where the pool source reads round ``round_n``'s candidates."""
    return pool_dir / f"round_{round_n:06d}.jsonl"


def make_pool(cfg: ZpdConfig, seed: int, round_n: int, size: int, window: tuple[float, float],
              exclude: set[str], domain: str = "arithmetic") -> list[Task]:
    """``size`` distinct tasks of ``domain`` with difficulty drawn uniformly from ``window`` (clipped to the
    domain), none of whose content hash is in ``exclude``; fewer when the window runs dry."""
    dom = build_domains(cfg.domains)[domain]
    lo, hi = max(window[0], dom.min_difficulty), min(window[1], dom.max_difficulty)
    if lo > hi:
        raise ValueError(f"window {window} lies outside {domain}'s difficulties "
                         f"[{dom.min_difficulty}, {dom.max_difficulty}]")
    # An int seed: Python's str seeding is stable too, but this is plainly a function of (seed, round).
    rng = random.Random(1_000_003 * seed + round_n)
    seen, out = set(exclude), list[Task]()
    for _ in range(size * cfg.synthesis.max_tries_factor):
        if len(out) == size:
            break
        task = dom.make_task(rng.uniform(lo, hi), rng)
        if task is None or task.content_hash in seen:
            continue
        seen.add(task.content_hash)
        out.append(task)
    return out


def write_pool(path: Path, tasks: Iterable[Task]) -> None:
    """The pool file, atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        for t in tasks:
            fh.write(json.dumps(asdict(t), sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_pool(path: Path) -> list[Task]:
    """A pool file back as tasks."""
    return [Task(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def stored_hashes(state_dir: Path) -> set[str]:
    """Content hashes of every task in a state directory's store (empty when it has none yet)."""
    from zpd.store.db import open_readonly
    from zpd.store.ledger_tasks import known_hashes

    path = state_dir / "state.db"
    if not path.is_file():
        return set()
    db = open_readonly(path)
    try:
        return known_hashes(db)
    finally:
        db.conn.close()
