"""Curriculum policies: how a calibrated task is routed to a fate. A registry, one function each.

``zpd-band`` (default) is AgentFrontier's routing with a configurable band:

    p_solo  > solo_max_ratio                       -> mastered  (the pre-training pool)
    p_solo <= solo_max_ratio, p_guided >= guided_min -> zpd       (training data)
    otherwise                                       -> beyond / review (cfg.beyond_fate)

Exam admission is stricter and decided by the exam module: 0/k solo and k/k guided.
"""

from __future__ import annotations

from collections.abc import Callable

from zpd.configs.schema import CurriculumConfig

Route = Callable[[CurriculumConfig, float, float | None], str]
POLICIES: dict[str, Route] = {}


def policy(name: str) -> Callable[[Route], Route]:
    def deco(fn: Route) -> Route:
        POLICIES[name] = fn
        return fn

    return deco


def needs_guided(cfg: CurriculumConfig, p_solo: float) -> bool:
    """Guided attempts are only needed for tasks the learner fails alone (a solo pass rules out the ZPD)."""
    return p_solo <= cfg.solo_max_ratio


@policy("zpd-band")
def zpd_band(cfg: CurriculumConfig, p_solo: float, p_guided: float | None) -> str:
    if p_solo > cfg.solo_max_ratio:
        return "mastered"
    if p_guided is not None and p_guided >= cfg.guided_min_ratio:
        return "zpd"
    return cfg.beyond_fate


def route(cfg: CurriculumConfig, p_solo: float, p_guided: float | None) -> str:
    return POLICIES[cfg.policy](cfg, p_solo, p_guided)
