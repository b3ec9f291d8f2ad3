"""``exit_now``: the process ends with its code, after its atexit handlers and with its output flushed,
without the interpreter's teardown; with a non-daemon thread still running it exits the normal way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_exit_now_runs_atexit_flushes_and_keeps_the_code(tmp_path: Path) -> None:
    mark = tmp_path / "atexit"
    out = _run(
        "import atexit, sys\n"
        "from zpd.trainer.quick_exit import exit_now\n"
        f"atexit.register(lambda: open({str(mark)!r}, 'w').write('ran'))\n"
        "sys.stdout.write('unflushed line')\n"
        "sys.stderr.write('to stderr')\n"
        "class Loud:\n"
        "    def __del__(self):\n"
        "        print(' teardown ran', flush=True)\n"
        "keep = Loud()\n"  # a module global: freed only by the interpreter's teardown
        "exit_now(3)\n"
    )
    assert out.returncode == 3
    assert out.stdout == "unflushed line" and out.stderr == "to stderr"  # flushed; no teardown
    assert mark.read_text() == "ran"


def test_exit_now_waits_the_normal_way_for_a_running_thread(tmp_path: Path) -> None:
    done = tmp_path / "thread"
    out = _run(
        "import threading, time\n"
        "from zpd.trainer.quick_exit import exit_now\n"
        f"threading.Thread(target=lambda: (time.sleep(0.5), open({str(done)!r}, 'w').write('ok'))).start()\n"
        "exit_now(None)\n"
    )
    assert out.returncode == 0, out.stderr
    assert done.read_text() == "ok"  # the interpreter joined the thread before it exited


def test_the_zpd_command_ends_through_exit_now(tmp_path: Path) -> None:
    """The console script's entry point (pyproject: ``zpd = "zpd.loop.cli:run"``) skips the teardown."""
    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["zpd"] == "zpd.loop.cli:run"
    out = _run(
        "import sys\n"
        "class Loud:\n"
        "    def __del__(self):\n"
        "        print('teardown ran', flush=True)\n"
        "keep = Loud()\n"
        f"sys.argv = ['zpd', 'status', '--state-dir', {str(tmp_path / 'none')!r}]\n"
        "from zpd.loop.cli import run\n"
        "run()\n"
    )
    assert out.returncode != 0 and "teardown ran" not in out.stdout, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and out.stderr.strip()  # the command's own one-line error
