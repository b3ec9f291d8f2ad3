"""generation.backend = "served": real `zpd serve` replicas (child process trees and Ray jobs), real
SIGKILLs, real HTTP. vLLM cannot run here; `zpd serve` is the replica, including vLLM's runtime LoRA
routes (POST /v1/load_lora_adapter, /v1/unload_lora_adapter), so no test double is involved.

The daemon tests start from the session's round-0 archive and run round 1 with configs/served.toml.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from harness import ROOT, query, run_zpd, spawn_zpd, wait_for
from optional import require

from zpd.configs.served import ServedConfig
from zpd.trainer.replicas import REGISTRY, ReplicaFailed

SERVED = ROOT / "configs" / "served.toml"
SERVE_CMD = "{python} -m zpd.loop.cli serve --learner {learner} --host {host} --port {port}"
PROMPTS = ["1+2", "7+5", "13+8", "4+4"]


# -- helpers ------------------------------------------------------------------------------------------
def _events(state: Path, name: str) -> list[dict]:
    lines = (state / "logs" / "zpd.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("event") == name]


def _registry(state: Path) -> list[dict]:
    try:
        return json.loads((state / "served" / REGISTRY).read_text())["replicas"]
    except (OSError, ValueError):
        return []


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _fates(state: Path) -> list[tuple]:
    conn = sqlite3.connect(state / "state.db")
    try:
        return conn.execute("SELECT id, prompt, fate, p_solo, p_guided FROM tasks WHERE round = 1 "
                            "ORDER BY id").fetchall()
    finally:
        conn.close()


def _start(state: Path, archive: Path, log: Path) -> subprocess.Popen:
    return spawn_zpd("start", "--config", str(SERVED), "--state-dir", str(state), "--rounds", "1",
                     "--from-snapshot", str(archive), log=log)


def _texts(gen, prompts=PROMPTS) -> list[str]:
    return [cs[0].text for cs in gen.generate(prompts, n=1, temperature=0.0, max_tokens=16)]


@pytest.fixture(scope="module")
def unfaulted(tmp_path_factory, round0_archive) -> Path:
    """Round 1 of configs/served.toml after the round-0 archive, with nothing killed."""
    state = tmp_path_factory.mktemp("served") / "state"
    out = run_zpd("start", "--config", str(SERVED), "--state-dir", str(state), "--rounds", "1",
                  "--from-snapshot", str(round0_archive), timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return state


# -- the daemon with two zpd serve replicas --------------------------------------------------------------
def test_two_replicas_serve_the_current_learner_and_after_train_the_new_one(unfaulted: Path):
    from zpd.trainer.generate import EmbeddedGenerator

    ups = {e["phase"]: e for e in _events(unfaulted, "replicas up") if e["round"] == 1}
    assert ups["calibrate"]["num_replicas"] == 2 and len(set(ups["calibrate"]["urls"])) == 2
    assert all(u.startswith("http://127.0.0.1:") for u in ups["calibrate"]["urls"])  # loopback
    assert ups["calibrate"]["served"] == str(unfaulted / "rounds" / "round_000000" / "learner")
    assert ups["measure"]["served"] == str(unfaulted / "work" / "round_000001" / "learner")
    # Both replicas took calibration requests, and all replicas were stopped (trees gone, registry empty).
    assert _registry(unfaulted) == []
    assert all(_gone(pid) for e in ups.values() for pid in e["pids"])
    # MEASURE read the learner TRAIN wrote: its greedy eval answers are the new learner's, which differ from
    # the old learner's on these prompts.
    rows = query(unfaulted, "SELECT t.prompt, m.output FROM measurements m JOIN tasks t ON t.id = m.task_id "
                            "WHERE m.round = 1 AND m.kind = 'eval' ORDER BY t.id")
    assert rows
    new = EmbeddedGenerator(unfaulted / "rounds" / "round_000001" / "learner", batch_size=1)
    old = EmbeddedGenerator(unfaulted / "rounds" / "round_000000" / "learner", batch_size=1)
    changed = 0
    for prompt, served in rows:
        mine = new.generate([prompt], n=1, temperature=0.0, max_tokens=48)[0][0].text
        assert served == mine, prompt
        changed += mine != old.generate([prompt], n=1, temperature=0.0, max_tokens=48)[0][0].text
    assert changed >= 1


def test_a_replica_sigkilled_mid_calibrate_the_round_commits_with_the_same_fates(tmp_path, round0_archive,
                                                                                   unfaulted):
    state = tmp_path / "state"
    daemon = _start(state, round0_archive, tmp_path / "daemon.log")
    try:
        # Mid-CALIBRATE: the replicas are up and the first batch of attempts is committed.
        wait_for(lambda: len(_registry(state)) == 2 and query(state,
                                                              "SELECT 1 FROM attempts WHERE round = 1"),
                 600, 0.05, "calibration in progress on 2 replicas")
        victim = _registry(state)[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        assert daemon.wait(timeout=900) == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    finally:
        if daemon.poll() is None:
            daemon.kill()
    downs = [e for e in _events(state, "replica down") if e["round"] == 1]
    assert downs and downs[0]["phase"] == "calibrate" and downs[0]["pid"] == victim
    assert query(state, "SELECT failures FROM rounds WHERE id = 1") == [(0,)]  # no phase retry was needed
    assert _fates(state) == _fates(unfaulted)


def test_a_daemon_sigkilled_mid_calibrate_leaves_no_replica_and_restarts_fresh_ones(tmp_path, round0_archive):
    state = tmp_path / "state"
    daemon = _start(state, round0_archive, tmp_path / "daemon.log")
    try:
        wait_for(lambda: len(_registry(state)) == 2 and query(state, "SELECT phase FROM rounds WHERE id = 1")
                 == [("calibrate",)], 600, 0.05, "replicas up in CALIBRATE")
        pids = [r["pid"] for r in _registry(state)]
        trees = [pid for p in pids for pid in [p,
                                               *(c.pid for c in psutil.Process(p).children(recursive=True))]]
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    wait_for(lambda: all(_gone(p) for p in trees), 15, 0.1, "every replica process to die with the daemon")
    out = run_zpd("start", "--config", str(SERVED), "--state-dir", str(state), "--rounds", "1", timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    fresh = [e["pids"] for e in _events(state, "replicas up") if e["round"] == 1][-2:]
    assert fresh and not set(pids) & {p for ps in fresh for p in ps}
    assert _registry(state) == []


# -- the generator on its own: routing, faults, metrics ---------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from zpd.configs.schema import LearnerConfig
    from zpd.trainer.model import create_learner

    path = tmp_path_factory.mktemp("tiny") / "learner"
    create_learner(path, LearnerConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                       max_positions=64), seed=0)
    return path


def _settings(tmp_path: Path, metrics=None, **served):
    from zpd.trainer.served import ServedSettings

    fields = dict(num_replicas=2, command=SERVE_CMD, start_timeout_seconds=180, max_concurrency_per_replica=2)
    fields.update(served)
    return ServedSettings(ServedConfig(**fields), tmp_path / "served", tmp_path / "shared", 0, metrics)


def test_requests_spread_over_replicas_deterministic_per_seed_and_metered(tmp_path, tiny):
    from zpd.loop.metrics import DaemonMetrics
    from zpd.trainer.served import ServedGenerator

    metrics = DaemonMetrics(["arithmetic"], "0", replicas=2)
    gen = ServedGenerator(tiny, _settings(tmp_path, metrics, max_restarts=0))
    try:
        seeds = [[100 + 4 * i + j for j in range(4)] for i in range(len(PROMPTS))]
        first = gen.generate(PROMPTS, n=4, temperature=1.0, max_tokens=8, sample_seeds=seeds)
        again = gen.generate(PROMPTS[::-1], n=4, temperature=1.0, max_tokens=8, sample_seeds=seeds[::-1])
        assert [[c.text for c in cs] for cs in first] == [[c.text for c in cs] for cs in again[::-1]]
        assert not any(c.failed for cs in first for c in cs)
        reg = metrics.registry
        tokens = [reg.get_sample_value("zpd_replica_generated_tokens_total", {"replica": s}) for s in "01"]
        assert all(t > 0 for t in tokens), tokens  # both replicas served
        assert reg.get_sample_value("zpd_replicas_up") == 2
        assert [reg.get_sample_value("zpd_replica_requests_in_flight",
                                     {"replica": s}) for s in "01"] == [0, 0]
        # No restarts allowed and both replicas killed: every sample fails, none hangs.
        for r in list(gen.pool.replicas.values()):
            os.kill(r.pid, signal.SIGKILL)
        lost = gen.generate(PROMPTS, n=1, temperature=1.0, max_tokens=8, seed=0)
        assert all(cs[0].failed and "no replica left" in cs[0].error for cs in lost)
        assert reg.get_sample_value("zpd_replicas_up") == 0
    finally:
        gen.close()
    assert json.loads((tmp_path / "served" / REGISTRY).read_text()) == {"replicas": []}


def test_a_replica_that_cannot_start_fails_with_its_log(tmp_path, tiny):
    from zpd.trainer.served import ServedGenerator

    cmd = "{python} -c 'import sys; print(\"no GPU here\"); sys.exit(3)' {port}"
    began = time.monotonic()
    with pytest.raises(ReplicaFailed, match="exited before it was healthy(.|\n)*no GPU here"):
        ServedGenerator(tiny, _settings(tmp_path, command=cmd))
    assert time.monotonic() - began < 60  # failed fast, not at the start timeout
    assert _registry(tmp_path) == []


def test_zpd_serve_learner_flag_errors_in_one_line(tmp_path):
    out = run_zpd("serve", "--learner", str(tmp_path), "--port", "0", timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no config.json" in out.stderr
    out = run_zpd("serve", "--learner", str(tmp_path), "--host", "0.0.0.0", timeout=60)
    assert out.returncode == 2 and "requires a bearer token" in out.stderr


def test_config_refuses_unknown_placeholders_and_a_command_without_port():
    with pytest.raises(ValueError, match="unknown placeholder"):
        ServedConfig(command="vllm serve {learnr} --port {port}")
    with pytest.raises(ValueError, match="port"):
        ServedConfig(command="vllm serve {learner}")


# -- LoRA: a new adapter loads into the running replicas -------------------------------------------------
def _adapter(base: Path, out: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from zpd.trainer.model import load_learner

    model, _ = load_learner(base, "cpu")
    torch.manual_seed(seed)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=32,
                                            target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False))
    peft.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(base)
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def test_lora_learners_reload_into_the_running_replicas(tmp_path, tiny):
    pytest.importorskip("peft")
    import httpx

    from zpd.trainer.generate import EmbeddedGenerator
    from zpd.trainer.served import ServedGenerator, stop_parked
    from zpd.trainer.verl.ingest import copy_tokenizer, merge_lora

    a, b = _adapter(tiny, tmp_path / "a", 1), _adapter(tiny, tmp_path / "b", 2)
    expected = {}
    for name, adapter in (("a", a), ("b", b)):
        merge_lora(tiny, adapter, tmp_path / f"merged-{name}")
        copy_tokenizer(tiny, tmp_path / f"merged-{name}")
        expected[name] = _texts(EmbeddedGenerator(tmp_path / f"merged-{name}", batch_size=1))
    assert expected["a"] != expected["b"]
    settings = _settings(tmp_path, num_replicas=1, lora_args=["--enable-lora"])
    gen = ServedGenerator(a, settings)
    try:
        pids = [r.pid for r in gen.pool.replicas.values()]
        assert _texts(gen) == expected["a"]
        gen.close()  # parked, not stopped: a LoRA learner's next round loads into it
        assert not any(_gone(p) for p in pids)
        gen = ServedGenerator(b, settings)
        assert [r.pid for r in gen.pool.replicas.values()] == pids  # reloaded, not restarted
        assert _texts(gen) == expected["b"]
        url = next(iter(gen.pool.replicas.values())).url
        models = httpx.get(url + "/v1/models", headers=gen.pool.headers).json()["data"]
        assert [m["id"] for m in models] == ["zpd-learner", gen.pool.model]  # a's adapter was unloaded
        again = httpx.post(url + "/v1/load_lora_adapter", headers=gen.pool.headers,
                           json={"lora_name": gen.pool.model, "lora_path": str(b)})
        assert again.status_code == 400 and "already been loaded" in again.text  # vLLM's answer
        gone = httpx.post(url + "/v1/unload_lora_adapter", headers=gen.pool.headers,
                          json={"lora_name": "nope"})
        assert gone.status_code == 404
        gen.close()
    finally:
        stop_parked()
    assert all(_gone(p) for p in pids)


# -- Ray placement: one job per replica on a local CPU cluster ----------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster(ray_head_slot):
    require("ray")
    from test_verl_backend import _free_port

    from zpd.trainer.job import kill_tree

    port, dash = _free_port(), _free_port()
    ray = Path(sys.executable).with_name("ray")
    temp = Path(f"/tmp/zs{os.getpid()}")  # Ray's socket paths must stay short
    proc = subprocess.Popen(
        [str(ray), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", "2", "--num-gpus", "0",
         "--temp-dir", str(temp), "--include-dashboard", "true", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        import urllib.request

        def answers() -> bool:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2).read()
                return True
            except OSError:
                assert proc.poll() is None, "the test's Ray head exited"
                return False

        wait_for(answers, 120, 1.0, "the test's Ray head")
        yield address
    finally:
        # A throwaway head: what is left 3 s after TERM is KILLed (a 10 s grace cost 11-12 s of teardown).
        kill_tree(proc.pid, grace_seconds=3)
        proc.wait()


def test_replicas_as_ray_jobs_on_a_cpu_cluster(tmp_path, tiny, ray_cluster):
    from zpd.trainer.generate import EmbeddedGenerator
    from zpd.trainer.served import ServedGenerator
    from zpd.trainer.verl.ray_jobs import RayJobs

    settings = _settings(tmp_path, placement="ray", ray_address=ray_cluster, ray_num_gpus=0, ray_num_cpus=1,
                         ray_python=sys.executable)
    gen = ServedGenerator(tiny, settings)
    try:
        jobs = [r.job_id for r in gen.pool.replicas.values()]
        client = RayJobs(ray_cluster)
        assert len(jobs) == 2 and all(client.status(j) == "RUNNING" for j in jobs)
        served = gen.pool.served_dir
        assert served.is_relative_to(tmp_path / "shared") and (served / "config.json").is_file()
        assert _texts(gen) == _texts(EmbeddedGenerator(tiny, batch_size=1))
    finally:
        gen.close()
    assert all(client.status(j) in ("STOPPED", "SUCCEEDED", "FAILED") for j in jobs)
    assert not served.exists()  # the copy on shared storage is removed with the pool


def test_start_refuses_a_replica_program_that_is_not_installed(tmp_path):
    out = run_zpd("start", "--config", str(SERVED), "--state-dir", str(tmp_path / "s"), "--set",
                  'served.command="no-such-vllm serve {learner} --port {port}"', timeout=120)
    assert out.returncode == 1 and "'no-such-vllm' is not on PATH" in out.stderr
    assert out.stderr.count("\n") == 1 and not (tmp_path / "s").exists()  # one line, nothing written
