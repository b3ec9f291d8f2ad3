"""The embedded learner's character-level tokenizer.

One token per printable ASCII character and ``\\n``, plus four special tokens: ``<|pad|>``,
``<|im_start|>``, ``<|im_end|>`` (end of turn, the eos) and ``<|unk|>`` (any other character, so
nothing is dropped silently). The chat template is ChatML, kept short because every character of it
is a token the model reads::

    <|im_start|>user\\n57+68<|im_end|>\\n<|im_start|>assistant\\n

Building it needs no download and is deterministic: the same ids on every machine.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
UNK = "<|unk|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END, UNK]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CHARS = ["\n"] + [chr(c) for c in range(32, 127)]


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh character-level tokenizer; ids 0..3 are the special tokens, then ``\\n``, then ' '..'~'."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + _CHARS)}
    # BPE with no merges over a vocabulary of single characters is exactly "one token per character";
    # Fuse() decodes by concatenation (the default would join tokens with spaces).
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=IM_END,
        unk_token=UNK,
        additional_special_tokens=[IM_START],
        padding_side="left",
        model_max_length=1_000_000,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def user_prompt_text(tokenizer: PreTrainedTokenizerBase, content: str) -> str:
    """The chat-formatted text of one user turn followed by the assistant's turn opening."""
    text: str = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    return text


def encode_user_prompts(tokenizer: PreTrainedTokenizerBase, contents: list[str]) -> list[list[int]]:
    """Token ids of ``user_prompt_text`` for each content (no padding, no extra special tokens)."""
    texts = [user_prompt_text(tokenizer, c) for c in contents]
    ids: list[list[int]] = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return ids
