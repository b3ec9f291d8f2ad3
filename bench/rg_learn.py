"""Bench: which reasoning-gym families the embedded tiny learner can learn (solo accuracy per level).

    python bench/rg_learn.py --families products,chain_sum --examples 800 --epochs 2 [--rounds 2]

One tiny learner (by default the smoke config's sizes; ``--hidden``, ``--layers``) is trained on a
bootstrap set over all the families at once (``loop.bootstrap.bootstrap_set``: bare tasks up to
``--solo-level``, guided ones up to ``--guided-level``), then its greedy solo accuracy is measured per
family and level on the family's frozen eval items (``Family.eval_items``). With ``--rounds`` it then
trains that many more times on fresh bare tasks at level 0 it fails alone but solves guided (a crude ZPD
round) and measures again. CPU only.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from zpd.configs.reasoning_gym import ReasoningGymConfig
from zpd.configs.schema import BootstrapConfig, LearnerConfig
from zpd.loop.bootstrap import bootstrap_set
from zpd.loop.domains.reasoning_gym import Family, build_families
from zpd.trainer.generate import EmbeddedGenerator
from zpd.trainer.model import create_learner
from zpd.trainer.sft import SFTExample, train_sft


def accuracy(gen: EmbeddedGenerator, fams: dict[str, Family], guided: bool = False) -> dict[str, list[float]]:
    """Per family, greedy solo (or guided) accuracy at each eval level."""
    out: dict[str, list[float]] = {}
    for name, fam in fams.items():
        items = fam.eval_items()
        prompts = [fam.guided_prompt(t) if guided else t.prompt for t in items]
        comps = gen.generate(prompts, max_tokens=16)
        by: dict[float, list[bool]] = {}
        for t, c in zip(items, comps, strict=True):
            by.setdefault(t.difficulty, []).append(fam.grade(t, c[0].text))
        out[name] = [sum(v) / len(v) for _, v in sorted(by.items())]
    return out


def show(tag: str, acc: dict[str, list[float]]) -> None:
    for name, row in acc.items():
        print(f"  {tag:<10} {name:<28} " + " ".join(f"{a:.2f}" for a in row), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", required=True)
    p.add_argument("--examples", type=int, default=800)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--max-level", type=int, default=2)
    p.add_argument("--solo-level", type=float, default=1.0)
    p.add_argument("--guided-level", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    cfg = ReasoningGymConfig(enabled=True, families=a.families.split(","), response="worked",
                             max_level=a.max_level, eval_per_level=20, max_eval_items=100_000,
                             unguided="keep")
    fams, left_out = build_families(cfg)
    print("left out:", left_out, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sizes = LearnerConfig(hidden_size=a.hidden, num_layers=a.layers, num_heads=4,
                              intermediate_size=2 * a.hidden, max_positions=256)
        create_learner(work / "init", sizes, a.seed)
        boot = BootstrapConfig(num_examples=a.examples, max_solo_difficulty=a.solo_level,
                               max_guided_difficulty=a.guided_level, guided_fraction=0.5)
        evals = {t.content_hash for f in fams.values() for t in f.eval_items()}
        rows = bootstrap_set(dict(fams), boot, a.seed, evals)
        data = [SFTExample(r["prompt"], r["response"]) for r in rows]
        began = time.perf_counter()
        res = train_sft(work / "init", data, work / "r0", epochs=a.epochs, batch_size=16, learning_rate=a.lr,
                        seed=a.seed)
        print(f"round 0: {len(data)} examples, {time.perf_counter() - began:.0f} s, loss {res.loss:.3f}",
              flush=True)
        gen = EmbeddedGenerator(work / "r0")
        show("r0 solo", accuracy(gen, fams))
        show("r0 guided", accuracy(gen, fams, guided=True))
        current, rng = work / "r0", random.Random(a.seed + 1)
        for rnd in range(1, a.rounds + 1):
            tasks = [f.make_task(0.0, rng) for f in fams.values() for _ in range(24)]
            solo = gen.generate([t.prompt for t in tasks], n=2, temperature=0.7, max_tokens=16, seed=rnd)
            new = [SFTExample(t.prompt, fams[t.domain].solution(t)) for t, s in zip(tasks, solo, strict=True)
                   if not all(fams[t.domain].grade(t, c.text) for c in s)]
            gen.close()
            replay = rng.sample(data, min(len(data), len(new)))
            train_sft(current, new + replay, work / f"r{rnd}", epochs=2.0, batch_size=16, learning_rate=1e-3,
                      seed=a.seed + rnd)
            current = work / f"r{rnd}"
            gen = EmbeddedGenerator(current)
            show(f"r{rnd} solo", accuracy(gen, fams))
        gen.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
