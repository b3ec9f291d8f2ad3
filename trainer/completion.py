"""One generated answer, as every generation backend returns it (embedded, served, OpenAI-compatible, vLLM).

Its own module, without torch or transformers, so that the daemon's start-up and the phases that only
handle completions import neither (``trainer/generate.py`` imports both, on the first generation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(slots=True)
class Completion:
    text: str
    num_tokens: int
    """Tokens generated, the end-of-turn token included when there was one."""
    finish_reason: Literal["stop", "length", "error"]
    """stop: ended by itself or a stop string; length: cut at max_tokens (graded as given); error: no answer
    (endpoint down after retries, malformed response): a failed attempt, never graded as a wrong answer."""
    latency_seconds: float
    """Wall time of the row's batch divided by the rows in it."""
    prompt_tokens: int = 0
    """Tokens of the prompt as the model read it (for cost accounting)."""
    error: str | None = None
    """Why the attempt failed (finish_reason "error"); None otherwise."""

    @property
    def failed(self) -> bool:
        return self.finish_reason == "error"
