"""Stand-ins used by tests/test_generation.py, importable by name in spawned child processes.

* ``FakeVllmLLM`` / ``FakeSamplingParams``: a TEST DOUBLE of ``vllm.LLM`` (vLLM cannot run on a CPU machine). It
  records what it was given and answers canned text, so tests check *our* parameter mapping only.
* ``hang``: a stand-in for a math-verify check that never returns.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field


@dataclass
class FakeSamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16  # vLLM's default: the mapping must never leave it
    seed: int | None = None
    stop: list[str] | None = None


@dataclass
class _Out:
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class _RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[_Out] = field(default_factory=list)


class FakeVllmLLM:
    """Test double of ``vllm.LLM``: ``chat`` answers "<prompt>#<sample>" and logs its arguments."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple[list, FakeSamplingParams, dict]] = []
        log = os.environ.get("ZPD_TEST_VLLM_LOG")
        if log:
            with open(log, "a") as fh:
                fh.write(json.dumps({"init": kwargs}) + "\n")

    def chat(self, conversations, sampling_params, **kwargs):
        self.calls.append((conversations, sampling_params, kwargs))
        log = os.environ.get("ZPD_TEST_VLLM_LOG")
        if log:
            with open(log, "a") as fh:
                params = sampling_params if isinstance(sampling_params, list) else [sampling_params]
                fh.write(json.dumps({"chat": len(conversations), "params": vars(params[0]),
                                     "seeds": [q.seed for q in params]}) + "\n")
        out = []
        for k, convo in enumerate(conversations):
            # vLLM takes one SamplingParams for all requests, or a list of one per request.
            sp = sampling_params[k] if isinstance(sampling_params, list) else sampling_params
            content = convo[-1]["content"]
            samples = [_Out(f"{content}#{i}", list(range(min(sp.max_tokens, 3))),
                            "length" if sp.max_tokens <= 3 else "stop") for i in range(sp.n)]
            out.append(_RequestOutput(list(range(len(content))), samples))
        return out


def hang(gold: str, answer: str) -> bool:
    if answer == "hang":
        time.sleep(3600)
    return gold == answer
