"""Bench: calibration through the ``served`` backend with 1 and 2 `zpd serve` replicas, in one run.

    python bench/served.py [--prompts 24] [--samples 4] [--max-tokens 32] [--repeats 2] [--concurrency 2]

Creates a learner of configs/served.toml's size (untrained: speed does not depend on the weights; the
token counts are the real ones), starts replicas on it with the CPU command of configs/served.toml, and
times calibration-shaped work: ``--prompts`` arithmetic prompts x ``--samples`` solo samples, each with
its own seed, at temperature 1.0, as CALIBRATE sends it. For each replica count it prints the start-up
time (until every replica answers /health), samples/s and completion tokens/s, best of ``--repeats``,
then the 2-replica / 1-replica ratio, and checks that both pools drew the very same samples (a sample
depends on its seed only, not on which replica drew it). The embedded backend on the same work is the
reference. Timings on a shared machine are upper bounds: compare only within one run.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from zpd.configs.schema import ArithmeticConfig, LearnerConfig
from zpd.configs.served import ServedConfig
from zpd.loop.domains.arithmetic import Arithmetic
from zpd.trainer.generate import EmbeddedGenerator
from zpd.trainer.model import create_learner, num_parameters
from zpd.trainer.served import ServedGenerator, ServedSettings

COMMAND = "{python} -m zpd.loop.cli serve --learner {learner} --host {host} --port {port}"


def timed(gen, prompts: list[str], samples: int, max_tokens: int, repeats: int) -> tuple[float, int, list]:
    seeds = [[1000 + samples * i + j for j in range(samples)] for i in range(len(prompts))]
    best, outs = float("inf"), []
    for _ in range(repeats):
        t0 = time.perf_counter()
        outs = gen.generate(prompts, n=samples, temperature=1.0, max_tokens=max_tokens, sample_seeds=seeds)
        best = min(best, time.perf_counter() - t0)
    assert not any(c.failed for cs in outs for c in cs), "a sample failed"
    return best, sum(c.num_tokens for cs in outs for c in cs), [[c.text for c in cs] for cs in outs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2, help="served.max_concurrency_per_replica")
    args = ap.parse_args(argv)
    rng = random.Random(0)
    domain = Arithmetic(ArithmeticConfig())
    prompts = [domain.make_task(rng.choice([1.0, 2.0, 3.0]), rng).prompt for _ in range(args.prompts)]
    with tempfile.TemporaryDirectory() as tmp:
        learner = Path(tmp) / "learner"
        create_learner(learner, LearnerConfig(hidden_size=64, num_layers=2, num_heads=4,
                                              intermediate_size=128, max_positions=128), seed=0)
        print(f"learner: {num_parameters(learner):,} parameters; {args.prompts} prompts x {args.samples} "
              f"samples, max {args.max_tokens} tokens; cpus: {os.cpu_count()}, OMP_NUM_THREADS="
              f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; load average {os.getloadavg()[0]:.1f}")
        rows, texts = [], {}
        emb = EmbeddedGenerator(learner, batch_size=64)
        secs, toks, _ = timed(emb, prompts, args.samples, args.max_tokens, args.repeats)
        rows.append(("embedded (reference)", 0.0, secs, toks))
        for n in (1, 2):
            cfg = ServedConfig(num_replicas=n, command=COMMAND, max_concurrency_per_replica=args.concurrency,
                               start_timeout_seconds=300)
            t0 = time.perf_counter()
            gen = ServedGenerator(learner, ServedSettings(cfg, Path(tmp) / f"served{n}"))
            start = time.perf_counter() - t0
            try:
                secs, toks, texts[n] = timed(gen, prompts, args.samples, args.max_tokens, args.repeats)
            finally:
                gen.close()
            rows.append((f"served, {n} replica{'s' * (n > 1)}", start, secs, toks))
    samples = args.prompts * args.samples
    print("\n| backend | start-up s | calibrate s | samples/s | tokens/s |\n|---|---|---|---|---|")
    for name, start, secs, toks in rows:
        print(f"| {name} | {start:.1f} | {secs:.2f} | {samples / secs:.1f} | {toks / secs:.0f} |")
    ratio = rows[1][2] / rows[2][2]
    print(f"\n2 replicas / 1 replica, calibration throughput: {ratio:.2f}x")
    print(f"same samples from 1 and 2 replicas (per-sample seeds): {'yes' if texts[1] == texts[2] else 'NO'}")
    return 0 if texts[1] == texts[2] else 1


if __name__ == "__main__":
    sys.exit(main())
