"""The composite units of the ingested corpus (``domains.knowledge.source = "corpus"``), cached in the store.

The teacher writes each seed question from one composite unit (Algorithm 1, Stage I): three chunks of
``corpus_chunks`` whose pairwise MiniLM cosines all exceed tau, found among each chunk's ``knn`` nearest
neighbours (``units.py``); tau is ``domains.knowledge.tau`` or, when None, the ``tau_quantile`` of this
corpus's k-NN similarity distribution (logged with its percentiles: "composite units").

Deterministic and cached: the units of a chunk set are stored in the ``meta`` entry
``knowledge_units:<digest>`` (JSON: tau, its calibration, the units as sorted chunk-id triplets), the
digest being that of the chunk ids and of every setting that shapes the units (embedder, knn, tau,
tau_quantile). A round whose chunk set is unchanged reuses the stored units without mining them again, a
resumed daemon loads the same ones, and new documents (a new chunk set) make them be mined again. The
held-out units of the frozen eval set are in ``knowledge_eval_units`` and never seed a training question.

Chunk embeddings are computed once per process and chunk (retrieval for escalation and the guided side
reuse them: ``retrieval.py``'s ``CorpusSearch``). The store is reached through ``services.DomainStore``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from zpd.configs.schema import KnowledgeConfig

from ..services import DomainStore, Embedder
from . import units as unit_mining
from .retrieval import CorpusSearch

log = logging.getLogger("zpd.knowledge")

EVAL_KEY = "knowledge_eval_units"

Unit = tuple[int, int, int]


def units_key(digest: str) -> str:
    return f"knowledge_units:{digest}"


class CorpusUnits:
    def __init__(self, store: DomainStore, cfg: KnowledgeConfig,
                 load_embedder: Callable[[], Embedder]) -> None:
        """``store``: the store's meta and corpus; ``load_embedder``: a zero-argument loader (cached)."""
        self.store, self.cfg, self._load = store, cfg, load_embedder
        self.rows: dict[int, dict[str, Any]] = {}
        self.units: list[Unit] = []
        self.digest: str | None = None
        self.tau: float | None = None
        self._vecs: dict[int, np.ndarray] = {}
        self._search: CorpusSearch | None = None
        self._stamp: tuple[int, int | None] | None = None

    # -- the chunk set and its units -------------------------------------------------------------
    def _digest(self, ids: list[int]) -> str:
        c = self.cfg
        head = json.dumps([c.embedder, c.knn, c.tau, c.tau_quantile])
        return hashlib.sha256((head + ":" + ",".join(map(str, ids))).encode()).hexdigest()[:24]

    def refresh(self) -> list[Unit]:
        """The units of the chunks stored now: loaded from the store when this chunk set's are there, else
        mined and stored (same transaction as the caller's, when it has one)."""
        stamp = self.store.corpus_stamp()
        if stamp == self._stamp and self.digest is not None:  # chunks are only ever added: nothing new
            return self.units
        rows = self.store.corpus_chunks()
        digest = self._digest([r["id"] for r in rows])
        self._stamp = stamp
        if digest == self.digest:
            return self.units
        self.rows, self._search = {r["id"]: r for r in rows}, None
        raw = self.store.get_meta(units_key(digest))
        if raw is not None:
            stored = json.loads(raw)
        else:
            stored = self._mine(rows)
            stored["digest"] = digest
            with self.store.atomic():
                self.store.set_meta(units_key(digest), json.dumps(stored, sort_keys=True))
            log.info("composite units", extra={k: v for k, v in stored.items() if k != "units"}
                     | {"num_units": len(stored["units"])})
        self.units = [(a, b, c) for a, b, c in stored["units"]]
        self.tau, self.digest = stored["tau"], digest
        return self.units

    def _mine(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        vecs = self.vectors([r["id"] for r in rows])
        sims, idx = unit_mining.neighbours(vecs, self.cfg.knn)
        cal = unit_mining.calibrate_tau(sims, self.cfg.tau_quantile)
        tau = cal.tau if self.cfg.tau is None else float(self.cfg.tau)
        found = unit_mining.composite_units(vecs, sims, idx, tau)
        ids = [r["id"] for r in rows]
        return {"tau": tau, "calibrated_tau": cal.tau, "quantile": cal.quantile, "num_chunks": len(rows),
                "stats": {k: round(v, 4) for k, v in cal.stats.items()},
                "units": [sorted((ids[a], ids[b], ids[c])) for a, b, c in found]}

    # -- embeddings and retrieval ----------------------------------------------------------------
    def embedder(self) -> Embedder:
        return self._load()

    def vectors(self, ids: list[int]) -> np.ndarray:
        new = [i for i in ids if i not in self._vecs]
        if new:
            for i, v in zip(new, self.embedder().encode([self.rows[i]["text"] for i in new]), strict=True):
                self._vecs[i] = v
        return np.stack([self._vecs[i] for i in ids]) if ids else np.zeros((0, 0), np.float32)

    def search(self, query: str, k: int, exclude: set[int]) -> list[int]:
        """The ids of the ``k`` chunks most similar to ``query`` outside ``exclude`` (the paper's
        "search")."""
        self.refresh()
        if self._search is None:
            rows = [self.rows[i] for i in sorted(self.rows)]
            self._search = CorpusSearch(rows, self.vectors([r["id"] for r in rows]), self.embedder())
        hits = self._search.search(query, k=min(len(self.rows), k + len(exclude)))
        return [h.chunk_id for h in hits if h.chunk_id not in exclude][:k]

    # -- what tasks record -----------------------------------------------------------------------
    def texts(self, ids: list[int]) -> list[str]:
        self._ensure(ids)
        return [self.rows[i]["text"] for i in ids]

    def provenance(self, ids: list[int]) -> list[list[object]]:
        """[chunk id, source file, JSONL record, start_char, end_char] per chunk (from ``corpus_chunks``)."""
        self._ensure(ids)
        return [[i, self.rows[i]["source"], self.rows[i]["record"], self.rows[i]["start_char"],
                 self.rows[i]["end_char"]] for i in ids]

    def _ensure(self, ids: list[int]) -> None:
        if any(i not in self.rows for i in ids):
            self.digest = None
            self.refresh()
        missing = [i for i in ids if i not in self.rows]
        if missing:
            raise KeyError(f"corpus chunks {missing} are not in the store")

    # -- the eval set's held-out units -----------------------------------------------------------
    def held_out(self) -> set[Unit]:
        raw = self.store.get_meta(EVAL_KEY)
        return set() if raw is None else {(a, b, c) for a, b, c in json.loads(raw)}

    def hold_out(self, held: list[Unit]) -> None:
        with self.store.atomic():
            self.store.set_meta(EVAL_KEY, json.dumps([list(u) for u in held]))
