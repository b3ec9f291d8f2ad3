"""Storage faults, for real: the state directory on a full filesystem and on a read-only one, each a small
tmpfs inside a private mount namespace (``unshare -m``; everything runs as root here, so chmod would prove
nothing). ``tests/data/storage_fault.sh`` mounts it, copies in a state directory with committed rounds,
fills or remounts it, runs ``zpd start`` and then ``zpd status`` and ``verify_round`` inside the namespace.

The daemon stops (non-zero) with one error line and no traceback, without committing anything new; every
committed round stays intact (``verify_round``); ``zpd status`` still reads a read-only directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ROOT, SMOKE, run_zpd, zpd_env

SCRIPT = ROOT / "tests" / "data" / "storage_fault.sh"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None
    or subprocess.run(["unshare", "-m", "--propagation", "private", "true"]).returncode != 0,
    reason="needs root and unshare -m (private mount namespaces)",
)


@pytest.fixture(scope="module")
def committed_state(tmp_path_factory: pytest.TempPathFactory, round0_archive: Path) -> Path:
    state = tmp_path_factory.mktemp("seed") / "state"
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "1",
                  "--from-snapshot", str(round0_archive), timeout=400)
    assert out.returncode == 0, out.stderr[-2000:]
    return state


def run_fault(seed: Path, tmp_path: Path, size: str, mode: str, *sets: str) -> dict:
    out = tmp_path / "out"
    out.mkdir()
    args = ["unshare", "-m", "--propagation", "private", "bash", str(SCRIPT), str(seed),
            str(tmp_path / "mnt"),
            size, mode, str(out)]
    for s in sets:
        args += ["--set", s]
    env = {**zpd_env(), "PYTHON": sys.executable}
    subprocess.run(args, cwd=ROOT, env=env, timeout=400, check=True)
    read = lambda name: (out / name).read_text()  # noqa: E731
    return {"rc": int(read("rc.txt")), "stderr": read("stderr.txt"), "stdout": read("stdout.txt"),
            "status_rc": int(read("status_rc.txt")), "status": read("status.json"),
            "verify": json.loads(read("verify.json"))}


def intact(res: dict) -> None:
    """Rounds 0 and 1 committed before the fault are still there, complete, matching their manifests;
    nothing new was committed (the smoke target is round 3)."""
    assert res["verify"] == {"0": [], "1": []}, res["verify"]


def test_full_filesystem_stops_the_daemon_and_keeps_committed_rounds(committed_state: Path,
                                                                     tmp_path: Path) -> None:
    # min_free_ratio=0 switches off the pre-round free-space check, so the writes themselves hit ENOSPC.
    res = run_fault(committed_state, tmp_path, "4m", "full:300", "storage.min_free_ratio=0")
    assert res["rc"] != 0
    intact(res)
    # SQLite says "disk is full"; the trainer child's failed save says the errno's "No space left on device".
    assert any(m in res["stdout"] + res["stderr"] for m in ("disk is full", "No space left on device"))


def test_free_space_check_stops_cleanly_before_a_round(committed_state: Path, tmp_path: Path) -> None:
    res = run_fault(committed_state, tmp_path, "4m", "full:300")
    assert res["rc"] == 1, res["stderr"][-2000:]
    intact(res)
    assert "not enough free disk" in res["stdout"] and res["stderr"].strip() == ""
    assert res["status_rc"] == 0 and json.loads(res["status"])["last_committed_round"] == 1


def test_read_only_filesystem_stops_the_daemon_and_keeps_committed_rounds(committed_state: Path,
                                                                          tmp_path: Path) -> None:
    res = run_fault(committed_state, tmp_path, "64m", "ro")
    assert res["rc"] != 0
    intact(res)


def test_read_only_filesystem_error_is_one_line(committed_state: Path, tmp_path: Path) -> None:
    res = run_fault(committed_state, tmp_path, "64m", "ro")
    assert len(res["stderr"].strip().splitlines()) == 1 and "Read-only" in res["stderr"]


def test_status_reads_a_read_only_state_dir(committed_state: Path, tmp_path: Path) -> None:
    res = run_fault(committed_state, tmp_path, "64m", "ro")
    assert res["status_rc"] == 0


def test_full_filesystem_error_is_one_line(committed_state: Path, tmp_path: Path) -> None:
    res = run_fault(committed_state, tmp_path, "4m", "full:300", "storage.min_free_ratio=0")
    assert res["rc"] == 1 and "Traceback" not in res["stderr"]
    assert len(res["stderr"].strip().splitlines()) == 1, res["stderr"]
