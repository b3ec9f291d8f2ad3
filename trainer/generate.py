"""Batched generation with the embedded learner: greedy or sampled, with a KV cache, on CPU or GPU.

    gen = EmbeddedGenerator(learner_dir)
    gen.generate(["57+68"], n=4, temperature=0.7, max_tokens=24)   # -> [[Completion, x4]]

Prompts are user messages; the chat template is applied here. Rows are left-padded into batches of
``batch_size`` (prompt x sample) rows and decoded together with one forward pass per new token; a
row finishes at a stop token (``<|im_end|>`` for the embedded learner; for a user's model every eos id
of its ``generation_config``, its tokenizer's eos and its template's end-of-turn token, ``chat.py``;
excluded from the text), at a ``stop`` string (excluded too) or at ``max_tokens``. The hand-written
loop (rather than ``model.generate``) keeps sampling on a private ``torch.Generator``, so results
are deterministic for a seed and never touch the global RNG.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from .chat import stop_strings, stop_token_ids
from .completion import Completion
from .hf import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from .model import load_learner
from .tokenizer import encode_user_prompts


@dataclass(slots=True)
class SampledRow:
    """One decoded row with its token ids (what GRPO needs to score the sample)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    finish_reason: Literal["stop", "length"]


@torch.no_grad()
def sample_rows(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    *,
    temperature: float,
    max_tokens: int,
    generator: torch.Generator,
    stop: list[str] | None = None,
    row_seeds: list[int] | None = None,
) -> list[SampledRow]:
    """Decode every row of ``prompt_ids`` together (one batch; the caller chunks). With ``row_seeds``
    each row samples from its own generator (inverse-CDF, one uniform per step), so a row's tokens do not
    depend on which other rows share the batch."""
    device = model.device
    pad_id, stop_ids = tokenizer.pad_token_id, stop_token_ids(tokenizer, model.generation_config)
    id_to_text = _id_table(tokenizer)
    width = max(len(p) for p in prompt_ids)
    rows = len(prompt_ids)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.long)
    for i, ids in enumerate(prompt_ids):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        mask[i, width - len(ids) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                past_key_values=cache, use_cache=True)
    logits = out.logits[:, -1, :]
    next_pos = positions[:, -1:] + 1

    generated: list[list[int]] = [[] for _ in range(rows)]
    texts = [""] * rows
    finish: list[str | None] = [None] * rows
    stop = [s for s in (stop or []) + stop_strings(tokenizer) if s]
    row_gens = None if row_seeds is None else [torch.Generator().manual_seed(r) for r in row_seeds]
    for step in range(max_tokens):
        if temperature > 0 and row_gens is not None:
            probs = torch.softmax(logits.float() / temperature, dim=-1).cpu()
            u = torch.cat([torch.rand(1, generator=g) for g in row_gens]).unsqueeze(1)
            cdf = probs.cumsum(-1)
            tokens = torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(1).clamp(max=probs.shape[-1] - 1)
        elif temperature > 0:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            tokens = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1)
        else:
            tokens = logits.argmax(-1).cpu()
        for i, tok in enumerate(tokens.tolist()):
            if finish[i] is not None:
                continue
            generated[i].append(tok)
            if tok in stop_ids:
                finish[i] = "stop"
                continue
            texts[i] += id_to_text.get(tok, "")
            for s in stop:
                cut = texts[i].find(s)
                if cut >= 0:
                    texts[i] = texts[i][:cut]
                    finish[i] = "stop"
                    break
        if all(f is not None for f in finish) or step == max_tokens - 1:
            break
        feed = torch.tensor([pad_id if f is not None else g[-1]
                             for f, g in zip(finish, generated, strict=True)])
        mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype, device=device)], dim=1)
        out = model(input_ids=feed.view(rows, 1).to(device), attention_mask=mask, position_ids=next_pos,
                    past_key_values=out.past_key_values, use_cache=True)
        logits = out.logits[:, -1, :]
        next_pos = next_pos + 1
    return [
        SampledRow(p, g, t, f or "length")  # type: ignore[arg-type]
        for p, g, t, f in zip(prompt_ids, generated, texts, finish, strict=True)
    ]


def _id_table(tokenizer: PreTrainedTokenizerBase) -> dict[int, str]:
    """id -> text for ordinary tokens (special tokens map to nothing: they are not answer text).

    Each token is decoded after an anchor token and the anchor's text cut off: decoding a token alone
    drops its leading space in SentencePiece-style vocabularies (Llama's "▁is" decodes to "is")."""
    cached = getattr(tokenizer, "_zpd_id_table", None)
    if cached is None:
        special = set(tokenizer.all_special_ids)
        ids = [i for i in range(len(tokenizer)) if i not in special]
        anchor = tokenizer("a", add_special_tokens=False)["input_ids"][:1]
        base = tokenizer.decode(anchor) if anchor else ""
        pairs = tokenizer.batch_decode([anchor + [i] for i in ids])
        cached = {i: text[len(base):] if base and text.startswith(base) else tokenizer.decode([i])
                  for i, text in zip(ids, pairs, strict=True)}
        tokenizer._zpd_id_table = cached
    return cached


class EmbeddedGenerator:
    """Generation backend running the learner in this process. Not thread-safe."""

    def __init__(self, learner_dir: Path, device: str = "cpu", batch_size: int = 64) -> None:
        self.model, self.tokenizer = load_learner(Path(learner_dir), device)
        self.batch_size = batch_size

    def generate(
        self,
        prompts: list[str],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int,
        seed: int = 0,
        stop: list[str] | None = None,
        sample_seeds: list[list[int]] | None = None,
    ) -> list[list[Completion]]:
        """Per prompt, ``n`` completions. Same arguments and seed -> same completions; with
        ``sample_seeds`` a sample depends only on its prompt and its own seed."""
        if not prompts:
            return []
        generator = torch.Generator().manual_seed(seed)
        encoded = encode_user_prompts(self.tokenizer, prompts)
        rows = [(i, encoded[i]) for i in range(len(prompts)) for _ in range(n)]
        r_j = [j for _ in prompts for j in range(n)]  # row -> its sample index within the prompt
        results: list[list[Completion]] = [[] for _ in prompts]
        # Similar lengths in one batch waste less compute on padding; order within a prompt is kept.
        order = sorted(range(len(rows)), key=lambda r: len(rows[r][1]))
        done: dict[int, Completion] = {}
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            began = time.perf_counter()
            sampled = sample_rows(self.model, self.tokenizer, [rows[r][1] for r in chunk],
                                  temperature=temperature, max_tokens=max_tokens,
                                  generator=generator, stop=stop,
                                  row_seeds=None if sample_seeds is None else
                                  [sample_seeds[rows[r][0]][r_j[r]] for r in chunk])
            per_row = (time.perf_counter() - began) / len(chunk)
            for r, s in zip(chunk, sampled, strict=True):
                done[r] = Completion(s.text, len(s.completion_ids), s.finish_reason, per_row,
                                     len(s.prompt_ids))
        for r in range(len(rows)):
            results[rows[r][0]].append(done[r])
        return results

    def close(self) -> None:
        """Free the model (the daemon makes a new generator per learner)."""
        self.model = None  # PreTrainedModel is Any here (transformers is not followed), so None fits
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
