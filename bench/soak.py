"""Soak tests of the real daemon: SIGKILL at random instants, and RSS over many rounds.

    python bench/soak.py --kills 50 --out /tmp/soak          # kill soak: prints "kills survived / kills made"
    python bench/soak.py --memory --rounds 100 --out /tmp/mem  # memory soak: prints RSS first/last/max

Kill soak: the smoke config (calibration batches of 4, so CALIBRATE has commit points to land between)
is started on one state directory and SIGKILLed, again and again: half the kills at a random instant
after the start, half as soon as the daemon reports a chosen phase (synthesize, calibrate, train,
measure, snapshot: snapshot included), plus a random delay. After each kill the state directory is
checked as the next start would find it (``check_state``): the store passes ``PRAGMA integrity_check``;
no committed round was lost (every round committed before is still committed, in the store or on disk);
every committed round directory is complete and matches its manifest (``verify_round``); no duplicated
attempt (each calibrated task has exactly ``num_solo`` solo attempts, and ``num_guided`` guided ones when
it failed alone) and no duplicated training example (one per task and round); the rows of a committed
round never change afterwards. A kill counts as survived when every check passes. When the kills are
made, one last uninterrupted run must commit the target round and exit 0.

Memory soak: one daemon runs ``--rounds`` smoke rounds; the daemon's RSS (psutil) is sampled each time
a round commits.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil

from zpd.configs.vocabulary import Phase

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.toml"
ZPD = [sys.executable, "-m", "zpd.loop.cli"]
PHASES = [p.value for p in Phase if p != Phase.BOOTSTRAP]  # the phases of rounds after round 0
SOAK_SETS = ["calibration.batch_size=4", "train.retry_backoff_seconds=0.1"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def spawn(state: Path, rounds: int, log: Path, sets: list[str]) -> subprocess.Popen:
    args = [*ZPD, "start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", str(rounds)]
    for s in sets:
        args += ["--set", s]
    return subprocess.Popen(args, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=_env())


def _ro(state: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True, timeout=10)


def live_phase(state: Path) -> str | None:
    try:
        conn = _ro(state)
        try:
            row = conn.execute("SELECT phase FROM controller WHERE id = 1").fetchone()
        finally:
            conn.close()
        return row[0] if row else None
    except sqlite3.Error:
        return None


def round_fingerprint(conn: sqlite3.Connection, r: int) -> tuple:
    """What a committed round owns; it must never change once committed."""
    q = lambda sql: conn.execute(sql, [r]).fetchone()[0]  # noqa: E731
    return (q("SELECT count(*) FROM attempts WHERE round = ?"),
            q("SELECT count(*) FROM train_examples WHERE round = ?"),
            q("SELECT count(*) FROM tasks WHERE round = ?"),
            q("SELECT count(*) FROM measurements WHERE round = ?"))


def sequential_owed(outcomes: list[int], k: int, need: int) -> int:
    """Samples the curtailed sequential test draws for these outcomes: it stops once "at least ``need``
    of k" is decided (after at least one sample)."""
    n = s = 0
    for c in outcomes:
        n, s = n + 1, s + c
        if s >= need or s + (k - n) < need:
            return n
    return k


def exam_hopeful_owed(solo: list[int], guided: list[int], num_solo: int, num_guided: int,
                      need_solo: int, need_guided: int) -> bool:
    """Whether these outcomes are what CALIBRATE draws for an exam hopeful (``loop/calibrate.py``, step 3):
    a task with no solo success whose guided samples were all correct when the sequential test stopped is
    sampled on while the exam has room, solo until its first success (or k), then, if still without one,
    guided until its first failure (or k). Room is not in the store, so a task that matches either this or
    the plain sequential count is owed what it has."""
    owed_solo = sequential_owed(solo, num_solo, need_solo)
    owed_guided = sequential_owed(guided, num_guided, need_guided)
    if any(solo[:owed_solo]) or len(guided) < owed_guided or not all(guided[:owed_guided]):
        return False  # not a hopeful when the sequential test stopped
    # Solo, sampled on while it has no success: zeros, then at most one success, which ends it.
    if 1 in solo:
        if solo.index(1) != len(solo) - 1:
            return False
        return len(guided) == owed_guided  # a solo success ends the hope: no more guided samples
    if len(solo) != num_solo:
        return False
    # Guided, sampled on while every sample is correct: ones, then at most one failure, which ends it.
    if 0 in guided:
        return guided.index(0) == len(guided) - 1
    return len(guided) == num_guided


