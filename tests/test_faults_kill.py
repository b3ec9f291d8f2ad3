"""The CI version of the kill soak (bench/soak.py runs the long one): SIGKILL the smoke daemon a few times,
as soon as it reports CALIBRATE, TRAIN and SNAPSHOT and once at a random instant, restarting each time;
after every kill the state directory passes ``check_state`` (integrity_check, no committed round lost or
changed, committed round directories match their manifests, no duplicated attempt or training example),
and the last uninterrupted run finishes its rounds."""

from __future__ import annotations

import importlib.util
import signal
import time
from pathlib import Path

from harness import ROOT, spawn_zpd, status, wait_for

_spec = importlib.util.spec_from_file_location("zpd_bench_soak", ROOT / "bench" / "soak.py")
soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)


def test_sigkill_at_phases_and_at_random_then_the_run_finishes(tmp_path: Path, round0_archive: Path) -> None:
    state = tmp_path / "state"
    # Two rounds: after the kills in round 1 there is still a round 2 for the random kill to land in.
    args = ["start", "--config", str(soak.SMOKE), "--state-dir", str(state), "--rounds", "2",
            "--from-snapshot", str(round0_archive)]
    for s in soak.SOAK_SETS:
        args += ["--set", s]
    seen: dict[int, tuple] = {}
    kills = []
    for i, target in enumerate(["calibrate", "train", "snapshot", "random"]):
        proc = spawn_zpd(*args, log=tmp_path / f"{i}.log")
        if target == "random":
            time.sleep(3.0)
        else:
            wait_for(lambda t=target, p=proc: soak.live_phase(state) == t or p.poll() is not None, 300, 0.005,
                     what=f"phase {target}")
        assert proc.poll() is None, f"the daemon finished before the {target} kill"
        phase = soak.live_phase(state)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills.append(phase)
        assert soak.check_state(state, seen) == [], (target, phase)
    assert "snapshot" in kills and "calibrate" in kills
    proc = spawn_zpd(*args, log=tmp_path / "final.log")
    assert proc.wait(timeout=400) == 0, (tmp_path / "final.log").read_text()[-3000:]
    assert soak.check_state(state, seen) == []
    assert sorted(seen) == [0, 1, 2] and status(state)["last_committed_round"] == 2
