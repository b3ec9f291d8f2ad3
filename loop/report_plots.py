"""The four main plots of ``zpd report`` (frontier, accuracy, bands, eval vs tokens), as PNG bytes.

matplotlib is imported inside ``figures`` only (it is optional: ``pip install 'zpd[report]'``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

from zpd.store.run_record import BAND_FATES, RoundData, RunData

BAND_COLORS = {
    "mastered": "#4c956c",
    "zpd": "#2c7da0",
    "beyond": "#d62828",
    "review": "#f77f00",
    "exam": "#7b2cbf",
}


def _aggregate(
    runs: list[RunData],
    get: Callable[[RoundData], float | None],
    x: Callable[[RoundData], float] = lambda r: r.round,
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per round number: mean x, and mean/min/max of ``get`` over the runs that have a value."""
    by_round: dict[int, list[tuple[float, float]]] = {}
    for run in runs:
        for r in run.rounds:
            y = get(r)
            if y is not None and not (isinstance(y, float) and math.isnan(y)):
                by_round.setdefault(r.round, []).append((x(r), y))
    xs: list[float] = []
    mean: list[float] = []
    lo: list[float] = []
    hi: list[float] = []
    for n in sorted(by_round):
        pts = by_round[n]
        ys = [p[1] for p in pts]
        xs.append(sum(p[0] for p in pts) / len(pts))
        mean.append(sum(ys) / len(ys))
        lo.append(min(ys))
        hi.append(max(ys))
    return xs, mean, lo, hi


def _plot_series(
    ax: Any,
    label: str,
    runs: list[RunData],
    get: Callable[[RoundData], float | None],
    x: Callable[[RoundData], float] = lambda r: r.round,
    color: str | None = None,
    style: str = "-",
) -> None:
    xs, mean, lo, hi = _aggregate(runs, get, x)
    if not xs:
        return
    name = label if len(runs) == 1 else f"{label} (mean of {len(runs)}, min-max)"
    (line,) = ax.plot(xs, mean, style, marker="o", markersize=3, label=name, color=color)
    if len(runs) > 1:
        ax.fill_between(xs, lo, hi, alpha=0.2, color=line.get_color(), linewidth=0)


def _accuracy_ylim(ax: Any) -> None:
    """0 to a little above the highest value drawn (at most 1), so small gains stay visible."""
    top = ax.dataLim.y1 if ax.has_data() else 1.0  # lines and min-max bands
    ax.set_ylim(-0.01, min(1.02, max(0.1, float(top) * 1.1)))


def _frontier_of(domain: str) -> Callable[[RoundData], float | None]:
    return lambda r: r.frontier.get(domain)


def png(fig: Any) -> bytes:
    """A figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def figures(runs: dict[str, list[RunData]], title: str) -> dict[str, bytes]:
    """The frontier, accuracy, bands and tokens plots (``runs``: label -> runs), keyed as ``report.PLOTS``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color_of = {label: colors[i % len(colors)] for i, label in enumerate(runs)}
    out: dict[str, bytes] = {}
    plotters = {"frontier": _frontier, "accuracy": _accuracy, "bands": _bands, "tokens": _tokens}
    for key, draw in plotters.items():
        fig = draw(plt, runs, color_of)
        fig.suptitle(title)
        if key == "bands":
            fig.tight_layout()
        out[key] = png(fig)
        plt.close(fig)
    return out


def _integer_rounds(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _frontier(plt: Any, runs: dict[str, list[RunData]], color_of: dict[str, str]) -> Any:
    """(1) frontier per domain vs round: one panel per domain."""
    domains = sorted({d for rs in runs.values() for run in rs for d in run.domains}) or ["(none)"]
    fig, axes = plt.subplots(1, len(domains), figsize=(5.5 * len(domains), 3.8), squeeze=False)
    for ax, domain in zip(axes[0], domains, strict=True):
        for label, rs in runs.items():
            _plot_series(ax, label, rs, _frontier_of(domain), color=color_of[label])
        ax.set_title(f"frontier: {domain}")
        ax.set_xlabel("round")
        ax.set_ylabel("frontier difficulty")
        _integer_rounds(ax)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    return fig


def _accuracy(plt: Any, runs: dict[str, list[RunData]], color_of: dict[str, str]) -> Any:
    """(2) eval and exam accuracy vs round."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), squeeze=False)
    panels: list[tuple[str, Callable[[RoundData], float | None]]] = [
        ("test accuracy (frozen eval set, test part)", lambda r: r.eval_accuracy),
        ("exam accuracy (rounds with an exam)", lambda r: r.exam_accuracy if r.exam_items else None),
    ]
    for ax, (what, get) in zip(axes[0], panels, strict=True):
        for label, rs in runs.items():
            _plot_series(ax, label, rs, get, color=color_of[label])
        ax.set_title(what)
        ax.set_xlabel("round")
        ax.set_ylabel("accuracy")
        _accuracy_ylim(ax)
        _integer_rounds(ax)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    return fig


def _bands(plt: Any, runs: dict[str, list[RunData]], color_of: dict[str, str]) -> Any:
    """(3) band sizes per round: stacked bars of fates, one panel per run (mean over seeds)."""
    labels = list(runs)
    fig, axes = plt.subplots(len(labels), 1, figsize=(8, 3.2 * len(labels)), squeeze=False)
    for ax, label in zip(axes[:, 0], labels, strict=True):
        rs = runs[label]
        rounds = sorted({r.round for run in rs for r in run.rounds})
        bottom = [0.0] * len(rounds)
        for fate in BAND_FATES:
            heights = []
            for n in rounds:
                vals = [r.bands.get(fate, 0) for run in rs for r in run.rounds if r.round == n]
                heights.append(sum(vals) / len(vals) if vals else 0.0)
            ax.bar(rounds, heights, bottom=bottom, label=fate, color=BAND_COLORS[fate])
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        mean = f" (mean of {len(rs)})" if len(rs) > 1 else ""
        ax.set_title(f"{label}: tasks per fate decided in the round{mean}")
        ax.set_xlabel("round")
        ax.set_ylabel("tasks")
        _integer_rounds(ax)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _tokens(plt: Any, runs: dict[str, list[RunData]], color_of: dict[str, str]) -> Any:
    """(4) eval accuracy vs cumulative training tokens."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, rs in runs.items():
        _plot_series(ax, label, rs, lambda r: r.eval_accuracy, x=lambda r: r.cumulative_train_tokens,
                     color=color_of[label])
    ax.set_title("eval accuracy vs cumulative training tokens")
    ax.set_xlabel("cumulative training tokens (incl. bootstrap)")
    ax.set_ylabel("eval accuracy")
    _accuracy_ylim(ax)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    return fig
