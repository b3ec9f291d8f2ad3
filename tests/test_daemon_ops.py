"""The running daemon as an operator watches it: a real Prometheus scrapes it, promtool lints the live
scrape, the port answers only on loopback, a busy port is a clear error, SIGTERM stops it cleanly."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import psutil
from harness import SMOKE, run_zpd, spawn_zpd, status, trainer_children, wait_for
from promtools import Prometheus, http_get, promtool


def test_real_prometheus_scrapes_the_running_daemon(tmp_path: Path, round0_archive: Path) -> None:
    state = tmp_path / "state"
    proc = spawn_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "30",
                     "--from-snapshot", str(round0_archive), log=tmp_path / "daemon.log")
    try:
        url = wait_for(lambda: (state / "state.db").exists() and status(state)["metrics_url"], 120,
                       what="metrics url")
        host_port = url.split("//")[1].split("/")[0]
        assert host_port.startswith("127.0.0.1:")
        code, body = http_get(url)
        assert code == 200 and "zpd_round" in body
        assert http_get(url.replace("/metrics", "/healthz"))[0] == 200
        wait_for(lambda: http_get(url.replace("/metrics", "/readyz"))[0] == 200, 30, what="readyz")
        lint = promtool("check", "metrics", stdin=body)
        assert lint.returncode == 0 and lint.stdout.strip() == "" and lint.stderr.strip() == "", \
            lint.stdout + lint.stderr
        # Bound to 127.0.0.1: another loopback address gets nothing.
        port = int(host_port.split(":")[1])
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex(("127.0.0.2", port)) != 0
        with Prometheus(tmp_path / "prom", targets=[host_port]) as prom:
            value = prom.wait_for_value('zpd_round{job="zpd"}', lambda v: v >= 1, timeout=180)
            assert value >= 1
        # zpd_round advances as rounds commit.
        first = status(state)["last_committed_round"]
        wait_for(lambda: (status(state)["last_committed_round"] or 0) > (first or 0), 180,
                 what="another round")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0


def test_busy_port_is_a_clear_error_before_any_round(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        state = tmp_path / "state"
        out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "1",
                      "--set", f"metrics.port={port}")
    assert out.returncode == 1
    assert f"127.0.0.1:{port}" in out.stderr
    assert not (state / "rounds").exists()


def test_non_loopback_bind_requires_a_token(tmp_path: Path) -> None:
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(tmp_path / "s"), "--rounds", "1",
                  "--set", "metrics.host=0.0.0.0", "--set", "metrics.token_env=ZPD_TEST_NO_SUCH_TOKEN")
    assert out.returncode == 2 and "ZPD_TEST_NO_SUCH_TOKEN" in out.stderr


def test_sigterm_during_train_exits_0_and_leaves_no_child(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # The signal lands as soon as the bootstrap's training child (or the persistent trainer worker)
    # exists; a smaller bootstrap (150 steps, still seconds of training) keeps the resume below cheap.
    small = ("--set", "bootstrap.num_examples=600")
    proc = spawn_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), *small,
                     log=tmp_path / "daemon.log")
    parent = psutil.Process(proc.pid)
    trainer = wait_for(lambda: trainer_children(proc.pid), 120, what="the training child (job or worker)")
    children = parent.children(recursive=True)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert time.monotonic() - t0 < 30
    for child in children:
        assert not psutil.pid_exists(child.pid) or child.status() == psutil.STATUS_ZOMBIE, child
    assert trainer
    s = status(state)
    assert s["running"] is False and s["last_committed_round"] is None
    # The same command resumes: the bootstrap is redone from its start and the round commits.
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "0", *small)
    assert out.returncode == 0, out.stderr[-2000:]
    assert status(state)["last_committed_round"] == 0
