"""Fixtures shared by the tests, and what keeps the suite fast and safe under pytest-xdist (``-n 2``)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

# One torch thread in the test process (and, by inheritance, in every child that does not choose its own):
# the tests' models are tiny, and on a busy 2-core machine a second OpenMP thread makes each op wait for a
# descheduled core (issue 15: 3 us against 3-41 ms per linear). Set before any test module imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
from harness import SMOKE, ZPD, zpd_env  # noqa: E402

ROUND0_TIMEOUT = 900.0
"""Seconds the round-0 build (bootstrap, then snapshot) may take on a loaded 2-core machine."""

EARLY = ("test_train_checkpoint.py", "test_user_model.py", "test_reasoning_gym.py", "test_knowledge.py",
         "test_knowledge_corpus.py", "test_trainer_job.py", "test_trainer_worker.py", "test_cpt.py",
         "test_gpu_round_dry_run.py")
"""Slow modules that need no round 0: run first, while the round-0 build runs beside them (measured,
bench/results/ci-time.md; slowest first)."""
ROUND0_FIRST = ("test_snapshot_rollback_export.py", "test_served.py", "test_daemon.py", "test_faults_kill.py",
                "test_kill_resume.py", "test_generation.py", "test_curriculum.py", "test_faults_storage.py")
"""The slowest modules that start from round 0, in this order after EARLY; then the other modules that
need round 0, then the quick rest, which fills the workers evenly at the end."""


def pytest_configure(config: pytest.Config) -> None:
    # --dist loadfile (one module per work unit, so a module's fixtures are made once) would reorder the
    # modules by their number of tests; the order set below is the one to keep.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def _rank(item: pytest.Item, round0_modules: set[str]) -> tuple[int, int]:
    module = item.path.name
    if module in EARLY:
        return 0, EARLY.index(module)
    if module in round0_modules:
        return 1, ROUND0_FIRST.index(module) if module in ROUND0_FIRST else len(ROUND0_FIRST)
    return 2, 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Whole modules move (a stable sort), so each module's fixtures are still set up once.
    round0_modules = {it.path.name for it in items if "round0_archive" in getattr(it, "fixturenames", ())}
    items.sort(key=lambda it: _rank(it, round0_modules))


@pytest.fixture
def smoke_config() -> Path:
    return SMOKE


def _shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of this test run shared by its xdist workers (each worker's base temp is
    ``pytest-N/popen-gwK``), or this session's base temp without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


class Round0Build:
    """Round 0 of a smoke run, snapshotted, built ONCE per test run in a background process: started when
    the session's first test is set up, so the tests that do not need it run meanwhile, and shared by all
    xdist workers (the first to take the lock starts it; every worker waits for the same files)."""

    def __init__(self, shared: Path) -> None:
        self.root = shared / "round0-build"
        self.state, self.archive = self.root / "state", self.root / "round0.tar"
        self.rc, self.log = self.root / "rc", self.root / "build.log"
        self.proc: subprocess.Popen[bytes] | None = None
        """The build, where this process started it."""

    def start_once(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root.parent / "round0-build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (self.root / "started").exists():
                return
            (self.root / "started").write_text(str(os.getpid()))
            start = [*ZPD, "start", "--config", str(SMOKE), "--state-dir", str(self.state), "--rounds", "0"]
            snap = [*ZPD, "snapshot", "--state-dir", str(self.state), "--out", str(self.archive)]
            n = len(start)
            # bash runs start's words, then snapshot's, and writes the exit status last (rc appears whole).
            script = f'"${{@:1:{n}}}" && "${{@:{n + 1}}}"; echo $? > "$0.tmp" && mv "$0.tmp" "$0"'
            with open(self.log, "w") as log:
                # A session of its own: a test's signal to its process group never reaches the build.
                self.proc = subprocess.Popen(["bash", "-c", script, str(self.rc), *start, *snap], stdout=log,
                                             stderr=subprocess.STDOUT, env=zpd_env(), start_new_session=True)

    def finish(self) -> None:
        """At this process's session end: without xdist nobody else needs a build still running (say the
        run stopped at a failure), so it is killed; under xdist another worker may still wait for it, and
        it ends by itself (it is bounded: round 0, then a snapshot)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if os.environ.get("PYTEST_XDIST_WORKER"):
            self.proc.wait(timeout=ROUND0_TIMEOUT)
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the group is the build and its children
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def wait(self) -> Path:
        deadline = time.monotonic() + ROUND0_TIMEOUT
        while not self.rc.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"the round-0 build did not finish in {ROUND0_TIMEOUT:.0f} s: "
                                     f"{self.log}")
            time.sleep(0.2)
        code = self.rc.read_text().strip()
        assert code == "0", f"round-0 build exited {code}:\n{self.log.read_text()[-6000:]}"
        return self.archive


@pytest.fixture(scope="session")
def _round0_build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Round0Build]:
    build = Round0Build(_shared_dir(tmp_path_factory))
    yield build
    build.finish()


@pytest.fixture(scope="session", autouse=True)
def _round0_in_background(request: pytest.FixtureRequest, _round0_build: Round0Build) -> None:
    """Start the round-0 build at the session's first test when any selected test needs it."""
    if any("round0_archive" in getattr(item, "fixturenames", ()) for item in request.session.items):
        _round0_build.start_once()


@pytest.fixture(scope="session")
def round0_archive(_round0_build: Round0Build) -> Path:
    """A snapshot of a smoke run's round 0 (the bootstrap), made once per test run.

    Tests that are about later rounds start from it with ``--from-snapshot`` (the product's own
    seeding path) instead of each paying for the bootstrap again.
    """
    _round0_build.start_once()  # already started unless this is the only kind of test selected
    return _round0_build.wait()


@pytest.fixture(scope="module")
def ray_head_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Held by a module while it runs a local Ray head: under xdist two heads on one machine would collide
    on Ray's fixed default ports (the client server's 10001, the dashboard agent's 52365), so a second
    worker's head waits until the first module is done."""
    with open(_shared_dir(tmp_path_factory) / "ray-head.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(autouse=True)
def _no_daemon_outlives_its_test(_round0_build: Round0Build) -> Iterator[None]:
    """A test that fails before it stops the daemon it spawned must not leave it running: without
    ``--rounds`` a smoke daemon commits a round a second and fills the disk (seen: 45 GB).

    Only this process's own children are candidates (under xdist: this worker's, never another's), and
    the shared round-0 build is left alone."""
    yield
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "zpd.loop.cli" in cmd and " start " in f" {cmd} " and str(_round0_build.root) not in cmd:
            try:
                child.kill()
            except psutil.Error:
                pass

