"""Generation accounting (tokens, cost, failed samples per round and role) and the teacher's spending cap.

Usage rows are written inside the caller's transaction (the batch that spent the tokens), so the
ledger and the attempts commit together; a kill loses at most the batch in flight from both.

The cap (``teacher.max_cost_usd``) counts every teacher dollar recorded in this state directory's
lineage. A teacher call is planned only when its *worst case* fits under the cap (each prompt byte
counted as an input token plus a chat-template margin, ``max_tokens`` output tokens per sample), so
the ledger never passes the cap, whatever the replies turn out to be. When the next call does not fit,
the teacher pauses: ``meta.teacher_state`` says so (read by ``zpd status``), a warning is logged when it
pauses, ``zpd_teacher_paused`` is 1, and the tasks that needed the teacher stay ``pending``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge

from zpd.store import ledger_usage
from zpd.store.db import get_meta, set_meta

from .context import RunContext

CHAT_MARGIN_TOKENS = 32
"""Input tokens a chat template may add around one user message (upper bound for the worst case)."""

_EXTRA_METRICS: dict[int, tuple[Gauge, Counter]] = {}


def _extra_metrics(ctx: RunContext) -> tuple[Gauge, Counter] | None:
    """Beyond the contract: whether the teacher is paused, and dollars spent, on the daemon's registry."""
    registry = getattr(ctx.metrics, "registry", None)
    if registry is None:
        return None
    key = id(registry)
    if key not in _EXTRA_METRICS:
        paused = Gauge("zpd_teacher_paused", "1 while teacher calls are paused by teacher.max_cost_usd.",
                       registry=registry)
        cost = Counter(
            "zpd_generation_cost_usd", "Dollars spent on generation, by role.", ["role"], registry=registry
        )
        for role in ("learner", "teacher"):
            cost.labels(role)
        _EXTRA_METRICS[key] = (paused, cost)
    return _EXTRA_METRICS[key]


def add_usage(
    ctx: RunContext, round_n: int, role: str, model: str, completions: list[Any], cost_usd: float = 0.0
) -> None:
    """Add a call's completions to the (round, role, model) ledger row. Call inside a transaction."""
    if not completions:
        return
    totals = ledger_usage.UsageTotals(
        num_requests=len(completions),
        num_failed=sum(c.failed for c in completions),
        prompt_tokens=sum(c.prompt_tokens for c in completions),
        completion_tokens=sum(c.num_tokens for c in completions),
        cost_usd=cost_usd,
    )
    ledger_usage.add_usage(ctx.db, round_n, role, model, totals)


def record_failures(
    ctx: RunContext,
    round_n: int,
    phase: str,
    role: str,
    failed: Sequence[tuple[int | None, str | None, int, Any]],
) -> None:
    """Insert failed samples ``(task_id, mode, sample_idx, completion)``. Call inside a transaction."""
    ledger_usage.record_failures(
        ctx.db,
        round_n,
        phase,
        role,
        [
            ledger_usage.FailedSample(task_id=task_id, mode=mode, sample_idx=idx, error=c.error or "unknown")
            for task_id, mode, idx, c in failed
        ],
    )


def count_generated(ctx: RunContext, role: str, completions: list[Any], cost_usd: float = 0.0) -> None:
    """Metrics for one call: tokens by role, one ``zpd_failures_total`` per failed sample, dollars."""
    ctx.metrics.generated_tokens(role, sum(c.num_tokens for c in completions))
    component = "teacher" if role == "teacher" else "generator"
    for c in completions:
        if c.failed:
            ctx.metrics.failure(component)
    extra = _extra_metrics(ctx)
    if extra and cost_usd:
        extra[1].labels(role).inc(cost_usd)


class TeacherBudget:
    """Plans teacher calls under ``teacher.max_cost_usd`` and keeps ``meta.teacher_state`` current."""

    def __init__(self, ctx: RunContext, round_n: int) -> None:
        self.ctx, self.round_n = ctx, round_n
        if ctx.cfg.teacher is None:
            raise ValueError("TeacherBudget needs a [teacher] in the config")
        self.cfg = ctx.cfg.teacher
        self.paused = False
        self.awaiting = 0

    def spent(self) -> float:
        return ledger_usage.teacher_spent(self.ctx.db)

    def cost(self, completions: list[Any]) -> float:
        t = self.cfg
        return (
            sum(
                c.prompt_tokens * t.price_input_usd_per_mtok + c.num_tokens * t.price_output_usd_per_mtok
                for c in completions
            )
            / 1e6
        )

    def worst_case(self, prompt: str, n: int, max_tokens: int) -> float:
        t = self.cfg
        return (
            n
            * (
                (len(prompt.encode()) + CHAT_MARGIN_TOKENS) * t.price_input_usd_per_mtok
                + max_tokens * t.price_output_usd_per_mtok
            )
            / 1e6
        )

    def plan(self, prompts: list[str], n: int, max_tokens: int) -> int:
        """How many of ``prompts`` (a prefix) may be sent now. Pauses the teacher when not all of them."""
        if self.paused:
            self.awaiting += len(prompts)
            return 0
        cap = self.cfg.max_cost_usd
        if cap is None:
            return len(prompts)
        room = cap - self.spent()
        allowed = 0
        for p in prompts:
            need = self.worst_case(p, n, max_tokens)
            if need > room:
                break
            room -= need
            allowed += 1
        if allowed < len(prompts):
            self.paused = True
            self.awaiting += len(prompts) - allowed
        return allowed

    def write_state(self) -> None:
        """Record the pause (or its end) in the store, logs and metrics. Call inside a transaction."""
        state = {
            "paused": self.paused,
            "spent_usd": round(self.spent(), 6),
            "max_cost_usd": self.cfg.max_cost_usd,
            "round": self.round_n,
            "awaiting_tasks": self.awaiting,
            "model": self.cfg.model,
        }
        old = json.loads(get_meta(self.ctx.db, "teacher_state") or "{}")
        set_meta(self.ctx.db, "teacher_state", json.dumps(state))
        extra = _extra_metrics(self.ctx)
        if extra:
            extra[0].set(1 if self.paused else 0)
        if self.paused and not old.get("paused"):
            self.ctx.log.warning(
                "teacher paused: spending cap reached; tasks that need it stay pending",
                extra={k: state[k] for k in ("spent_usd", "max_cost_usd", "awaiting_tasks")},
            )
        elif old.get("paused") and not self.paused:
            self.ctx.log.info(
                "teacher resumed",
                extra={"spent_usd": state["spent_usd"], "max_cost_usd": state["max_cost_usd"]},
            )
