"""The ablation's tables (markdown) and plots (PNG, matplotlib's Agg backend as ``loop/report_plots.py``)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ablation_read import RunResult
from ablation_stats import (
    bootstrap_ci,
    bootstrap_diff_ci,
    discordant,
    mcnemar,
    normalised_auc,
    step_curve,
    tokens_to_target,
)

SOURCES = ("guided", "solo", "reference")


def arm_summary(arm: str, runs: Sequence[RunResult], ref: Sequence[RunResult] | None, budget: int,
                target: float, n_boot: int) -> dict[str, Any]:
    """One arm over its seeds (``runs`` and ``ref``, the zpd arm's runs, in the same seed order)."""
    ci = bootstrap_ci([list(r.test_items.values()) for r in runs], n_boot=n_boot, seed=13)
    out: dict[str, Any] = {"arm": arm, "test_at_b": [r.test_at_b for r in runs],
                           "test_mean": ci.mean, "test_ci": [ci.lo, ci.hi]}
    if ref is not None and ref is not runs:
        d = bootstrap_diff_ci([r.test_items for r in runs], [z.test_items for z in ref],
                              n_boot=n_boot, seed=14)
        out["diff_vs_zpd"] = {"mean": d.mean, "ci": [d.lo, d.hi]}
        pairs = [discordant(z.test_items, r.test_items) for r, z in zip(runs, ref, strict=True)]
        out["mcnemar_vs_zpd"] = [{"zpd_only": b, "arm_only": c, "p_two_sided": mcnemar(b, c),
                                  "p_zpd_better": mcnemar(b, c, "greater")} for b, c in pairs]
    out["auc"] = [normalised_auc(r.validation, budget) for r in runs]
    out["tokens_to_target"] = [tokens_to_target(r.validation, target, budget) for r in runs]
    totals = {s: sum(r.sources.get(s, 0) for r in runs) for s in SOURCES}
    n = sum(totals.values())
    out["source_share"] = {s: (totals[s] / n if n else None) for s in SOURCES}
    guided = sum(r.guided_targets for r in runs)
    out["copy_rate"] = sum(r.guided_copies for r in runs) / guided if guided else None
    out["result_copy_rate"] = sum(r.result_copies for r in runs) / guided if guided else None
    out["work_correct_rate"] = sum(r.work_correct for r in runs) / guided if guided else None
    out["validation_at_b"] = [r.validation_at_b for r in runs]
    out["rounds_at_b"] = [r.validation[r.at_b].round for r in runs]
    return out


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f} %"


def _tokens(values: list[int | None]) -> str:
    return ", ".join("> B" if v is None else f"{v / 1000:.0f}k" for v in values)


