"""Generation with vLLM's offline engine in a child process.

    gen = VllmGenerator(learner_dir, cfg.generation.vllm)   # starts the child; it loads the learner
    gen.generate(["57+68"], n=4, temperature=0.7, max_tokens=24, seed=0)
    gen.close()                                             # the child exits: the GPU memory is free

A child process per learner because ``vllm.LLM`` has no public shutdown and GPU memory comes back
reliably only when the process exits (reference/verl-vllm.md §6); the daemon closes its generators
before TRAIN. The child is not daemonic: ``LLM`` starts its own engine-core process from it, which
Python forbids in a daemonic process. It leads its own process group and still dies with the daemon:
``PR_SET_PDEATHSIG`` (when started from the main thread) and a watchdog on its parent pid kill the
whole group, engine included; ``close`` kills the group too if anything is left. The tokenizer goes
to vLLM as a tokenizer-only copy when AutoTokenizer would misread the learner (the built-in qwen2
learner's character tokenizer, ``trainer/autotokenizer.py``). Greedy requests (temperature 0) with
n > 1, which vLLM's ``SamplingParams`` refuses, are sent once with n = 1 and the completion repeated.
Written against what vLLM 0.24 (verl's tested version, the ``vllm`` extra) and 0.33 share:
``LLM(model=, tensor_parallel_size=, dtype=, seed=, gpu_memory_utilization=, max_model_len=,
enforce_eager=)``, ``LLM.chat(conversations, SamplingParams)``, ``SamplingParams(n=, temperature=,
top_p=, max_tokens=, seed=, stop=)`` and ``RequestOutput.outputs[i].text / .token_ids /
.finish_reason``. ``max_tokens`` is always set: vLLM's default is 16.

``vllm`` is imported only in the child (and only when this backend is used), so zpd installs and runs
without it. ``llm_class`` / ``sampling_class`` ("module:Name") let a test run the same child with a
test double.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import threading
import time
import weakref
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

from .completion import Completion
from .generation import Generator, backend

GREEDY_EPS = 1e-5
"""vLLM's ``_SAMPLING_EPS``: below it SamplingParams samples greedily and raises for n > 1."""
PR_SET_PDEATHSIG = 1
WATCHDOG_SECONDS = 0.5


def sampling_params(sampling_cls: Any, *, n: int, temperature: float, max_tokens: int, seed: int,
                    stop: list[str] | None) -> Any:
    """Our request as vLLM ``SamplingParams`` (every field set explicitly; none left to vLLM's defaults)."""
    return sampling_cls(n=n, temperature=temperature, top_p=1.0, max_tokens=max_tokens, seed=seed,
                        stop=list(stop) if stop else None)


def engine_kwargs(model: str, settings: Any, seed: int = 0, tokenizer: str | None = None) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(model=model, tensor_parallel_size=settings.tensor_parallel_size,
                                  dtype=settings.dtype, seed=seed,
                                  gpu_memory_utilization=settings.gpu_memory_utilization,
                                  enforce_eager=settings.enforce_eager)
    if settings.max_model_len is not None:
        kwargs["max_model_len"] = settings.max_model_len
    if tokenizer is not None:
        kwargs["tokenizer"] = tokenizer
    return kwargs


def run_generate(llm: Any, sampling_cls: Any, prompts: list[str], *, n: int, temperature: float,
                 max_tokens: int, seed: int, stop: list[str] | None,
                 sample_seeds: list[list[int]] | None = None) -> list[list[Completion]]:
    """One batched ``LLM.chat`` call; per prompt ``n`` Completions in vLLM's order. With ``sample_seeds``
    every sample is its own request (n=1) with its own seed. Greedy (temperature below GREEDY_EPS) with
    n > 1: one request per prompt (greedy samples are all the same), its completion repeated n times."""
    if temperature < GREEDY_EPS and n > 1:
        once = run_generate(llm, sampling_cls, prompts, n=1, temperature=temperature, max_tokens=max_tokens,
                            seed=seed, stop=stop)
        return [cs * n for cs in once]
    if sample_seeds is not None:
        flat_prompts = [p for p in prompts for _ in range(n)]
        params = [sampling_params(sampling_cls, n=1, temperature=temperature, max_tokens=max_tokens, seed=s,
                                  stop=stop)
                  for seeds in sample_seeds for s in seeds[:n]]
        flat = _chat(llm, flat_prompts, params, 1)
        return [[c for cs in flat[i * n:(i + 1) * n] for c in cs] for i in range(len(prompts))]
    params = sampling_params(sampling_cls, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed,
                             stop=stop)
    return _chat(llm, prompts, params, n)


def _chat(llm: Any, prompts: list[str], params: Any, n: int) -> list[list[Completion]]:
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    began = time.perf_counter()
    outs = llm.chat(conversations, params, use_tqdm=False)
    per_row = (time.perf_counter() - began) / max(1, len(prompts) * n)
    results = []
    for out in outs:
        prompt_tokens = len(getattr(out, "prompt_token_ids", None) or [])
        results.append([
            Completion(o.text, len(o.token_ids), "length" if o.finish_reason == "length" else "stop", per_row,
                       prompt_tokens)
            for o in out.outputs
        ])
    return results


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _die_with_parent(parent_pid: int, use_pdeathsig: bool) -> None:
    """Lead a process group (vLLM's engine processes join it) and kill that group when the parent dies."""
    os.setpgid(0, 0)

    def kill_group(*_: Any) -> None:
        os.killpg(os.getpgrp(), signal.SIGKILL)

    signal.signal(signal.SIGTERM, kill_group)
    if use_pdeathsig:  # the kernel signals us when the thread that started us ends
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # not Linux: the watchdog alone
            pass

    def watchdog() -> None:
        while os.getppid() == parent_pid:
            time.sleep(WATCHDOG_SECONDS)
        kill_group()

    if os.getppid() != parent_pid:
        kill_group()
    threading.Thread(target=watchdog, name="zpd-vllm-watchdog", daemon=True).start()


