"""Test harness: run the real ``zpd`` CLI as a subprocess and read its state directory.

``tests/`` is on sys.path (pyproject: ``pythonpath``), so tests ``from harness import ...``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.toml"
ZPD = [sys.executable, "-m", "zpd.loop.cli"]


def zpd_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def run_zpd(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*ZPD, *args], capture_output=True, text=True, timeout=timeout, env=zpd_env())


def spawn_zpd(*args: str, log: Path) -> subprocess.Popen:
    fh = open(log, "w")
    return subprocess.Popen([*ZPD, *args], stdout=fh, stderr=subprocess.STDOUT, env=zpd_env())


def status(state_dir: Path) -> dict:
    out = run_zpd("status", "--state-dir", str(state_dir), "--json", timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05,
             what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def query(state_dir: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the live store read-only (as any reader would)."""
    try:
        conn = sqlite3.connect(f"file:{state_dir / 'state.db'}?mode=ro", uri=True, timeout=10)
    except sqlite3.OperationalError:  # not created yet
        return []
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def trainer_children(pid: int) -> list:
    """The training child processes (``python -m zpd.trainer.job``, or the persistent worker
    ``zpd.trainer.worker``) below a daemon's pid."""
    import psutil

    names = ("zpd.trainer.job", "zpd.trainer.worker")
    try:
        return [c for c in psutil.Process(pid).children(recursive=True)
                if any(n in " ".join(c.cmdline()) for n in names)]
    except psutil.Error:
        return []
