"""Bench: which round-0 bootstrap makes a fresh embedded learner start a working ZPD loop.

    python bench/bootstrap.py [--quick] [--variants NAME,...] [--threads N] [--json OUT.jsonl]

Per variant: create the learner, train the bootstrap set, measure greedy solo and guided accuracy on
a fixed eval set (20 items per level 1..6), then simulate 3 rounds (candidates around the frontier,
4 solo samples at T=0.7 + 3 guided, keep fails-solo-solves-guided, SFT bare -> answer with replay,
re-measure). Prints one table per variant. CPU only, no downloads.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from zpd.configs.schema import ArithmeticConfig, BootstrapConfig, LearnerConfig
from zpd.loop.bootstrap import bootstrap_set
from zpd.loop.domains.arithmetic import Arithmetic
from zpd.trainer.generate import EmbeddedGenerator
from zpd.trainer.model import create_learner, num_parameters
from zpd.trainer.sft import SFTExample, train_sft

LEVELS = [1, 2, 3, 4, 5, 6]


@dataclass
class Variant:
    name: str
    guidance: str = "columns"
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    mlp: int = 512
    num_examples: int = 4000
    max_guided: float = 4.0
    epochs: float = 3.0
    lr: float = 3e-3
    solo_fraction: float = 0.25
    batch_size: int = 32
    rounds: int = 3
    candidates: int = 96
    round_epochs: float = 4.0
    round_lr: float = 1e-3
    replay_ratio: float = 1.0


VARIANTS = {
    "columns-g4": Variant("columns-g4"),
    "digits-g4": Variant("digits-g4", guidance="digits"),
    "columns-g3": Variant("columns-g3", max_guided=3.0),
    "columns-g6": Variant("columns-g6", max_guided=6.0),
    "digits-g6": Variant("digits-g6", guidance="digits", max_guided=6.0),
    "columns-g4-8k": Variant("columns-g4-8k", num_examples=8000),
    "columns-g4-small": Variant("columns-g4-small", hidden=64, layers=2, heads=2, mlp=256),
    "columns-g4-c256": Variant("columns-g4-c256", candidates=256),
    "digits-g4-e6": Variant("digits-g4-e6", guidance="digits", epochs=6.0, round_lr=3e-4, replay_ratio=2.0),
    "digits-g6-c256": Variant("digits-g6-c256", guidance="digits", max_guided=6.0, candidates=256),
}


def eval_set(domain: Arithmetic, per_level: int = 20, seed: int = 12345):
    rng = random.Random(seed)
    return {lvl: [domain.make_task(float(lvl), rng) for _ in range(per_level)] for lvl in LEVELS}


def accuracy(gen: EmbeddedGenerator, domain: Arithmetic, tasks_by_level, guided: bool) -> dict[int, float]:
    out = {}
    for lvl, tasks in tasks_by_level.items():
        prompts = [domain.guided_prompt(t) if guided else t.prompt for t in tasks]
        comps = gen.generate(prompts, max_tokens=24)
        out[lvl] = sum(domain.grade(t, c[0].text) for t, c in zip(tasks, comps, strict=True)) / len(tasks)
    return out


def frontier(solo: dict[int, float]) -> float:
    """Highest level with solo accuracy >= 0.5, plus 0.5 (1.0 when even level 1 fails)."""
    best = 0
    for lvl in LEVELS:
        if solo[lvl] >= 0.5:
            best = lvl
        else:
            break
    return max(1.0, best + 0.5)


def fmt(acc: dict[int, float]) -> str:
    return " ".join(f"{acc[lvl]:.2f}" for lvl in LEVELS)


def run_variant(v: Variant, workdir: Path, seed: int = 0) -> dict:
    # These variants were measured with bare answers (response="answer"); the daemon's default is now
    # "worked" (see bench/results/rounds.md).
    domain = Arithmetic(ArithmeticConfig(guidance=v.guidance, response="answer", max_difficulty=6.0))
    evals = eval_set(domain)
    learner = workdir / "r0"
    create_learner(learner / "init", LearnerConfig(hidden_size=v.hidden, num_layers=v.layers,
                                                   num_heads=v.heads, intermediate_size=v.mlp), seed)
    boot_cfg = BootstrapConfig(num_examples=v.num_examples, max_solo_difficulty=1.0,
                               max_guided_difficulty=v.max_guided, guided_fraction=1.0 - v.solo_fraction)
    boot = [SFTExample(r["prompt"], r["response"])
            for r in bootstrap_set({"arithmetic": domain}, boot_cfg, seed, set())]
    res = train_sft(learner / "init", boot, learner / "model", epochs=v.epochs, batch_size=v.batch_size,
                    learning_rate=v.lr, seed=seed)
    current = learner / "model"
    gen = EmbeddedGenerator(current)
    solo, guided = accuracy(gen, domain, evals, False), accuracy(gen, domain, evals, True)
    report = {"variant": asdict(v), "params": num_parameters(current), "bootstrap_seconds": res.seconds,
              "bootstrap_tokens": res.num_tokens, "bootstrap_loss": res.loss, "solo": solo,
              "guided": guided, "rounds": []}
    print(f"\n== {v.name}: {report['params']} params, bootstrap {res.seconds:.0f} s "
          f"({res.num_tokens / res.seconds:.0f} tok/s), final loss {res.loss:.3f}", flush=True)
    print(f"   levels            {' '.join(f'{lvl:>4}' for lvl in LEVELS)}")
    print(f"   r0 solo           {fmt(solo)}")
    print(f"   r0 guided         {fmt(guided)}", flush=True)
    pool: list[SFTExample] = list(boot)
    rng = random.Random(seed + 1)
    for rnd in range(1, v.rounds + 1):
        began = time.perf_counter()
        f = frontier(solo)
        tasks = [domain.make_task(min(6.0, max(1.0, rng.uniform(f - 1.5, f + 1.5))), rng)
                 for _ in range(v.candidates)]
        solo_c = gen.generate([t.prompt for t in tasks], n=4, temperature=0.7, max_tokens=24, seed=rnd)
        guided_c = gen.generate([domain.guided_prompt(t) for t in tasks], n=3, temperature=0.7,
                                max_tokens=24, seed=rnd)
        calib_seconds = time.perf_counter() - began
        zpd = []
        for t, s, g in zip(tasks, solo_c, guided_c, strict=True):
            p_solo = sum(domain.grade(t, c.text) for c in s) / 4
            p_guided = sum(domain.grade(t, c.text) for c in g) / 3
            if p_solo <= 0.25 and p_guided >= 0.3:
                zpd.append(t)
        new = [SFTExample(t.prompt, t.answer) for t in zpd]
        replay = rng.sample(pool, min(len(pool), int(len(new) * v.replay_ratio)))
        train_seconds = 0.0
        if new:
            gen.close()
            nxt = workdir / f"r{rnd}"
            tr = train_sft(current, new + replay, nxt, epochs=v.round_epochs, batch_size=v.batch_size,
                           learning_rate=v.round_lr, seed=seed + rnd)
            train_seconds = tr.seconds
            current = nxt
            gen = EmbeddedGenerator(current)
        pool.extend(new)
        solo, guided = accuracy(gen, domain, evals, False), accuracy(gen, domain, evals, True)
        levels = sorted({t.difficulty for t in zpd})
        report["rounds"].append({"round": rnd, "frontier": f, "num_zpd": len(zpd), "zpd_levels": levels,
                                 "calib_seconds": calib_seconds, "train_seconds": train_seconds,
                                 "solo": solo, "guided": guided})
        print(f"   r{rnd} solo           {fmt(solo)}   zpd {len(zpd)}/{v.candidates} at {levels} "
              f"(frontier {f}), calib {calib_seconds:.0f} s, train {train_seconds:.0f} s")
        print(f"   r{rnd} guided         {fmt(guided)}", flush=True)
    gen.close()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1000 examples, 1 round: a smoke run")
    parser.add_argument("--variants", default="digits-g4-e6,columns-g4",
                        help=f"comma list of {list(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="append each variant's report as a JSON line here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.variants.split(","):
        v = VARIANTS[name]
        if args.quick:
            v = replace(v, num_examples=1000, rounds=1)
        with tempfile.TemporaryDirectory() as tmp:
            report = run_variant(v, Path(tmp))
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
