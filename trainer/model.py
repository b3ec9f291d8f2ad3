"""Create, load and size the embedded learner: a tiny causal LM saved as an HF model directory.

A learner directory holds ``config.json``, ``model.safetensors`` and the tokenizer files, so any
``AutoModelForCausalLM`` user (and vLLM) can load it. Creation is deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

from zpd.configs.schema import LearnerConfig

from .chat import pad_token_fallback
from .device import resolve_device
from .hf import (
    AutoModelForCausalLM,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
)
from .tokenizer import build_char_tokenizer

# Progress bars on every save/load would flood the daemon's logs (it loads a learner every phase).
transformers_logging.disable_progress_bar()


def create_learner(out_dir: Path, cfg: LearnerConfig, seed: int) -> None:
    """Write a freshly initialised learner (model + char tokenizer) into ``out_dir``.

    Same ``cfg`` and ``seed`` -> byte-identical weights. The global torch RNG is left untouched.
    """
    tokenizer = build_char_tokenizer()
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_positions,
        # Tied embeddings: at this size the output matrix would otherwise be a large share of the weights.
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    config = Qwen2Config(**common) if cfg.architecture == "qwen2" else LlamaConfig(**common)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def load_learner(path: Path, device: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model (float32, eval mode, on ``device``) and tokenizer of a learner directory."""
    device = resolve_device(device)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
    model.eval()
    return model, tokenizer


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """A learner directory's tokenizer (``tokenizer.json``), padding with eos when it has no pad token
    (``trainer/chat.py``; the start-up check says so once in the log)."""
    # Not AutoTokenizer: transformers 5 maps model_type "qwen2" to Qwen2Tokenizer, whose byte-level
    # pre-tokenizer turns "\n" into a byte symbol that the char vocabulary lacks (it is dropped).
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    pad_token_fallback(tokenizer)
    return tokenizer


def num_parameters(path: Path) -> int:
    """Parameter count of a learner directory (tied weights counted once), read from its safetensors."""
    from safetensors import safe_open

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors file")
    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                total += _prod(f.get_slice(name).get_shape())
    return total


def _prod(shape: list[int]) -> int:
    out = 1
    for dim in shape:
        out *= dim
    return out


def adopt_user_model(learner_dir: Path, chat_template: str | None) -> None:
    """Make a copy of a user's model ready for every reader (embedded, verl, vLLM): the configured chat
    template (``learner.chat_template``) and the eos-as-pad fallback written into its tokenizer files.

    The copy's files may be hard links to the user's own (``store/rounds.py:link_or_copy_tree``), so
    changed files are written beside it and renamed over the links, never written through them."""
    import os
    import shutil

    from .chat import resolve_template

    learner_dir = Path(learner_dir)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(learner_dir)
    changed = pad_token_fallback(tokenizer)
    if chat_template is not None:
        tokenizer.chat_template = resolve_template(chat_template)
        changed = True
    if not changed:
        return
    scratch = learner_dir.with_name(learner_dir.name + ".tokenizer")
    shutil.rmtree(scratch, ignore_errors=True)
    tokenizer.save_pretrained(scratch)
    for file in scratch.iterdir():
        os.replace(file, learner_dir / file.name)
    scratch.rmdir()
