"""A LoRA round's checkpoint -> the next learner, through verl's own save path on a CPU.

A child process (gloo, world size 1) wraps a tiny PEFT model in verl's FSDP2 (``apply_fsdp2`` on an
``fsdp`` mesh, as verl's engine does) and saves it with verl's ``FSDPCheckpointManager``, once with the
save_contents zpd's overrides pass for LoRA and once with ``hf_model`` (which writes the PEFT model's
keys into ``huggingface/``). zpd's ingest (verl's model merger, then PEFT's merge) must give the same
weights as merging the adapter in directly (base and adapter rounded to bfloat16 first, as the merger
writes them). Skipped without verl unless ZPD_REQUIRE_VERL=1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from optional import require

require("verl")

from zpd.configs.schema import LearnerConfig, ZpdConfig  # noqa: E402
from zpd.trainer.model import create_learner  # noqa: E402
from zpd.trainer.verl import build_sft_overrides  # noqa: E402
from zpd.trainer.verl.ingest import ingest_checkpoint  # noqa: E402
from zpd.trainer.verl.overrides import SAVE_CONTENTS, RoundPaths  # noqa: E402

BF16 = 2.0**-7
TINY = LearnerConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=64)

SAVE = textwrap.dedent('''
    """Save a LoRA model the way verl's FSDP engine does, and the reference: the adapter merged by PEFT."""
    import os, sys, torch, torch.distributed as dist
    from pathlib import Path
    base, work, rank, alpha = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    dist.init_process_group("gloo", rank=0, world_size=1)
    from omegaconf import OmegaConf
    from peft import LoraConfig, get_peft_model
    from torch.distributed.device_mesh import init_device_mesh
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager
    from verl.utils.fsdp_utils import apply_fsdp2
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=rank, lora_alpha=alpha, target_modules="all-linear",
                                      task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # a trained adapter (PEFT starts B at zero, which would merge to the base)
            torch.nn.init.normal_(p, std=0.5)
    import copy
    reference = copy.deepcopy(model)
    with torch.no_grad():  # verl's merger writes base weights and adapter in bfloat16: round them alike
        for p in reference.parameters():
            p.copy_(p.bfloat16().float())
    reference.merge_and_unload().save_pretrained(work / "reference")
    apply_fsdp2(model, {"mesh": init_device_mesh("cpu", mesh_shape=(1,), mesh_dim_names=["fsdp"])}, {})
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    tok = PreTrainedTokenizerFast.from_pretrained(base)
    for contents in sys.argv[5:]:
        ckpt = work / contents.replace(",", "-")
        manager = FSDPCheckpointManager(model=model, optimizer=opt, lr_scheduler=None, processing_class=tok,
                                        checkpoint_config=OmegaConf.create(
                                            {"save_contents": contents.split(",")}))
        manager.save_checkpoint(local_path=str(ckpt / "global_step_3"), global_step=3)
        (ckpt / "latest_checkpointed_iteration.txt").write_text("3")  # as verl's CheckpointHandler does
    print("saved", flush=True)
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    out: dict = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_lora_checkpoint_becomes_the_correctly_merged_learner(tmp_path: Path):
    from zpd.trainer.model import load_learner

    base = tmp_path / "base"
    create_learner(base, TINY, seed=0)
    cfg = ZpdConfig()
    cfg.verl.lora_rank, cfg.verl.lora_alpha = 4, 8
    paths = RoundPaths(tmp_path / "t.parquet", base, tmp_path / "ckpt")
    ovr = dict(o.split("=", 1) for o in build_sft_overrides(cfg, paths, num_rows=8, round_n=1, resume=False))
    lora_contents = ovr["checkpoint.save_contents"].strip("[]")
    assert "hf_model" not in lora_contents
    full_contents = SAVE_CONTENTS.strip("[]")
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="1", RANK="0")
    script = tmp_path / "save_lora.py"
    script.write_text(SAVE)
    proc = subprocess.run([sys.executable, str(script), str(base), str(tmp_path), "4", "8", lora_contents,
                           full_contents], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = _weights(tmp_path / "reference")
    assert reference and all(not k.startswith("base_model.") for k in reference)
    base_w = _weights(base)
    for contents in (lora_contents, full_contents):
        ckpt = tmp_path / contents.replace(",", "-")
        hf = ckpt / "global_step_3" / "huggingface"
        if contents == full_contents:  # what verl wrote there: the PEFT model's keys, not a plain model
            assert any(".lora_A." in k for k in _weights(hf))
        out = tmp_path / f"next-{len(contents)}"
        ingest_checkpoint(ckpt, out, parent_learner=base, actor=False, python=sys.executable)
        got = _weights(out)
        assert set(reference) <= set(got)
        for key, ref in reference.items():
            assert got[key].float().allclose(ref.float(), rtol=1e-4, atol=1e-6), key
        # The adapter really moved the weights (a merge that dropped it would equal the base).
        assert any(not got[k].float().allclose(base_w[k].float(), rtol=BF16 * 4, atol=1e-3) for k in base_w)
        model, _ = load_learner(out, "cpu")  # a plain HF model the next round can load
        assert model.config.num_hidden_layers == TINY.num_layers
