"""reasoning-gym as a domain: each family is its own domain instance, ``rg:<family>``, with its own frontier.

    pip install 'zpd[reasoning-gym]'
    zpd start --config configs/reasoning-gym.toml --state-dir runs/rg --rounds 2

Difficulty is the family's global curriculum level (``set_global_level``: every attribute at min(level,
its last level)), 0 .. the last level that reasoning-gym can make. ``make_task(d)`` rounds d to a level
stochastically (floor(d) + Bernoulli(frac)), so a frontier between levels draws both; escalate and simplify
move one level up or down. An item is the entry made from one seed (``rg_grading.make_entry``); seeds come
from the rng SYNTHESIZE hands in, which derives from ``run.seed`` and the round, so a resumed run makes the
same items; tasks are stored once by content hash (the family and the whitespace-collapsed question).

Grading: ``rg_grading`` (the stored entry scored by the family's ``score_answer``, pass at
``pass_threshold``). Families that fail the grading check are left out when the domain is built (logged).

Frozen eval sets (``eval_items``): per family and level, items from seeds of ``eval_seed`` (not the run
seed), at most ``max_eval_items`` over all families; each item's meta says ``validation`` or ``test``.

Difficulty may also be the sum of the attribute levels, with caps per attribute (``difficulty``,
``attribute_max``; ``rg_grading.Ladder``): each item's attribute levels are then stored in its meta.

Guidance without a teacher: worked steps from the entry's metadata where reasoning-gym has them
(``WORKED_KEYS``), or worked steps zpd computes from it (``rg_grading.COMPUTED_STEPS``: chain_sum's
running total, left to right, ``3-5=-2;-2+7=5``; the guidance is those steps without the last result,
``3-5=-2;-2+7=``, and the worked answer the full steps; zpd grades that work too), else ``num_demos``
solved items of the same family and level (in-context examples).
A guidance that would contain the answer string is not given (the item gets none); a family where fewer
than half of the check items get a guidance has no offline guidance, and is left out unless
``unguided = "keep"`` (a [teacher] then makes its guided attempts).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import random
import re
from typing import Any

from . import rg_grading as g
from .base import Attaches, Domain, NamesGrader, OwnEvalSet, Scores, Task, register
from .services import DomainServices

PREFIX = "rg:"
# Metadata fields that hold worked steps towards the answer (reasoning-gym 0.1.25).
WORKED_KEYS = {"gsm_symbolic": "answer_cot", "count_bits": "binary", "fraction_simplification": "factor"}
_SPACES = re.compile(r"\s+")


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "big")


class Family(Domain, OwnEvalSet, Scores, NamesGrader, Attaches):
    """One reasoning-gym family as a zpd domain (the Domain protocol of ``base.py``)."""

    def __init__(self, family: str, cfg: Any, levels: list[int], eval_budget: int) -> None:
        self.family, self.cfg, self.levels = family, cfg, levels
        self.name = PREFIX + family
        self.min_difficulty, self.max_difficulty = float(levels[0]), float(levels[-1])
        self.eval_budget = eval_budget
        self.ladder = g.Ladder(*cfg.ladder())
        self.grader_name = f"reasoning-gym:{family}"
        self._services: DomainServices | None = None
        self._held_out: set[str] | None = None

    teacher_hints = False
    """Whether the teacher writes the guidance of new candidates (``teacher_guidance = "hint"``, set by
    ``attach``): CALIBRATE then has the learner make the guided attempts, reading the teacher's hint."""

    # -- items -> tasks -------------------------------------------------------------------------
    def _level(self, difficulty: float, rng: random.Random) -> int:
        d = min(self.max_difficulty, max(self.min_difficulty, difficulty))
        lo = math.floor(d)
        return int(min(self.max_difficulty, lo + (1 if rng.random() < d - lo else 0)))

    def steps(self, entry: dict[str, Any]) -> str:
        """The worked steps reasoning-gym stores in the entry's metadata ('' when none)."""
        key = WORKED_KEYS.get(self.family)
        value = entry["metadata"].get(key) if key else None
        return str(value).strip() if value not in (None, "") else ""

    def computed(self, entry: dict[str, Any]) -> list[str]:
        """The worked steps zpd computes for the entry ([] for a family without them)."""
        make = g.COMPUTED_STEPS.get(self.family)
        return make(entry) if make else []

    def _demos(self, level: int, seed: int, entry: dict[str, Any]) -> str:
        answer, out = str(entry["answer"]), list[str]()
        for j in range(self.cfg.num_demos * 4):
            if len(out) == self.cfg.num_demos:
                break
            demo = g.make_entry(self.family, level, _seed(seed, "demo", j), self.cfg.range_mode, self.ladder)
            text = f"{demo['question']}\n{g.render(str(demo['answer']), self.work(demo), self.cfg.response)}"
            if answer not in text and demo["question"] != entry["question"]:
                out.append(text)
        return "\n".join(out) if len(out) == self.cfg.num_demos else ""

    def work(self, entry: dict[str, Any]) -> str:
        """Worked steps of the worked response form ('' unless the entry has clean ones): zpd's computed
        steps in full, or the metadata's steps when they hold neither the answer nor a '>'."""
        if self.cfg.response != "worked":
            return ""
        own = self.computed(entry)
        if own:
            return ";".join(own)
        steps = self.steps(entry)
        return steps if steps and str(entry["answer"]) not in steps and ">" not in steps else ""

    def guidance_for(self, level: int, seed: int, entry: dict[str, Any]) -> str:
        """The offline guidance of an item: never contains the answer string ('' when none is clean)."""
        kind, answer = self.cfg.guidance, str(entry["answer"])
        if kind == "none":
            return ""
        own = self.computed(entry) if kind in ("auto", "worked") else []
        if own:
            # The steps but the last result: the attempt finishes the last step (no demos: a chain's
            # worked demos would not fit a small learner's context).
            hint = ";".join([*own[:-1], own[-1].rsplit("=", 1)[0] + "="])
            return hint if answer not in hint else ""
        if kind in ("auto", "worked"):
            steps = self.steps(entry)
            if steps and answer not in steps:
                return steps
            if kind == "worked":
                return ""
        return self._demos(level, seed, entry)

    def task_at(self, level: int, seed: int, split: str | None = None) -> Task:
        cfg = self.cfg
        entry = g.make_entry(self.family, level, seed, cfg.range_mode, self.ladder)
        question = entry["question"]
        prompt = f"{question}\n{cfg.instruction}" if cfg.response == "answer_tags" else question
        meta: dict[str, Any] = {"rg": {"family": self.family, "level": level, "seed": seed, "entry": entry,
                                       "range_mode": cfg.range_mode, "response": cfg.response,
                                       "pass_threshold": cfg.pass_threshold, "work": self.work(entry),
                                       "version": g.library_version()}}
        if cfg.response == "worked" and self.family in g.COMPUTED_STEPS:
            meta["rg"]["work_check"] = True  # zpd grades the work it computes (rg_grading.work_ok)
        if split is not None:
            meta["rg"]["split"] = split
        if self.ladder != g.GLOBAL:  # the item's attribute levels: its scorer's (rg_grading.score_task)
            meta["rg"]["attributes"] = dict(g.setting_of(self.family, level, seed, self.ladder))
        return Task(domain=self.name, difficulty=float(level), prompt=prompt, answer=str(entry["answer"]),
                    guidance=self.guidance_for(level, seed, entry),
                    canonical=_SPACES.sub(" ", question).strip(), meta=meta)

    # -- the Domain interface -------------------------------------------------------------------
    def make_task(self, difficulty: float, rng: random.Random) -> Task:
        # A candidate is never a held-out test item (eval_split = "validation"), and gets an offline guidance
        # where the family has any (an item whose guidance would contain the answer is drawn again: without
        # a guidance its guided attempt is a solo one, so it could only enter the ZPD by chance). Up to 64
        # draws; the last is kept.
        wants_guidance = self.cfg.guidance != "none" and not self.teacher_hints
        for _ in range(64):
            level, seed = self._level(difficulty, rng), rng.getrandbits(32)
            task = self.task_at(level, seed)
            if task.content_hash not in self.held_out() and (task.guidance or not wants_guidance):
                break
        # Hints from round 1 on: round 0's bootstrap set (made with this hook too) keeps offline guidance.
        if self.teacher_hints and self._services is not None and (self._services.current_round() or 0) >= 1:
            teacher = self._services.run_config().teacher
            meta = {"rg": {**task.meta["rg"], "guidance_by": f"teacher:{teacher.model if teacher else '?'}"}}
            task = dataclasses.replace(task, guidance=self.hint(task, seed), meta=meta)
        return task

    # -- the teacher's hints (teacher_guidance = "hint") --------------------------------------------
    def attach(self, services: DomainServices) -> None:
        """The run context, from the daemon once it is built. Under ``teacher_guidance = "hint"`` with a
        [teacher] the teacher writes the hints; only when every domain is a family (CALIBRATE has one guided
        role per run: with other domains the teacher makes the guided attempts, and no hint is asked)."""
        if self.cfg.teacher_guidance != "hint":
            return
        teacher = services.run_config().teacher
        others = sorted(n for n in services.domain_names() if not n.startswith(PREFIX))
        if teacher is None or others:
            why = "no [teacher]" if teacher is None else f"other domains enabled: {others}"
            logging.getLogger("zpd").warning("reasoning-gym teacher hints not used (the offline guidance is)",
                                             extra={"family": self.family, "reason": why})
            return
        self._services, self.teacher_hints = services, True

    def hint(self, task: Task, seed: int) -> str:
        """The teacher's hint for ``task`` (one sample at the teacher's temperature, with ``seed``); '' when
        it failed or contains the answer string (a hint must not give the answer away)."""
        services = self._services
        assert services is not None, "hint() runs only once attach() turned hints on"
        teacher, cal = services.run_config().teacher, services.run_config().calibration
        prompt = self.cfg.hint_prompt.replace("{question}", g.meta_of(task)["entry"]["question"])
        own = None if teacher is None else teacher.temperature
        temperature = cal.temperature if own is None else own
        # Through the services: the call is in the round's teacher ledger, under teacher.max_cost_usd, and a
        # reply a killed phase already paid for is replayed from the round's reply log.
        text = services.teacher(prompt, seed=seed, temperature=temperature,
                                max_tokens=self.cfg.hint_max_tokens).strip()
        return "" if task.answer in text else text

    def escalate(self, task: Task, rng: random.Random) -> Task:
        return self.make_task(task.difficulty + 1.0, rng)

    def simplify(self, task: Task, rng: random.Random) -> Task:
        return self.make_task(task.difficulty - 1.0, rng)

    def guided_prompt(self, task: Task) -> str:
        return f"{task.guidance}\n{task.prompt}" if task.guidance else task.prompt

    def solution(self, task: Task) -> str:
        return g.render(task.answer, g.meta_of(task).get("work", ""), g.meta_of(task)["response"])

    def grade(self, task: Task, output: str) -> bool:
        return g.grade_task(task, output)

    def score(self, task: Task, output: str) -> float:
        """The raw score (stored with each calibration attempt)."""
        return g.score_task(task, output)

    def eval_levels(self) -> list[float]:
        return [float(level) for level in self._eval_levels()]

    def _eval_levels(self) -> list[int]:
        if len(self.levels) <= self.eval_budget:
            return list(self.levels)
        step = (len(self.levels) - 1) / max(1, self.eval_budget - 1)
        return sorted({self.levels[round(i * step)] for i in range(self.eval_budget)})

    def eval_items(self) -> list[Task]:
        """The frozen eval set MEASURE reads: the validation and test items (``eval_split = "all"``), or the
        validation items only (the test items are then held out: ``test_items``)."""
        items = self.frozen_items()
        if self.cfg.eval_split == "all":
            return items
        return [t for t in items if t.meta["rg"]["split"] != "test"]

    def test_items(self) -> list[Task]:
        """The frozen test items (tagged ``test``)."""
        return [t for t in self.frozen_items() if t.meta["rg"]["split"] == "test"]

    def held_out(self) -> set[str]:
        """Content hashes no candidate may have: the test items when MEASURE does not read them (the store's
        dedup keeps the stored eval items out of training; held-out ones are not in the store)."""
        if self._held_out is None:
            held = self.test_items() if self.cfg.eval_split == "validation" else []
            self._held_out = {t.content_hash for t in held}
        return self._held_out

    def frozen_items(self) -> list[Task]:
        """The frozen eval set: per level, items from seeds of ``eval_seed`` (the same in every run), the
        first ``validation_ratio`` of each level tagged ``validation``, the others ``test``."""
        levels = self._eval_levels()
        per_level = max(1, min(self.cfg.eval_per_level, self.eval_budget // len(levels)))
        num_val = round(per_level * self.cfg.validation_ratio)
        return [self.task_at(level, _seed(self.cfg.eval_seed, "rg-eval", self.family, level, i),
                             "validation" if i < num_val else "test")
                for level in levels for i in range(per_level)]

    def offline_guidance_ratio(self) -> float:
        """Share of the check's items (fixed seeds) that get a clean offline guidance."""
        seeds = [_seed(self.cfg.eval_seed, "rg-guidance", self.family, i)
                 for i in range(self.cfg.check_items)]
        tasks = [self.task_at(self.levels[i % len(self.levels)], s) for i, s in enumerate(seeds)]
        return sum(1 for t in tasks if t.guidance) / len(tasks)


def build_families(cfg: Any) -> tuple[dict[str, Family], dict[str, str]]:
    """The enabled families and, for each family left out, why (grading check, no offline guidance)."""
    from zpd.configs.load import ConfigError

    try:
        g.library()
    except ImportError as exc:
        raise ConfigError(f"domains.reasoning_gym: {exc}") from None
    known = g.all_families()
    names = cfg.family_names() or known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"domains.reasoning_gym.families: no family {unknown[0]!r} in reasoning-gym "
                          f"{g.library_version()} ({len(known)} families)")
    budget = max(1, cfg.max_eval_items // len(names))
    out: dict[str, Family] = {}
    left_out: dict[str, str] = {}
    for name in names:
        result = g.check_family(name, num_items=cfg.check_items, seed=_seed(cfg.eval_seed, "rg-check", name),
                                threshold=cfg.pass_threshold, range_mode=cfg.range_mode,
                                max_level=cfg.max_level, response=cfg.response,
                                ladder=g.Ladder(*cfg.ladder()))
        if not result.ok:
            left_out[name] = f"grading check: {result.reason}"
            continue
        fam = Family(name, cfg, result.levels, budget)
        if cfg.guidance != "none" and cfg.unguided == "drop" and fam.offline_guidance_ratio() < 0.5:
            left_out[name] = "no offline guidance (set unguided = 'keep' with a [teacher])"
            continue
        out[fam.name] = fam
    return out, left_out


@register("reasoning_gym", prefix="rg", grade_task=g.grade_task)  # grading: all in the task's meta
def _make(cfg: Any) -> dict[str, Domain]:
    from zpd.configs.load import ConfigError

    families, left_out = build_families(cfg)
    log = logging.getLogger("zpd")
    for name, why in left_out.items():
        log.warning("reasoning-gym family left out", extra={"family": name, "reason": why})
    if not families:
        raise ConfigError("domains.reasoning_gym.families: every family was left out "
                          f"({'; '.join(f'{k}: {v}' for k, v in left_out.items())[:300]})")
    log.info("reasoning-gym families", extra={"families": sorted(families), "version": g.library_version()})
    return dict[str, Domain](families)

