"""reasoning-gym items, answers and scores: what every grader of an ``rg:<family>`` task shares.

An item is ``create_dataset``'s entry (``question``, ``answer``, ``metadata``) of one family at one
curriculum level, made from one seed (a dataset of size 1 whose seed is the item's), and stored in the
task's meta after a JSON round trip: every grader (CALIBRATE, MEASURE, the embedded GRPO's reward, verl's
reward through ``task_json``) scores the same stored entry with the family's own ``score_answer``, so they
agree. A pass is ``score >= pass_threshold`` (also in the meta). ``score_answer`` gives partial credit and
some families score garbage well, hence the grading check (``check_family``) that decides which families
are enabled at all.

A family's scalar difficulty (an integer level) becomes attribute levels through its ``Ladder``: the global
level (every attribute at min(level, its last level): reasoning-gym's ``set_global_level``), or the attribute
levels that sum to it (one combination drawn per item from its seed), each attribute capped where the config
says. The attribute levels an item was made at are its ``Setting``.

reasoning-gym 0.1.25's ``__version__`` says 0.1.19; ``library_version`` reads the installed distribution.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import re
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

INSTALL_HINT = "pip install 'zpd[reasoning-gym]'"
GARBAGE = "zzz"
EXCLUDED = {"composite"}  # a mixture of other families, not a family: it needs a list of datasets
_TAGS = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.DOTALL)


def library() -> Any:
    """The ``reasoning_gym`` module; ImportError with the install hint when it is missing."""
    try:
        import reasoning_gym
    except ImportError:
        raise ImportError(f"reasoning-gym is not installed: {INSTALL_HINT}") from None
    return reasoning_gym


def library_version() -> str:
    from importlib.metadata import version

    return version("reasoning-gym")


def all_families() -> list[str]:
    from reasoning_gym.factory import DATASETS

    library()
    return sorted(set(DATASETS) - EXCLUDED)


Setting = tuple[tuple[str, int], ...]
"""One item's attribute levels, ``(attribute, level)`` sorted by attribute name (``()``: no curriculum)."""


@dataclass(frozen=True)
class Ladder:
    """How a family's scalar difficulty (a level 0, 1, ...) maps to its curriculum's attribute levels."""

    mode: str = "global"
    """``global``: every attribute at min(level, its top); ``attributes``: the attribute levels sum to the
    level (so one attribute can grow while the others stay), one combination drawn per item."""
    caps: tuple[tuple[str, int], ...] = ()
    """Highest level per attribute name, ``(attribute, level)``; attributes a family lacks are ignored."""


GLOBAL = Ladder()


@functools.lru_cache(maxsize=1024)
def _tops(family: str, ladder: Ladder) -> Setting:
    """Each attribute's highest level under the ladder's caps (``()`` for a family without a curriculum)."""
    from reasoning_gym.factory import create_curriculum, has_curriculum

    if not has_curriculum(family):
        return ()
    caps = dict(ladder.caps)
    attrs = create_curriculum(family).attributes
    return tuple(sorted((name, max(0, min(len(a.levels) - 1, caps.get(name, len(a.levels)))))
                        for name, a in attrs.items()))


def last_level(family: str, ladder: Ladder = GLOBAL) -> int:
    """The family's highest scalar level (0 for a family without a curriculum)."""
    tops = [top for _, top in _tops(family, ladder)]
    if not tops:
        return 0
    return sum(tops) if ladder.mode == "attributes" else max(tops)


@functools.lru_cache(maxsize=4096)
def _ways(tops: tuple[int, ...], total: int) -> int:
    """Combinations of levels 0..tops[i] that sum to ``total``."""
    if not tops:
        return 1 if total == 0 else 0
    return sum(_ways(tops[1:], total - k) for k in range(min(tops[0], total) + 1))


def setting_of(family: str, level: int, seed: int, ladder: Ladder = GLOBAL) -> Setting:
    """The attribute levels of the item made from ``seed`` at scalar ``level`` (under ``attributes``, one of
    the combinations summing to the level, uniformly, from the seed; a level past the top is the top)."""
    tops = _tops(family, ladder)
    if ladder.mode != "attributes":
        return tuple((name, min(level, top)) for name, top in tops)
    caps = tuple(top for _, top in tops)
    remaining, rng, out = min(level, sum(caps)), random.Random(seed), []
    for i, (name, top) in enumerate(tops):
        weights = [_ways(caps[i + 1:], remaining - k) for k in range(min(top, remaining) + 1)]
        k = rng.choices(range(len(weights)), weights=weights)[0]
        out.append((name, k))
        remaining -= k
    return tuple(out)


def _config(family: str, setting: Setting, range_mode: str, seed: int) -> Any:
    from reasoning_gym.coaching.base_curriculum import DefaultCurriculumContext, RangeAttributeMode
    from reasoning_gym.factory import DATASETS, create_curriculum, has_curriculum

    defaults = {"seed": seed, "size": 1}
    if not has_curriculum(family):
        return DATASETS[family][1](**defaults)
    cur = create_curriculum(family)
    for name, level in setting:
        cur.set_attr_level(name, level)
    mode = RangeAttributeMode.UPPER_BOUND if range_mode == "upper_bound" else RangeAttributeMode.INCLUSIVE
    return cur.generate_configuration(defaults, DefaultCurriculumContext(mode=mode))


