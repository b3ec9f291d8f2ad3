"""Run configuration: pydantic models (``schema`` and its section modules), TOML loading (``load``) and
the project's vocabulary of fates and phases (``vocabulary``).

The package's names are loaded lazily, on first use: ``zpd status`` imports ``zpd.configs.vocabulary``
and must not pay for pydantic (tests/test_store_scale.py checks that it never loads it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .load import ConfigError, load_config
    from .schema import ZpdConfig

__all__ = ["ConfigError", "ZpdConfig", "load_config"]

_HOMES = {"ConfigError": ".load", "load_config": ".load", "ZpdConfig": ".schema"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)
