"""One arm's run read back from its state directory, through the store's functions (no SQL here).

It needs the issue-13 store functions: ``ledger_exam.item_outcomes`` (per-item greedy outcomes of a
round's learner on the validation or test split), ``ledger_tasks.target_sources`` (where each selected
task's training target came from) and the ``validation_accuracy`` column of ``rounds``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablation_stats import RoundPoint, at_budget, copied, copied_results, work_correct


@dataclass
class RunResult:
    """What the report needs of one run (one arm, one seed, one tuning cell)."""

    name: str
    """The run's directory name."""
    validation: list[RoundPoint]
    """Per committed round: tokens after round 0, the candidate's validation accuracy, promoted."""
    test: list[RoundPoint]
    """The same with the candidate's test accuracy."""
    at_b: int
    """Index into the lists of the last round within the budget."""
    learner_at_b: int
    """The round whose learner is current at that round (the last promoted one)."""
    test_items: dict[int, bool]
    """Test item id -> correct, for the learner current at B."""
    validation_at_b: float
    """Validation accuracy of the learner current at B."""
    test_by_level: dict[float, float]
    """Test accuracy per difficulty level of the learner current at B."""
    sources: dict[str, int]
    """Training targets per source (guided / solo / reference) over rounds 1..B."""
    guided_targets: int
    """Guided training targets read for the copy rate (rounds 1..B)."""
    guided_copies: int
    """Of those, how many copy their guidance (``ablation_stats.copied``)."""
    result_copies: int
    """Of those, how many take their step results from it (``ablation_stats.copied_results``)."""
    work_correct: int = 0
    """Of those, how many have the right column work (``ablation_stats.work_correct``)."""
    raw: list[dict[str, Any]] = field(default_factory=list)
    """Every committed round's figures, for the json."""

    @property
    def copy_rate(self) -> float | None:
        return self.guided_copies / self.guided_targets if self.guided_targets else None

    @property
    def result_copy_rate(self) -> float | None:
        return self.result_copies / self.guided_targets if self.guided_targets else None

    @property
    def test_at_b(self) -> float:
        return sum(self.test_items.values()) / len(self.test_items) if self.test_items else 0.0


def _store_api() -> tuple[Any, Any]:
    """The issue-13 store functions, or one clear error naming what is missing."""
    try:
        from zpd.store.ledger_exam import item_outcomes
        from zpd.store.ledger_tasks import target_sources
    except ImportError as exc:
        raise SystemExit(f"bench/ablation.py needs the issue-13 store functions ({exc}): "
                         "zpd.store.ledger_exam.item_outcomes, zpd.store.ledger_tasks.target_sources"
                         ) from None
    return item_outcomes, target_sources


def _copies(db: Any, round_n: int) -> tuple[int, int, int, int]:
    """(guided targets, of which verbatim copies of their guidance, with step results copied from it, with
    the right column work) among the round's selected tasks."""
    from zpd.store.training import selected_targets

    guided = copies = results = right = 0
    for row in selected_targets(db, round_n):
        if row.get("target_source") != "guided" or row.get("output") is None:
            continue
        guided += 1
        copies += copied(row["guidance"], row["output"])
        results += copied_results(row["guidance"], row["output"])
        right += work_correct(row["prompt"], row["output"])
    return guided, copies, results, right


def read_run(state_dir: Path, budget: int) -> RunResult:
    """The run's rounds (committed ones), its result at the budget, and its raw per-round figures."""
    from zpd.store.db import open_readonly
    from zpd.store.ledger_rounds import committed_rounds, read_round
    from zpd.store.ledger_tasks import eval_difficulties

    item_outcomes, target_sources = _store_api()
    if not (state_dir / "state.db").is_file():
        raise SystemExit(f"{state_dir}: no run there yet (run the bench without --report-only)")
    db = open_readonly(state_dir / "state.db")
    try:
        rows = [read_round(db, n) for n in sorted(committed_rounds(db))]
        if not rows or rows[0].id != 0:
            raise SystemExit(f"{state_dir}: no committed round 0")
        val, test, raw, tokens = [], [], [], 0
        for r in rows:
            tokens += (r.train_tokens or 0) if r.id > 0 else 0
            promoted = r.id == 0 or bool(r.promoted)
            v = getattr(r, "validation_accuracy", None)
            val.append(RoundPoint(r.id, tokens, v, promoted))
            test.append(RoundPoint(r.id, tokens, r.eval_accuracy, promoted))
            src = target_sources(db, r.id) if r.id > 0 else {}
            raw.append({"round": r.id, "tokens_after_round0": tokens, "train_tokens": r.train_tokens,
                        "validation_accuracy": v, "test_accuracy": r.eval_accuracy, "promoted": promoted,
                        "current_learner_round": r.current_learner_round, "target_sources": src})
        i = at_budget(val, budget)
        learner = rows[i].current_learner_round
        learner = rows[i].id if learner is None else learner
        test_items = item_outcomes(db, learner, "test")
        val_items = item_outcomes(db, learner, "validation")
        level = {tid: d for tid, _, d in eval_difficulties(db, "arithmetic")}
        by_level: dict[float, list[bool]] = defaultdict(list)
        for tid, ok in test_items.items():
            by_level[level.get(tid, -1.0)].append(ok)
        sources: dict[str, int] = defaultdict(int)
        guided = copies = results = right = 0
        for r in rows[1:i + 1]:
            for k, n in target_sources(db, r.id).items():
                sources[k] += n
            g, c, x, w = _copies(db, r.id)
            guided, copies, results, right = guided + g, copies + c, results + x, right + w
    finally:
        db.conn.close()
    return RunResult(
        name=state_dir.name, validation=val, test=test, at_b=i, learner_at_b=learner, test_items=test_items,
        validation_at_b=sum(val_items.values()) / len(val_items) if val_items else 0.0,
        test_by_level={lv: sum(v) / len(v) for lv, v in sorted(by_level.items())},
        sources=dict(sources), guided_targets=guided, guided_copies=copies, result_copies=results, raw=raw,
        work_correct=right)


def summary_json(r: RunResult) -> dict[str, Any]:
    """The run's figures as plain json (the raw rounds included)."""
    return {"name": r.name, "at_b_round": r.validation[r.at_b].round, "learner_at_b": r.learner_at_b,
            "test_at_b": r.test_at_b, "validation_at_b": r.validation_at_b,
            "test_by_level": {str(k): v for k, v in r.test_by_level.items()}, "sources": r.sources,
            "guided_targets": r.guided_targets, "guided_copies": r.guided_copies, "copy_rate": r.copy_rate,
            "result_copies": r.result_copies, "result_copy_rate": r.result_copy_rate,
            "work_correct": r.work_correct,
            "test_items": {str(k): v for k, v in sorted(r.test_items.items())}, "rounds": r.raw}


def dump(path: Path, data: dict[str, Any]) -> None:
    """Write json by write-then-rename."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    tmp.replace(path)
