"""Generation through any OpenAI-compatible server (``vllm serve``, SGLang, ``zpd serve``, a hosted API).

    gen = OpenAIGenerator(OpenAIEndpointConfig(base_url="http://127.0.0.1:8000/v1", model="zpd-learner"))
    gen.generate(["57+68"], n=4, temperature=0.7, max_tokens=24, seed=0)

One ``/v1/chat/completions`` request per sample (``n`` is not sent: not every server honours it, and a
failed request then costs one sample, not a whole group), each with its own seed ``seed + k``; at most
``max_concurrency`` requests in flight (asyncio + httpx). A connection error, a timeout, 429, 5xx or a
body that is not the JSON the API promises is retried ``max_retries`` times with exponential backoff
(``Retry-After`` wins when the server sends one); after that, or at once for any other 4xx, the sample
comes back with finish_reason "error". The API key is read from the environment variable the config
names, sent as a bearer token, and appears in no log or error message.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Any

import httpx

from .completion import Completion
from .generation import Generator, backend, error_completion

RETRY_AFTER_CAP_SECONDS = 60.0


class BadResponse(Exception):
    """The server answered 2xx with a body that is not a chat completion."""


class OpenAIGenerator:
    """``Generator`` over an OpenAI-compatible endpoint. Thread-compatible: one ``generate`` at a time."""

    def __init__(self, settings: Any, model: str | None = None) -> None:
        self.settings = settings
        self.model = model or settings.model
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
        if settings.api_key_env and not key:
            raise ValueError(f"the API key variable ${settings.api_key_env} is not set or empty")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.num_retries = 0
        """Retries made so far (for logs and tests)."""

    def generate(self, prompts: list[str], *, n: int = 1, temperature: float = 0.0, max_tokens: int,
                 seed: int = 0, stop: list[str] | None = None,
                 sample_seeds: list[list[int]] | None = None) -> list[list[Completion]]:
        if not prompts:
            return []
        flat = asyncio.run(self._all(prompts, n, temperature, max_tokens, seed, stop, sample_seeds))
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]

    async def _all(self, prompts: list[str], n: int, temperature: float, max_tokens: int, seed: int,
                   stop: list[str] | None, sample_seeds: list[list[int]] | None = None) -> list[Completion]:
        s = self.settings
        limits = httpx.Limits(max_connections=s.max_concurrency, max_keepalive_connections=s.max_concurrency)
        gate = asyncio.Semaphore(s.max_concurrency)
        async with httpx.AsyncClient(timeout=s.timeout_seconds, limits=limits,
                                     headers=self._headers) as client:
            jobs = []
            for i, prompt in enumerate(prompts):
                for j in range(n):
                    body: dict[str, Any] = {
                        "model": self.model,
                        "messages": [{"role": "user", "content": prompt}],
                        "temperature": temperature,
                        "max_tokens": max_tokens,
                        "seed": (seed + i * n + j if sample_seeds is None else sample_seeds[i][j]) % 2**63,
                    }
                    if stop:
                        body["stop"] = list(stop)
                    jobs.append(self._one(client, gate, body))
            return list(await asyncio.gather(*jobs))

    async def _one(self, client: httpx.AsyncClient, gate: asyncio.Semaphore, body: dict) -> Completion:
        s = self.settings
        began = time.perf_counter()
        error = "no attempt made"
        for attempt in range(s.max_retries + 1):
            wait = s.backoff_seconds * 2**attempt
            async with gate:
                try:
                    resp = await client.post(self.url, json=body)
                    if resp.status_code == 200:
                        return _parse(resp, time.perf_counter() - began)
                    error = f"HTTP {resp.status_code}: {resp.text[:200]!r}"
                    if resp.status_code != 429 and resp.status_code < 500:
                        return error_completion(error, time.perf_counter() - began)  # our request is wrong
                    wait = _retry_after(resp, wait)
                except BadResponse as exc:
                    error = f"malformed response: {exc}"
                except httpx.HTTPError as exc:  # connect/read/write errors, timeouts, truncated bodies
                    error = f"{type(exc).__name__}: {str(exc)[:200]}"
            if attempt < s.max_retries:
                self.num_retries += 1
                await asyncio.sleep(wait)
        return error_completion(f"{error} (after {s.max_retries} retries)", time.perf_counter() - began)

    def close(self) -> None:
        pass  # connections live only inside one generate call


def _retry_after(resp: httpx.Response, default: float) -> float:
    value = resp.headers.get("Retry-After")
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_CAP_SECONDS) if value is not None else default
    except ValueError:
        return default  # an HTTP date: rare enough to fall back on our own backoff


def _parse(resp: httpx.Response, latency: float) -> Completion:
    try:
        data = resp.json()
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        reason = choice.get("finish_reason")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise BadResponse(f"{type(exc).__name__} in {resp.text[:120]!r}") from None
    usage = data.get("usage") or {}
    # Servers that omit usage: about 4 characters a token, rounded up (cost is then an estimate).
    completion_tokens = int(usage.get("completion_tokens") or math.ceil(len(text) / 4))
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    return Completion(text, completion_tokens, "length" if reason == "length" else "stop", latency,
                      prompt_tokens)


@backend("openai")
def _openai(*, model: Any, settings: Any, device: str, batch_size: int) -> Generator:
    return OpenAIGenerator(settings, model=str(model) if model else None)