def table(summaries: Sequence[dict[str, Any]], tuning: dict[str, Any]) -> list[str]:
    """The side-by-side table, one row per arm."""
    lines = ["| arm | lr, replay | test acc at B (95 % CI) | vs zpd (95 % CI) | McNemar p vs zpd per seed "
             "| AUC val [0, B] | tokens to val target | targets guided / solo / reference "
             "| copy rate: work / results | right work |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        cell = tuning.get(s["arm"], {})
        lr_rr = f"{cell.get('learning_rate', '—')}, {cell.get('replay_ratio', '—')}"
        diff = s.get("diff_vs_zpd")
        dtext = "—" if diff is None else (f"{100 * diff['mean']:+.1f} pt "
                                          f"[{100 * diff['ci'][0]:+.1f}, {100 * diff['ci'][1]:+.1f}]")
        mc = s.get("mcnemar_vs_zpd")
        mtext = "—" if mc is None else ", ".join(f"{m['p_two_sided']:.3g}" for m in mc)
        auc = s["auc"]
        sh = s["source_share"]
        lines.append(
            f"| {s['arm']} | {lr_rr} | {s['test_mean']:.3f} [{s['test_ci'][0]:.3f}, {s['test_ci'][1]:.3f}] "
            f"| {dtext} | {mtext} | {statistics.mean(auc):.3f} | {_tokens(s['tokens_to_target'])} "
            f"| {_pct(sh['guided'])} / {_pct(sh['solo'])} / {_pct(sh['reference'])} "
            f"| {_pct(s['copy_rate'])} / {_pct(s['result_copy_rate'])} | {_pct(s['work_correct_rate'])} |")
    return lines


def plots(runs: dict[str, list[RunResult]], out: Path, budget: int) -> list[Path]:
    """accuracy_by_level.png and accuracy_vs_tokens.png; [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(8, 4))
    levels = sorted({lv for rs in runs.values() for r in rs for lv in r.test_by_level})
    width = 0.8 / max(1, len(runs))
    for k, (arm, rs) in enumerate(runs.items()):
        ys = [statistics.mean(r.test_by_level.get(lv, 0.0) for r in rs) for lv in levels]
        xs = [i + k * width for i in range(len(levels))]
        ax.bar(xs, ys, width, label=arm, color=colors[k % len(colors)])
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(levels))], [f"{lv:g}" for lv in levels])
    ax.set(xlabel="difficulty level", ylabel="test accuracy at B (mean over seeds)", ylim=(0, 1))
    ax.legend(fontsize=8)
    paths = [out / "accuracy_by_level.png"]
    fig.tight_layout()
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, split in zip(axes, ("validation", "test"), strict=True):
        for k, (arm, rs) in enumerate(runs.items()):
            c = colors[k % len(colors)]
            for j, r in enumerate(rs):
                pts = getattr(r, split)
                if pts[0].accuracy is None:
                    continue
                tx, ty = zip(*step_curve(pts), strict=True)
                ax.step(tx, ty, where="post", color=c, alpha=0.8, label=arm if j == 0 else None)
                rej = [(p.tokens, p.accuracy) for p in pts if not p.promoted and p.accuracy is not None]
                if rej:  # rejected candidates: their own markers, not a fall of the curve
                    ax.scatter(*zip(*rej, strict=True), marker="x", color=c, alpha=0.6, s=18)
        ax.axvline(budget, color="grey", ls=":", lw=1)
        ax.set(title=f"{split} accuracy of the current learner (x: rejected candidates)",
               xlabel="training tokens after round 0")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=8)
    paths.append(out / "accuracy_vs_tokens.png")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


def bar_lines(summaries: Sequence[dict[str, Any]], n_seeds: int) -> list[str]:
    """Issue 13's bar, checked on what was measured (judged on --full: 5 seeds and the source table)."""
    by = {s["arm"]: s for s in summaries}
    lines = ["## The bar (issue 13)", ""]
    for arm in ("random", "all-correct"):
        d = by.get(arm, {}).get("diff_vs_zpd")
        if d is None:
            lines.append(f"* zpd vs {arm}: not measured.")
            continue
        gain, lo, hi = 0.0 - d["mean"], 0.0 - d["ci"][1], 0.0 - d["ci"][0]  # zpd minus the arm
        ok = gain >= 0.03 and lo > 0
        lines.append(f"* zpd vs {arm}: {100 * gain:+.1f} points of test accuracy at B, 95 % CI "
                     f"[{100 * lo:+.1f}, {100 * hi:+.1f}] over {n_seeds} seeds: "
                     f"{'meets' if ok else 'does not meet'} '>= 3 points with a CI excluding 0'.")
    z, u = by["zpd"]["tokens_to_target"], by.get("src-uniform-all", {}).get("tokens_to_target")
    if u is None:
        lines.append("* tokens to the validation target vs uniform: needs --full (the source table).")
    elif None in z or None in u:
        lines.append(f"* tokens to the validation target: zpd {_tokens(z)}, uniform {_tokens(u)} "
                     "(some seed did not reach it within B; no ratio).")
    else:
        ratio = statistics.mean(z) / statistics.mean(u) if statistics.mean(u) else float("inf")
        lines.append(f"* tokens to the validation target: zpd / uniform = {ratio:.2f} "
                     f"({'meets' if ratio <= 0.5 else 'does not meet'} '<= 0.5').")
    if n_seeds < 5:
        lines.append(f"* {n_seeds} seeds: the bar is judged on 5 (--full).")
    return lines
