"""Delta snapshots in the real daemon (smoke config, a real subprocess, real SIGKILL): with deltas on at
any size, later rounds hold ``store.delta`` + ``base_round``; retention keeps the base a kept round needs;
a SIGKILL in SNAPSHOT of a delta round resumes (the kill soak's checks); rollback to a delta round and the
next run work; ``zpd snapshot`` of a delta round archives a complete ``state.db``."""

from __future__ import annotations

import importlib.util
import json
import signal
import sqlite3
import tarfile
from pathlib import Path

from harness import ROOT, query, run_zpd, spawn_zpd, status, wait_for

from zpd.store import delta
from zpd.store.rounds import committed_on_disk, round_dir

_spec = importlib.util.spec_from_file_location("zpd_bench_soak", ROOT / "bench" / "soak.py")
soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)

DELTA_SETS = ["snapshot.delta_min_bytes=0", "snapshot.full_every=3", "storage.keep_last=2"]


def _args(state: Path, rounds: int, archive: Path) -> list[str]:
    args = ["start", "--config", str(soak.SMOKE), "--state-dir", str(state), "--rounds", str(rounds),
            "--from-snapshot", str(archive)]
    for s in soak.SOAK_SETS + DELTA_SETS:
        args += ["--set", s]
    return args


def test_delta_rounds_in_the_daemon_kill_rollback_and_archive(tmp_path: Path, round0_archive: Path) -> None:
    state = tmp_path / "state"
    seen: dict[int, tuple] = {}
    # Round 1 is full (the seeded store's log belongs to no base on this disk); 2 and 3 are deltas on it.
    proc = spawn_zpd(*_args(state, 3, round0_archive), log=tmp_path / "a.log")
    wait_for(lambda: (soak.live_phase(state) == "snapshot"
                      and query(state, "SELECT round FROM controller")[0][0] == 2) or proc.poll() is not None,
             600, 0.005, what="SNAPSHOT of round 2")
    assert proc.poll() is None, (tmp_path / "a.log").read_text()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert soak.check_state(state, seen) == []
    out = run_zpd(*_args(state, 3, round0_archive), timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert soak.check_state(state, seen) == []
    kinds = {n: delta.store_kind(round_dir(state, n)) for n in committed_on_disk(state)}
    # keep_last = 2 keeps 2 and 3; round 1 stays as their base, round 0 as the lineage's root.
    assert kinds == {0: "full", 1: "full", 2: "delta", 3: "delta"}
    assert [delta.read_base(round_dir(state, n)) for n in (2, 3)] == [1, 1]
    assert status(state)["last_committed_round"] == 3

    archive = tmp_path / "r3.tar"
    snap = run_zpd("snapshot", "--state-dir", str(state), "--out", str(archive))
    assert snap.returncode == 0, snap.stderr
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("round_000003/manifest.json"))  # type: ignore[arg-type]
    assert "round_000003/state.db" in names and "round_000003/store.delta" not in names
    assert "state.db" in manifest["files"] and "store.delta" not in manifest["files"]

    back = run_zpd("rollback", "--state-dir", str(state), "--round", "2")
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["moved_aside"] == [3]
    conn = sqlite3.connect(state / "state.db")
    assert conn.execute("SELECT max(round) FROM attempts").fetchone()[0] == 2
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    again = run_zpd(*_args(state, 4, round0_archive), timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    # Round 3 again (a delta on 1), then round 4: 4 - 1 >= full_every, so a full copy.
    kinds = {n: delta.store_kind(round_dir(state, n)) for n in committed_on_disk(state)}
    assert kinds[3] == "delta" and kinds[4] == "full"
    assert status(state)["last_committed_round"] == 4
