"""zpd's graders behind verl's reward-function signature.

verl loads this file by path (``reward.custom_reward_function.path``, ``.name=compute_score``), so
it imports zpd absolutely: zpd must be installed wherever verl's reward workers run. A row with
``extra_info["task_json"]`` (zpd writes it) is graded by its domain's config-independent grader on the
stored task (``grader_for``). Otherwise the domain comes
from ``extra_info["domain"]``, else from ``data_source`` (``zpd/<domain>``); a row of an unknown
domain is graded by exact match. The score is 1.0 or 0.0, and verl's naive reward manager also
records it as ``acc``, the metric of ``algorithm.filter_groups``.
"""

from __future__ import annotations

import functools
from typing import Any

_PREFIX = "zpd/"


@functools.cache
def _domains() -> dict:
    from zpd.configs.schema import ZpdConfig
    from zpd.loop.domains.base import build_domains

    # Graders do not depend on the config; the defaults enable every built-in domain.
    return build_domains(ZpdConfig().domains)


def _domain_of(data_source: str, extra_info: dict | None) -> str:
    if isinstance(extra_info, dict) and extra_info.get("domain"):
        return str(extra_info["domain"])
    return data_source[len(_PREFIX):] if data_source.startswith(_PREFIX) else data_source


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **kwargs: Any) -> float:
    """1.0 when ``solution_str`` answers the task whose answer is ``ground_truth``, else 0.0."""
    from zpd.loop.domains.base import Task

    if isinstance(extra_info, dict) and extra_info.get("task_json"):
        # The stored task, meta included (reasoning-gym's entry): graded exactly as CALIBRATE graded it.
        import json

        from zpd.loop.domains.base import grader_for

        task = Task(**json.loads(extra_info["task_json"]))
        return 1.0 if grader_for(task.domain)(task, solution_str) else 0.0
    name = _domain_of(str(data_source), extra_info)
    answer = str(ground_truth)
    domain = _domains().get(name)
    if domain is None:
        return 1.0 if solution_str.strip() == answer.strip() else 0.0
    prompt = str((extra_info or {}).get("prompt", ""))
    task = Task(domain=name, difficulty=0.0, prompt=prompt, answer=answer, guidance="", canonical=prompt)
    return 1.0 if domain.grade(task, solution_str) else 0.0
