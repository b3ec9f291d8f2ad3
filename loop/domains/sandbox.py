"""A sandboxed Python executor for computational questions (the paper's "code" tool).

Every process here runs as root, so file permissions alone confine nothing. Each call:

* writes the code into a fresh temp directory, owned by an unprivileged uid (never root's; one of
  ``UID_SLOTS`` per zpd process, in turn: bubblewrap leaves its namespace's init behind as a zombie for
  the host's init to reap, seconds later here, and each zombie counts against its uid's process limit,
  so back-to-back runs on one uid soon could not fork), the only writable place the code sees;
* runs it under **bubblewrap** (``bwrap``): new user, pid, net, ipc, uts and mount namespaces; a
  filesystem view of ``/usr`` (and the interpreter's prefix) read-only, a private ``/tmp``, fresh
  ``/proc`` and ``/dev``, the temp directory at ``/sandbox``; empty environment; no network (a net
  namespace with only a down loopback); dies with its parent;
* with resource limits set before exec: address space (``memory_bytes``), CPU seconds, processes of
  that uid (``max_processes``: a fork bomb stops there), file size (``max_output_bytes``: also caps
  stdout/stderr, which go to files), open files; and the total written (``max_total_bytes``): under
  bubblewrap ``/sandbox`` and ``/tmp`` are size-limited tmpfs mounts (half each; the code is bound in
  read-only), unsandboxed the temp directory is measured as it runs and the run killed past the cap;
* is killed with its whole process group (SIGKILL) at ``wall_seconds``; the pid namespace takes any
  orphan with it.

Where bubblewrap is missing the call refuses (``SandboxUnavailable``) unless ``allow_unsandboxed``:
then the code runs with the same uid switch, limits, temp directory and process-group kill but no
namespaces (it can see the host filesystem and network). ``unshare`` alone is not used: it gives the
namespaces but not a restricted filesystem view, which is the part that matters here.
"""

from __future__ import annotations

import functools
import itertools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from zpd.configs.schema import SandboxConfig

UID_SLOTS = 64
_NEXT_SLOT = itertools.count()


class SandboxUnavailable(RuntimeError):
    """No isolation is available and unsandboxed execution was not allowed."""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """The limits of one run (``SandboxLimits.from_config(cfg.domains.knowledge.sandbox)``)."""

    wall_seconds: float = 10.0
    memory_bytes: int = 512 * 2**20
    max_processes: int = 16
    max_output_bytes: int = 1 * 2**20
    max_open_files: int = 64
    max_total_bytes: int = 16 * 2**20
    """All files it writes together (RLIMIT_FSIZE caps each one, not their sum)."""

    @classmethod
    def from_config(cls, cfg: SandboxConfig) -> SandboxLimits:
        return cls(wall_seconds=cfg.wall_seconds, memory_bytes=cfg.memory_bytes,
                   max_processes=cfg.max_processes,
                   max_output_bytes=cfg.max_output_bytes, max_total_bytes=16 * cfg.max_output_bytes)


