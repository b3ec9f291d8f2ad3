"""Tiny user models made in the test, as a user would bring them: an HF directory with a transformers
config (Llama or GPT-2 architecture), ``save_pretrained`` weights and a BPE tokenizer trained here on a
small local corpus, with no pad token (as stock GPT-2 and Llama tokenizers have none).

``tests/`` is on sys.path, so tests ``from user_models import make_user_model``.
"""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("the answer is compute end your reply with column sums right to left carries digits number "
         "what of a and to it result so we get add first then write user assistant system").split()

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML: a turn ends with <|im_end|>, which is not the tokenizer's eos (GPT-2 style)."""

ZEPHYR = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""Zephyr-like: a turn ends with the eos token </s> (Llama style)."""


def corpus(seed: int = 0, size: int = 3000) -> list[str]:
    """Arithmetic strings in the shapes zpd writes, and English words."""
    rng = random.Random(seed)
    out = []
    for _ in range(size):
        a, b = rng.randint(0, 9999), rng.randint(0, 9999)
        out.append(f'Compute {a}+{b}. End your reply with "Answer: <number>". Answer: {a + b}')
        out.append(" ".join(rng.choice(WORDS) for _ in range(8)))
    return out


def bpe_tokenizer(arch: str, chat_template: str | None):
    """A BPE tokenizer trained on :func:`corpus`: byte-level (GPT-2) or metaspace (Llama/SentencePiece
    style), digits split one by one (as Llama's are), eos but no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    turn = ["<|im_start|>", "<|im_end|>"] if chat_template == CHATML else ["<|user|>", "<|assistant|>"]
    if arch == "gpt2":
        specials, eos, bos, unk = ["<|endoftext|>", *turn], "<|endoftext|>", "<|endoftext|>", None
        core = Tokenizer(models.BPE())
        core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                      pre_tokenizers.ByteLevel(add_prefix_space=False)])
        core.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        specials, eos, bos, unk = ["<unk>", "<s>", "</s>", *turn], "</s>", "<s>", "<unk>"
        core = Tokenizer(models.BPE(unk_token="<unk>"))
        core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(),
                                                      pre_tokenizers.Digits(individual_digits=True)])
        core.decoder = decoders.Metaspace()
        alphabet = [chr(c) for c in range(32, 127)] + ["\n"]
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    core.train_from_iterator(corpus(), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=eos, bos_token=bos, unk_token=unk,
                                  additional_special_tokens=turn, padding_side="left")
    if chat_template is not None:
        tok.chat_template = chat_template
    assert tok.pad_token is None
    return tok


def make_user_model(out: Path, arch: str = "llama", chat_template: str | None = "default",
                    context: int = 512, seed: int = 0) -> Path:
    """A tiny random model of ``arch`` ("llama" or "gpt2") saved into ``out`` with its tokenizer.
    ``chat_template``: "default" picks ChatML for gpt2 and Zephyr for llama; None saves none."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    if chat_template == "default":
        chat_template = CHATML if arch == "gpt2" else ZEPHYR
    tok = bpe_tokenizer(arch, chat_template)
    if arch == "gpt2":
        config = GPT2Config(vocab_size=len(tok), n_positions=context, n_embd=64, n_layer=2, n_head=4,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    else:
        config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=context,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    if chat_template == CHATML:  # chat models list their end-of-turn token among generation_config's eos ids
        model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
