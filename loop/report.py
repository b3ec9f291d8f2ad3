"""``zpd report``: plots and tables of a run. Read-only; works while the daemon runs.

Two layers, so a benchmark can reuse them:

- ``load_run(db) -> RunData`` (``zpd.store.run_record``): the committed rounds of one store (opened
  read-only, as ``zpd status`` does), one ``RoundData`` per round. Columns that a store of an older
  format lacks read as None.
- ``render(runs, out_dir, title) -> list[Path]``: PNG plots (matplotlib, Agg) overlaying several runs,
  ``report.md`` (a per-round table per run, links to the plots) and ``report.json`` (the same data).
  ``runs`` maps a label to one ``RunData`` or to a list of them (seeds of one setting: the plots show the
  mean with a min-max band).

matplotlib is optional (``pip install 'zpd[report]'``); only ``render`` imports it (through
``loop/report_plots.py`` and ``loop/report_families.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from zpd.store.connect import SqliteDatabaseError
from zpd.store.run_record import BAND_FATES, RoundData, RunData, load_run

from .report_families import families_png
from .report_plots import figures
from .status import rounds_phrase

__all__ = ["BAND_FATES", "PLOTS", "ReportError", "RoundData", "RunData", "load_report", "load_run",
           "load_state_dir", "render", "report", "round_table"]
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


# ---------------------------------------------------------------------------------------------- loading


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
    except SqliteDatabaseError as exc:
        raise ReportError(4, f"{state_dir / 'state.db'}: cannot read state database: {exc}") from None
    finally:
        db.conn.close()


# ---------------------------------------------------------------------------------------------- rendering


def _as_lists(runs: Mapping[str, RunData | Sequence[RunData]]) -> dict[str, list[RunData]]:
    out = {}
    for label, value in runs.items():
        out[str(label)] = [value] if isinstance(value, RunData) else list(value)
    return out


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, dict):
        return (
            ", ".join(
                f"{k}={_fmt(x, digits) if not isinstance(x, (dict, list)) else json.dumps(x, sort_keys=True)}"
                for k, x in v.items()
            )
            or "—"
        )
    return str(v)


def _cell(v: Any, digits: int = 4) -> str:
    return _fmt(v, digits).replace("|", "\\|").replace("\n", " ")


# (header, value getter, always shown, float digits): optional columns appear only when some round of the
# run has a value.
COLUMNS: list[tuple[str, Callable[[RoundData], Any], bool, int]] = [
    ("round", lambda r: r.round, True, 0),
    ("eval acc", lambda r: r.eval_accuracy, True, 4),   # the test part (read by no decision)
    ("validation acc", lambda r: r.validation_accuracy, False, 4),   # what the gate and the frontier read
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
    cols = [
        (h, get, digits)
        for h, get, always, digits in COLUMNS
        if always or any(get(r) is not None for r in run.rounds)
    ]
    lines = ["| " + " | ".join(h for h, _, _ in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in run.rounds:
        lines.append("| " + " | ".join(_cell(get(r), digits) for _, get, digits in cols) + " |")
    return "\n".join(lines)


def _markdown(runs: dict[str, list[RunData]], title: str) -> str:
    parts = [f"# {title}", ""]
    for key, name in PLOTS.items():
        parts.append(f"![{key}]({name})")
    parts.append("")
    parts.append(
        "Plots: "
        + ", ".join(f"[{key}]({name})" for key, name in PLOTS.items())
        + " · data: [report.json](report.json)"
    )
    parts.append("")
    parts.append(
        "Bands count the tasks whose fate was decided in the round. Several runs under one label are "
        "plotted as their mean with a min-max band."
    )
    for label, rs in runs.items():
        for i, run in enumerate(rs):
            head = label if len(rs) == 1 else f"{label} — run {i + 1} of {len(rs)}"
            parts += ["", f"## {head}", ""]
            facts = []
            if run.state_dir:
                facts.append(f"state dir `{run.state_dir}`")
            facts.append(f"curriculum policy `{run.policy or 'unknown'}`")
            facts.append(
                rounds_phrase(
                    sum(1 for r in run.rounds if r.round >= 1),
                    max((r.round for r in run.rounds), default=None),
                )
                + " committed"
            )
            parts += ["; ".join(facts), ""]
            parts.append(round_table(run) if run.rounds else "(no committed round)")
    return "\n".join(parts) + "\n"


def render(
    runs: Mapping[str, RunData | Sequence[RunData]], out_dir: Path, title: str = "zpd run"
) -> list[Path]:
    """Write the plots, ``report.md`` and ``report.json`` into ``out_dir`` (created if absent); returns
    their paths. Everything is rendered in memory first; each file is replaced atomically."""
    from zpd.store.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

    lists = _as_lists(runs)
    if not lists:
        raise ReportError(2, "nothing to report: no runs given")
    pngs = {**figures(lists, title), "families": families_png(lists, title)}
    markdown = _markdown(lists, title)
    data = {
        "title": title,
        "plots": dict(PLOTS),
        "runs": {label: [run.to_dict() for run in rs] for label, rs in lists.items()},
    }
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
