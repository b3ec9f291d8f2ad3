"""``zpd report``: plots and tables of a run. Read-only; works while the daemon runs.

Two layers, so a benchmark can reuse them:

- ``load_run(db) -> RunData``: the committed rounds of one store (opened read-only, as ``zpd status``
  does), one ``RoundData`` per round. Columns that a store of an older format lacks read as None.
- ``render(runs, out_dir, title) -> list[Path]``: PNG plots (matplotlib, Agg) overlaying several runs,
  ``report.md`` (a per-round table per run, links to the plots) and ``report.json`` (the same data).
  ``runs`` maps a label to one ``RunData`` or to a list of them (seeds of one setting: the plots show the
  mean with a min-max band).

matplotlib is optional (``pip install 'zpd[report]'``); only ``render`` imports it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zpd.configs import vocabulary

from .status import rounds_phrase

BAND_FATES = list(vocabulary.CALIBRATED_FATES)
BAND_COLORS = {"mastered": "#4c956c", "zpd": "#2c7da0", "beyond": "#d62828", "review": "#f77f00", "exam": "#7b2cbf"}
PLOTS = {
    "frontier": "frontier.png",
    "accuracy": "accuracy.png",
    "bands": "bands.png",
    "tokens": "eval_vs_tokens.png",
    "families": "families.png",   # frontier and yield of every domain (loop/report_families.py)
}
INSTALL_HINT = "pip install 'zpd[report]'"


class ReportError(Exception):
    """The report cannot be made; ``code`` is the exit code (2 bad input, 1 runtime, 4 corrupt store)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class RoundData:
    round: int
    eval_accuracy: float | None = None
    exam_accuracy: float | None = None
    exam_items: int | None = None               # size of the exam version this round measured on
    promoted: bool | None = None
    train_tokens: int | None = None
    cumulative_train_tokens: int = 0            # train tokens of rounds <= this one
    num_train_examples: int | None = None
    num_candidates: int | None = None
    num_duplicates: int | None = None
    yield_ratio: float | None = None
    frontier: dict[str, float] = field(default_factory=dict)
    bands: dict[str, int] = field(default_factory=dict)   # fate -> tasks whose fate was decided this round
    started_at: float | None = None
    finished_at: float | None = None
    wall_seconds: float | None = None
    policy: str | None = None                   # curriculum.policy of the round's config
    # Present only in stores with the curriculum migration (else None):
    num_attempts: int | None = None             # model calls CALIBRATE made
    num_attempts_fixed: int | None = None       # what fixed-k sampling would have made
    num_selected: int | None = None             # tasks of this round selected for training
    decontamination: dict[str, Any] | None = None
    yield_by_domain: dict[str, float] = field(default_factory=dict)   # (zpd + exam) / calibrated, per domain


@dataclass
class RunData:
    rounds: list[RoundData] = field(default_factory=list)
    policy: str | None = None                   # the newest round's curriculum policy
    domains: list[str] = field(default_factory=list)
    state_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunData:
        rounds = [RoundData(**r) for r in d.get("rounds", [])]
        return cls(rounds=rounds, policy=d.get("policy"), domains=list(d.get("domains", [])),
                   state_dir=d.get("state_dir"))


# ---------------------------------------------------------------------------------------------- loading


