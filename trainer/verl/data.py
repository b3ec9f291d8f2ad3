"""The round's training rows as the parquet files verl's datasets read.

SFT (``MultiTurnSFTDataset``): one column ``messages``, a user turn (the bare task) and an assistant
turn (the target); verl trains on the assistant turn only. GRPO (``RLHFDataset``): ``data_source``
(``zpd/<domain>``, which the reward module maps back to zpd's grader), ``prompt`` as a chat list,
``ability``, ``reward_model {style: rule, ground_truth}`` and ``extra_info {index, domain, prompt, task_json}``.
Both are written to a temporary name and renamed, so a file verl sees is always complete.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_SOURCE_PREFIX = "zpd/"


def data_source(domain: str) -> str:
    return f"{DATA_SOURCE_PREFIX}{domain}"


def sft_records(rows: list[dict]) -> list[dict]:
    return [
        {"messages": [{"role": "user", "content": str(r["prompt"])},
                      {"role": "assistant", "content": str(r["response"])}]}
        for r in rows
    ]


def rl_records(rows: list[dict]) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        domain = str(r.get("domain") or "unknown")
        out.append({
            "data_source": data_source(domain),
            "prompt": [{"role": "user", "content": str(r["prompt"])}],
            "ability": domain,
            "reward_model": {"style": "rule", "ground_truth": str(r["answer"])},
            # task_json: the whole task (meta included), so the reward grades as CALIBRATE did ("" if absent).
            "extra_info": {"index": i, "split": "train", "domain": domain, "prompt": str(r["prompt"]),
                           "task_json": str(r.get("task_json") or "")},
        })
    return out


def write_parquet(records: list[dict], path: Path) -> Path:
    """Write ``records`` to ``path`` atomically (temp file in the same directory, fsync, rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not records:
        raise ValueError("no training rows to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pq.write_table(pa.Table.from_pylist(records), tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_sft_parquet(rows: list[dict], path: Path) -> Path:
    return write_parquet(sft_records(rows), path)


def write_rl_parquet(rows: list[dict], path: Path) -> Path:
    return write_parquet(rl_records(rows), path)
