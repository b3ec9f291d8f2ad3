"""``zpd export``: a committed round's train / exam / pretrain / review sets as parquet or JSONL.

Training data comes in verl's SFT ``messages`` schema (``[{"role": "user", ...}, {"role":
"assistant", ...}]``), loadable with ``datasets.load_dataset("parquet", data_files=...)`` and verl's
``MultiTurnSFTDataset``; every row keeps its lineage (task, attempt, round). The file is written
atomically: a reader never sees half of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .atomic import atomic_path
from .sqlite import Database

WHAT = ("train", "exam", "pretrain", "review")
FORMATS = ("parquet", "jsonl")


def rows_for(db: Database, round_n: int, what: str) -> list[dict[str, Any]]:
    if what == "train":
        return [
            {
                "messages": [
                    {"role": "user", "content": r["prompt"]},
                    {"role": "assistant", "content": r["response"]},
                ],
                "kind": r["kind"],
                "domain": r["domain"],
                "difficulty": r["difficulty"],
                "answer": r["answer"],
                "task_id": r["task_id"],
                "attempt_id": r["attempt_id"],
                "round": r["round"],
            }
            for r in db.query(
                """SELECT e.*, t.domain, t.difficulty, t.answer FROM train_examples e
                   JOIN tasks t ON t.id = e.task_id WHERE e.round = ? ORDER BY e.id""",
                [round_n],
            )
        ]
    if what == "exam":
        return [
            {
                "task_id": r["id"],
                "domain": r["domain"],
                "difficulty": r["difficulty"],
                "prompt": r["prompt"],
                "answer": r["answer"],
                "admitted_round": r["admitted_round"],
                "version": round_n,
            }
            for r in db.query(
                """SELECT t.*, x.admitted_round FROM exam_items x JOIN tasks t ON t.id = x.task_id
                   WHERE x.admitted_round <= ? AND (x.graduated_round IS NULL OR x.graduated_round >= ?)
                   ORDER BY t.id""",
                [round_n, round_n],
            )
        ]
    if what == "pretrain":
        return [
            {
                "text": f"{r['prompt']}\n{r['answer']}",
                "prompt": r["prompt"],
                "answer": r["answer"],
                "domain": r["domain"],
                "difficulty": r["difficulty"],
                "task_id": r["id"],
                "round": r["fate_round"],
            }
            for r in db.query(
                "SELECT * FROM tasks WHERE fate = 'mastered' AND fate_round = ? ORDER BY id", [round_n]
            )
        ]
    if what == "review":
        return [
            {
                "task_id": r["id"],
                "domain": r["domain"],
                "difficulty": r["difficulty"],
                "prompt": r["prompt"],
                "answer": r["answer"],
                "guidance": r["guidance"],
                "p_solo": r["p_solo"],
                "p_guided": r["p_guided"],
                "round": r["fate_round"],
            }
            for r in db.query(
                "SELECT * FROM tasks WHERE fate = 'review' AND fate_round <= ? ORDER BY id", [round_n]
            )
        ]
    raise ValueError(f"--what must be one of {', '.join(WHAT)}")


def write_rows(rows: list[dict[str, Any]], fmt: str, out: Path) -> None:
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}")
    with atomic_path(out) as tmp:
        if fmt == "jsonl":
            with open(tmp, "w", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows) if rows else pa.table({}), tmp)
