"""Reading an OpenAI-style request body: its sampling fields, checked, and the error a bad one gets.

No model is needed here: ``zpd serve`` (``openai_server``) parses a body with ``sampling`` before any
generation, and answers a ``RequestError`` with its status and OpenAI's error ``code``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class RequestError(Exception):
    """A request the server refuses: answered with ``status`` and OpenAI's error ``code``."""

    def __init__(self, status: int, message: str, code: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass(frozen=True, slots=True)
class Sampling:
    """How to sample the completions of one request (OpenAI's defaults where a field is absent)."""

    n: int
    """Completions per prompt, 1..128."""
    temperature: float
    """0..5; 1.0 when absent or null, as OpenAI."""
    max_tokens: int | None
    """``max_completion_tokens`` or ``max_tokens``; None: what fits in the model's positions."""
    seed: int | None
    """Folded into 0..2**63-1; None: a fresh random seed per request."""
    stop: list[str]
    """Stop strings (``stop`` as a string or a list of strings)."""


def stop_list(value: Any) -> list[str]:
    """The ``stop`` field as a list of strings (absent: none)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise RequestError(400, "'stop' must be a string or a list of strings")


def sampling(body: dict[str, Any]) -> Sampling:
    """The sampling fields of a request body, each checked (400 naming the field when wrong)."""
    n = body.get("n", 1)
    temperature = body.get("temperature", 1.0)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    seed = body.get("seed")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        raise RequestError(400, "'n' must be an integer in 1..128")
    if temperature is None:
        temperature = 1.0
    if not isinstance(temperature, int | float) or not 0 <= temperature <= 5:
        raise RequestError(400, "'temperature' must be a number in 0..5")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise RequestError(400, "'max_tokens' must be a positive integer")
    if seed is not None and not isinstance(seed, int):
        raise RequestError(400, "'seed' must be an integer")
    return Sampling(n=n, temperature=float(temperature), max_tokens=max_tokens,
                    seed=None if seed is None else seed % 2**63, stop=stop_list(body.get("stop")))