def _conn(db: Any) -> sqlite3.Connection:
    return db.conn if hasattr(db, "conn") else db


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})").fetchall()}


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def load_run(db: Any, state_dir: Path | str | None = None) -> RunData:
    """The committed rounds of a store (a sqlite-utils Database or a sqlite3 connection), ascending."""
    conn = _conn(db)
    rcols = _columns(conn, "rounds")
    tcols = _columns(conn, "tasks")
    optional = [c for c in ("yield_ratio", "num_attempts", "num_attempts_fixed", "decontamination_json") if c in rcols]
    base = ["id", "eval_accuracy", "exam_accuracy", "exam_items", "promoted", "train_tokens", "num_train_examples",
            "num_candidates", "num_duplicates", "started_at", "finished_at", "config_json"]
    rows = conn.execute(
        f"SELECT {', '.join(base + optional)} FROM rounds WHERE status = 'committed' ORDER BY id").fetchall()
    frontier: dict[int, dict[str, float]] = {}
    for r, domain, value in conn.execute("SELECT round, domain, value FROM frontier ORDER BY round, domain"):
        frontier.setdefault(r, {})[domain] = value
    bands: dict[int, dict[str, int]] = {}
    marks = ", ".join("?" * len(BAND_FATES))
    for r, fate, n in conn.execute(
            f"SELECT fate_round, fate, count(*) FROM tasks WHERE fate_round IS NOT NULL AND fate IN ({marks}) "
            "GROUP BY fate_round, fate", BAND_FATES):
        bands.setdefault(r, {})[fate] = n
    from zpd.store.yields import domain_yields

    yields = {r: {d: a / c for d, (a, c) in by.items() if c} for r, by in domain_yields(conn, 0, 1 << 62).items()}
    selected: dict[int, int | None] = {}
    if "selected" in tcols:
        for r, n in conn.execute("SELECT fate_round, sum(selected) FROM tasks WHERE fate_round IS NOT NULL "
                                 "GROUP BY fate_round"):
            selected[r] = _int(n)

    run = RunData(state_dir=str(state_dir) if state_dir is not None else None)
    cumulative = 0
    for row in rows:
        v = dict(zip(base + optional, row, strict=True))
        n = v["id"]
        cumulative += v["train_tokens"] or 0
        try:
            config = json.loads(v["config_json"] or "{}")
        except json.JSONDecodeError:
            config = {}
        policy = (config.get("curriculum") or {}).get("policy") if isinstance(config, dict) else None
        decon = None
        if v.get("decontamination_json"):
            try:
                decon = json.loads(v["decontamination_json"])
            except json.JSONDecodeError:
                decon = {"unparsed": v["decontamination_json"]}
            if not isinstance(decon, dict):
                decon = {"value": decon}
        started, finished = v["started_at"], v["finished_at"]
        run.rounds.append(RoundData(
            round=n,
            eval_accuracy=v["eval_accuracy"],
            exam_accuracy=v["exam_accuracy"],
            exam_items=_int(v["exam_items"]),
            promoted=None if v["promoted"] is None else bool(v["promoted"]),
            train_tokens=_int(v["train_tokens"]),
            cumulative_train_tokens=cumulative,
            num_train_examples=_int(v["num_train_examples"]),
            num_candidates=_int(v["num_candidates"]),
            num_duplicates=_int(v["num_duplicates"]),
            yield_ratio=v.get("yield_ratio"),
            frontier=frontier.get(n, {}),
            bands={f: bands.get(n, {}).get(f, 0) for f in BAND_FATES},
            started_at=started,
            finished_at=finished,
            wall_seconds=finished - started if started is not None and finished is not None else None,
            policy=policy,
            num_attempts=_int(v.get("num_attempts")),
            num_attempts_fixed=_int(v.get("num_attempts_fixed")),
            num_selected=selected.get(n),
            decontamination=decon,
            yield_by_domain=yields.get(n, {}),
        ))
    run.policy = next((r.policy for r in reversed(run.rounds) if r.policy), None)
    run.domains = sorted({d for r in run.rounds for d in r.frontier})
    return run


def load_state_dir(state_dir: Path) -> RunData:
    """``load_run`` on a state directory's store, opened read-only. Raises ReportError."""
    from zpd.store.db import StoreError, open_readonly

    state_dir = Path(state_dir).resolve()
    if not state_dir.is_dir():
        raise ReportError(2, f"{state_dir}: no such state directory")
    if not (state_dir / "state.db").is_file():
        raise ReportError(2, f"{state_dir}: not a zpd state directory (no state.db)")
    try:
        db = open_readonly(state_dir / "state.db")
    except StoreError as exc:
        raise ReportError(4, str(exc)) from None
    try:
        return load_run(db, state_dir)
    except sqlite3.DatabaseError as exc:
        raise ReportError(4, f"{state_dir / 'state.db'}: cannot read state database: {exc}") from None
    finally:
        db.conn.close()


# ---------------------------------------------------------------------------------------------- rendering


def _as_lists(runs: Mapping[str, RunData | Sequence[RunData]]) -> dict[str, list[RunData]]:
    out = {}
    for label, value in runs.items():
        out[str(label)] = [value] if isinstance(value, RunData) else list(value)
    return out


def _aggregate(runs: list[RunData], get: Callable[[RoundData], float | None],
               x: Callable[[RoundData], float] = lambda r: r.round):
    """Per round number: mean x, and mean/min/max of ``get`` over the runs that have a value."""
    by_round: dict[int, list[tuple[float, float]]] = {}
    for run in runs:
        for r in run.rounds:
            y = get(r)
            if y is not None and not (isinstance(y, float) and math.isnan(y)):
                by_round.setdefault(r.round, []).append((x(r), y))
    xs, mean, lo, hi = [], [], [], []
    for n in sorted(by_round):
        pts = by_round[n]
        ys = [p[1] for p in pts]
        xs.append(sum(p[0] for p in pts) / len(pts))
        mean.append(sum(ys) / len(ys))
        lo.append(min(ys))
        hi.append(max(ys))
    return xs, mean, lo, hi


