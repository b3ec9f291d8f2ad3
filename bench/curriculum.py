"""Curriculum policies side by side: training tokens to a target eval accuracy, on the same frozen eval set.

    # zpd-band, uniform, fixed-schedule x 3 seeds, < 1 h on 2 cores
    python bench/curriculum.py
    # the others, same work dir
    python bench/curriculum.py --policies bandit,learnability,self-play --rounds 12
    python bench/curriculum.py --report-only \\
        --policies zpd-band,uniform,fixed-schedule,bandit,learnability,self-play

What it does, with the real daemon (``zpd start`` subprocesses) throughout:

1. **Round 0 once** (``zpd start --rounds 0`` then ``zpd snapshot``): the bootstrap learner and the frozen
   eval set every run starts from (``--from-snapshot``), so all policies and seeds are measured on the
   same eval items. The seeds vary everything after round 0 (candidates, sampling, training order).
2. **One run per (policy, seed)** with ``curriculum.policy``, ``run.seed`` and the same training-token
   budget (``run.max_train_tokens`` = round 0's tokens + ``--budget-tokens``) and round cap; ``--jobs``
   runs at a time (each with cores / jobs torch threads). A run that exists is resumed, not redone.
3. **Adaptive vs fixed-k calibration**: per seed, round 1 of zpd-band again with
   ``calibration.adaptive=false``. Round 1's candidates are a function of the seed and the round-0
   store, so both calibrate the same tasks: their fates are compared task by task (agreement) and their
   model calls counted (calls per band decision).
4. **Results**: per policy, training tokens (after round 0) to the first round whose eval accuracy reaches
   ``--target`` (mean and spread over seeds; a seed that never reaches it within the budget counts as
   "> budget" (not reached within the budget, or within the round cap: "rounds run" and "tokens used" say
   which) and the mean is then a lower bound, printed as such), the ratio to ``uniform``, the best
   eval reached, and the plots of ``loop/report.py`` (frontier, eval and exam accuracy, band sizes per
   round, eval vs tokens; mean and min-max over seeds) with a markdown report in ``--out``.

Each policy grows its own exam, so exam accuracies are plotted but not compared across policies.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POLICIES = ["zpd-band", "uniform", "fixed-schedule", "bandit", "learnability", "self-play"]


def zpd(args: list[str], log: Path, threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log, "a") as fh:
        proc = subprocess.run([sys.executable, "-m", "zpd.loop.cli", *args], stdout=fh,
                              stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-5:]
        raise SystemExit(f"zpd {' '.join(args[:1])} failed (exit {proc.returncode}); see {log}:\n"
                         + "\n".join(tail))


def round0(work: Path, config: Path, sets: list[str], threads: int) -> Path:
    archive = work / "round0.tar"
    if archive.is_file():
        return archive
    state = work / "round0"
    zpd(["start", "--config", str(config), "--state-dir", str(state), "--rounds", "0",
         "--set", "metrics.port=0", *sets],
        work / "round0.log", threads)
    zpd(["snapshot", "--state-dir", str(state), "--out", str(archive)], work / "round0.log", threads)
    return archive


def round0_tokens(work: Path) -> int:
    conn = sqlite3.connect(f"file:{work / 'round0' / 'state.db'}?mode=ro", uri=True)
    return conn.execute("SELECT coalesce(train_tokens, 0) FROM rounds WHERE id = 0").fetchone()[0]


def run_one(work: Path, config: Path, archive: Path, policy: str, seed: int, budget: int, rounds: int,
            sets: list[str], threads: int, extra: list[str] = (), name: str | None = None) -> Path:
    state = work / "runs" / (name or f"{policy}-s{seed}")
    args = ["start", "--config", str(config), "--state-dir", str(state), "--rounds", str(rounds),
            "--set", f'curriculum.policy="{policy}"', "--set", f"run.seed={seed}",
            "--set", f"run.max_train_tokens={budget}", "--set", "metrics.port=0", *sets, *extra]
    if not (state / "state.db").exists():
        args += ["--from-snapshot", str(archive)]
    began = time.monotonic()
    zpd(args, work / "runs" / f"{state.name}.log", threads)
    print(f"  {state.name}: done in {time.monotonic() - began:.0f} s", flush=True)
    return state


def tokens_to_target(data, target: float, base_tokens: int, budget: int) -> tuple[int | None, float]:
    """(training tokens after round 0 at the first round with eval >= target, or None; best eval of any
    round after round 0)."""
    later = [r for r in data.rounds if r.round > 0 and r.eval_accuracy is not None]
    best = max((r.eval_accuracy for r in later), default=0.0)
    for r in later:
        used = r.cumulative_train_tokens - base_tokens
        if r.eval_accuracy >= target and used <= budget:
            return used, best
    return None, best


def agreement(fixed_dir: Path, adaptive_dir: Path) -> dict:
    """Round 1 of the same seed calibrated with fixed k and adaptively: fates per task, model calls."""
    def fates(d: Path) -> tuple[dict[str, str], int, int, int]:
        conn = sqlite3.connect(f"file:{d / 'state.db'}?mode=ro", uri=True)
        f = dict(conn.execute("SELECT content_hash, fate FROM tasks "
                              "WHERE round = 1 AND fate_round = 1").fetchall())
        calls, fixed = conn.execute("SELECT num_attempts, num_attempts_fixed FROM rounds "
                                    "WHERE id = 1").fetchone()
        return f, len(f), calls, fixed
    fx, n_fx, calls_fx, _ = fates(fixed_dir)
    ad, n_ad, calls_ad, _ = fates(adaptive_dir)
    common = set(fx) & set(ad)
    # Exam admission depends on the exam's room; compare band decisions (exam items are in-band).
    def band(f: str) -> str:
        return "zpd" if f == "exam" else f
    same = sum(band(fx[h]) == band(ad[h]) for h in common)
    return {"tasks": len(common), "agree": same, "agreement": same / len(common) if common else None,
            "calls_fixed": calls_fx, "calls_adaptive": calls_ad,
            "decisions_fixed": n_fx, "decisions_adaptive": n_ad,
            "calls_per_decision_fixed": calls_fx / n_fx if n_fx else None,
            "calls_per_decision_adaptive": calls_ad / n_ad if n_ad else None}


def fmt_tokens(values: list[int | None], used: list[int],
               budget: int) -> tuple[str, float | None, bool, bool]:
    """(text, mean or lower bound, all seeds reached, the seeds that did not reach it spent the budget)."""
    reached = [v for v in values if v is not None]
    exhausted = all(u >= budget for v, u in zip(values, used, strict=True) if v is None)
    if not reached:
        return (("> budget" if exhausted else "not reached (round cap before the budget)"),
                None, False, exhausted)
    if len(reached) < len(values):
        if not exhausted:
            return (f"{len(reached)}/{len(values)} reached (others: round cap before the budget)",
                    None, False, False)
        lower = statistics.mean([v if v is not None else budget for v in values])
        return f">= {lower:,.0f} ({len(reached)}/{len(values)} reached; others > budget)", lower, False, True
    mean = statistics.mean(reached)
    sd = statistics.stdev(reached) if len(reached) > 1 else 0.0
    return f"{mean:,.0f} ± {sd:,.0f} (min {min(reached):,}, max {max(reached):,})", mean, True, True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "default.toml")
    ap.add_argument("--policies", default="zpd-band,uniform,fixed-schedule")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget-tokens", type=int, default=400_000,
                    help="training tokens per run after round 0")
    ap.add_argument("--rounds", type=int, default=30,
                    help="round cap per run (the token budget is meant to bind)")
    ap.add_argument("--target", type=float, default=0.16, help="target eval accuracy")
    ap.add_argument("--also-targets", default="0.14,0.18,0.20", help="more targets, in a second table")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/zpd-bench-curriculum"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "curriculum")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra --set for every run")
    ap.add_argument("--truncation", default="calibration.solo_stop_after_failures=1",
                    help="settings of the truncated sequential test compared with fixed k in round 1 "
                         "('' = none)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    from zpd.loop.report import load_state_dir, render

    policies = [p for p in args.policies.split(",") if p]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    for p in policies:
        if p not in POLICIES:
            ap.error(f"--policies: unknown policy {p!r} (known: {', '.join(POLICIES)})")
    sets = [x for s in args.sets for x in ("--set", s)]
    work = args.work
    (work / "runs").mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 2
    threads = max(1, cores // max(1, args.jobs))
    began = time.monotonic()
    if not args.report_only:
        print(f"round 0 (shared; {cores} threads) ...", flush=True)
        archive = round0(work, args.config, sets, cores)
    base = round0_tokens(work)
    budget_total = base + args.budget_tokens
    jobs = [(p, s, None, []) for s in seeds for p in policies]
    jobs += [("zpd-band", s, f"fixed-k-s{s}", ["--set", "calibration.adaptive=false"]) for s in seeds]
    trunc = [x for t in args.truncation.split(",") if t for x in ("--set", t)]
    if trunc:
        jobs += [("zpd-band", s, f"truncated-s{s}", trunc) for s in seeds]
    if not args.report_only:
        print(f"{len(jobs)} runs, {args.jobs} at a time, {threads} threads each ...", flush=True)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_one, work, args.config, archive, p, s, budget_total,
                                   1 if name else args.rounds, sets, threads, extra, name)
                       for p, s, name, extra in jobs]
            for f in futures:
                f.result()
    runs = {p: [load_state_dir(work / "runs" / f"{p}-s{s}") for s in seeds] for p in policies}

    lines = [f"# Curriculum policies side by side ({time.strftime('%Y-%m-%d')})", "",
             f"Command: `python bench/curriculum.py --policies {','.join(policies)} --seeds {args.seeds} "
             f"--budget-tokens {args.budget_tokens} --rounds {args.rounds} --target {args.target} "
             f"--jobs {args.jobs}"
             + "".join(f" --set {s}" for s in args.sets) + "`", "",
             "Config `"
             f"{args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config}`; "
             f"round 0 shared ({base:,} bootstrap tokens, not counted); budget {args.budget_tokens:,} "
             f"training tokens after round 0, at most {args.rounds} rounds; target eval accuracy "
             f"{args.target} on the frozen eval set "
             f"(eval of the round-0 learner: {runs[policies[0]][0].rounds[0].eval_accuracy:.3f}).", "",
             "## Training tokens to the target", "",
             "| policy | tokens to target (mean ± sd over seeds) | per seed | ratio to uniform "
             "| best eval (per seed) "
             "| rounds run | tokens used |", "|---|---|---|---|---|---|---|"]
    summary: dict[str, dict] = {}
    for p in policies:
        per = [tokens_to_target(d, args.target, base, args.budget_tokens) for d in runs[p]]
        used = [d.rounds[-1].cumulative_train_tokens - base for d in runs[p]]
        text, mean, complete, exhausted = fmt_tokens([t for t, _ in per], used, args.budget_tokens)
        summary[p] = {"tokens": [t for t, _ in per], "mean": mean, "complete": complete,
                      "best": [b for _, b in per],
                      "rounds": [len(d.rounds) - 1 for d in runs[p]], "used": used, "text": text,
                      "exhausted": exhausted}
    uni = summary.get("uniform")
    for p in policies:
        s = summary[p]
        if uni is None:
            ratio = "-"
        elif s["mean"] is None:
            ratio = "-"
        elif uni["mean"] is None and not uni["exhausted"]:
            ratio = "n/a (uniform hit the round cap before the budget)"
        elif uni["mean"] is None:
            ratio = f"< {s['mean'] / args.budget_tokens:.2f} (uniform > budget)"
        elif not uni["complete"]:
            ratio = (f"<= {s['mean'] / uni['mean']:.2f}" if s["complete"]
                     else f"~ {s['mean'] / uni['mean']:.2f}")
        else:
            ratio = f"{s['mean'] / uni['mean']:.2f}" if s["complete"] else f">= {s['mean'] / uni['mean']:.2f}"
        s["ratio"] = ratio
        per_seed = ", ".join(f"{t:,}" if t is not None else "> budget" if u >= args.budget_tokens
                             else f"not in {r} rounds"
                             for t, u, r in zip(s["tokens"], s["used"], s["rounds"], strict=True))
        lines.append(f"| {p} | {s['text']} | {per_seed} | {ratio} | "
                     f"{', '.join(f'{b:.3f}' for b in s['best'])} "
                     f"| {', '.join(map(str, s['rounds']))} | {', '.join(f'{u:,}' for u in s['used'])} |")

    # How the answer depends on the target: tokens to each of several targets (mean over seeds when all
    # reached it; a lower bound, counting the budget for seeds that did not, when some did).
    targets = sorted({args.target, *(float(t) for t in args.also_targets.split(",") if t)})
    lines += ["", "## Tokens to other targets (mean over seeds; k/n = seeds that reached it; "
              "\"not reached\": some seed hit the round cap before the budget)", "",
              "| policy | " + " | ".join(f"eval >= {t:.2f}" for t in targets) + " | mean best eval |",
              "|---|" + "---|" * (len(targets) + 1)]
    for p in policies:
        cells = []
        for t in targets:
            got = [tokens_to_target(d, t, base, args.budget_tokens)[0] for d in runs[p]]
            reached = [g for g in got if g is not None]
            spent = all(u >= args.budget_tokens
                        for g, u in zip(got, summary[p]["used"], strict=True) if g is None)
            if not reached:
                cells.append("> budget" if spent else "not reached")
            elif len(reached) == len(got):
                cells.append(f"{statistics.mean(reached):,.0f}")
            elif spent:
                lower = statistics.mean([g if g is not None else args.budget_tokens for g in got])
                cells.append(f">= {lower:,.0f} ({len(reached)}/{len(got)})")
            else:
                cells.append(f"{len(reached)}/{len(got)} reached")
        summary[p]["by_target"] = dict(zip(map(str, targets), cells, strict=True))
        lines.append(f"| {p} | " + " | ".join(cells) + f" | {statistics.mean(summary[p]['best']):.3f} |")

    agree = [agreement(work / "runs" / f"fixed-k-s{s}", work / "runs" / f"zpd-band-s{s}") for s in seeds]
    lines += ["", "## Adaptive vs fixed-k calibration (round 1 of zpd-band, same tasks)", "",
              "| seed | tasks | agreement | calls fixed-k | calls adaptive "
              "| calls per decision fixed / adaptive | ratio |",
              "|---|---|---|---|---|---|---|"]
    for s, a in zip(seeds, agree, strict=True):
        lines.append(f"| {s} | {a['tasks']} | {a['agreement']:.3f} | {a['calls_fixed']} | "
                     f"{a['calls_adaptive']} | "
                     f"{a['calls_per_decision_fixed']:.2f} / {a['calls_per_decision_adaptive']:.2f} | "
                     f"{a['calls_per_decision_adaptive'] / a['calls_per_decision_fixed']:.2f} |")
    tot = {k: sum(a[k] for a in agree) for k in ("tasks", "agree", "calls_fixed", "calls_adaptive",
                                                   "decisions_fixed", "decisions_adaptive")}
    cf, ca = tot["calls_fixed"] / tot["decisions_fixed"], tot["calls_adaptive"] / tot["decisions_adaptive"]
    lines.append(f"| all | {tot['tasks']} | {tot['agree'] / tot['tasks']:.3f} | {tot['calls_fixed']} | "
                 f"{tot['calls_adaptive']} | {cf:.2f} / {ca:.2f} | {ca / cf:.2f} |")
    trunc_dirs = [work / "runs" / f"truncated-s{s}" for s in seeds]
    if args.truncation and all((d / "state.db").exists() for d in trunc_dirs):
        lines += ["", f"Truncated sequential test (`{args.truncation}`), same round 1:", "",
                  "| seed | tasks | agreement with fixed k | calls fixed-k | calls truncated | ratio |",
                  "|---|---|---|---|---|---|"]
        tt = {"tasks": 0, "agree": 0, "cf": 0, "ca": 0, "df": 0, "da": 0}
        for s, d in zip(seeds, trunc_dirs, strict=True):
            a = agreement(work / "runs" / f"fixed-k-s{s}", d)
            lines.append(f"| {s} | {a['tasks']} | {a['agreement']:.3f} | {a['calls_fixed']} | "
                         f"{a['calls_adaptive']} | "
                         f"{a['calls_per_decision_adaptive'] / a['calls_per_decision_fixed']:.2f} |")
            for k, v in (("tasks", "tasks"), ("agree", "agree"), ("cf", "calls_fixed"),
                         ("ca", "calls_adaptive"),
                         ("df", "decisions_fixed"), ("da", "decisions_adaptive")):
                tt[k] += a[v]
        lines.append(f"| all | {tt['tasks']} | {tt['agree'] / tt['tasks']:.3f} | {tt['cf']} | {tt['ca']} | "
                     f"{(tt['ca'] / tt['da']) / (tt['cf'] / tt['df']):.2f} |")
    # Model calls per band decision over every round of every adaptive run (num_attempts_fixed: what fixed
    # k would have drawn for the same decisions).
    drawn = sum(r.num_attempts or 0 for ds in runs.values() for d in ds for r in d.rounds)
    fixed = sum(r.num_attempts_fixed or 0 for ds in runs.values() for d in ds for r in d.rounds)
    if fixed:
        lines += ["", f"Over all rounds of all runs above: {drawn:,} calibration samples drawn "
                      "where fixed k would have "
                      f"drawn {fixed:,} (ratio {drawn / fixed:.2f})."]

    args.out.mkdir(parents=True, exist_ok=True)
    paths = render(runs, args.out, title="curriculum policies (mean, min-max over seeds)")
    plots = "\n".join(f"![{p.stem}]({p.name})" for p in paths if p.suffix == ".png")
    wall = ("Tables and plots re-made from the runs in the work directory (--report-only); the wall times of "
            "the invocations that ran them are in bench.log." if args.report_only else
            f"Wall time of this invocation: {time.monotonic() - began:.0f} s on {cores} cores "
            f"({args.jobs} runs at a time).")
    lines += ["", "## Plots", "", plots, "", wall, ""]
    text = "\n".join(lines)
    (args.out / "README.md").write_text(text)
    (args.out / "summary.json").write_text(json.dumps({"summary": summary, "agreement": agree},
                                                      indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
