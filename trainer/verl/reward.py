"""zpd's graders behind verl's reward-function signature.

verl loads this file by path (``reward.custom_reward_function.path``, ``.name=compute_score``), so
it imports zpd absolutely: zpd must be installed wherever verl's reward workers run (with Ray
placement zpd ships a copy of this file to ``storage.shared_dir``, so the path is the same on every
node wherever zpd is installed there). Each row carries its task in ``extra_info["task_json"]`` (the
``Task`` fields, as the embedded GRPO gets them); it is rebuilt and graded by its domain's own
grader (``zpd.loop.domains.registry.grader_for``: a dataset's grader and answer marker, math-verify
included, come from the task's ``meta``), so verl's reward is the one calibration used. A row
without ``task_json`` is graded by its domain (``extra_info["domain"]``, else ``data_source`` =
``zpd/<domain>``) with a task rebuilt from prompt and answer, and by exact match for an unknown
domain. The score is 1.0 or 0.0; verl's naive reward manager also records it as ``acc``, the
metric of ``algorithm.filter_groups``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zpd.loop.domains.base import Task

_PREFIX = "zpd/"


@functools.cache
def _grader(domain: str, prompt_style: str = "bare") -> Callable[[Task, str], bool] | None:
    from zpd.loop.domains.registry import grader_for

    try:
        return grader_for(domain, prompt_style)  # config-independent: built with the domain's defaults
    except KeyError:
        return None


def _domain_of(data_source: str, extra_info: dict | None) -> str:
    if isinstance(extra_info, dict) and extra_info.get("domain"):
        return str(extra_info["domain"])
    return data_source[len(_PREFIX):] if data_source.startswith(_PREFIX) else data_source


def _task(data_source: str, ground_truth: Any, extra_info: dict[str, Any] | None) -> Task:
    from zpd.loop.domains.base import Task

    info = extra_info if isinstance(extra_info, dict) else {}
    spec = info.get("task_json")
    if spec:
        return Task(**(json.loads(spec) if isinstance(spec, str) else dict(spec)))
    prompt = str(info.get("prompt", ""))
    return Task(domain=_domain_of(data_source, info), difficulty=0.0, prompt=prompt, answer=str(ground_truth),
                guidance="", canonical=prompt)


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **kwargs: Any) -> float:
    """1.0 when ``solution_str`` answers the row's task (its answer is ``ground_truth``), else 0.0."""
    task = _task(str(data_source), ground_truth, extra_info)
    style = extra_info.get("prompt_style", "bare") if isinstance(extra_info, dict) else "bare"
    grade = _grader(task.domain, str(style or "bare"))
    if grade is None:
        return 1.0 if solution_str.strip() == str(ground_truth).strip() else 0.0
    return 1.0 if grade(task, solution_str) else 0.0
