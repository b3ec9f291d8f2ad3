"""torch's thread count against a round's own work: generation and training, at 1, 2 and "auto" threads,
with and without one competing CPU-bound process, side by side.

    python bench/threads.py                          # smoke and default learner sizes
    python bench/threads.py --sizes default --repeats 3

For each learner size (``configs/smoke.toml``'s and ``configs/default.toml``'s, made locally) and each
setting, in this process (``torch.set_num_threads`` before each measurement):

* ``gen``: the embedded generator answering ``--prompts`` arithmetic prompts, 2 samples each, up to the
  config's ``calibration.max_tokens`` (a CALIBRATE batch);
* ``train``: ``--steps`` SFT steps of the config's batch size on worked answers (a TRAIN job's loop);

the best of ``--repeats`` wall times. "auto" is ``trainer/threads.py:choose_threads`` at that moment (its
load average lags a process started a second ago by up to a minute, so the competitor is started
``--warmup`` seconds before its half of the table). ``best`` names the fastest setting; ``auto/best`` is the
ratio the goal bounds (<= 1.10 with one competitor).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup(size: str, workdir: Path):
    from zpd.configs.load import load_config
    from zpd.trainer.model import create_learner
    from zpd.trainer.threads import estimate_parameters

    cfg = load_config(ROOT / "configs" / f"{size}.toml")
    learner = workdir / size
    create_learner(learner, cfg.learner, seed=0)
    params = estimate_parameters(cfg.learner.hidden_size, cfg.learner.num_layers,
                                 cfg.learner.intermediate_size)
    return cfg, learner, params


def _gen_seconds(cfg, learner: Path, num_prompts: int) -> float:
    from zpd.trainer.generation import build_generator

    gen = build_generator("embedded", model=learner, device="cpu", batch_size=cfg.calibration.batch_size)
    prompts = [f"{i * 37 % 1000}+{i * 91 % 1000}" for i in range(num_prompts)]
    t0 = time.perf_counter()
    gen.generate(prompts, n=2, temperature=0.7, max_tokens=cfg.calibration.max_tokens, seed=1)
    seconds = time.perf_counter() - t0
    gen.close()
    return seconds


def _train_seconds(cfg, learner: Path, steps: int, workdir: Path) -> float:
    from zpd.trainer.sft import SFTExample, train_sft

    n = steps * cfg.train.batch_size
    examples = [SFTExample(f"{i}+{i * 7 % 100}",
                           f"{i % 10}+{i * 7 % 10}={i % 10 + i * 7 % 10}>{i + i * 7 % 100}")
                for i in range(n)]
    result = train_sft(learner, examples, workdir / "out", epochs=1, batch_size=cfg.train.batch_size,
                       learning_rate=1e-3)
    return result.seconds


def measure(size: str, settings: list[str], args, workdir: Path) -> dict[str, tuple[float, float, int]]:
    import torch

    from zpd.trainer.threads import choose_threads

    cfg, learner, params = _setup(size, workdir)
    out = {}
    for setting in settings:
        n = choose_threads("auto" if setting == "auto" else int(setting), num_params=params)
        torch.set_num_threads(n)
        gen = min(_gen_seconds(cfg, learner, args.prompts) for _ in range(args.repeats))
        train = min(_train_seconds(cfg, learner, args.steps, workdir) for _ in range(args.repeats))
        out[setting] = (gen, train, n)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="smoke,default")
    ap.add_argument("--settings", default="1,2,auto")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds the competitor runs before measuring")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="zpd-threads-"))
    settings = args.settings.split(",")
    table = {}
    for competing in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if competing else None
        try:
            if hog is not None:
                time.sleep(args.warmup)
            for size in args.sizes.split(","):
                table[(size, competing)] = measure(size, settings, args, workdir)
                print(f"# {size} competitor={competing}: {table[(size, competing)]} "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    print(f"\nCPUs usable: {len(os.sched_getaffinity(0))}; load average now {os.getloadavg()[0]:.1f} "
          f"(a shared machine: other jobs ran too)")
    head = " ".join(f"{s + ' gen_s':>10} {s + ' train_s':>10}" for s in settings)
    print(f"{'size':>8} {'competitor':>10} {head} {'auto=n':>6} {'best':>5} {'auto/best':>9}")
    for (size, competing), res in table.items():
        cells = " ".join(f"{res[s][0]:>10.2f} {res[s][1]:>10.2f}" for s in settings)
        total = {s: res[s][0] + res[s][1] for s in settings}
        best = min(total, key=total.get)
        ratio = total["auto"] / total[best] if "auto" in total else float("nan")
        auto_n = res["auto"][2] if "auto" in res else "-"
        print(f"{size:>8} {'yes' if competing else 'no':>10} {cells} {auto_n:>6} {best:>5} {ratio:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
