"""The base of every config section: a strict pydantic model.

Every section module of ``configs/`` builds on :class:`Strict`, and ``schema.py`` assembles the sections
into :class:`~zpd.configs.schema.ZpdConfig`; so no section module imports ``schema.py`` and there is no
import cycle among them. This module imports nothing of zpd.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
