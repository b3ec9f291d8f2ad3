"""The daemon end to end, as an operator runs it: the real CLI in a subprocess, real signals."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from harness import run_zpd, spawn_zpd, status, wait_for, zpd_env

from zpd.store.rounds import committed_on_disk, read_latest, round_dir, verify_round


def test_smoke_two_rounds_then_status(tmp_path: Path, smoke_config: Path, round0_archive: Path) -> None:
    state = tmp_path / "state"
    out = run_zpd("start", "--config", str(smoke_config), "--state-dir", str(state), "--rounds", "2",
                  "--from-snapshot", str(round0_archive))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    s = status(state)
    assert s["committed_rounds"] == 2 and s["last_committed_round"] == 2
    assert s["running"] is False and s["pid"] is None and s["phase"] == "idle" and s["round"] == 3
    assert sum(1 for n in s["tasks"]["by_fate"].values() if n > 0) >= 2
    assert set(s["tasks"]["by_fate"]) == {"pending", "mastered", "zpd", "beyond", "review", "exam", "eval",
                                          "dropped"}
    assert 0.0 <= s["eval"]["accuracy"] <= 1.0 and "arithmetic" in s["frontier"]
    assert committed_on_disk(state) == [0, 1, 2] and read_latest(state) == 2
    for n in (0, 1, 2):
        assert verify_round(round_dir(state, n)) == []
        assert json.loads((round_dir(state, n) / "config.json").read_text())["calibration"]["num_solo"] == 2
    # The logs are JSON lines carrying round and phase.
    lines = [json.loads(x) for x in (state / "logs" / "zpd.jsonl").read_text().splitlines()]
    assert any(x["event"] == "round committed" and x["round"] == 2 for x in lines)
    # Round 2 is committed already: the same command exits 0 at once; a larger target goes on.
    again = run_zpd("start", "--config", str(smoke_config), "--state-dir", str(state), "--rounds", "2")
    assert again.returncode == 0
    assert status(state)["committed_rounds"] == 2
    # Round 3 runs in a probe that reports what the daemon imported: with the CPU learner's generation
    # served by the trainer worker (trainer/worker.py:WorkerGenerator), a whole round of calibration,
    # training and measurement leaves torch and transformers to the worker. It also reports how many
    # objects were frozen out of the garbage collector's sight when the rounds began (the daemon's
    # start-up: loop/daemon.py), and that the freeze is undone when the run ends.
    argv = ["start", "--config", str(smoke_config), "--state-dir", str(state), "--rounds", "3"]
    probe = ("import gc, json, sys\nfrom zpd.loop.cli import main\nfrom zpd.loop.daemon import Daemon\n"
             "frozen, loop = [], Daemon._loop\n"
             "Daemon._loop = lambda self: frozen.append(gc.get_freeze_count()) or loop(self)\n"
             f"code = main({argv!r})\n"
             "print(json.dumps([code, [m for m in ('torch', 'transformers') if m in sys.modules], frozen,"
             " gc.get_freeze_count()]))\n")
    more = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True, timeout=300,
                          env=zpd_env())
    assert more.returncode == 0, more.stderr[-2000:]
    code, heavy, frozen, after = json.loads(more.stdout.strip().splitlines()[-1])
    assert (code, heavy) == (0, []), more.stderr[-2000:]
    assert len(frozen) == 1 and frozen[0] > 50_000 and after == 0
    assert status(state)["last_committed_round"] == 3


def test_second_daemon_is_refused_naming_the_holder(tmp_path: Path, smoke_config: Path,
                                                    round0_archive: Path) -> None:
    state = tmp_path / "state"
    first = spawn_zpd("start", "--config", str(smoke_config), "--state-dir", str(state),
                      "--from-snapshot", str(round0_archive), log=tmp_path / "first.log")
    try:
        wait_for(lambda: (state / "state.db").exists() and status(state)["running"], 120, what="first daemon")
        second = run_zpd("start", "--config", str(smoke_config), "--state-dir", str(state), "--rounds", "5")
        assert second.returncode == 3
        assert f"pid {first.pid}" in second.stderr
        assert status(state)["pid"] == first.pid
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 0
    assert status(state)["running"] is False


def test_bad_config_exits_2_naming_key_and_creates_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[calibration]\nnum_solo = 0\n")
    state = tmp_path / "state"
    out = run_zpd("start", "--config", str(cfg), "--state-dir", str(state))
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert "calibration.num_solo" in out.stderr and str(cfg) in out.stderr
    assert not state.exists()
    out = run_zpd("start", "--config", str(cfg.with_name("missing.toml")), "--state-dir", str(state))
    assert out.returncode == 2 and "missing.toml" in out.stderr and not state.exists()


def test_corrupt_or_foreign_state_is_refused_and_never_overwritten(tmp_path: Path,
                                                                   smoke_config: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.db").write_bytes(b"garbage" * 1000)
    before = (state / "state.db").read_bytes()
    out = run_zpd("start", "--config", str(smoke_config), "--state-dir", str(state), "--rounds", "1")
    assert out.returncode == 4, out.stderr
    assert "state.db" in out.stderr
    assert (state / "state.db").read_bytes() == before

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    conn = sqlite3.connect(foreign / "state.db")
    conn.execute("CREATE TABLE accounts (id INTEGER)")
    conn.commit()
    conn.close()
    out = run_zpd("start", "--config", str(smoke_config), "--state-dir", str(foreign), "--rounds", "1")
    assert out.returncode == 4 and "not a zpd state database" in out.stderr

    other = tmp_path / "somebody-elses"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    out = run_zpd("start", "--config", str(smoke_config), "--state-dir", str(other), "--rounds", "1")
    assert out.returncode == 4 and (other / "thesis.tex").read_text() == "precious"
    assert not (other / "state.db").exists()


def test_status_of_missing_or_empty_dir_exits_2(tmp_path: Path) -> None:
    out = run_zpd("status", "--state-dir", str(tmp_path / "nope"), "--json")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    assert run_zpd("status", "--state-dir", str(tmp_path / "empty")).returncode == 2


def test_help_is_fast_and_lists_commands() -> None:
    import time

    t0 = time.monotonic()
    out = run_zpd("--help")
    assert out.returncode == 0 and "start" in out.stdout and "status" in out.stdout
    assert time.monotonic() - t0 < 5  # in practice well under a second; generous for a loaded CI box
    import subprocess
    import sys

    probe = subprocess.run([sys.executable, "-c", "import sys, zpd.loop.cli as c\n"
                            "c.build_parser()\nprint('torch' in sys.modules, 'transformers' in sys.modules)"],
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "False False"


def test_start_up_refusals_import_neither_torch_nor_transformers(tmp_path: Path) -> None:
    """The daemon's read-only checks run before the model code is imported (``trainer/completion.py``
    keeps the phases' result type free of it): a refused start answers in well under a second of CPU,
    not the 5-6 s that importing torch and transformers takes on a 2-core machine."""
    import subprocess
    import sys

    configs = Path(__file__).resolve().parents[1] / "configs"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("a user's file\n")
    cases = {
        "snapshot into a non-empty dir": (["--config", str(configs / "smoke.toml"), "--state-dir", str(busy),
                                           "--from-snapshot", str(tmp_path / "x.tar")], 2, "is not empty"),
        "a replica program not on PATH": (["--config", str(configs / "served.toml"), "--state-dir",
                                           str(tmp_path / "s"), "--set",
                                           'served.command="no-such-vllm serve {learner} --port {port}"'],
                                          1, "is not on PATH"),
    }
    for name, (args, code, message) in cases.items():
        argv = ["start", *args]
        probe = ("import json, sys\nfrom zpd.loop.cli import main\n"
                 f"code = main({argv!r})\n"
                 "print(json.dumps([code, [m for m in ('torch', 'transformers') if m in sys.modules]]))\n")
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, (name, out.stderr)
        assert json.loads(out.stdout.strip().splitlines()[-1]) == [code, []], name
        assert message in out.stderr, (name, out.stderr)
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"] and not (tmp_path / "s").exists()


def test_folders_install_as_subpackages_of_zpd_only(tmp_path: Path) -> None:
    """trainer, store, configs and loop are names taken on PyPI: ours are importable only as zpd.*."""
    import subprocess
    import sys

    code = ("import importlib.util as u, zpd.trainer, zpd.store, zpd.configs, zpd.loop\n"
            "print([n for n in ('trainer', 'store', 'configs', 'loop') if u.find_spec(n) is not None])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
