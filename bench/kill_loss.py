"""Seconds of work a SIGKILL throws away, per phase: kill the real daemon in the middle of each phase, look at
what was durable at that instant, restart it and check that the round still commits.

    python bench/kill_loss.py                                   # smoke config, every phase
    python bench/kill_loss.py --config configs/default.toml --phases bootstrap --kill-after 75

For each phase the daemon is started (round 0 for ``bootstrap``; the others from a round-0 snapshot, as the
tests do), and SIGKILLed ``--kill-after`` seconds into the phase (or at the phase's end, if it is shorter).
At that instant:

* ``into``: seconds the phase had run: what a phase that commits only at its end loses;
* ``lost``: seconds since the phase's last durable progress: the newest of the store's last commit
  (``state.db``/``state.db-wal`` mtime) and the trainer's checkpoint (``work/*/*.ckpt/*.pt``), not earlier
  than the phase's start. That is what the restarted daemon has to redo.

Then the same command is run again to completion; ``resumed`` says whether the log says the trainer resumed
from its checkpoint (and the seconds it saved), and ``ok`` that the round committed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ZPD = [sys.executable, "-m", "zpd.loop.cli"]


def controller_phase(state: Path) -> str | None:
    try:
        conn = sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT phase FROM controller WHERE id = 1").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def last_durable(state: Path) -> float:
    paths = [state / "state.db", state / "state.db-wal", *state.glob("work/*/*.ckpt/*.pt")]
    return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)


def one_phase(config: Path, phase: str, kill_after: float, archive: Path | None, workdir: Path,
              extra: list[str]) -> dict:
    state = workdir / phase / "state"
    state.parent.mkdir(parents=True)
    rounds = "0" if phase == "bootstrap" else "1"
    cmd = [*ZPD, "start", "--config", str(config), "--state-dir", str(state), "--rounds", rounds,
           "--set", "metrics.port=0", *[a for o in extra for a in ("--set", o)]]
    if archive is not None and phase != "bootstrap":
        cmd += ["--from-snapshot", str(archive)]
    log = open(state.parent / "first.out", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    began = None
    while proc.poll() is None:
        current = controller_phase(state)
        now = time.time()
        if current == phase and began is None:
            began = now
        if began is not None and (current != phase or now - began >= kill_after):
            break
        time.sleep(0.05)
    killed_at = time.time()
    durable = last_durable(state)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()
    if began is None:
        return {"phase": phase, "error": "the phase never started (see first.out)"}
    t0 = time.monotonic()
    again = subprocess.run(cmd, capture_output=True, text=True)
    resumed = [json.loads(line) for line in (state / "logs" / "zpd.jsonl").read_text().splitlines()
               if '"training resumed from its checkpoint"' in line]
    return {"phase": phase, "into": killed_at - began, "lost": killed_at - max(durable, began),
            "resumed": resumed[-1]["seconds_saved"] if resumed else None,
            "rerun": time.monotonic() - t0, "ok": again.returncode == 0}


def round0_archive(config: Path, workdir: Path, extra: list[str]) -> Path:
    state = workdir / "round0" / "state"
    out = subprocess.run([*ZPD, "start", "--config", str(config), "--state-dir", str(state), "--rounds", "0",
                          "--set", "metrics.port=0", *[a for o in extra for a in ("--set", o)]],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"round 0 failed: {out.stdout[-2000:]}")
    archive = workdir / "round0.tar"
    subprocess.run([*ZPD, "snapshot", "--state-dir", str(state), "--out", str(archive)], check=True,
                   capture_output=True)
    return archive


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "smoke.toml")
    ap.add_argument("--phases", default="bootstrap,synthesize,calibrate,train,measure")
    ap.add_argument("--kill-after", type=float, default=5.0, help="seconds into the phase")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="zpd-kill-"))
    phases = args.phases.split(",")
    archive = round0_archive(args.config, workdir, args.overrides) if set(phases) - {"bootstrap"} else None
    rows = [one_phase(args.config, p, args.kill_after, archive, workdir, args.overrides) for p in phases]
    print(f"config {args.config.name}, kill {args.kill_after:g} s into the phase (or at its end), "
          f"overrides {args.overrides or '-'}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'phase':>10} {'into_s':>7} {'lost_s':>7} {'resumed_saved_s':>15} {'rerun_s':>8} "
          f"{'committed':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['phase']:>10} {r['error']}")
            continue
        saved = "-" if r["resumed"] is None else f"{r['resumed']:.1f}"
        print(f"{r['phase']:>10} {r['into']:>7.1f} {r['lost']:>7.1f} {saved:>15} {r['rerun']:>8.1f} "
              f"{'yes' if r['ok'] else 'NO':>9}")
    return 0 if all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
