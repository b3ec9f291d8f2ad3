"""The dataset domain: the user's own verifiable problems (a JSONL, CSV, parquet file or a saved HF
``datasets`` directory) instead of a procedural generator.

    zpd start --config configs/dataset.toml --state-dir runs/ds --rounds 2
    zpd start --config configs/dataset.toml --state-dir runs/gsm --set domains.dataset.path=gsm8k.jsonl

Items. The file is read and validated whole when the domain is built (``dataset_file.read_items``);
an item is a task whose canonical form is its whitespace-collapsed question, so it is stored at most
once by content hash: re-importing, or a file listing it twice, adds nothing. The items are split
deterministically (by a hash of ``split_seed`` and the item) into the frozen **eval set**
(``eval_size``: ``eval_items``, made once at round 0), a **bootstrap** share (``bootstrap_size``: the
round-0 warm-up trains only on those, ``bootstrap_task``) and the **pool**. SYNTHESIZE draws
candidates only from the pool, and CALIBRATE admits exam items only from candidates, so the eval set,
the exam and every training example are pairwise disjoint.

Difficulty is frozen: an item's difficulty is fixed when the file is read and never moves, so the
frontier (the difficulty where the learner's solo rate on the eval set crosses 0.5) changes only when
the learner does. With ``difficulty_field`` the file's value is the difficulty. Without it, it is a
learner-independent proxy: the length of the item's worked solution (its guidance; the question when
there is none), as a mid-rank quantile over the file scaled to ``0..levels`` in whole levels (ties
share a level). An earlier version estimated difficulty from solo pass rates; that scale is relative to
the learner (as it improves every item looks easier, so a frontier measured on it cannot climb), and
estimated from the eval answers themselves it is circular: the frontier climbed from 4.5 to 9.5 while
nothing was trained.

The hook. Domains are pure logic, so the loop hands the store's state in: SYNTHESIZE calls
``observe(stats, used)`` before making candidates (``used``: content hashes this domain already has in
the store; ``stats``, per-item solo statistics, is not needed by this domain any more). ``make_task(d)``
returns an unused pool item from the level nearest ``d`` (a used one, i.e. a duplicate, once the pool is
spent: SYNTHESIZE then stops with "domain exhausted"). ``escalate`` / ``simplify`` pick an unused item one
level above / below the parent's.

Grading is per dataset (``grader``): the settings go into every task's ``meta``, so a task rebuilt
from the store or a trainer row grades alike (``dataset_grading``). Guidance is the row's solution
(or, GSM8K style, the worked part of an answer before ``answer_marker``).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from .base import Domain, EstimatesDifficulty, NamesGrader, Observes, OwnBootstrap, OwnEvalSet, Task, register
from .dataset_file import DatasetFileError, Item, read_items
from .dataset_grading import final_answer, get_grader

NAME = "dataset"


def grade_with_meta(task: Task, output: str) -> bool:
    """Grade ``output`` by the grader and settings recorded in ``task.meta`` (config-independent)."""
    meta = task.meta
    grader = get_grader(meta.get("grader", "exact"))
    return bool(grader(task.answer, final_answer(output, meta.get("answer_marker", "####")), meta))


class Dataset(Domain, OwnEvalSet, OwnBootstrap, Observes, EstimatesDifficulty, NamesGrader):
    name = NAME

    def __init__(self, cfg: Any) -> None:  # cfg: zpd.configs.schema.DatasetConfig
        self.cfg = cfg
        items, self.report = read_items(cfg)
        need = minimum_items(cfg)
        if len(items) < need:
            raise DatasetFileError(
                f"{cfg.path}: {len(items)} usable items, at least {need} needed (domains.dataset.eval_size "
                f"{cfg.eval_size} + domains.dataset.bootstrap_size {cfg.bootstrap_size} + 1 to train on); "
                "add items or lower those keys")
        self.grader_name = cfg.grader
        self._grade_meta = {"grader": cfg.grader, "answer_marker": cfg.answer_marker,
                            "tolerance": cfg.tolerance,
                            "rel_tolerance": cfg.rel_tolerance, "case_sensitive": cfg.case_sensitive}
        self.tasks: dict[str, Task] = {}
        self.items: dict[str, Item] = {}
        for item in items:
            task = self._task(item, 0.0)
            self.tasks[task.content_hash] = task
            self.items[task.content_hash] = item
        order = sorted(self.tasks, key=lambda h: hashlib.sha256(f"{cfg.split_seed}:{h}".encode()).hexdigest())
        self.eval_hashes = order[: cfg.eval_size]
        self.bootstrap_hashes = order[cfg.eval_size: cfg.eval_size + cfg.bootstrap_size]
        self.pool_hashes = order[cfg.eval_size + cfg.bootstrap_size:]
        given = [i.difficulty for i in items if i.difficulty is not None]
        self.fixed = cfg.difficulty_field is not None
        self.min_difficulty = min(given) if self.fixed else 0.0
        self.max_difficulty = max(given) if self.fixed else float(cfg.levels)
        self._difficulty = frozen_difficulties(self.items, cfg.levels) if not self.fixed else {
            h: float(item.difficulty) for h, item in self.items.items()}  # type: ignore[arg-type]
        self._used: set[str] = set()
        self.observe({}, set())
        log = logging.getLogger("zpd")
        extra = {"path": self.report.path, "rows": self.report.num_rows, "items": self.report.num_items,
                 "duplicates": self.report.num_duplicates, "skipped": self.report.num_skipped,
                 "eval": len(self.eval_hashes), "bootstrap": len(self.bootstrap_hashes),
                 "pool": len(self.pool_hashes)}
        if self.report.num_skipped:
            log.warning("dataset: bad rows skipped",
                        extra={**extra, "first_errors": self.report.first_errors})
        else:
            log.info("dataset imported", extra=extra)

    # -- items -> tasks ----------------------------------------------------------------------
    def _task(self, item: Item, difficulty: float) -> Task:
        meta = dict(self._grade_meta, category=item.category, source=item.source)
        return Task(domain=NAME, difficulty=difficulty, prompt=item.question, answer=item.answer,
                    guidance=item.solution, canonical=item.canonical, meta=meta)

    def _at(self, h: str) -> Task:
        t = self.tasks[h]
        return Task(t.domain, self._difficulty[h], t.prompt, t.answer, t.guidance, t.canonical, t.meta)

    # -- the observation hook ------------------------------------------------------------------
    def observe(self, stats: Mapping[str, tuple[int, int]], used: set[str]) -> None:
        """Take the content hashes already stored (``stats`` is ignored: difficulties are frozen) and
        rebuild the per-level buckets of unused pool items. Deterministic."""
        self._used = set(used)
        self._levels: dict[float, list[str]] = defaultdict(list)
        for h in self.pool_hashes:
            if h not in self._used:
                self._levels[self._difficulty[h]].append(h)

    def estimated_difficulty(self, content_hash: str) -> float | None:
        """The (frozen) difficulty of an item of this dataset (None: not an item of the file)."""
        return self._difficulty.get(content_hash)

    # -- the Domain interface ----------------------------------------------------------------
    def make_task(self, difficulty: float, rng: random.Random) -> Task:
        levels = [lvl for lvl, hs in self._levels.items() if hs]
        if not levels:  # the pool is spent: a used item, which SYNTHESIZE drops as a duplicate
            return self._at(rng.choice(self.pool_hashes))
        best = min(abs(lvl - difficulty) for lvl in levels)
        level = rng.choice(sorted(lvl for lvl in levels if abs(lvl - difficulty) == best))
        bucket = self._levels[level]
        h = bucket.pop(rng.randrange(len(bucket)))
        self._used.add(h)
        return self._at(h)

    def _step(self) -> float:
        if not self.fixed:
            return 1.0
        return max(1e-9, (self.max_difficulty - self.min_difficulty) / self.cfg.levels)

    def escalate(self, task: Task, rng: random.Random) -> Task:
        base = self._difficulty.get(task.content_hash, task.difficulty)
        return self.make_task(base + self._step(), rng)

    def simplify(self, task: Task, rng: random.Random) -> Task:
        base = self._difficulty.get(task.content_hash, task.difficulty)
        return self.make_task(base - self._step(), rng)

    def guided_prompt(self, task: Task) -> str:
        return f"{task.prompt}\nHint: {task.guidance}" if task.guidance else task.prompt

    def solution(self, task: Task) -> str:
        marker = self.cfg.answer_marker
        if self.cfg.response == "worked" and task.guidance and marker:
            return f"{task.guidance} {marker} {task.answer}"
        return task.answer

    def grade(self, task: Task, output: str) -> bool:
        return grade_with_meta(task, output)

    def eval_levels(self) -> list[float]:
        return sorted({self._difficulty[h] for h in self.eval_hashes})

    # -- carve-outs (hooks of loop/bootstrap.py) -------------------------------------------------
    def eval_items(self) -> list[Task]:
        """The frozen eval set: the ``eval_size`` items of the eval split, with their frozen difficulties."""
        return [self._at(h) for h in self.eval_hashes]

    def bootstrap_task(self, rng: random.Random) -> Task | None:
        """A round-0 warm-up item from the bootstrap split (never in the eval set, the pool or the exam)."""
        if not self.bootstrap_hashes:
            return None
        return self._at(rng.choice(self.bootstrap_hashes))


def minimum_items(cfg: Any) -> int:
    """The fewest usable (valid, distinct) items a file may have: the eval set, the bootstrap share, and
    at least one pool item to calibrate and train on."""
    return cfg.eval_size + cfg.bootstrap_size + 1


def frozen_difficulties(items: dict[str, Item], levels: int) -> dict[str, float]:
    """Per content hash, ``levels`` times the mid-rank quantile of the item's worked-solution length
    (the question's when it has no solution), in whole levels: longer work, harder item. A function of
    the file alone, so it never moves with the learner."""
    length = {h: len(" ".join((item.solution or item.question).split())) for h, item in items.items()}
    counts: dict[int, int] = defaultdict(int)
    for n in length.values():
        counts[n] += 1
    below, quantile = 0, {}
    for n in sorted(counts):
        quantile[n] = (below + counts[n] / 2) / len(length)
        below += counts[n]
    return {h: float(round(levels * quantile[n])) for h, n in length.items()}


# grade_task: config-independent grading for a training child's GRPO reward (registry.grader_for).
@register(NAME, grade_task=grade_with_meta)
def _make(cfg: Any) -> Dataset:
    from zpd.configs.load import ConfigError

    try:
        return Dataset(cfg)
    except DatasetFileError as exc:
        raise ConfigError(str(exc)) from None

