"""What ``zpd start`` shows on a real terminal (a pseudo-terminal): human lines with progress bars and an
ETA, no JSON, no Python warnings; and with ``--log-format json`` (the systemd unit's), JSON lines only.
``logs/zpd.jsonl`` holds the JSON records either way."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import termios
import time
from pathlib import Path

from harness import SMOKE, ZPD, zpd_env

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_pty(args: list[str], timeout: float = 600) -> tuple[int, str]:
    """Run ``zpd ARGS`` with stdin, stdout and stderr on a 120x40 pseudo-terminal; (exit code, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in zpd_env().items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([*ZPD, *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def screen_lines(text: str) -> list[str]:
    """What a reader sees line by line: escape codes dropped, each ``\\r``-overwritten segment separate."""
    return [seg.strip() for line in ANSI.sub("", text).split("\n") for seg in line.split("\r") if seg.strip()]


def test_a_terminal_gets_human_lines_and_progress_bars_without_json_or_warnings(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # A smaller bootstrap than smoke's (150 steps, not 750): what the terminal shows does not depend on it.
    code, text = run_in_pty(["start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "1",
                             "--set", "bootstrap.num_examples=600"])
    lines = screen_lines(text)
    assert code == 0, text[-3000:]
    # Human lines: a clock, the round and phase, the event in words.
    assert any(re.match(r"\d\d:\d\d:\d\d  zpd  daemon ready", x) for x in lines), lines[:10]
    assert any(re.search(r"round 0 bootstrap  bootstrap training  \(examples: 600\)", x) for x in lines)
    assert any(re.search(r"round 1 calibrate  calibrated  \(fates: ", x) for x in lines)
    assert sum(bool(re.search(r"snapshot  round committed", x)) for x in lines) == 2
    # tqdm bars: the bootstrap's training steps with a rate and an ETA ([elapsed<left]), and calibration.
    bars = [x for x in lines if re.search(r"round 0 train: +\d+%\|.*\| *\d+/150 \[\d\d:\d\d<\d\d:\d\d", x)]
    assert bars, lines
    assert any(re.search(r"round 1 calibrate: +\d+%\|.*\| *\d+/\d+ \[", x) for x in lines), lines
    # No JSON objects, no raw Python warnings, no traceback.
    assert not [x for x in lines if x.startswith("{")]
    assert not re.search(r"Warning|warnings\.warn|Traceback", text), text
    # The file log still holds every record as JSON (other tools and tests read it).
    records = [json.loads(x) for x in (state / "logs" / "zpd.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records if r["event"] == "round committed"] == [0, 1]


def test_log_format_json_puts_only_json_lines_on_the_terminal(tmp_path: Path, round0_archive: Path) -> None:
    state = tmp_path / "state"
    code, text = run_in_pty(["start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "1",
                             "--from-snapshot", str(round0_archive), "--log-format", "json"])
    assert code == 0, text[-3000:]
    raw = [x for x in text.replace("\r\n", "\n").split("\n") if x]
    assert raw and "\r" not in "".join(raw) and not ANSI.search(text)
    records = [json.loads(x) for x in raw]  # every line: one JSON object
    assert [r["round"] for r in records if r["event"] == "round committed"] == [1]
    assert {"ts", "level", "event", "round", "phase"} <= set(records[0])


def test_python_warnings_go_to_the_log_file_not_the_terminal(tmp_path: Path) -> None:
    # In a fresh interpreter, as the daemon is: logging and warnings state is process-wide, and tests
    # that ran before in this process (console format, captured warnings) must not decide the outcome.
    code = f"""
import warnings
from pathlib import Path
from zpd.loop.logs import get_logger, setup_logging
setup_logging(Path({str(tmp_path / "logs")!r}))
with warnings.catch_warnings():
    warnings.simplefilter("always")
    warnings.warn("`foo` is deprecated and will be removed", FutureWarning, stacklevel=1)
get_logger().info("after the warning", extra={{"n": 1}})
"""
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=zpd_env(), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "FutureWarning" not in out.stdout + out.stderr and "after the warning  (n: 1)" in out.stdout
    records = [json.loads(x) for x in (tmp_path / "logs" / "zpd.jsonl").read_text().splitlines()]
    warned = [i for i, r in enumerate(records) if "FutureWarning: `foo` is deprecated" in r["event"]]
    after = [i for i, r in enumerate(records) if r["event"] == "after the warning" and r.get("n") == 1]
    assert len(warned) == 1 and records[warned[0]]["level"] == "warning"
    assert len(after) == 1 and after[0] > warned[0]
