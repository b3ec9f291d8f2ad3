"""The persistent trainer worker, for real: one process runs job after job, gives its model back on
release, is SIGKILLed mid-job (the rerun starts a new worker that resumes from the checkpoint), dies with
its parent, and is gone after close. The trainer child cannot be shadowed by a ``zpd/`` folder in its
working directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from harness import wait_for

from zpd.configs.schema import LearnerConfig
from zpd.trainer.job import TrainJob, TrainJobFailed, child_argv, run_job
from zpd.trainer.model import create_learner
from zpd.trainer.spec import SFTParams
from zpd.trainer.worker import TrainerWorker

TINY = LearnerConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=128)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _job(tmp_path: Path, name: str, n: int = 8, **kw) -> TrainJob:
    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i}+1",
                                        "response": str(i + 1)}) + "\n" for i in range(n)))
    return TrainJob("embedded-sft", str(tmp_path / "learner"), str(tmp_path / name / "out"), str(data),
                    SFTParams(epochs=1, batch_size=2, learning_rate=1e-3, seed=1),
                    str(tmp_path / name / "r.json"),
                    threads=1, **kw)


def test_one_worker_runs_many_jobs_and_releases_its_model(tmp_path: Path) -> None:
    create_learner(tmp_path / "learner", TINY, seed=0)
    worker = TrainerWorker(cwd=tmp_path)
    try:
        pids = []
        for name in ("a", "b"):
            events: list[dict] = []
            result = worker.run(_job(tmp_path, name), timeout_seconds=300, on_progress=events.append)
            assert result.num_steps == 4 and (tmp_path / name / "out" / "model.safetensors").exists()
            assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4]
            pids.append(next(e["pid"] for e in events if e["event"] == "start"))
        assert pids[0] == pids[1] == worker.pid  # the same process: start-up paid once
        released = worker.release()
        assert released == {"event": "released", "models": 0, "cuda_allocated_bytes": 0}
        assert worker.alive()
        assert worker.release(exit=True) is None and _gone(pids[0])  # the vLLM path: the worker exits
        again = worker.run(_job(tmp_path, "c"), timeout_seconds=300)  # and the next job starts a new one
        assert again.num_steps == 4 and worker.pid != pids[0]
    finally:
        pid = worker.pid
        worker.close()
    assert pid is not None and _gone(pid)


def test_worker_killed_mid_job_fails_and_the_rerun_resumes(tmp_path: Path) -> None:
    create_learner(tmp_path / "learner", TINY, seed=0)
    job = _job(tmp_path, "k", n=24, checkpoint_dir=str(tmp_path / "k" / "ckpt"), checkpoint_seconds=1e-9)
    worker = TrainerWorker(cwd=tmp_path)
    killed: list[int] = []

    def kill_at_step_5(event: dict) -> None:
        if event["event"] == "step" and event["step"] == 5 and not killed:
            killed.append(worker.pid)
            os.kill(worker.pid, signal.SIGKILL)

    try:
        with pytest.raises(TrainJobFailed) as info:
            worker.run(job, timeout_seconds=300, on_progress=kill_at_step_5)
        assert "died" in str(info.value) and _gone(killed[0])
        events: list[dict] = []
        result = worker.run(job, timeout_seconds=300, on_progress=events.append)
        assert worker.pid != killed[0]
    finally:
        worker.close()
    resumed = [e for e in events if e["event"] == "resumed"]
    assert len(resumed) == 1 and 4 <= resumed[0]["step"] <= 5 and result.num_steps == 12


def test_worker_dies_with_its_parent(tmp_path: Path) -> None:
    """A daemon killed by SIGKILL cannot stop its worker; the kernel does (PR_SET_PDEATHSIG)."""
    script = textwrap.dedent(f"""
        import sys, time
        from zpd.trainer.worker import TrainerWorker
        w = TrainerWorker(cwd={str(tmp_path)!r})
        w._start()
        print(w.proc.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    worker_pid = int(parent.stdout.readline())
    assert not _gone(worker_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    parent.stdout.close()
    wait_for(lambda: _gone(worker_pid), 30, what="worker gone with its parent")


def test_stop_kills_the_worker_tree(tmp_path: Path) -> None:
    fifo = tmp_path / "data.fifo"
    os.mkfifo(fifo)  # the job blocks opening it: a worker busy for ever
    job = TrainJob("embedded-sft", str(tmp_path / "nowhere"), str(tmp_path / "out"), str(fifo),
                   SFTParams(epochs=1, batch_size=1, learning_rate=1e-3), str(tmp_path / "result.json"))
    worker = TrainerWorker(cwd=tmp_path)
    began = time.monotonic()
    from zpd.trainer.job import TrainJobStopped

    with pytest.raises(TrainJobStopped) as info:
        worker.run(job, timeout_seconds=120, should_stop=lambda: time.monotonic() - began > 15)
    assert _gone(info.value.pid) and not worker.alive()


@pytest.mark.parametrize("module", ["zpd.trainer.job", "zpd.trainer.worker"])
def test_a_zpd_folder_in_the_working_directory_cannot_shadow_the_trainer(
        tmp_path: Path, module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """zpd installed without -e and started from a checkout: ``python -m`` would import the checkout's
    ``zpd/`` folder (here: a package that refuses to import) instead of the installed package."""
    # The README's test command sets PYTHONSAFEPATH=1 (the same protection as -P, for every child): off
    # here, so that the hazard is real and the trainer's own -P is what prevents it.
    monkeypatch.delenv("PYTHONSAFEPATH", raising=False)
    fake = tmp_path / "checkout"
    (fake / "zpd").mkdir(parents=True)
    (fake / "zpd" / "__init__.py").write_text("raise ImportError('the shadowing zpd/ folder was imported')\n")
    bare = subprocess.run([sys.executable, "-m", module, "--help"], cwd=fake, capture_output=True, text=True,
                          timeout=120)
    assert "shadowing zpd/ folder was imported" in bare.stderr  # the hazard is real here
    cmd = child_argv(module) + (["/nonexistent.json"] if module.endswith("job") else [])
    out = subprocess.run(cmd, cwd=fake, capture_output=True, text=True, input="", timeout=120)
    assert "shadowing" not in out.stdout + out.stderr
    assert out.returncode in (0, 1) and ("training job failed" in out.stderr or '"ready"' in out.stdout)
    # And through the daemon's own entry point, started from that directory.
    create_learner(tmp_path / "learner", TINY, seed=0)
    monkeypatch.chdir(fake)
    assert run_job(_job(tmp_path, "s"), timeout_seconds=300).num_steps == 4


def test_the_worker_serves_generation_sample_for_sample_as_in_process(tmp_path: Path) -> None:
    """``WorkerGenerator`` (the embedded backend run in the worker) answers exactly what
    ``EmbeddedGenerator`` answers in this process, greedy and seeded; the worker that serves it is the one
    that trains; ``close`` makes the worker drop the model; a worker SIGKILLed between calls is replaced
    by the next call, with the same answers; a command the worker fails raises, naming the error."""
    from zpd.trainer.generate import EmbeddedGenerator
    from zpd.trainer.worker import WorkerGenerator

    create_learner(tmp_path / "learner", TINY, seed=0)
    prompts = ["1+2", "17+25", "3+4"]
    calls = [dict(n=1, temperature=0.0, max_tokens=6, seed=0),
             dict(n=3, temperature=1.0, max_tokens=6, seed=7, stop=["\n"]),
             dict(n=2, temperature=1.0, max_tokens=5, seed=1, sample_seeds=[[11, 12], [13, 14], [15, 16]])]
    local = EmbeddedGenerator(tmp_path / "learner", batch_size=4)
    expected = [[[(c.text, c.num_tokens, c.finish_reason, c.prompt_tokens) for c in row]
                 for row in local.generate(prompts, **kw)] for kw in calls]
    worker = TrainerWorker(cwd=tmp_path)
    gen = WorkerGenerator(worker, tmp_path / "learner", device="cpu", batch_size=4, torch_threads=1,
                          num_params=10_000, timeout_seconds=300)
    try:
        def answers() -> list:
            return [[[(c.text, c.num_tokens, c.finish_reason, c.prompt_tokens) for c in row]
                     for row in gen.generate(prompts, **kw)] for kw in calls]

        assert answers() == expected
        assert any(c[0] for call in expected for row in call for c in row)  # not all empty texts
        first = worker.pid
        assert gen.generate([], max_tokens=4) == []
        worker.run(_job(tmp_path, "a"), timeout_seconds=300)
        assert worker.pid == first  # one process generates and trains
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not worker.alive(), timeout=30)
        assert answers() == expected and worker.pid != first
        gen.close()
        assert worker.release() == {"event": "released", "models": 0, "cuda_allocated_bytes": 0}
        bad = WorkerGenerator(worker, tmp_path / "no-such-learner", device="cpu", batch_size=4,
                              torch_threads=1, num_params=10_000, timeout_seconds=300)
        pid = worker.pid
        with pytest.raises(TrainJobFailed, match="generate failed"):
            bad.generate(["1+1"], max_tokens=2)
        assert not worker.alive() and _gone(pid)
    finally:
        worker.close()


def test_auto_device_on_a_cpu_build_does_not_import_torch() -> None:
    """``resolve_device("auto")`` agrees with torch, and on a CPU-only build answers without importing it."""
    import importlib.metadata

    probe = ("import json, sys\nfrom zpd.trainer.device import resolve_device\n"
             "d = resolve_device('auto'); imported = 'torch' in sys.modules\n"
             "import torch\n"
             "print(json.dumps([d, imported, 'cuda' if torch.cuda.is_available() else 'cpu']))\n")
    out = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    device, imported, torch_says = json.loads(out.stdout.strip().splitlines()[-1])
    assert device == torch_says
    if importlib.metadata.version("torch").endswith("+cpu"):
        assert device == "cpu" and imported is False
