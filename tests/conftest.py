"""Fixtures shared by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import SMOKE


@pytest.fixture
def smoke_config() -> Path:
    return SMOKE
