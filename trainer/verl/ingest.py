"""A finished verl checkpoint -> the next learner, an HF model directory.

verl writes ``<ckpt>/latest_checkpointed_iteration.txt`` and ``<ckpt>/global_step_N/`` (SFT) or
``global_step_N/actor/`` (GRPO). With ``hf_model`` in ``checkpoint.save_contents`` the full weights are
in ``huggingface/`` beside the FSDP shards; otherwise (and whenever ``huggingface/`` holds a PEFT model's
keys, which verl writes there for a LoRA run with ``hf_model``) ``python -m verl.model_merger merge``
rebuilds them from the shards. For a LoRA run the merger writes the base weights plus the PEFT adapter
(``lora_adapter/``), which is merged into the weights with PEFT, since the next round needs one plain
model. The tokenizer files always come
from the parent learner: training does not change the tokenizer, and verl re-saves it through
AutoTokenizer, which may turn it into another class.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from zpd.trainer.autotokenizer import copy_tokenizer

WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json",
                "pytorch_model.bin.index.json")
MODEL_FILES = ("config.json", "generation_config.json")


class IngestError(RuntimeError):
    pass


def latest_step_dir(ckpt_dir: Path, actor: bool) -> Path:
    """``global_step_N`` (or its ``actor/``) of the step named by verl's tracker file."""
    tracker = ckpt_dir / "latest_checkpointed_iteration.txt"
    if tracker.is_file():
        step = int(tracker.read_text().strip())
    else:  # async saves skip the tracker
        suffixes = [p.name.rsplit("_", 1)[1] for p in ckpt_dir.glob("global_step_*")]
        steps = [int(s) for s in suffixes if s.isdigit()]
        if not steps:
            raise IngestError(f"{ckpt_dir}: verl wrote no checkpoint")
        step = max(steps)
    step_dir = ckpt_dir / f"global_step_{step}"
    return step_dir / "actor" if actor else step_dir


def _has_weights(d: Path) -> bool:
    return d.is_dir() and any(any(d.glob(g)) for g in WEIGHT_GLOBS[:2])


def _peft_keyed(d: Path) -> bool:
    """True when ``d``'s safetensors hold a PEFT model's state dict (``base_model.model.*``,
    ``*.lora_A.*``): what verl's ``hf_model`` save writes for a LoRA run. Loaded as a plain model, every
    key would be missing and the weights random; verl's merger splits them instead."""
    from safetensors import safe_open

    for f in d.glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as fh:
            if any(k.startswith("base_model.model.") or ".lora_" in k for k in fh.keys()):
                return True
    return False


def _copy_model(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for pattern in (*WEIGHT_GLOBS, *MODEL_FILES):
        for f in src.glob(pattern):
            shutil.copy2(f, dst / f.name)


def merge_fsdp(actor_dir: Path, target: Path, python: str) -> None:
    """verl's model merger: FSDP shards (+ ``huggingface/`` config) -> an HF directory."""
    argv = [python, "-m", "verl.model_merger", "merge", "--backend", "fsdp", "--local_dir", str(actor_dir),
            "--target_dir", str(target)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr)[-2000:]
        raise IngestError(f"verl.model_merger failed ({proc.returncode}): {output}")


def merge_lora(base_dir: Path, adapter_dir: Path, out_dir: Path) -> None:
    """Fold a PEFT adapter into its base weights and save plain HF weights into ``out_dir``."""
    import torch
    from peft import PeftModel

    from ..hf import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir)


def _find_adapter(*dirs: Path) -> Path | None:
    for d in dirs:
        for cand in (d / "lora_adapter", d):
            if (cand / "adapter_config.json").is_file():
                return cand
    return None


def ingest_checkpoint(ckpt_dir: Path, out_dir: Path, *, parent_learner: Path, actor: bool,
                      python: str) -> Path:
    """Write the newest checkpoint under ``ckpt_dir`` into ``out_dir`` as an HF model directory."""
    src = latest_step_dir(ckpt_dir, actor)
    hf = src / "huggingface"
    staged = src.parent / f".zpd_merged_{src.name}"
    if not _has_weights(hf) or _peft_keyed(hf):
        if staged.exists():
            shutil.rmtree(staged)
        merge_fsdp(src, staged, python)
        hf = staged
    if not _has_weights(hf) or _peft_keyed(hf):
        raise IngestError(f"{src}: no plain HF weights in the checkpoint, and the merger wrote none")
    adapter = _find_adapter(hf, src)
    if adapter is not None:
        merge_lora(hf, adapter, out_dir)
        for name in MODEL_FILES:
            if (hf / name).is_file() and not (out_dir / name).exists():
                shutil.copy2(hf / name, out_dir / name)
    else:
        _copy_model(hf, out_dir)
    copy_tokenizer(parent_learner, out_dir)
    if staged.exists():
        shutil.rmtree(staged, ignore_errors=True)
    return out_dir
