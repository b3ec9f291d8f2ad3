"""The code tool's sandbox with real hostile code: files outside its temp dir, sockets, fork bombs,
memory hogs, endless loops. Needs bubblewrap (skipped where it cannot run, except the refusal test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zpd.loop.domains import sandbox
from zpd.loop.domains.sandbox import SandboxLimits, SandboxUnavailable, run_python

needs_bwrap = pytest.mark.skipif(sandbox.isolation_available() is None, reason="bubblewrap cannot run here")
FAST = SandboxLimits(wall_seconds=5, memory_bytes=256 * 2**20, max_processes=16)


@needs_bwrap
def test_runs_code_and_returns_its_output() -> None:
    r = run_python("import math\nprint(sum(i*i for i in range(10)), math.pi > 3)", limits=FAST)
    assert r.ok and r.stdout.strip() == "285 True" and r.isolation == "bwrap"


@needs_bwrap
def test_cannot_read_or_write_outside_its_temp_dir(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    target = tmp_path / "written.txt"
    code = f"""
import os
for p in [{str(secret)!r}, "/root/.bashrc", "/etc/shadow", "/work"]:
    try:
        print("READ", p, open(p).read()[:20] if os.path.isfile(p) else os.listdir(p))
    except Exception as e:
        print("DENIED", p, type(e).__name__)
for p in [{str(target)!r}, "/usr/evil.txt", "/etc/evil"]:
    try:
        open(p, "w").write("pwned"); print("WROTE", p)
    except Exception as e:
        print("DENIED", p, type(e).__name__)
open("inside.txt", "w").write("ok"); print("INSIDE", open("inside.txt").read())
"""
    r = run_python(code, limits=FAST)
    assert "top secret" not in r.stdout and "READ" not in r.stdout, r.stdout
    assert "WROTE" not in r.stdout, r.stdout
    assert "INSIDE ok" in r.stdout
    assert not target.exists() and secret.read_text() == "top secret"
    assert not Path("/usr/evil.txt").exists() and not Path("/etc/evil").exists()


@needs_bwrap
def test_no_network() -> None:
    code = """
import socket
for host, port in [("127.0.0.1", 9), ("1.1.1.1", 53)]:
    try:
        socket.create_connection((host, port), timeout=2); print("CONNECTED", host)
    except OSError as e:
        print("BLOCKED", host, type(e).__name__)
print("ifaces", socket.if_nameindex())
"""
    r = run_python(code, limits=FAST)
    assert "CONNECTED" not in r.stdout and r.stdout.count("BLOCKED") == 2, r.stdout + r.stderr


@needs_bwrap
def test_endless_loop_is_killed_at_the_wall_limit() -> None:
    r = run_python("import time\nwhile True: time.sleep(0.01)", limits=SandboxLimits(wall_seconds=1.5))
    assert r.timed_out and r.returncode is None and r.seconds < 10


@needs_bwrap
def test_memory_hog_fails() -> None:
    r = run_python("x = bytearray(2 * 1024**3)\nprint('ALLOCATED')", limits=FAST)
    assert "ALLOCATED" not in r.stdout and r.returncode != 0 and "MemoryError" in r.stderr


@needs_bwrap
def test_fork_bomb_hits_the_process_limit_and_everything_dies() -> None:
    code = """
import os, time
kids = 0
for _ in range(200):
    try:
        if os.fork() == 0:
            time.sleep(60); os._exit(0)
        kids += 1
    except OSError as e:
        print("FORK REFUSED after", kids, type(e).__name__); break
print("KIDS", kids, flush=True)
time.sleep(60)
"""
    r = run_python(code, limits=SandboxLimits(wall_seconds=3, max_processes=16))
    assert "FORK REFUSED" in r.stdout, r.stdout + r.stderr
    assert r.timed_out  # the parent slept on; the group was killed at the limit
    import psutil

    assert not [p for p in psutil.process_iter(["cmdline"])
                if "time.sleep(60)" in " ".join(p.info["cmdline"] or [])]


@needs_bwrap
def test_output_is_capped() -> None:
    r = run_python("import sys\nsys.stdout.write('x' * 10_000_000)",
                   limits=SandboxLimits(max_output_bytes=100_000))
    assert len(r.stdout) <= 100_000 and not r.ok


def test_refuses_without_isolation_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "isolation_available", lambda: None)
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        run_python("print(1)")
    r = run_python("print(1 + 1)", allow_unsandboxed=True, limits=FAST)
    assert r.stdout.strip() == "2" and r.isolation == "none"


@needs_bwrap
def test_back_to_back_runs_never_run_out_of_processes() -> None:
    # bubblewrap's namespace init lingers as a zombie until the host's init reaps it; on one uid, 14 quick
    # runs used to exhaust max_processes ("Can't fork for pid 1"). Each run now takes the next uid slot.
    results = [run_python(f"print({i} * 2)", limits=FAST) for i in range(3 * FAST.max_processes)]
    assert [r.stdout.strip() for r in results] == [str(i * 2) for i in range(3 * FAST.max_processes)]
