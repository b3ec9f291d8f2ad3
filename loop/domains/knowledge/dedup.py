"""The near-duplicate filter of SYNTHESIZE for the knowledge domain: MiniLM cosine against everything stored.

SYNTHESIZE hands the domain the prompts of all its stored tasks (any fate: earlier candidates, eval and
exam items) through ``remember``; from then on every candidate the domain makes is embedded and kept
only when its nearest remembered-or-already-kept prompt is below ``threshold`` (the paper's greedy
online filter, ``units.NearDuplicateIndex``), so candidates within one round are deduplicated too.
A derived candidate (escalated or simplified) is not compared with its own parent: it is meant to be
the same thread, one step harder or easier.

Embeddings are cached per prompt text, so a round re-embeds only what is new since the last one. The
embedder is loaded on first use (``trainer/embed.py``: never downloaded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from ..services import Embedder


class PromptIndex:
    def __init__(self, load: Callable[[], Embedder], threshold: float) -> None:
        self._load: Callable[[], Embedder] = load
        self._embedder: Embedder | None = None
        self.threshold = threshold
        self._cache: dict[str, np.ndarray] = {}
        self._prompts: list[str] = []
        self._vecs = np.zeros((0, 0), np.float32)
        self.rejected = 0

    def _embed(self, texts: list[str]) -> list[np.ndarray]:
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new:
            if self._embedder is None:
                self._embedder = self._load()
            for t, v in zip(new, self._embedder.encode(new), strict=True):
                self._cache[t] = v
        return [self._cache[t] for t in texts]

    def __len__(self) -> int:
        return len(self._prompts)

    def remember(self, prompts: Iterable[str]) -> None:
        """Start over from these prompts (the store's): the index holds them and nothing else."""
        self._prompts = list(dict.fromkeys(prompts))
        vecs = self._embed(self._prompts)
        self._vecs = np.stack(vecs) if vecs else np.zeros((0, 0), np.float32)
        self.rejected = 0

    def nearest(self, prompt: str, exclude: str | None = None) -> tuple[str | None, float]:
        """The closest indexed prompt other than ``exclude``, and its cosine ((None, -1) when empty)."""
        vec = self._embed([prompt])[0]
        if not len(self._prompts):
            return None, -1.0
        sims = self._vecs @ vec
        if exclude is not None:
            sims = np.where(np.array([p == exclude for p in self._prompts]), -np.inf, sims)
        i = int(np.argmax(sims))
        return (None, -1.0) if not np.isfinite(sims[i]) else (self._prompts[i], float(sims[i]))

    def admit(self, prompt: str, exclude: str | None = None) -> bool:
        """Keep ``prompt`` (and index it) unless a near-duplicate is indexed; ``exclude``: its parent's
        prompt."""
        _, sim = self.nearest(prompt, exclude)
        if sim >= self.threshold:
            self.rejected += 1
            return False
        vec = self._cache[prompt][None, :]
        self._vecs = vec.copy() if not len(self._prompts) else np.vstack([self._vecs, vec])
        self._prompts.append(prompt)
        return True