def check_state(state: Path, seen: dict[int, tuple], num_solo: int = 2, num_guided: int = 2,
                solo_max_ratio: float = 0.25, guided_min_ratio: float = 0.3) -> list[str]:
    """Problems of a stopped daemon's state directory (empty: all checks pass). ``seen`` maps rounds
    committed at earlier checks to their fingerprint, and is updated."""
    from zpd.store.rounds import committed_on_disk, round_dir, verify_round

    problems: list[str] = []
    if not (state / "state.db").exists():
        return problems if not seen else ["state.db vanished"]
    conn = sqlite3.connect(state / "state.db", timeout=10)  # the daemon is dead: as the next start opens it
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            problems.append(f"integrity_check: {ok}")
        in_db = {r[0] for r in conn.execute("SELECT id FROM rounds WHERE status = 'committed'")}
        on_disk = set(committed_on_disk(state))
        for r in sorted(in_db - on_disk):
            problems.append(f"round {r} committed in the store but not on disk")
        for r in sorted(on_disk):
            bad = verify_round(round_dir(state, r))
            if bad:
                problems.append(f"round {r}: {bad[:3]}")
        for r in sorted(set(seen) - (in_db | on_disk)):
            problems.append(f"committed round {r} lost")
        dup = conn.execute("SELECT count(*) FROM (SELECT task_id FROM train_examples "
                           "GROUP BY round, task_id, kind "
                           "HAVING count(*) > 1)").fetchone()[0]
        if dup:
            problems.append(f"{dup} duplicated training examples")
        # Exactly the attempts the sequential test owes (loop/calibrate.py), numbered 0, 1, ... per mode:
        # no gap (a lost attempt), no repeat (a duplicated one).
        rows = conn.execute(
            """SELECT t.id, t.p_solo, a.mode, a.sample_idx, a.correct FROM tasks t
               JOIN attempts a ON a.task_id = t.id AND a.round = t.fate_round
               WHERE t.fate NOT IN ('pending', 'eval') ORDER BY t.id, a.mode, a.sample_idx""").fetchall()
        tasks: dict[int, tuple[float, dict[str, list[tuple[int, int]]]]] = {}
        for tid, p_solo, mode, idx, correct in rows:
            tasks.setdefault(tid, (p_solo, {"solo": [], "guided": []}))[1][mode].append((idx, correct))
        need_solo = math.floor(solo_max_ratio * num_solo + 1e-9) + 1
        need_guided = max(0, math.ceil(guided_min_ratio * num_guided - 1e-9))
        for tid, (p_solo, modes) in tasks.items():
            solo, guided = [c for _, c in modes["solo"]], [c for _, c in modes["guided"]]
            want_solo = sequential_owed(solo, num_solo, need_solo)
            want_guided = 0 if p_solo > solo_max_ratio else sequential_owed(guided, num_guided, need_guided)
            plain = len(solo) == want_solo and len(guided) == want_guided
            hopeful = p_solo <= solo_max_ratio and exam_hopeful_owed(solo, guided, num_solo, num_guided,
                                                                     need_solo, need_guided)
            numbered = all([i for i, _ in modes[m]] == list(range(len(modes[m]))) for m in modes)
            if not numbered or not (plain or hopeful):
                problems.append(f"task {tid}: {len(solo)} solo / {len(guided)} guided attempts "
                                f"(want {want_solo} / {want_guided}, numbered from 0: {numbered})")
                break
        for r in sorted(in_db):
            fp = round_fingerprint(conn, r)
            if r in seen and seen[r] != fp:
                problems.append(f"committed round {r} changed: {seen[r]} -> {fp}")
            seen.setdefault(r, fp)
    finally:
        conn.close()
    return problems


