"""Bench: the embedded generation backend, batched versus one prompt at a time, on CPU (or --device cuda).

    python bench/generation.py [--prompts 64] [--samples 4] [--max-tokens 24] [--batch-size 64]
                               [--hidden 128 --layers 4 --heads 4 --intermediate 512] [--threads N]

Creates a learner of the default config's size (untrained: speed does not depend on the weights, but an
untrained model rarely stops early, so every attempt runs to ``--max-tokens``; the token counts are the
real ones), then times the same calibration-shaped work (``--prompts`` arithmetic prompts x ``--samples``
samples at temperature 0.7) two ways: one ``generate`` call over all prompts (batched rows, KV cache),
and one call per prompt. Prints attempts/s and tokens/s of each and the batched/sequential ratio.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from zpd.configs.schema import LearnerConfig
from zpd.trainer.generation import build_generator
from zpd.trainer.model import create_learner, num_parameters


def run(gen, prompts: list[str], samples: int, max_tokens: int, batched: bool) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    if batched:
        outs = gen.generate(prompts, n=samples, temperature=0.7, max_tokens=max_tokens, seed=0)
    else:
        outs = [o for i, p in enumerate(prompts)
                for o in gen.generate([p], n=samples, temperature=0.7, max_tokens=max_tokens, seed=i)]
    seconds = time.perf_counter() - t0
    return seconds, sum(len(o) for o in outs), sum(c.num_tokens for o in outs for c in o)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=64, help="rows decoded together (embedded backend)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = random.Random(0)
    prompts = [f"{rng.randrange(10**rng.randint(1, 4))}+{rng.randrange(10**rng.randint(1, 4))}"
               for _ in range(args.prompts)]
    with tempfile.TemporaryDirectory() as tmp:
        learner = Path(tmp) / "learner"
        cfg = LearnerConfig(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                            intermediate_size=args.intermediate)
        create_learner(learner, cfg, seed=0)
        gen = build_generator("embedded", model=learner, device=args.device, batch_size=args.batch_size)
        run(gen, prompts[:2], 1, 4, True)  # warm-up
        print(f"learner: {num_parameters(learner):,} parameters, device {args.device}, torch threads "
              f"{torch.get_num_threads()}; {args.prompts} prompts x {args.samples} samples, "
              f"max {args.max_tokens} "
              f"tokens, batch size {args.batch_size}")
        rates = {}
        for name, batched in (("batched", True), ("one prompt at a time", False)):
            seconds, attempts, tokens = run(gen, prompts, args.samples, args.max_tokens, batched)
            rates[name] = (attempts / seconds, tokens / seconds)
            print(f"{name:>22}: {seconds:7.2f} s  {attempts / seconds:8.1f} attempts/s  "
                  f"{tokens / seconds:9.1f} tokens/s")
        gen.close()
    b, s = rates["batched"], rates["one prompt at a time"]
    print(f"{'ratio batched/one':>22}: {b[0] / s[0]:.2f}x attempts/s, {b[1] / s[1]:.2f}x tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
