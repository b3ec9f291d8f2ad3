"""What a tokenizer's chat template implies for training and decoding: the end-of-turn token, the ids
that stop generation, the pad token, and named templates a config may supply.

    eot = end_of_turn(tokenizer)            # e.g. EndOfTurn(ids=[2], text="<|im_end|>") for ChatML
    stops = stop_token_ids(tokenizer, model.generation_config)

A model trained on "response + eos" but served through a template that ends a turn with another token
(``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``) never learns to stop the way its template says; so
SFT targets end with what the template writes after an assistant message, and generation stops on
that token as well as on every eos id of ``generation_config`` (a list for many chat models) and the
tokenizer's eos. The embedded char tokenizer's template ends a turn with its eos, so nothing changes
for it. Imports nothing of zpd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .tokenizer import CHAT_TEMPLATE as _CHATML

NAMED_TEMPLATES: dict[str, str] = {"chatml": _CHATML}
"""Templates ``learner.chat_template`` may name instead of spelling one out."""

_PROBE = "zpd-probe-3b9f"  # an assistant message no template rewrites, to find what follows it


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    ids: list[int]
    """Token ids that close an assistant turn (what SFT appends to every target)."""
    text: str
    """The same as text (a stop string when it is several ordinary tokens)."""


def resolve_template(spec: str) -> str:
    """``spec`` as a Jinja template: a name from NAMED_TEMPLATES, else the template text itself."""
    return NAMED_TEMPLATES.get(spec.strip().lower(), spec)


def pad_token_fallback(tokenizer: Any) -> bool:
    """Pad with the eos token when the tokenizer has no pad token (what HF does for GPT-2 and Llama);
    True when it did. Padding is masked everywhere zpd pads, so the choice of id does not matter."""
    if tokenizer.pad_token_id is not None or tokenizer.eos_token is None:
        return False
    tokenizer.pad_token = tokenizer.eos_token
    return True


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def end_of_turn(tokenizer: Any) -> EndOfTurn:
    """What the chat template writes right after an assistant message (whitespace stripped), as ids and
    text; the eos token when the template writes nothing there (or has no assistant turn). Cached on the
    tokenizer (it is asked for every batch)."""
    cached = getattr(tokenizer, "_zpd_end_of_turn", None)
    if cached is not None:
        return cached
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    out = EndOfTurn(eos, tokenizer.eos_token or "")
    try:
        turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": _PROBE}]
        text = _render(tokenizer, turns, False)
    except Exception:  # noqa: BLE001  (a template without an assistant role: fall back to the eos)
        text = ""
    if _PROBE in text:
        tail = text.rsplit(_PROBE, 1)[1].strip()
        ids = list(tokenizer(tail, add_special_tokens=False)["input_ids"]) if tail else []
        if ids:
            out = EndOfTurn(ids, tail)
    tokenizer._zpd_end_of_turn = out
    return out


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> set[int]:
    """Ids that end a generated row: every ``generation_config.eos_token_id`` (an int or a list), the
    tokenizer's eos, and the template's end-of-turn token when it is a single token."""
    ids: set[int] = set()
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    eot = end_of_turn(tokenizer)
    if len(eot.ids) == 1:
        ids.add(eot.ids[0])
    return ids


def stop_strings(tokenizer: Any) -> list[str]:
    """The end-of-turn text when it is several tokens (e.g. a named template whose markers the vocabulary
    lacks): generation cuts at it as at a stop string."""
    eot = end_of_turn(tokenizer)
    return [eot.text] if len(eot.ids) > 1 and eot.text else []