def _plot_series(ax, label: str, runs: list[RunData], get, x=lambda r: r.round, color=None, style="-") -> None:
    xs, mean, lo, hi = _aggregate(runs, get, x)
    if not xs:
        return
    name = label if len(runs) == 1 else f"{label} (mean of {len(runs)}, min-max)"
    (line,) = ax.plot(xs, mean, style, marker="o", markersize=3, label=name, color=color)
    if len(runs) > 1:
        ax.fill_between(xs, lo, hi, alpha=0.2, color=line.get_color(), linewidth=0)


def _accuracy_ylim(ax) -> None:
    """0 to a little above the highest value drawn (at most 1), so small gains stay visible."""
    top = ax.dataLim.y1 if ax.has_data() else 1.0  # lines and min-max bands
    ax.set_ylim(-0.01, min(1.02, max(0.1, float(top) * 1.1)))


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _figures(runs: dict[str, list[RunData]], title: str) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color_of = {label: colors[i % len(colors)] for i, label in enumerate(runs)}
    out: dict[str, bytes] = {}

    # (1) frontier per domain vs round: one panel per domain
    domains = sorted({d for rs in runs.values() for run in rs for d in run.domains}) or ["(none)"]
    fig, axes = plt.subplots(1, len(domains), figsize=(5.5 * len(domains), 3.8), squeeze=False)
    for ax, domain in zip(axes[0], domains, strict=True):
        for label, rs in runs.items():
            _plot_series(ax, label, rs, lambda r, d=domain: r.frontier.get(d), color=color_of[label])
        ax.set_title(f"frontier: {domain}")
        ax.set_xlabel("round")
        ax.set_ylabel("frontier difficulty")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    out["frontier"] = _png(fig)
    plt.close(fig)

    # (2) eval and exam accuracy vs round
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), squeeze=False)
    for ax, (what, get) in zip(axes[0], [("eval accuracy (frozen eval set)", lambda r: r.eval_accuracy),
                                         ("exam accuracy (rounds with an exam)",
                                          lambda r: r.exam_accuracy if r.exam_items else None)], strict=True):
        for label, rs in runs.items():
            _plot_series(ax, label, rs, get, color=color_of[label])
        ax.set_title(what)
        ax.set_xlabel("round")
        ax.set_ylabel("accuracy")
        _accuracy_ylim(ax)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    out["accuracy"] = _png(fig)
    plt.close(fig)

    # (3) band sizes per round: stacked bars of fates, one panel per run (mean over seeds)
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
        ax.set_title(f"{label}: tasks per fate decided in the round" + (f" (mean of {len(rs)})" if len(rs) > 1 else ""))
        ax.set_xlabel("round")
        ax.set_ylabel("tasks")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    out["bands"] = _png(fig)
    plt.close(fig)

    # (4) eval accuracy vs cumulative training tokens
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
    fig.suptitle(title)
    out["tokens"] = _png(fig)
    plt.close(fig)

    from .report_families import families_png

    out["families"] = families_png(runs, title)
    return out


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x, digits) if not isinstance(x, (dict, list)) else json.dumps(x, sort_keys=True)}"
                         for k, x in v.items()) or "—"
    return str(v)


def _cell(v: Any, digits: int = 4) -> str:
    return _fmt(v, digits).replace("|", "\\|").replace("\n", " ")


