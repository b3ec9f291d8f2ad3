"""The vLLM generation backend, with a test double of ``vllm.LLM`` (vLLM cannot run on a CPU machine).

The double (``generation_doubles.FakeVllmLLM``) behaves like vLLM where it matters here: it starts its own
engine process from inside the backend's child (so a daemonic child fails as it does with vLLM), the
engine holds a "GPU" (an exclusive flock on a file) until it exits, prompts are tokenized through
AutoTokenizer, and its SamplingParams refuses greedy sampling with n > 1. The processes are real and are
killed with real signals.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from generation_doubles import FakeSamplingParams, FakeVllmLLM

from zpd.configs.schema import LearnerConfig, VllmBackendConfig
from zpd.trainer.vllm_backend import VllmGenerator, engine_kwargs, run_generate

DOUBLE = dict(llm_class="generation_doubles:FakeVllmLLM",
              sampling_class="generation_doubles:FakeSamplingParams")
TESTS = Path(__file__).resolve().parent


def _gpu_free(gpu: Path) -> bool:
    with open(gpu, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited (its parent may not reap it at once)


def _log_lines(log: Path) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines()]


@pytest.fixture
def gpu(tmp_path: Path, monkeypatch) -> Path:
    path = tmp_path / "gpu"
    monkeypatch.setenv("ZPD_TEST_VLLM_GPU", str(path))
    monkeypatch.setenv("ZPD_TEST_VLLM_LOG", str(tmp_path / "vllm.jsonl"))
    return path


def test_vllm_parameter_mapping_with_test_double(tmp_path: Path, gpu: Path) -> None:
    llm = FakeVllmLLM(model="m")
    outs = run_generate(llm, FakeSamplingParams, ["a", "bb"], n=3, temperature=0.7, max_tokens=24, seed=5,
                        stop=["\n"])
    (convos, sp, kw), = llm.calls
    assert convos == [[{"role": "user", "content": "a"}], [{"role": "user", "content": "bb"}]]
    assert (sp.n, sp.temperature, sp.max_tokens, sp.seed, sp.stop, sp.top_p) == (3, 0.7, 24, 5, ["\n"], 1.0)
    assert [[c.text for c in o] for o in outs] == [["a#0", "a#1", "a#2"], ["bb#0", "bb#1", "bb#2"]]
    assert outs[1][0].prompt_tokens == 2 and outs[0][0].num_tokens == 3 and outs[0][0].finish_reason == "stop"
    short = run_generate(llm, FakeSamplingParams, ["a"], n=1, temperature=0.0, max_tokens=2, seed=0,
                         stop=None)
    assert short[0][0].finish_reason == "length" and llm.calls[-1][1].stop is None
    settings = VllmBackendConfig(max_model_len=512, gpu_memory_utilization=0.5)
    assert engine_kwargs("/m", settings, seed=1) == dict(model="/m", tensor_parallel_size=1, dtype="auto",
                                                         seed=1,
                                                          gpu_memory_utilization=0.5, enforce_eager=False,
                                                          max_model_len=512)


def test_greedy_with_several_samples_is_one_request_repeated(gpu: Path) -> None:
    with pytest.raises(ValueError, match="greedy"):  # what vLLM's SamplingParams does
        FakeSamplingParams(n=3, temperature=0.0)
    llm = FakeVllmLLM(model="m")
    outs = run_generate(llm, FakeSamplingParams, ["a", "b"], n=3, temperature=0.0, max_tokens=8, seed=0,
                        stop=None)
    assert [[c.text for c in o] for o in outs] == [["a#0"] * 3, ["b#0"] * 3]
    assert all(call[1].n == 1 for call in llm.calls)
    seeded = run_generate(llm, FakeSamplingParams, ["a"], n=2, temperature=0.0, max_tokens=8, seed=0,
                          stop=None,
                          sample_seeds=[[4, 5]])
    assert [c.text for c in seeded[0]] == ["a#0", "a#0"]


def test_vllm_child_starts_its_engine_and_frees_the_gpu_on_close(tmp_path: Path, gpu: Path) -> None:
    """The backend's child builds LLM, which starts an engine process (impossible from a daemonic
    child); while the generator is open the engine holds the GPU, and close() gives it back.

    The learner is the built-in qwen2 one: AutoTokenizer (what vLLM uses) reads its character tokenizer
    as Qwen2Tokenizer, dropping " " and "\n", so vLLM must get a tokenizer-only copy."""
    from transformers import PreTrainedTokenizerFast

    from zpd.trainer.model import create_learner

    learner = tmp_path / "learner"
    create_learner(learner, LearnerConfig(architecture="qwen2", hidden_size=16, num_layers=1, num_heads=2,
                                          intermediate_size=32, max_positions=64), seed=0)
    settings = VllmBackendConfig(max_model_len=512, gpu_memory_utilization=0.5, start_timeout_seconds=300)
    gen = VllmGenerator(learner, settings, **DOUBLE)
    child = gen.pid
    try:
        assert gen.generate(["1 +\n2"], n=2, max_tokens=9, seed=4, temperature=0.7)[0][1].text == "1 +\n2#1"
        assert gen.generate(["y"], n=3, max_tokens=9, temperature=0.0)[0][2].text == "y#0"
        lines = _log_lines(tmp_path / "vllm.jsonl")
        init = lines[0]
        assert init["init"]["model"] == str(learner) and init["pid"] == child
        staged = Path(init["init"]["tokenizer"])
        assert staged.is_dir() and not (staged / "config.json").exists()
        engine = init["engine_pid"]
        assert _running(engine) and not _gpu_free(gpu)
        # A second engine cannot start while the first holds the GPU (as vLLM runs out of memory).
        with pytest.raises(RuntimeError, match="out of memory"):
            VllmGenerator("/other", settings, **DOUBLE)
    finally:
        gen.close()
    assert not _running(child) and not _running(engine)
    assert _gpu_free(gpu)
    assert not staged.exists()  # removed with the generator
    gen.close()  # idempotent
    exact = PreTrainedTokenizerFast.from_pretrained(learner).apply_chat_template(
        [{"role": "user", "content": "1 +\n2"}], add_generation_prompt=True, tokenize=True, return_dict=False)
    assert lines[1]["prompt_ids"] == [list(exact)]


def test_vllm_child_and_engine_die_with_the_daemon(tmp_path: Path, gpu: Path) -> None:
    """SIGKILL the process that owns the generator: its child and the engine go too, the GPU is free."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(TESTS)!r})
        from zpd.configs.schema import VllmBackendConfig
        from zpd.trainer.vllm_backend import VllmGenerator
        gen = VllmGenerator("/m", VllmBackendConfig(start_timeout_seconds=300), **{DOUBLE!r})
        print(gen.pid, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline())
        engine = _log_lines(tmp_path / "vllm.jsonl")[0]["engine_pid"]
        assert _running(child) and _running(engine) and not _gpu_free(gpu)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 20
    while (_running(child) or _running(engine)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(child) and not _running(engine)
    assert _gpu_free(gpu)


def test_vllm_backend_is_import_guarded() -> None:
    import importlib.util

    from zpd.trainer.generation import build_generator

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(RuntimeError, match=r"zpd\[vllm\]"):
        build_generator("vllm", model="/m", settings=VllmBackendConfig())