def kill_soak(out: Path, kills: int, seed: int, max_delay: float, rounds: int) -> dict:
    rng = random.Random(seed)
    state, log = out / "state", out / "daemon.log"
    out.mkdir(parents=True, exist_ok=True)
    seen: dict[int, tuple] = {}
    made = survived = 0
    by_phase: dict[str, int] = {}
    failures: list[str] = []
    target = rounds
    t0 = time.monotonic()
    while made < kills:
        proc = spawn(state, target, log, SOAK_SETS)
        mode = rng.choice(["random"] + PHASES) if made % 2 else "random"
        if mode == "random":
            deadline = time.monotonic() + rng.uniform(0.2, max_delay)
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.01)
        else:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and proc.poll() is None and live_phase(state) != mode:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.3 if mode == "snapshot" else 2.0))
        if proc.poll() is not None:  # finished (or failed) before the kill: raise the target and go on
            if proc.returncode != 0:
                failures.append(f"daemon exited {proc.returncode} before kill {made + 1}")
                break
            target += 2
            continue
        phase = live_phase(state) or "startup"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        made += 1
        by_phase[phase] = by_phase.get(phase, 0) + 1
        problems = check_state(state, seen)
        if problems:
            failures.append(f"kill {made} ({phase}): {problems}")
        else:
            survived += 1
        print(json.dumps({"kill": made, "phase": phase, "mode": mode, "ok": not problems,
                          "committed": sorted(seen), "elapsed_s": round(time.monotonic() - t0)}), flush=True)
    final = subprocess.run([*ZPD, "start", "--config", str(SMOKE), "--state-dir", str(state),
                            "--rounds", str(target), *sum((["--set", s] for s in SOAK_SETS), [])],
                           capture_output=True, text=True, env=_env())
    problems = check_state(state, seen)
    finished = final.returncode == 0 and max(seen, default=-1) >= target and not problems
    return {"kills_made": made, "kills_survived": survived, "kills_by_phase": by_phase, "failures": failures,
            "final_exit_code": final.returncode, "final_round": max(seen, default=None),
            "target_round": target,
            "finished": finished, "final_problems": problems, "seconds": round(time.monotonic() - t0, 1)}


def memory_soak(out: Path, rounds: int, sets: list[str]) -> dict:
    state, log = out / "state", out / "daemon.log"
    out.mkdir(parents=True, exist_ok=True)
    proc = spawn(state, rounds, log, sets)
    ps = psutil.Process(proc.pid)
    samples: list[tuple[int, int]] = []
    last = -1
    t0 = time.monotonic()
    while proc.poll() is None:
        try:
            conn = _ro(state)
            top = conn.execute("SELECT max(id) FROM rounds WHERE status = 'committed'").fetchone()[0]
            conn.close()
        except sqlite3.Error:
            top = None
        if top is not None and top > last:
            try:
                samples.append((top, ps.memory_info().rss))
            except psutil.Error:
                break
            last = top
            if top % 10 == 0:
                print(json.dumps({"round": top, "rss_mib": round(samples[-1][1] / 2**20, 1),
                                  "elapsed_s": round(time.monotonic() - t0)}), flush=True)
        time.sleep(0.2)
    rss = [b for _, b in samples]
    mib = lambda b: round(b / 2**20, 1)  # noqa: E731
    return {"exit_code": proc.returncode, "rounds_sampled": len(samples), "last_round": last,
            "rss_first_mib": mib(rss[0]) if rss else None, "rss_last_mib": mib(rss[-1]) if rss else None,
            "rss_max_mib": mib(max(rss)) if rss else None, "seconds": round(time.monotonic() - t0, 1),
            "samples": [(r, mib(b)) for r, b in samples]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True,
                   help="work directory (state dir and daemon log go here)")
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-delay", type=float, default=25.0,
                   help="random kills land within this many seconds of a start")
    p.add_argument("--rounds", type=int, default=None,
                   help="kill soak: first target round (3); memory soak: rounds (100)")
    p.add_argument("--memory", action="store_true", help="memory soak instead of the kill soak")
    p.add_argument("--set", dest="sets", action="append", default=[],
                   help="memory soak: extra --set overrides")
    args = p.parse_args()
    if args.memory:
        res = memory_soak(args.out, args.rounds or 100, args.sets)
        print(json.dumps({k: v for k, v in res.items() if k != "samples"}))
        print(f"RSS first/last/max: {res['rss_first_mib']} / {res['rss_last_mib']} / "
              f"{res['rss_max_mib']} MiB "
              f"over {res['rounds_sampled']} rounds (exit {res['exit_code']})")
    else:
        res = kill_soak(args.out, args.kills, args.seed, args.max_delay, args.rounds or 3)
        print(json.dumps(res))
        print(f"kills survived / kills made: {res['kills_survived']} / {res['kills_made']}; "
              f"run finished its rounds: {res['finished']} "
              f"(round {res['final_round']} of {res['target_round']})")
    (args.out / "result.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