@dataclass(frozen=True, slots=True)
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int | None
    """None when it was killed at the wall-time limit."""
    timed_out: bool
    seconds: float
    isolation: str
    """bwrap, or none (allow_unsandboxed)."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@functools.cache
def isolation_available() -> str | None:
    """``bwrap`` when bubblewrap is installed and can create its namespaces here, else None."""
    exe = shutil.which("bwrap")
    if exe is None:
        return None
    probe = subprocess.run([exe, "--unshare-all", "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
                            "--symlink", "usr/lib64", "/lib64", "/usr/bin/true"],
                           capture_output=True, timeout=30)
    return "bwrap" if probe.returncode == 0 else None


def default_python() -> str:
    """The system interpreter when there is one (lives under /usr, already in the sandbox's view)."""
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def _bwrap_argv(python: str, extra_ro: list[str], total_bytes: int) -> list[str]:
    half = str(max(total_bytes // 2, 4096))
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev",
            "--size", half, "--tmpfs", "/tmp",
            "--size", half, "--perms", "0777", "--tmpfs", "/sandbox",
            "--ro-bind", "{dir}/main.py", "/sandbox/main.py",
            "--chdir", "/sandbox", "--clearenv",
            "--setenv", "HOME", "/sandbox", "--setenv", "PATH", "/usr/bin"]
    real = os.path.realpath(python)
    for path in [*extra_ro, *([] if real.startswith("/usr/") else [str(Path(real).parents[1])])]:
        argv += ["--ro-bind", path, path]
    return [*argv, python, "-I", "-B", "main.py"]


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


def _wait_watching(proc: subprocess.Popen[bytes], stdin: str, limits: SandboxLimits, box: Path) -> None:
    """Unsandboxed: wait for the run, measuring its directory every 50 ms; past ``max_total_bytes`` the
    group is killed (it then fails like any crashed program). Raises TimeoutExpired at the wall limit."""
    assert proc.stdin is not None  # started with stdin=PIPE
    try:
        proc.stdin.write(stdin.encode())
        proc.stdin.close()
    except OSError:
        pass
    deadline = time.monotonic() + limits.wall_seconds
    while proc.poll() is None:
        if time.monotonic() >= deadline:
            raise subprocess.TimeoutExpired(proc.args, limits.wall_seconds)
        if _tree_bytes(box) > limits.max_total_bytes:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)


def run_python(code: str, *, limits: SandboxLimits = SandboxLimits(), python: str | None = None,
               allow_unsandboxed: bool = False, uid: int = 200_000, extra_ro_paths: list[str] | None = None,
               stdin: str = "") -> SandboxResult:
    """Run ``code`` as a Python script in a fresh sandbox; see the module docstring."""
    isolation = isolation_available()
    if isolation is None and not allow_unsandboxed:
        raise SandboxUnavailable(
            "the code tool needs bubblewrap (apt-get install bubblewrap) to isolate generated code; "
            "set domains.knowledge.sandbox.allow_unsandboxed = true to run it without namespaces")
    python = python or default_python()
    slot = (os.getpid() % 10_000) * UID_SLOTS + next(_NEXT_SLOT) % UID_SLOTS
    run_uid = uid + slot if os.geteuid() == 0 else os.geteuid()
    outer = Path(tempfile.mkdtemp(prefix="zpd-sandbox-"))
    try:
        box = outer / "box"
        box.mkdir()
        outer.chmod(0o711)  # the sandbox uid must reach box/, never list or write outer/ (its stdout files)
        (box / "main.py").write_text(code, encoding="utf-8")
        if os.geteuid() == 0:
            os.chown(box, run_uid, run_uid)
            os.chown(box / "main.py", run_uid, run_uid)
        if isolation == "bwrap":
            argv = [a.replace("{dir}", str(box))
                    for a in _bwrap_argv(python, extra_ro_paths or [], limits.max_total_bytes)]
            cwd, env = str(outer), {"PATH": "/usr/bin:/bin"}
        else:
            argv, cwd = [python, "-I", "-B", "main.py"], str(box)
            env = {"PATH": "/usr/bin:/bin", "HOME": str(box), "TMPDIR": str(box)}

        def limit() -> None:  # runs in the child between fork and exec
            for res, value in ((resource.RLIMIT_AS, limits.memory_bytes),
                               (resource.RLIMIT_CPU, int(limits.wall_seconds) + 1),
                               (resource.RLIMIT_FSIZE, limits.max_output_bytes),
                               (resource.RLIMIT_NOFILE, limits.max_open_files),
                               (resource.RLIMIT_CORE, 0)):
                resource.setrlimit(res, (value, value))
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(run_uid)
                os.setuid(run_uid)
            # After the uid switch: the count is of this uid's processes, which root's would not be.
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))

        out_path, err_path = outer / "stdout", outer / "stderr"
        start = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                    preexec_fn=limit, start_new_session=True)
            timed_out = False
            try:
                if isolation == "bwrap":  # the tmpfs mounts hold the total; nothing to watch
                    proc.communicate(stdin.encode(), timeout=limits.wall_seconds)
                else:
                    _wait_watching(proc, stdin, limits, box)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the whole group, even when it exited on its own
                except ProcessLookupError:
                    pass
                proc.wait()
        read = lambda p: p.read_bytes()[: limits.max_output_bytes].decode("utf-8", "replace")  # noqa: E731
        return SandboxResult(stdout=read(out_path), stderr=read(err_path),
                             returncode=None if timed_out else proc.returncode, timed_out=timed_out,
                             seconds=time.monotonic() - start, isolation=isolation or "none")
    finally:
        shutil.rmtree(outer, ignore_errors=True)
