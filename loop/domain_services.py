"""The daemon's side of ``loop/domains/services.py``: what a domain may use of the run, built at start-up.

``DomainServices(ctx)`` is handed to every domain with the ``Attaches`` capability (``startup.py``). Domains
import nothing of the store, the loop or the trainer; whatever they need of them goes through here: the
``meta`` entries and the ingested corpus (``StoreView``, also what a test hands a domain over a bare store),
the round in progress, the embedder, and the teacher with its reply log, budget and usage ledger.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import AbstractContextManager
from dataclasses import asdict
from typing import Any

from zpd.configs.schema import ZpdConfig
from zpd.store.corpus import chunk_stamp, chunks
from zpd.store.db import Database, get_meta, set_meta
from zpd.store.replies import ReplyLog
from zpd.store.rounds import work_dir
from zpd.trainer.completion import Completion
from zpd.trainer.embed import load_embedder

from .context import RunContext
from .domains.services import Embedder
from .logs import CONTEXT
from .usage import TeacherBudget, add_usage

log = logging.getLogger("zpd.knowledge")  # the teacher's question writer logs as the knowledge engine


class StoreView:
    """The store as a domain sees it (``services.DomainStore``): ``meta`` and the corpus chunks."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get_meta(self, key: str) -> str | None:
        return get_meta(self.db, key)

    def set_meta(self, key: str, value: str) -> None:
        set_meta(self.db, key, value)

    def atomic(self) -> AbstractContextManager[object]:
        return self.db.atomic()

    def corpus_stamp(self) -> tuple[int, int | None]:
        return chunk_stamp(self.db)

    def corpus_chunks(self) -> list[dict[str, Any]]:
        return chunks(self.db)


class DomainServices(StoreView):
    """Everything the daemon offers a domain (``services.DomainServices``), over the run context."""

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx.db)
        self.ctx = ctx
        self._replies: tuple[int, ReplyLog] | None = None

    def current_round(self) -> int | None:
        return CONTEXT.round

    def run_config(self) -> ZpdConfig:
        return self.ctx.cfg

    def domain_names(self) -> list[str]:
        return list(self.ctx.domains)

    def load_embedder(self, name: str) -> Embedder:
        return load_embedder(name)

    def teacher(self, prompt: str, *, seed: int, temperature: float, max_tokens: int) -> str:
        ctx, round_n = self.ctx, CONTEXT.round
        if round_n is None or ctx.cfg.teacher is None:
            raise RuntimeError("the teacher is called outside a round, or no [teacher] is configured")
        model = ctx.cfg.teacher.model
        # A reply a killed SYNTHESIZE already paid for is replayed (store/replies.py); its usage is added
        # again, since the killed phase's ledger rows were rolled back with its transaction.
        key = f"{seed}:{hashlib.sha256(prompt.encode('utf-8', 'replace')).hexdigest()}"
        replies = self._reply_log(round_n)
        stored = replies.get(key)
        budget = TeacherBudget(ctx, round_n)
        if stored is not None:
            out = Completion(**stored["completion"])
            add_usage(ctx, round_n, "teacher", model, [out], stored["cost_usd"])
            return "" if out.finish_reason == "error" else out.text
        if not budget.plan([prompt], 1, max_tokens):
            log.warning("teacher paused by teacher.max_cost_usd; question not written")
            return ""
        out = ctx.teacher_generator().generate([prompt], n=1, temperature=temperature, max_tokens=max_tokens,
                                               seed=seed)[0][0]
        cost = budget.cost([out])
        if out.finish_reason != "error":
            replies.put(key, {"completion": asdict(out), "cost_usd": cost})
        add_usage(ctx, round_n, "teacher", model, [out], cost)
        return "" if out.finish_reason == "error" else out.text

    def _reply_log(self, round_n: int) -> ReplyLog:
        """The round's durable log of teacher replies (one per round, in its work directory)."""
        if self._replies is None or self._replies[0] != round_n:
            path = work_dir(self.ctx.state_dir, round_n) / "teacher_replies.jsonl"
            self._replies = (round_n, ReplyLog(path))
        return self._replies[1]
