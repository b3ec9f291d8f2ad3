"""What a domain may use of the running daemon: a narrow services object, handed over by ``attach``.

Domains are pure logic and import nothing of zpd but ``configs`` and themselves (DESIGN, "Where things
live"). A domain that needs the run (the knowledge domain: its teacher-written questions, the ingested
corpus, its cached composite units, the embedder) gets it through these protocols; the daemon builds
their implementation (``loop/domain_services.py``) at start-up and calls ``attach(services)`` once.
A test or a tool outside the daemon passes its own object with the same methods.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from zpd.configs.schema import ZpdConfig


class Embedder(Protocol):
    """A sentence embedder (``trainer/embed.py``'s, or a test's): unit-norm rows, one per text."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


class DomainStore(Protocol):
    """The store as a domain sees it: the ``meta`` entries and the ingested corpus (read only)."""

    def get_meta(self, key: str) -> str | None:
        """The ``meta`` entry ``key``, or None."""
        ...

    def set_meta(self, key: str, value: str) -> None:
        """Write the ``meta`` entry ``key`` (in the caller's transaction, when one is open)."""
        ...

    def atomic(self) -> AbstractContextManager[object]:
        """A transaction (a savepoint inside the phase's own)."""
        ...

    def corpus_stamp(self) -> tuple[int, int | None]:
        """(number of chunks, largest chunk id) of ``corpus_chunks``: chunks are only ever added, so an
        unchanged stamp means an unchanged chunk set."""
        ...

    def corpus_chunks(self) -> list[dict[str, Any]]:
        """Every chunk of the ingested corpus, by id: id, source, record, start_char, end_char, text."""
        ...


class DomainServices(DomainStore, Protocol):
    """Everything the daemon offers a domain: the store, the round, the embedder and the teacher."""

    def current_round(self) -> int | None:
        """The round in progress (None outside one)."""
        ...

    def run_config(self) -> ZpdConfig:
        """The run's config (the [teacher], calibration's settings, ...)."""
        ...

    def domain_names(self) -> list[str]:
        """The names of the run's domain instances (``rg:<family>`` for each reasoning-gym family)."""
        ...

    def load_embedder(self, name: str) -> Embedder:
        """The embedder ``name`` (the shipped MiniLM: never downloaded)."""
        ...

    def teacher(self, prompt: str, *, seed: int, temperature: float, max_tokens: int) -> str:
        """The run's [teacher]'s reply to ``prompt`` ("" when the call failed or did not fit under
        ``teacher.max_cost_usd``). Its tokens and cost go into the round's teacher ledger; a reply a killed
        phase already paid for is replayed from the round's reply log, keyed by ``seed`` and the prompt."""
        ...
