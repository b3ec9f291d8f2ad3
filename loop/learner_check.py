"""The start-up check of a user's model (``learner.path``), run by ``zpd start`` before anything is written.

    notes = check_learner(cfg, origin=lambda key: key_origin(key, config_path, overrides))

A model that cannot serve as a learner must fail here, in one line, and not three retries into round
0 with a traceback in the logs (DESIGN: bad config is exit 2 and nothing is created). Checked, without
loading the weights (a 7B model is checked in seconds):

* the directory exists, ``config.json`` loads and names a causal LM transformers knows;
* weights: safetensors headers read, and every parameter of the model that ``config.json`` describes
  is in them with its shape (a PEFT-keyed or truncated file is caught); a ``pytorch_model.bin`` is only
  seen to exist (reading a pickle means reading all of it);
* the tokenizer (``tokenizer.json``) loads and fits the embedding matrix;
* a chat template: the model's own, or ``learner.chat_template`` (a name such as "chatml", or a
  template), which must render a user turn;
* a pad token, or an eos token to pad with (HF practice for GPT-2 and Llama): then one note says so;
* the context (``max_position_embeddings``) holds the longest prompt the run renders plus the tokens it
  generates (``calibration.max_tokens`` / ``measure.max_tokens``).

Each failure is a :class:`ConfigError` naming the key and where its value came from (the config file,
or the ``--set`` that set it). Returns the notes to log once logging is up.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from zpd.configs.load import ConfigError
from zpd.configs.schema import ZpdConfig

from .domains.base import OwnEvalSet, capability
from .domains.prompting import prompt_style
from .domains.registry import build_domains

PROBES_PER_LEVEL = 8
"""Tasks drawn at each domain's hardest level to find the longest prompt (guided prompts are longest)."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


def check_learner(cfg: ZpdConfig, origin: Callable[[str], str]) -> list[str]:
    """Check ``cfg.learner.path`` (nothing to check for the embedded learner). Raises ConfigError."""
    path = cfg.learner.path
    if path is None:
        return []

    def fail(message: str, key: str = "learner.path") -> NoReturn:
        raise ConfigError(f"{origin(key)}: {key}: {path}: {message}")

    if not path.is_dir():
        fail("does not exist" if not path.exists() else "is not a directory")
    from zpd.trainer.hf import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001  (whatever transformers raises, one line)
        fail(f"config.json does not load ({_one_line(exc)})")
    if type(config) not in AutoModelForCausalLM._model_mapping:
        fail(f"config.json's model_type {config.model_type!r} is not a causal LM that transformers knows")
    problem = _weights_problem(path, config)
    if problem:
        fail(problem)
    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001
        fail(f"no loadable tokenizer (tokenizer.json: {_one_line(exc)})")
    vocab = getattr(config, "vocab_size", None)
    if vocab and len(tokenizer) > vocab:
        fail(f"the tokenizer has {len(tokenizer)} tokens, more than config.json's vocab_size {vocab}")
    _check_template(cfg, tokenizer, fail)
    notes = []
    from zpd.trainer.chat import pad_token_fallback

    if pad_token_fallback(tokenizer):
        notes.append(f"learner.path: the tokenizer has no pad token; padding with its eos token "
                     f"{tokenizer.eos_token!r} (id {tokenizer.eos_token_id}), as HF does ({path})")
    elif tokenizer.pad_token_id is None:
        fail("the tokenizer has neither a pad token nor an eos token (zpd pads batches and stops at eos)")
    _check_context(cfg, config, tokenizer, origin, fail)
    return notes


def _check_template(cfg: ZpdConfig, tokenizer: Any, fail: Callable[..., NoReturn]) -> None:
    from zpd.trainer.chat import resolve_template
    from zpd.trainer.tokenizer import user_prompt_text

    key = "learner.path"
    if cfg.learner.chat_template is not None:
        tokenizer.chat_template = resolve_template(cfg.learner.chat_template)
        key = "learner.chat_template"
    elif not tokenizer.chat_template:
        fail('has no chat template (tokenizer_config.json / chat_template.jinja); add one, or set '
             'learner.chat_template ("chatml" or a Jinja template)')
    try:
        text = user_prompt_text(tokenizer, "1+1")
    except Exception as exc:  # noqa: BLE001
        fail(f"the chat template does not render a user turn ({_one_line(exc)})", key)
    if "1+1" not in text:
        fail("the chat template drops the user's message", key)