def _dataset(family: str, setting: Setting, range_mode: str, seed: int) -> Any:
    from reasoning_gym.factory import DATASETS

    library()
    return DATASETS[family][0](config=_config(family, setting, range_mode, seed))


def _jsonable(x: Any) -> Any:
    if isinstance(x, (set, frozenset)):
        return sorted(x, key=repr)
    if isinstance(x, Fraction):
        return str(x)
    return repr(x)


def _stored(raw: dict[str, Any]) -> dict[str, Any]:
    entry = {"question": raw["question"], "answer": raw["answer"], "metadata": raw.get("metadata", {})}
    return json.loads(json.dumps(entry, default=_jsonable))


@functools.lru_cache(maxsize=256)
def _shared(family: str, setting: Setting, range_mode: str) -> Any:
    return _dataset(family, setting, range_mode, 0)


def _reseeded(family: str, setting: Setting, range_mode: str, seed: int) -> dict[str, Any]:
    ds = _shared(family, setting, range_mode)
    ds.seed = seed
    if hasattr(ds.config, "seed"):
        ds.config.seed = seed
    return _stored(ds[0])


_RESEEDABLE: dict[tuple[str, Setting, str], bool] = {}


def make_entry(family: str, level: int, seed: int, range_mode: str,
               ladder: Ladder = GLOBAL) -> dict[str, Any]:
    """The item of ``family`` at scalar ``level`` made from ``seed``, as it is stored (after a JSON round
    trip): item 0 of the dataset whose seed is ``seed``, at the attribute levels ``setting_of`` gives.
    Building a dataset can be slow (word lists, ARC files), so where re-seeding one built dataset gives
    exactly the items fresh ones give (checked on one seed per family and setting; most families draw each
    item from ``Random(seed + idx)``), that one is reused."""
    setting = setting_of(family, level, seed, ladder)
    key = (family, setting, range_mode)
    if key not in _RESEEDABLE:
        probes = [_seed_probe(family, setting, range_mode, 12345)]
        _RESEEDABLE[key] = all(fresh == again for fresh, again in probes)
    if _RESEEDABLE[key]:
        return _reseeded(family, setting, range_mode, seed)
    return _stored(_dataset(family, setting, range_mode, seed)[0])