# (header, value getter, always shown, float digits): optional columns appear only when some round of the
# run has a value.
COLUMNS: list[tuple[str, Callable[[RoundData], Any], bool, int]] = [
    ("round", lambda r: r.round, True, 0),
    ("eval acc", lambda r: r.eval_accuracy, True, 4),
    ("exam acc", lambda r: r.exam_accuracy, True, 4),
    ("exam items", lambda r: r.exam_items, True, 0),
    ("promoted", lambda r: r.promoted, True, 0),
    ("train tokens", lambda r: r.train_tokens, True, 0),
    ("cum. tokens", lambda r: r.cumulative_train_tokens, True, 0),
    ("train ex.", lambda r: r.num_train_examples, True, 0),
    ("candidates", lambda r: r.num_candidates, True, 0),
    ("duplicates", lambda r: r.num_duplicates, True, 0),
    ("yield", lambda r: r.yield_ratio, False, 3),
    ("selected", lambda r: r.num_selected, False, 0),
    ("attempts", lambda r: r.num_attempts, False, 0),
    ("attempts (fixed-k)", lambda r: r.num_attempts_fixed, False, 0),
    ("frontier", lambda r: r.frontier or None, True, 2),
    *[(fate, (lambda r, f=fate: r.bands.get(f, 0)), True, 0) for fate in BAND_FATES],
    ("wall s", lambda r: r.wall_seconds, True, 1),
    ("policy", lambda r: r.policy, False, 0),
    ("decontamination", lambda r: r.decontamination, False, 4),
]


def round_table(run: RunData) -> str:
    """A markdown table, one row per committed round."""
    cols = [(h, get, digits) for h, get, always, digits in COLUMNS
            if always or any(get(r) is not None for r in run.rounds)]
    lines = ["| " + " | ".join(h for h, _, _ in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in run.rounds:
        lines.append("| " + " | ".join(_cell(get(r), digits) for _, get, digits in cols) + " |")
    return "\n".join(lines)


def _markdown(runs: dict[str, list[RunData]], title: str) -> str:
    parts = [f"# {title}", ""]
    for key, name in PLOTS.items():
        parts.append(f"![{key}]({name})")
    parts.append("")
    parts.append("Plots: " + ", ".join(f"[{key}]({name})" for key, name in PLOTS.items())
                 + " · data: [report.json](report.json)")
    parts.append("")
    parts.append("Bands count the tasks whose fate was decided in the round. Several runs under one label are "
                 "plotted as their mean with a min-max band.")
    for label, rs in runs.items():
        for i, run in enumerate(rs):
            head = label if len(rs) == 1 else f"{label} — run {i + 1} of {len(rs)}"
            parts += ["", f"## {head}", ""]
            facts = []
            if run.state_dir:
                facts.append(f"state dir `{run.state_dir}`")
            facts.append(f"curriculum policy `{run.policy or 'unknown'}`")
            facts.append(rounds_phrase(sum(1 for r in run.rounds if r.round >= 1),
                                       max((r.round for r in run.rounds), default=None)) + " committed")
            parts += ["; ".join(facts), ""]
            parts.append(round_table(run) if run.rounds else "(no committed round)")
    return "\n".join(parts) + "\n"


def render(runs: Mapping[str, RunData | Sequence[RunData]], out_dir: Path, title: str = "zpd run") -> list[Path]:
    """Write the plots, ``report.md`` and ``report.json`` into ``out_dir`` (created if absent); returns
    their paths. Everything is rendered in memory first; each file is replaced atomically."""
    from zpd.store.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

    lists = _as_lists(runs)
    if not lists:
        raise ReportError(2, "nothing to report: no runs given")
    pngs = _figures(lists, title)
    markdown = _markdown(lists, title)
    data = {"title": title, "plots": dict(PLOTS),
            "runs": {label: [run.to_dict() for run in rs] for label, rs in lists.items()}}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, name in PLOTS.items():
        atomic_write_bytes(out_dir / name, pngs[key])
        written.append(out_dir / name)
    atomic_write_json(out_dir / "report.json", data)
    atomic_write_text(out_dir / "report.md", markdown)
    return [*written, out_dir / "report.json", out_dir / "report.md"]


def load_report(path: Path) -> dict[str, list[RunData]]:
    """The runs of a ``report.json`` (the inverse of what ``render`` writes)."""
    data = json.loads(Path(path).read_text())
    return {label: [RunData.from_dict(d) for d in rs] for label, rs in data["runs"].items()}


def report(state_dir: Path, out_dir: Path, title: str | None = None) -> list[Path]:
    """``zpd report``: check the inputs, load the run, render it. Raises ReportError."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(2, f"{out_dir}: --out must be a directory (a file is in the way)")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError(2, f"matplotlib is not installed: {INSTALL_HINT}") from None
    run = load_state_dir(state_dir)
    if not run.rounds:
        raise ReportError(1, f"{Path(state_dir).resolve()} has no committed round yet")
    name = Path(state_dir).resolve().name
    try:
        return render({name: run}, out_dir, title or f"zpd run: {name}")
    except OSError as exc:
        raise ReportError(1, f"cannot write the report into {out_dir}: {exc}") from None
