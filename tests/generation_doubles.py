"""Stand-ins used by the generation tests, importable by name in spawned child processes.

* ``FakeVllmLLM`` / ``FakeSamplingParams``: a TEST DOUBLE of ``vllm.LLM`` (vLLM cannot run on a CPU machine).
  Where it matters it behaves like vLLM: ``LLM(...)`` starts its own engine process (vLLM's engine core,
  started with ``daemon=True`` as vLLM does, so it cannot be started from a daemonic process), the engine
  holds the "GPU" until it exits (an exclusive ``flock`` on the file ``$ZPD_TEST_VLLM_GPU``, standing for
  GPU memory: a second engine cannot start while one holds it) and answers the requests; prompts are
  tokenized through ``AutoTokenizer`` (``tokenizer=`` or the model directory) with its chat template, as
  vLLM's ``LLM.chat`` does; ``SamplingParams`` refuses greedy sampling with n > 1. The answer itself is
  canned ("<prompt>#<sample>"), so tests check *our* side: parameter mapping, processes, memory.
* ``hang``: a stand-in for a math-verify check that never returns.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

_SAMPLING_EPS = 1e-5  # vLLM's


@dataclass
class FakeSamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16  # vLLM's default: the mapping must never leave it
    seed: int | None = None
    stop: list[str] | None = None

    def __post_init__(self) -> None:
        if self.temperature < _SAMPLING_EPS and self.n > 1:  # vLLM's _verify_greedy_sampling
            raise ValueError(f"n must be 1 when using greedy sampling, got {self.n}.")


@dataclass
class _Out:
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class _RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[_Out] = field(default_factory=list)


def _log(record: dict) -> None:
    log = os.environ.get("ZPD_TEST_VLLM_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(json.dumps(record) + "\n")


def _engine(conn, gpu: str | None) -> None:
    """The engine process: takes the "GPU" (or fails as vLLM does when the memory is taken), then
    answers [(content, n, max_tokens)] requests until the pipe closes."""
    held = None
    if gpu:
        held = open(gpu, "a")
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            conn.send(("error", "CUDA out of memory: the GPU is held by another engine"))
            return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            requests = conn.recv()
        except EOFError:
            return
        conn.send([[(f"{c}#{i}", min(m, 3), "length" if m <= 3 else "stop") for i in range(n)]
                   for c, n, m in requests])


class FakeVllmLLM:
    """Test double of ``vllm.LLM``: its engine is a process of its own; ``chat`` logs its arguments."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple[list, FakeSamplingParams, dict]] = []
        self.tokenizer = None
        source = kwargs.get("tokenizer") or kwargs.get("model")
        if source and (Path(source) / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(source)
        self._conn, child = mp.get_context("spawn").Pipe()
        # vLLM starts its engine core as a daemonic child of the process that builds LLM.
        self._engine = mp.get_context("spawn").Process(target=_engine,
                                                       args=(child, os.environ.get("ZPD_TEST_VLLM_GPU")),
                                                       daemon=True, name="fake-vllm-engine")
        self._engine.start()
        child.close()
        kind, detail = self._conn.recv()
        if kind != "ready":
            raise RuntimeError(detail)
        _log({"init": kwargs, "pid": os.getpid(), "engine_pid": detail})

    def _prompt_ids(self, convo: list[dict]) -> list[int]:
        if self.tokenizer is None:
            return list(range(len(convo[-1]["content"])))
        return list(self.tokenizer.apply_chat_template(convo, add_generation_prompt=True, tokenize=True,
                                                       return_dict=False))

    def chat(self, conversations, sampling_params, **kwargs):
        self.calls.append((conversations, sampling_params, kwargs))
        params = sampling_params if isinstance(sampling_params,
                                               list) else [sampling_params] * len(conversations)
        prompt_ids = [self._prompt_ids(c) for c in conversations]
        _log({"chat": len(conversations), "params": vars(params[0]), "seeds": [q.seed for q in params],
              "prompt_ids": prompt_ids})
        self._conn.send([(c[-1]["content"], sp.n,
                          sp.max_tokens) for c, sp in zip(conversations, params, strict=True)])
        answers = self._conn.recv()
        return [_RequestOutput(ids, [_Out(text, list(range(k)), reason) for text, k, reason in samples])
                for ids, samples in zip(prompt_ids, answers, strict=True)]


def hang(gold: str, answer: str) -> bool:
    if answer == "hang":
        time.sleep(3600)
    return gold == answer