def _check_context(cfg: ZpdConfig, config: Any, tokenizer: Any, origin: Callable[[str], str],
                   fail: Callable[..., NoReturn]) -> None:
    from zpd.trainer.tokenizer import encode_user_prompts

    context = getattr(config, "max_position_embeddings", None)
    prompts = _probe_prompts(cfg)
    if not context or not prompts:
        return
    longest = max(len(ids) for ids in encode_user_prompts(tokenizer, prompts))
    cal, meas = cfg.calibration.max_tokens, cfg.measure.max_tokens
    key = "calibration.max_tokens" if cal >= meas else "measure.max_tokens"
    generated = max(cfg.calibration.max_tokens, cfg.measure.max_tokens)
    if longest + generated > context:
        fail(f"its context ({context} tokens, max_position_embeddings) is shorter than the longest prompt "
             f"({longest} tokens) plus {key} = {generated} (from {origin(key)}); lower {key} or use a model "
             "with a longer context")


def _probe_prompts(cfg: ZpdConfig) -> list[str]:
    """Solo and guided prompts of tasks at each domain's hardest level, in the run's prompt style."""
    rng = random.Random(0)
    prompts = []
    for domain in build_domains(cfg.domains, prompt_style(cfg)).values():
        try:  # a domain that needs the running daemon to make tasks (a teacher) is not probed
            own_eval = capability(domain, OwnEvalSet)
            carve = None if own_eval is None else own_eval.eval_items
            tasks = list(carve())[:200] if carve is not None else [
                domain.make_task(domain.max_difficulty, rng) for _ in range(PROBES_PER_LEVEL)]
        except Exception:  # noqa: BLE001
            continue
        for task in tasks:
            if task is not None:
                prompts += [domain.solo_prompt(task), domain.guided_prompt(task)]
    return prompts


def _weights_problem(path: Path, config: Any) -> str | None:
    """What is wrong with the weight files, or None. Reads headers only."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as exc:
            return f"{index.name} is not a safetensors index ({_one_line(exc)})"
        absent = [s for s in shards if not (path / s).is_file()]
        if absent:
            return f"{index.name} names {absent[0]}, which is missing"
    files = sorted(path.glob("*.safetensors"))
    if not files:
        if any((path / f).is_file() for f in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
            return None
        return "no weights (model.safetensors or pytorch_model.bin)"
    from safetensors import safe_open

    shapes: dict[str, list[int]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    shapes[name] = list(handle.get_slice(name).get_shape())
        except Exception as exc:  # noqa: BLE001
            return f"{file.name} is not a readable safetensors file ({_one_line(exc)})"
    return _mismatch(config, shapes)


def _mismatch(config: Any, shapes: dict[str, list[int]]) -> str | None:
    """Parameters of the model ``config`` describes that the weights lack or shape otherwise (tied
    parameters count once: any of their names will do)."""
    import torch

    from zpd.trainer.hf import AutoModelForCausalLM

    with torch.device("meta"):  # shapes without memory
        model = AutoModelForCausalLM.from_config(config)
    prefix = model.base_model_prefix
    groups: dict[int, tuple[list[str], list[int]]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), ([], list(param.shape)))[0].append(name)
    missing = []
    for names, shape in groups.values():
        found = [k for n in names for k in (n, n.removeprefix(prefix + "."), f"{prefix}.{n}") if k in shapes]
        if not found:
            missing.append(names[0])
        elif shapes[found[0]] != shape:
            return f"weight {found[0]} has shape {shapes[found[0]]}, config.json makes it {shape}"
    if missing:
        example = next(iter(shapes), "nothing")
        return (f"its weights do not match config.json: {len(missing)} of {len(groups)} parameters missing "
                f"(first: {missing[0]}; the file has e.g. {example})")
    return None
