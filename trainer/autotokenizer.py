"""A tokenizer-only copy of a learner for programs that load it through ``AutoTokenizer`` (verl, vLLM).

transformers 5 picks the tokenizer class from config.json's model_type: for zpd's character tokenizer
in a qwen2 model that is Qwen2Tokenizer, whose byte-level pre-tokenizer drops "\\n" and " ". Without
a config.json beside it, AutoTokenizer reads tokenizer.json as written. verl gets the copy as
``model.tokenizer_path``, vLLM as ``LLM(tokenizer=...)``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

PROBE_TEXT = "a\nb 1+2=3"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json")


def copy_tokenizer(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def autotokenizer_misreads(learner_dir: Path) -> bool:
    """True when AutoTokenizer encodes PROBE_TEXT otherwise than the learner's own tokenizer.json."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if not (Path(learner_dir) / "tokenizer.json").is_file():
        return False  # nothing but AutoTokenizer's reading to compare with
    exact_tok = PreTrainedTokenizerFast.from_pretrained(learner_dir)
    exact = exact_tok(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    auto = AutoTokenizer.from_pretrained(learner_dir)(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    return auto != exact


def stage_tokenizer(learner_dir: Path, dest: Path) -> Path | None:
    """``dest`` holding the learner's tokenizer files alone when AutoTokenizer misreads the learner,
    else None (use the learner directory itself)."""
    if not autotokenizer_misreads(Path(learner_dir)):
        return None
    if dest.exists():
        shutil.rmtree(dest)
    copy_tokenizer(Path(learner_dir), dest)
    return dest
