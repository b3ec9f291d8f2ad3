"""``zpd review --import FILE``: record human verdicts on the review queue (the paper's D_human).

FILE is JSON lines (or parquet), one verdict per row, e.g. the rows of ``zpd export --what review`` with
two fields added::

    {"task_id": 17, "verdict": "keep", "answer": "Vem"}     # corrected (or confirmed) answer
    {"task_id": 18, "verdict": "drop", "note": "ambiguous"}

``keep``: the task's answer becomes ``answer`` (the old one when absent), and it goes back to ``pending``
with its pass rates cleared, so the next round's CALIBRATE calibrates it afresh against the corrected
answer. ``drop``: fate ``dropped``. Every verdict is kept in ``review_verdicts`` with the old answer.

The whole file is validated before anything is written, then applied in one transaction, under the
controller lock (refused while a daemon runs, naming its pid). Only tasks still in ``review`` change, so
importing the same file twice changes nothing the second time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from zpd.store import ledger_review
from zpd.store.db import open_store
from zpd.store.lock import ControllerLock


class ReviewError(RuntimeError):
    """The file is unreadable or a row is malformed; nothing was changed."""


def read_verdicts(path: Path) -> list[dict]:
    path = Path(path)
    try:
        if path.suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        else:
            rows = []
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as exc:
                        raise ReviewError(f"{path}:{i}: not JSON ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReviewError(f"{path}: cannot read ({exc})") from None
    out = []
    for i, row in enumerate(rows, start=1):
        where = f"{path}: row {i}"
        if not isinstance(row, dict) or not isinstance(row.get("task_id"), int):
            raise ReviewError(f"{where}: needs an integer task_id")
        if row.get("verdict") not in ("keep", "drop"):
            raise ReviewError(f"{where}: verdict must be 'keep' or 'drop', got {row.get('verdict')!r}")
        answer = row.get("answer")
        if answer is not None and (not isinstance(answer, str | int | float) or not str(answer).strip()):
            raise ReviewError(f"{where}: answer must be a non-empty string")
        out.append({"task_id": row["task_id"], "verdict": row["verdict"],
                    "answer": None if answer is None else str(answer).strip(), "note": row.get("note")})
    return out


def import_verdicts(state_dir: Path, path: Path) -> dict[str, int]:
    """Apply the verdicts in ``path``; returns counts: kept, dropped, not_in_review (unknown or already
    decided)."""
    state_dir = Path(state_dir).resolve()
    if not (state_dir / "state.db").is_file():
        raise ReviewError(f"{state_dir}: not a zpd state directory (no state.db)")
    verdicts = read_verdicts(path)
    counts = {"kept": 0, "dropped": 0, "not_in_review": 0}
    with ControllerLock(state_dir):
        db = open_store(state_dir / "state.db")
        try:
            with db.atomic():
                now = time.time()
                for v in verdicts:
                    old = ledger_review.answer_in_review(db, v["task_id"])
                    if old is None:
                        counts["not_in_review"] += 1
                        continue
                    new_answer = v["answer"] if v["verdict"] == "keep" and v["answer"] is not None else old
                    ledger_review.record_verdict(
                        db,
                        task_id=v["task_id"],
                        verdict=v["verdict"],
                        old_answer=old,
                        new_answer=new_answer if v["verdict"] == "keep" else None,
                        note=v["note"],
                        source=str(Path(path).resolve()),
                        imported_at=now,
                    )
                    if v["verdict"] == "keep":
                        ledger_review.reopen(db, v["task_id"], new_answer)
                        counts["kept"] += 1
                    else:
                        ledger_review.drop(db, v["task_id"])
                        counts["dropped"] += 1
        finally:
            db.conn.close()
    return counts
