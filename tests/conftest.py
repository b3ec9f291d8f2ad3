"""Fixtures shared by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import SMOKE, run_zpd


@pytest.fixture
def smoke_config() -> Path:
    return SMOKE


@pytest.fixture(scope="session")
def round0_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of a smoke run's round 0 (the bootstrap), made once per test session.

    Tests that are about later rounds start from it with ``--from-snapshot`` (the product's own
    seeding path) instead of each paying for the bootstrap again.
    """
    state = tmp_path_factory.mktemp("round0") / "state"
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "0", timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    archive = state.parent / "round0.tar"
    snap = run_zpd("snapshot", "--state-dir", str(state), "--out", str(archive))
    assert snap.returncode == 0, snap.stderr
    return archive


@pytest.fixture(autouse=True)
def _no_daemon_outlives_its_test():
    """A test that fails before it stops the daemon it spawned must not leave it running: without
    ``--rounds`` a smoke daemon commits a round a second and fills the disk (seen: 45 GB)."""
    yield
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "zpd.loop.cli" in cmd and " start " in f" {cmd} ":
            try:
                child.kill()
            except psutil.Error:
                pass