def _child(conn: Any, llm_class: str, sampling_class: str, kwargs: dict[str, Any], parent_pid: int,
           use_pdeathsig: bool) -> None:
    """The child's loop: load once, then answer ("generate", args) messages until ("close",)."""
    _die_with_parent(parent_pid, use_pdeathsig)
    try:
        llm = _load(llm_class)(**kwargs)
        sampling_cls = _load(sampling_class)
    except Exception as exc:  # report, then exit: the parent raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the parent is gone
            return
        if msg[0] == "close":
            return
        try:
            conn.send(("ok", run_generate(llm, sampling_cls, *msg[1], **msg[2])))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _shutdown(proc: Any, conn: Any, tmp: str | None) -> None:
    """Ask the child to exit, then kill its process group (the engine processes vLLM started in it)."""
    try:
        if proc.is_alive():
            conn.send(("close",))
    except (BrokenPipeError, OSError):
        pass
    proc.join(timeout=30)
    if proc.is_alive():
        _kill_group(proc.pid)
        proc.join(timeout=10)
    _kill_group(proc.pid)  # anything left in the group (an engine that outlived its parent)
    conn.close()
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


def _vllm_tokenizer(model: str | Path) -> tuple[str | None, str | None]:
    """(tokenizer path for vLLM, temp dir to remove): a tokenizer-only copy when AutoTokenizer misreads."""
    from .autotokenizer import stage_tokenizer

    if not (Path(model) / "tokenizer.json").is_file():
        return None, None
    tmp = tempfile.mkdtemp(prefix="zpd-vllm-tok-")
    staged = stage_tokenizer(Path(model), Path(tmp) / "tokenizer")
    if staged is None:
        shutil.rmtree(tmp, ignore_errors=True)
        return None, None
    return str(staged), tmp


class VllmGenerator:
    """``Generator`` whose model lives in a child process running ``vllm.LLM`` (or ``llm_class``)."""

    def __init__(self, model: str | Path, settings: Any, *, seed: int = 0, llm_class: str = "vllm:LLM",
                 sampling_class: str = "vllm:SamplingParams") -> None:
        ctx = mp.get_context("spawn")  # never fork a process that may hold CUDA state
        tokenizer, tmp = _vllm_tokenizer(model)
        self._conn, child_conn = ctx.Pipe()
        kwargs = engine_kwargs(str(model), settings, seed, tokenizer)
        main = threading.current_thread() is threading.main_thread()
        self._proc: SpawnProcess | None = ctx.Process(
            target=_child, args=(child_conn, llm_class, sampling_class, kwargs, os.getpid(), main),
            name="zpd-vllm", daemon=False)
        self._proc.start()
        # Not daemonic, so multiprocessing would wait for it at exit: close it first if nobody did.
        self._finalizer = weakref.finalize(self, _shutdown, self._proc, self._conn, tmp)
        child_conn.close()
        if not self._conn.poll(settings.start_timeout_seconds):
            self.close()
            raise RuntimeError(f"vllm child did not load {model} in {settings.start_timeout_seconds}s")
        kind, detail = self._recv()
        if kind != "ready":
            self.close()
            raise RuntimeError(f"vllm child could not load {model}: {detail}")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _recv(self) -> tuple[str, Any]:
        try:
            return self._conn.recv()
        except EOFError:
            code = None if self._proc is None else self._proc.exitcode
            return "error", f"vllm child exited (code {code})"

    def generate(self, prompts: list[str], *, n: int = 1, temperature: float = 0.0, max_tokens: int,
                 seed: int = 0, stop: list[str] | None = None,
                 sample_seeds: list[list[int]] | None = None) -> list[list[Completion]]:
        if not prompts:
            return []
        self._conn.send(("generate", (prompts,), dict(n=n, temperature=temperature, max_tokens=max_tokens,
                                                      seed=seed, stop=stop, sample_seeds=sample_seeds)))
        kind, detail = self._recv()
        if kind != "ok":
            # A dead engine is not a per-sample failure: the phase fails and is retried with a fresh child.
            raise RuntimeError(f"vllm generation failed: {detail}")
        return detail

    def close(self) -> None:
        """Stop the child and every process it started; the GPU memory is free when this returns."""
        if getattr(self, "_proc", None) is None:
            return
        self._proc = None
        self._finalizer()


@backend("vllm")
def _vllm(*, model: str | Path, settings: Any, device: str, batch_size: int) -> Generator:
    # Checked without importing (the import initialises CUDA): fail here, in the parent, with a clear message.
    if importlib.util.find_spec("vllm") is None:
        raise RuntimeError("generation backend 'vllm' needs vLLM: pip install 'zpd[vllm]' (GPU machines)")
    return VllmGenerator(model, settings)
