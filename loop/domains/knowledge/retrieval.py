"""Retrieval over the ingested corpus (the paper's "search" tool): dense, by the configured embedder.

``CorpusSearch.from_rows(chunks, embedder)`` embeds every chunk (``corpus_chunks``'s rows) once;
``search(query, k)`` returns the k most similar chunks with their provenance (source, record, character
span) and cosine.
Exact numpy search up to ``units.ANN_THRESHOLD`` chunks, a faiss HNSW index beyond (see units.py for why).
The synthetic world has its own lexical search (``World.search``): its facts are templated sentences that
an embedder barely tells apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..services import Embedder
from .units import ANN_THRESHOLD


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: int
    source: str
    record: int
    start_char: int
    end_char: int
    text: str
    score: float


class CorpusSearch:
    def __init__(self, rows: list[dict[str, Any]], vecs: np.ndarray, embedder: Embedder) -> None:
        self.rows, self.vecs, self.embedder = rows, vecs, embedder
        self._index: Any = None  # a faiss index past ANN_THRESHOLD chunks
        if len(rows) > ANN_THRESHOLD:
            import faiss

            self._index = faiss.IndexHNSWFlat(vecs.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
            self._index.add(np.ascontiguousarray(vecs, dtype=np.float32))

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], embedder: Embedder) -> CorpusSearch:
        """A search over ``rows`` (``store.corpus.chunks``'s), each embedded once."""
        return cls(rows, embedder.encode([r["text"] for r in rows]), embedder)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        if not self.rows:
            return []
        q = self.embedder.encode([query])[0]
        k = min(k, len(self.rows))
        if self._index is not None:
            scores, idx = self._index.search(q[None, :].astype(np.float32), k)
            pairs = list(zip(idx[0].tolist(), scores[0].tolist(), strict=True))
        else:
            s = self.vecs @ q
            top = np.argsort(-s)[:k]
            pairs = [(int(i), float(s[i])) for i in top]
        return [Hit(self.rows[i]["id"], self.rows[i]["source"], self.rows[i]["record"],
                    self.rows[i]["start_char"],
                    self.rows[i]["end_char"], self.rows[i]["text"], score) for i, score in pairs if i >= 0]
