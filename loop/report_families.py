"""The per-domain plot of ``zpd report``: every domain's frontier, ZPD yield and test accuracy by round, in
one figure.

With reasoning-gym each family is a domain (``rg:<family>``), so this is the per-family view: where each
family's frontier stands, how much of its calibrated work lands in the band (what the ``yield``
allocation follows, ``loop/allocation.py``), and its solo accuracy on the test part of its frozen eval
items (read by no decision; ``rounds.eval_by_domain_json``). One line per domain (and per run label
when several runs are overlaid; the first run of a label stands for it).
"""

from __future__ import annotations

from typing import Any


def families_png(runs: dict[str, list[Any]], title: str) -> bytes:
    """PNG bytes: frontier, ZPD yield and test accuracy per domain vs round (``runs``: label -> runs)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from .report_plots import png

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2), squeeze=False)
    panels = (
        ("frontier per domain", "frontier difficulty", lambda r, d: r.frontier.get(d)),
        ("ZPD yield per domain: (zpd + exam) / calibrated", "yield", lambda r, d: r.yield_by_domain.get(d)),
        ("test accuracy per domain (solo, held-out items)", "test accuracy",
         lambda r, d: r.test_by_domain.get(d)),
    )
    for ax, (name, ylabel, get) in zip(axes[0], panels, strict=True):
        for label, rs in runs.items():
            if not rs:
                continue
            run = rs[0]
            for domain in run.domains:
                pts = [(r.round, get(r, domain)) for r in run.rounds if get(r, domain) is not None]
                if pts:
                    tag = domain if len(runs) == 1 else f"{label}: {domain}"
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=tag)
        ax.set_title(name)
        ax.set_xlabel("round")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    out = png(fig)
    plt.close(fig)
    return out
