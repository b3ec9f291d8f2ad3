"""verl's console step metrics -> zpd's progress events.

verl's console logger prints one line per step: ``step:3 - train/loss:0.41 - train/global_tokens:812
- ...`` (``verl/utils/logger/aggregate_logger.py:concat_dict_to_str``). SFT reports ``train/loss``
and ``train/global_tokens``; GRPO ``actor/pg_loss`` and ``perf/total_num_tokens``. Tokens are summed
here, so events carry the run's cumulative count, as the embedded trainer's do.
"""

from __future__ import annotations

import math
import re

_STEP = re.compile(r"(?:^|\s)step:(\d+) - (.*)$")
LOSS_KEYS = ("train/loss", "actor/pg_loss")
TOKEN_KEYS = ("train/global_tokens", "perf/total_num_tokens")


def parse_metrics(line: str) -> tuple[int, dict[str, float]] | None:
    """(step, metrics) of a verl console metrics line, else None."""
    m = _STEP.search(line)
    if m is None:
        return None
    metrics: dict[str, float] = {}
    for part in m.group(2).split(" - "):
        key, sep, value = part.rpartition(":")
        if not sep:
            continue
        try:
            metrics[key.strip()] = float(value)
        except ValueError:
            continue
    return int(m.group(1)), metrics


class StepTracker:
    """Turns console lines into ``{"event": "step", "step", "total", "loss", "tokens"}`` events."""

    def __init__(self, total_steps: int) -> None:
        self.total_steps = total_steps
        self.tokens = 0
        self.last_loss: float | None = None
        self.num_steps = 0

    def feed(self, line: str) -> dict | None:
        parsed = parse_metrics(line)
        if parsed is None:
            return None
        step, metrics = parsed
        loss = next((metrics[k] for k in LOSS_KEYS if k in metrics), None)
        tokens = next((metrics[k] for k in TOKEN_KEYS if k in metrics), None)
        if loss is None and tokens is None:
            return None  # a validation-only line
        if tokens is not None and math.isfinite(tokens):
            self.tokens += int(tokens)
        if loss is not None and math.isfinite(loss):
            self.last_loss = loss
        self.num_steps = max(self.num_steps, step)
        return {"event": "step", "step": step, "total": self.total_steps,
                "loss": self.last_loss if self.last_loss is not None else 0.0, "tokens": self.tokens}
