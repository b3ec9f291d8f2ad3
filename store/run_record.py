"""The read model of ``zpd report``: the committed rounds of one store as typed records (``RunData``).

Read with the standard library's ``sqlite3`` alone (a report works while the daemon runs, on a store
opened read-only). A store of an older format lacks some columns: this module knows which migration
added what, and reads a missing column as None (``_columns``), so the report need not.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zpd.configs import vocabulary

from .yields import domain_yields

BAND_FATES = list(vocabulary.CALIBRATED_FATES)
"""The fates a report counts per round (the bands)."""


@dataclass
class RoundData:
    round: int
    eval_accuracy: float | None = None         # the eval set's test part (before m010: the whole set)
    validation_accuracy: float | None = None   # its validation part (m010; None before)
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
    test_by_domain: dict[str, float] = field(default_factory=dict)    # eval accuracy's test part, per domain
    validation_by_domain: dict[str, float] = field(default_factory=dict)  # its validation part (m010)


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


def _conn(db: Any) -> sqlite3.Connection:
    return db.conn if hasattr(db, "conn") else db


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})").fetchall()}


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


BASE_ROUND_COLUMNS = ["id", "eval_accuracy", "exam_accuracy", "exam_items", "promoted", "train_tokens",
                      "num_train_examples", "num_candidates", "num_duplicates", "started_at", "finished_at",
                      "config_json"]
"""The ``rounds`` columns of every store format (m002)."""
LATER_ROUND_COLUMNS = ("yield_ratio", "num_attempts", "num_attempts_fixed", "decontamination_json",
                       "validation_accuracy", "eval_by_domain_json", "validation_by_domain_json")
"""Read when present: ``yield_ratio`` came with m004, ``validation_accuracy`` and
``validation_by_domain_json`` with m010, the others with m005 (``tasks.selected`` too);
``eval_by_domain_json`` is in every store but is read like these (absent: no per-domain figures)."""


@dataclass
class _Facts:
    """Per round number, what ``load_run`` reads besides the round's own row."""

    frontier: dict[int, dict[str, float]]
    bands: dict[int, dict[str, int]]
    yields: dict[int, dict[str, float]]
    selected: dict[int, int | None]


def _facts(conn: sqlite3.Connection) -> _Facts:
    frontier: dict[int, dict[str, float]] = {}
    for r, domain, value in conn.execute("SELECT round, domain, value FROM frontier ORDER BY round, domain"):
        frontier.setdefault(r, {})[domain] = value
    bands: dict[int, dict[str, int]] = {}
    marks = ", ".join("?" * len(BAND_FATES))
    for r, fate, n in conn.execute(
        f"SELECT fate_round, fate, count(*) FROM tasks WHERE fate_round IS NOT NULL AND fate IN ({marks}) "
        "GROUP BY fate_round, fate",
        BAND_FATES,
    ):
        bands.setdefault(r, {})[fate] = n
    yields = {
        r: {d: a / c for d, (a, c) in by.items() if c} for r, by in domain_yields(conn, 0, 1 << 62).items()
    }
    selected: dict[int, int | None] = {}
    if "selected" in _columns(conn, "tasks"):
        for r, n in conn.execute(
            "SELECT fate_round, sum(selected) FROM tasks WHERE fate_round IS NOT NULL GROUP BY fate_round"
        ):
            selected[r] = _int(n)
    return _Facts(frontier, bands, yields, selected)


def _json_dict(raw: str | None) -> dict[str, Any] | None:
    """A stored JSON report as a dict (unparsable or not a dict: kept under a key, never an error)."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {"unparsed": raw}
    return value if isinstance(value, dict) else {"value": value}


def _policy(config_json: str | None) -> str | None:
    try:
        config = json.loads(config_json or "{}")
    except json.JSONDecodeError:
        config = {}
    if not isinstance(config, dict):
        return None
    cur = config.get("curriculum") or {}
    if cur.get("policy"):
        return str(cur["policy"])
    # A (source, selection) pair without an alias (issue 13's pool arms): named by the pair.
    pair = [cur.get(k) for k in ("source", "selection")]
    return "+".join(str(v) for v in pair) if all(pair) else None


def _round_data(v: dict[str, Any], cumulative: int, f: _Facts) -> RoundData:
    n = v["id"]
    started, finished = v["started_at"], v["finished_at"]
    return RoundData(
        round=n,
        eval_accuracy=v["eval_accuracy"],
        validation_accuracy=v.get("validation_accuracy"),
        exam_accuracy=v["exam_accuracy"],
        exam_items=_int(v["exam_items"]),
        promoted=None if v["promoted"] is None else bool(v["promoted"]),
        train_tokens=_int(v["train_tokens"]),
        cumulative_train_tokens=cumulative,
        num_train_examples=_int(v["num_train_examples"]),
        num_candidates=_int(v["num_candidates"]),
        num_duplicates=_int(v["num_duplicates"]),
        yield_ratio=v.get("yield_ratio"),
        frontier=f.frontier.get(n, {}),
        bands={fate: f.bands.get(n, {}).get(fate, 0) for fate in BAND_FATES},
        started_at=started,
        finished_at=finished,
        wall_seconds=finished - started if started is not None and finished is not None else None,
        policy=_policy(v["config_json"]),
        num_attempts=_int(v.get("num_attempts")),
        num_attempts_fixed=_int(v.get("num_attempts_fixed")),
        num_selected=f.selected.get(n),
        decontamination=_json_dict(v.get("decontamination_json")),
        yield_by_domain=f.yields.get(n, {}),
        test_by_domain=_accuracies(v.get("eval_by_domain_json")),
        validation_by_domain=_accuracies(v.get("validation_by_domain_json")),
    )


def _accuracies(text: str | None) -> dict[str, float]:
    """A ``*_by_domain_json`` column: domain -> accuracy ({} when absent or not such a mapping)."""
    d = _json_dict(text) or {}
    return {str(k): float(v) for k, v in d.items() if isinstance(v, int | float)}


def load_run(db: Any, state_dir: Path | str | None = None) -> RunData:
    """The committed rounds of a store (a sqlite-utils Database or a sqlite3 connection), ascending."""
    conn = _conn(db)
    rcols = _columns(conn, "rounds")
    names = BASE_ROUND_COLUMNS + [c for c in LATER_ROUND_COLUMNS if c in rcols]
    rows = conn.execute(
        f"SELECT {', '.join(names)} FROM rounds WHERE status = 'committed' ORDER BY id"
    ).fetchall()
    facts = _facts(conn)
    run = RunData(state_dir=str(state_dir) if state_dir is not None else None)
    cumulative = 0
    for row in rows:
        v = dict(zip(names, row, strict=True))
        cumulative += v["train_tokens"] or 0
        run.rounds.append(_round_data(v, cumulative, facts))
    run.policy = next((r.policy for r in reversed(run.rounds) if r.policy), None)
    run.domains = sorted({d for r in run.rounds for d in r.frontier})
    return run
