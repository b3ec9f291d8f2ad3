"""transformers, as the trainer's modules import it: without scikit-learn.

transformers imports scikit-learn (and, through it, pandas and scipy.stats) when it is installed, only for
``roc_curve`` in assisted generation's candidate generator (``transformers.generation.candidate_generator``),
which zpd never uses: it generates with its own loop (``generate.py``) or a served backend. The dev and
knowledge extras install scikit-learn (sentence-transformers needs it), and then every process that loads a
model pays 1.6 s more of its 7.5-8 s start on a 2-core machine (measured with ``python -X importtime``): each
trainer worker, job child, replica server and daemon that generates in-process.

Here that first import sees scikit-learn as missing (``is_sklearn_available()`` finds no spec);
``sys.modules`` is restored after, so a later ``import sklearn`` anywhere in the process
(sentence-transformers' does) imports the real package. Where transformers' generation was already
imported, nothing changes. The modules that load models take these names from here, never from
``transformers`` directly (tests/test_trainer_embedded.py::
``test_model_loading_processes_import_transformers_without_sklearn`` checks both).
"""

from __future__ import annotations

import sys
from typing import Any, cast

_CANDIDATE_GENERATOR = "transformers.generation.candidate_generator"


def _import_without_sklearn() -> None:
    if _CANDIDATE_GENERATOR in sys.modules:
        return
    hidden = "sklearn" not in sys.modules
    if hidden:
        cast(dict[str, Any], sys.modules)["sklearn"] = None  # `import sklearn` raises, find_spec is None
    try:
        import transformers.generation.candidate_generator  # noqa: F401
    finally:
        if hidden and sys.modules.get("sklearn", False) is None:
            del sys.modules["sklearn"]


_import_without_sklearn()

from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    DynamicCache,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

__all__ = [
    "AutoConfig",
    "AutoModelForCausalLM",
    "DynamicCache",
    "LlamaConfig",
    "PreTrainedModel",
    "PreTrainedTokenizerBase",
    "PreTrainedTokenizerFast",
    "Qwen2Config",
]