def _seed_probe(family: str, setting: Setting, range_mode: str,
                seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    fresh = _stored(_dataset(family, setting, range_mode, seed)[0])
    return fresh, _reseeded(family, setting, range_mode, seed)


@functools.lru_cache(maxsize=512)
def _scorer(family: str, setting: Setting, range_mode: str) -> Any:
    return _dataset(family, setting, range_mode, 0).score_answer


def score_entry(family: str, level: int, range_mode: str, answer: str | None, entry: dict[str, Any],
                setting: Setting | None = None) -> float:
    """reasoning-gym's score of ``answer`` for ``entry`` (0.0 when the scorer fails on it), with the scorer
    of the item's attribute levels (``setting``; the global ``level``'s when not given)."""
    try:
        scorer = _scorer(family, setting_of(family, level, 0) if setting is None else setting, range_mode)
        return float(scorer(answer, entry))
    except Exception:  # noqa: BLE001  (a family's scorer may raise on malformed answers: that is a fail)
        return 0.0


# -- response formats -------------------------------------------------------------------------------
def extract(output: str, response: str) -> str | None:
    """The final answer of ``output`` in the response format: ``answer_tags`` the last <answer>...</answer>
    (reasoning-gym's ``extract_answer``), ``worked`` the text after the last '>'."""
    if response == "answer_tags":
        found = _TAGS.findall(output)
        return found[-1].strip() if found else None
    return output.rsplit(">", 1)[-1].strip()


def render(answer: str, work: str, response: str) -> str:
    """A response in the format that states ``answer`` (after ``work`` in the worked form)."""
    return f"<answer>{answer}</answer>" if response == "answer_tags" else f"{work}>{answer}"


def meta_of(task: Any) -> dict[str, Any]:
    return task.meta["rg"]


_CHAIN = re.compile(r"-?[0-9]+(?: [+-] [0-9]+)+")


def chain_steps(entry: dict[str, Any]) -> list[str]:
    """chain_sum's running total, left to right: ``3 - 5 + 7`` -> ``['3-5=-2', '-2+7=5']`` ([] when the
    expression is not a plain chain or its total is not the item's answer)."""
    expression = str(entry["metadata"].get("expression", "")).strip()
    if not _CHAIN.fullmatch(expression):
        return []
    tokens = expression.split()
    total, steps = int(tokens[0]), []
    for op, term in zip(tokens[1::2], tokens[2::2], strict=True):
        new = total + int(term) if op == "+" else total - int(term)
        steps.append(f"{total}{op}{term}={new}")
        total = new
    return steps if str(total) == str(entry["answer"]).strip() else []


# Worked steps zpd computes from an entry's metadata, per family (the last step ends with the answer).
COMPUTED_STEPS = {"chain_sum": chain_steps}


def work_ok(m: dict[str, Any], output: str) -> bool:
    """Whether the work of a worked response is right, for a task whose meta asks for the check
    (``work_check``; zpd's own worked form, so the check is zpd's): the work shown is exactly the family's
    ``COMPUTED_STEPS`` (chain_sum: the running total). A response without work (nothing before its last
    '>') is graded on its answer alone; a task without the check always passes it."""
    steps = COMPUTED_STEPS.get(m["family"]) if m.get("work_check") else None
    if steps is None or ">" not in output:
        return True
    work = output.rsplit(">", 1)[0].replace(" ", "").strip()
    return not work or work == ";".join(steps(m["entry"]))


def score_task(task: Any, output: str) -> float:
    """The raw score of ``output`` for a stored ``rg:`` task (config-independent: all is in its meta)."""
    m = meta_of(task)
    if not work_ok(m, output):
        return 0.0  # the right last number after wrong steps is not a worked solution
    setting = tuple(sorted(m["attributes"].items())) if "attributes" in m else None
    return score_entry(m["family"], m["level"], m["range_mode"], extract(output, m["response"]), m["entry"],
                       setting)


def grade_task(task: Any, output: str) -> bool:
    return score_task(task, output) >= meta_of(task)["pass_threshold"]


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the block after ``seconds`` (some levels of some families never finish
    making an item). Only in the main thread (a signal timer); elsewhere the block is not limited."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"no item within {seconds:g} s")

    old = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# -- the grading check ------------------------------------------------------------------------------
@dataclass
class CheckResult:
    family: str
    ok: bool
    reason: str = ""
    levels: list[int] = field(default_factory=list)
    """Levels whose items could be made (from 0 up to the first level that fails)."""


def usable_levels(family: str, top: int, range_mode: str, seed: int,
                  seconds: float = 20.0, ladder: Ladder = GLOBAL) -> tuple[list[int], str]:
    """Levels 0.. up to the first whose item cannot be made (an error, or none within ``seconds``)."""
    levels: list[int] = []
    for level in range(top + 1):
        try:
            with time_limit(seconds):
                make_entry(family, level, seed + level, range_mode, ladder)
        except Exception as exc:  # noqa: BLE001  (a level reasoning-gym cannot make is cut, with why)
            return levels, f"level {level}: {type(exc).__name__}: {exc}"[:200]
        levels.append(level)
    return levels, ""


def check_family(family: str, *, num_items: int, seed: int, threshold: float, range_mode: str,
                 max_level: int | None, response: str, seconds: float = 60.0,
                 ladder: Ladder = GLOBAL) -> CheckResult:
    """The grading check: on ``num_items`` items spread over the usable levels, the reference answer
    (through the response format's extractor) scores 1.0, while a garbage string and another item's
    (different) answer score below ``threshold``. Deterministic for ``seed`` (a level whose probe item
    takes over 20 s is cut, as are the items past ``seconds``: a family too slow to make items fails)."""
    try:
        top = last_level(family, ladder)
    except Exception as exc:  # noqa: BLE001
        return CheckResult(family, False, f"curriculum: {type(exc).__name__}: {exc}"[:200])
    top = top if max_level is None else min(top, max_level)
    levels, why = usable_levels(family, top, range_mode, seed, ladder=ladder)
    if not levels:
        return CheckResult(family, False, why or "no level")
    seeds = [(levels[i % len(levels)], seed + 1000 + i) for i in range(num_items)]
    try:
        with time_limit(seconds):
            entries = [(setting_of(family, level, s, ladder),
                        make_entry(family, level, s, range_mode, ladder)) for level, s in seeds]
    except Exception as exc:  # noqa: BLE001
        return CheckResult(family, False, f"items: {type(exc).__name__}: {exc}"[:200], levels)
    answers = [str(e["answer"]) for _, e in entries]
    for i, ((level, _), (setting, entry)) in enumerate(zip(seeds, entries, strict=True)):
        def score(answer: str | None, entry: dict[str, Any] = entry, setting: Setting = setting,
                  level: int = level) -> float:
            return score_entry(family, level, range_mode, answer, entry, setting)

        ref = extract(render(answers[i], "", response), response)
        if score(ref) < 1.0:
            return CheckResult(family, False, f"reference answer {answers[i][:40]!r} scores below 1", levels)
        if score(GARBAGE) >= threshold:
            return CheckResult(family, False, f"garbage {GARBAGE!r} passes", levels)
        other = next((a for a in answers[i + 1:] + answers[:i] if a != answers[i]), None)
        if other is None:
            return CheckResult(family, False, "every item has the same answer", levels)
        if score(other) >= threshold:
            return CheckResult(family, False, f"another item's answer {other[:40]!r} passes", levels)
    return CheckResult(family, True, "", levels)
