"""The ``[generation]`` and ``[teacher]`` sections: who answers the tasks, and through which engine.

The served backend's replicas are ``configs/served.py``. This module imports nothing of zpd but ``Strict``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Strict


class OpenAIEndpointConfig(Strict):
    """An OpenAI-compatible server (``vllm serve``, SGLang, ``zpd serve``, a hosted API)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """Base URL of the API, up to and including ``/v1``."""

    model: str = "zpd-learner"
    """Model name sent with every request (what the server serves; ``zpd serve`` calls its learner
    zpd-learner)."""

    api_key_env: str | None = None
    """Environment variable holding the API key (sent as a bearer token; never logged). None: no key."""

    max_concurrency: int = Field(8, ge=1, le=4096)
    """Requests in flight at once."""

    timeout_seconds: float = Field(120.0, gt=0, le=86400)
    """Per-request timeout (connect, read, write)."""

    max_retries: int = Field(4, ge=0, le=100)
    """Retries of a request that failed with a connection error, a timeout, 429 or 5xx, or unreadable JSON."""

    backoff_seconds: float = Field(0.5, ge=0, le=600)
    """First wait between retries; doubles each retry (a Retry-After header, capped at 60 s, wins)."""


class VllmBackendConfig(Strict):
    """vLLM's offline engine (``vllm.LLM``) in a child process that loads the learner and exits before
    TRAIN."""

    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    """Share of GPU memory vLLM may take."""

    tensor_parallel_size: int = Field(1, ge=1, le=64)
    """GPUs one model is split over."""

    max_model_len: int | None = Field(None, ge=16)
    """Longest sequence vLLM plans for. None: the model's own limit."""

    dtype: str = "auto"
    """Weights dtype passed to vLLM (auto, bfloat16, float16, float32)."""

    enforce_eager: bool = False
    """Skip CUDA graph capture (faster start, slower decode; handy for tiny models)."""

    start_timeout_seconds: float = Field(900.0, gt=0)
    """A child that has not loaded the model in this time is a failure."""


class GenerationConfig(Strict):
    """How the learner's attempts are generated. Every backend takes the same calls (prompts, n, temperature,
    max tokens, seed, stop)."""

    backend: Literal["embedded", "vllm", "openai", "served"] = "embedded"
    """embedded: the learner in this process (batched, KV cache); vllm: vllm.LLM in a child process;
    openai: an OpenAI-compatible server that serves the learner (see [generation.openai]); served:
    replicas of a server started on the current learner each round (see [served])."""

    measure_backend: Literal["same", "embedded", "vllm"] = "same"
    """Backend of MEASURE, which evaluates the learner TRAIN just wrote. same: as ``backend``. With
    backend = openai it must be embedded or vllm: an external server does not hold that new learner."""

    openai: OpenAIEndpointConfig = Field(default_factory=OpenAIEndpointConfig)
    """The server used when backend = openai."""

    vllm: VllmBackendConfig = Field(default_factory=VllmBackendConfig)
    """Engine settings when backend (or measure_backend) = vllm."""

    @model_validator(mode="after")
    def _measure_needs_weights(self) -> GenerationConfig:
        if self.backend == "openai" and self.measure_backend == "same":
            raise ValueError("generation.measure_backend must be 'embedded' or 'vllm' when "
                             "generation.backend is 'openai' (the server does not hold the learner that "
                             "MEASURE evaluates)")
        return self


class TeacherConfig(OpenAIEndpointConfig):
    """The "more knowledgeable other": a stronger model that makes the guided attempts of calibration.

    Tasks the learner fails alone are attempted by the teacher (``calibration.num_guided`` times);
    without a [teacher] section the learner makes them, reading the task's guidance.
    """

    backend: Literal["openai", "embedded", "vllm"] = "openai"
    """openai: ``base_url`` + ``model``; embedded / vllm: ``model`` is a local HF model directory."""

    model: str
    """Model name at the endpoint (openai) or an HF model directory (embedded, vllm). Pinned: recorded with
    every attempt."""

    use_guidance: bool = False
    """Give the teacher the task's guidance too. False: the bare task, as AgentFrontier's MKO gets it."""

    temperature: float | None = Field(None, ge=0, le=5)
    """Sampling temperature of teacher attempts. None: calibration.temperature."""

    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    """Longest teacher answer, in tokens. None: calibration.max_tokens."""

    price_input_usd_per_mtok: float = Field(0.0, ge=0)
    """Price of one million input (prompt) tokens, in USD."""

    price_output_usd_per_mtok: float = Field(0.0, ge=0)
    """Price of one million output (completion) tokens, in USD."""

    max_cost_usd: float | None = Field(None, ge=0)
    """Spending cap over the whole run, in USD. A teacher call is made only when its worst case (prompt
    bytes as input tokens, max_tokens as output) fits under the cap; otherwise teacher calls pause, the
    tasks that needed them stay ``pending`` (re-calibrated in a later round, once the cap allows), and
    status, logs and metrics say so. None: no cap."""
