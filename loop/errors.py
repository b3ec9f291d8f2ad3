"""The two ways a phase ends early, shared by every phase and the daemon that retries them.

``Stopped``: a stop was asked for and the phase left the store at a safe point (the daemon exits cleanly).
``PhaseFailed``: the phase failed in a way a retry may fix (the daemon counts it and retries the phase).
"""

from __future__ import annotations


class Stopped(Exception):
    """A stop was requested; the phase left the store at a safe point."""


class PhaseFailed(RuntimeError):
    """A phase failed in a way a retry may fix. ``component`` feeds zpd_failures_total."""

    def __init__(self, component: str, message: str) -> None:
        super().__init__(message)
        self.component = component
