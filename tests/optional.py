"""Optional libraries the tests need: a skip where one is not installed, an error where CI requires it.

CI (``.ci/run``) installs the extras and sets ``ZPD_REQUIRE_VERL=1`` and ``ZPD_REQUIRE_REASONING_GYM=1``,
so that a broken install fails these tests instead of skipping them quietly.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

SWITCHES = {"verl": "ZPD_REQUIRE_VERL", "ray": "ZPD_REQUIRE_VERL",
            "reasoning_gym": "ZPD_REQUIRE_REASONING_GYM"}
"""Module -> the environment switch that makes it required (ray comes with the verl extra)."""


def require(module: str, reason: str | None = None) -> ModuleType:
    """``module`` imported; a skip (with ``reason``) when it is missing and its switch is not ``1``."""
    if os.environ.get(SWITCHES[module]) == "1":
        return importlib.import_module(module)  # a missing library is an error here, not a skip
    return pytest.importorskip(module, reason=reason)
