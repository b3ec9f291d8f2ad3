"""Corpus ingestion at the start of every round (``domains.knowledge.corpus_dir``), with its report.

A daemon that never stops picks up documents dropped into the folder: each round begins by ingesting it
(``store/corpus.py``: new files only, one transaction per file, idempotent). Bad input is never fatal:
unreadable, empty, binary or non-UTF-8 documents, unsupported suffixes and malformed JSONL records are
skipped with a log line naming the file (``zpd.corpus``), and the round's report, one log line
"corpus ingested" plus the store's ``meta`` entry ``corpus_ingest:<round>`` (JSON: ``IngestReport.as_dict()``
with the skipped files by reason), says how many of each. The first scan of a round is its report: a
resumed round scans again but keeps it.
"""

from __future__ import annotations

import json
from pathlib import Path

from zpd.store.corpus import ingest
from zpd.store.db import get_meta, set_meta

from .context import RunContext


def meta_key(round_n: int) -> str:
    return f"corpus_ingest:{round_n}"


def ingest_for_round(ctx: RunContext, round_n: int) -> dict | None:
    """Ingest the configured corpus folder; the round's report (None when no corpus is configured)."""
    k = ctx.cfg.domains.knowledge
    if not (k.enabled and k.corpus_dir):
        return None
    folder = Path(k.corpus_dir)
    if not folder.is_dir():
        ctx.log.warning("corpus folder missing; nothing ingested", extra={"corpus_dir": str(folder)})
        return None
    report = ingest(ctx.db, folder, max_chars=k.chunk_chars)
    out = report.as_dict() | {"skipped_files": report.skipped, "num_skipped": report.num_skipped}
    with ctx.db.atomic():
        if get_meta(ctx.db, meta_key(round_n)) is None:
            set_meta(ctx.db, meta_key(round_n), json.dumps(out, sort_keys=True))
    ctx.log.info("corpus ingested", extra={"corpus_dir": str(folder), **report.as_dict(),
                                           "num_skipped": report.num_skipped})
    return out

