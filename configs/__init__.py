"""Run configuration: pydantic models (``schema``) and TOML loading (``load``)."""

from .load import ConfigError, load_config
from .schema import ZpdConfig

__all__ = ["ConfigError", "ZpdConfig", "load_config"]
