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
