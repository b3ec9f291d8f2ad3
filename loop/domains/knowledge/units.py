"""Composite units (Stage I) and the near-duplicate filter, over L2-normalised embeddings. Pure numpy.

* ``neighbours``: each chunk's k nearest others by cosine. Exact blocked numpy below
  ``ANN_THRESHOLD`` chunks; above it faiss's HNSW index (``faiss-cpu``): a maintained CPU wheel with exact
  and approximate indexes behind one API and an inner-product metric (= cosine on normalised vectors);
  brute force is O(n^2) and stops being practical around 10^5 chunks.
* ``calibrate_tau``: the paper's tau_theme = 0.8 is a number for its own embedder; here tau is a quantile
  of this corpus's neighbour-similarity distribution (reported with it).
* ``composite_units``: {c_i, c_j, c_k} with j, k among i's neighbours and all three pairwise cosines > tau.
* ``NearDuplicateIndex``: the paper's greedy online filter (keep a candidate when its nearest stored
  question is below the threshold), and ``calibrate_threshold`` on labelled duplicate / non-duplicate pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ANN_THRESHOLD = 50_000


def neighbours(vecs: np.ndarray, k: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices), each (n, min(k, n-1)), best first, self excluded."""
    n = len(vecs)
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    if n > ANN_THRESHOLD:
        import faiss

        index = faiss.IndexHNSWFlat(vecs.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.add(np.ascontiguousarray(vecs, dtype=np.float32))
        sims, idx = index.search(np.ascontiguousarray(vecs, dtype=np.float32), k + 1)
        keep = idx != np.arange(n)[:, None]
        return (np.stack([s[m][:k] for s, m in zip(sims, keep, strict=True)]),
                np.stack([i[m][:k] for i, m in zip(idx, keep, strict=True)]))
    sims_out, idx_out = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
    for lo in range(0, n, block):
        s = vecs[lo:lo + block] @ vecs.T
        s[np.arange(len(s)), np.arange(lo, lo + len(s))] = -np.inf
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-ps, axis=1)
        idx_out[lo:lo + block] = np.take_along_axis(part, order, axis=1)
        sims_out[lo:lo + block] = np.take_along_axis(ps, order, axis=1)
    return sims_out, idx_out


@dataclass(frozen=True)
class TauCalibration:
    tau: float
    quantile: float
    num_chunks: int
    stats: dict[str, float]
    """Percentiles of the k-NN cosine distribution (all k neighbours) and of the nearest neighbour."""


def calibrate_tau(sims: np.ndarray, quantile: float) -> TauCalibration:
    flat, first = sims.ravel(), sims[:, 0] if sims.size else np.zeros(0)
    pct = lambda a, q: float(np.percentile(a, q)) if a.size else float("nan")  # noqa: E731
    stats = {f"knn_p{q}": pct(flat, q) for q in (10, 50, 90, 99)}
    stats |= {f"nn1_p{q}": pct(first, q) for q in (10, 50, 90)}
    tau = float(np.quantile(flat, quantile)) if flat.size else 1.0
    return TauCalibration(tau, quantile, len(sims), stats)


def composite_units(vecs: np.ndarray, sims: np.ndarray, idx: np.ndarray,
                    tau: float) -> list[tuple[int, int, int]]:
    """Sorted unique triplets whose three pairwise cosines all exceed ``tau`` (Algorithm 1, Stage I)."""
    out: set[tuple[int, int, int]] = set()
    for i in range(len(idx)):
        near = [int(j) for j, s in zip(idx[i], sims[i], strict=True) if s > tau]
        for a in range(len(near)):
            for b in range(a + 1, len(near)):
                j, m = near[a], near[b]
                if float(vecs[j] @ vecs[m]) > tau:
                    lo, mid, hi = sorted((i, j, m))
                    out.add((lo, mid, hi))
    return sorted(out)


class NearDuplicateIndex:
    """Greedy online dedup: ``admit`` keeps a vector unless its nearest stored one is >= ``threshold``."""

    def __init__(self, dim: int, threshold: float) -> None:
        self.threshold = threshold
        self._vecs = np.zeros((0, dim), np.float32)

    def __len__(self) -> int:
        return len(self._vecs)

    def nearest(self, vec: np.ndarray) -> tuple[int, float]:
        if not len(self._vecs):
            return -1, -1.0
        s = self._vecs @ vec
        i = int(np.argmax(s))
        return i, float(s[i])

    def add(self, vecs: np.ndarray) -> None:
        self._vecs = np.vstack([self._vecs, np.asarray(vecs, np.float32).reshape(-1, self._vecs.shape[1])])

    def admit(self, vec: np.ndarray) -> bool:
        _, sim = self.nearest(vec)
        if sim >= self.threshold:
            return False
        self.add(vec)
        return True


def precision_recall(sims: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """Of pairs predicted duplicate (sim >= threshold): precision and recall against ``labels`` (1 = dup)."""
    pred = sims >= threshold
    tp = int((pred & (labels == 1)).sum())
    precision = tp / int(pred.sum()) if pred.any() else 1.0
    recall = tp / int((labels == 1).sum()) if (labels == 1).any() else 1.0
    return precision, recall


def calibrate_threshold(sims: np.ndarray, labels: np.ndarray, beta: float = 0.5) -> float:
    """The threshold with the best F-beta on labelled pairs. beta 0.5 weighs precision double: a false
    duplicate throws a distinct question away, a missed one only repeats one."""
    best, best_f = 1.0, -1.0
    for t in np.unique(np.round(sims, 3)):
        p, r = precision_recall(sims, labels, float(t))
        f = 0.0 if p + r == 0 else (1 + beta**2) * p * r / (beta**2 * p + r)
        if f > best_f:
            best, best_f = float(t), f
    return best
