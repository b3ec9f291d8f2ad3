"""Corpus ingestion: a folder of .txt / .md / .jsonl documents -> cleaned chunks with provenance.

``ingest(db, folder)`` walks the folder (sorted, recursively), decodes each file as strict UTF-8,
splits it into paragraphs, packs paragraphs into chunks of at most ``max_chars`` and stores each chunk
with its provenance: the file (relative to the folder), the file's sha256, the JSONL record (line
number, 0 for text files) and the character span ``[start_char, end_char)`` of the decoded text (or
of the record's text field) it was cleaned from. Cleaning strips HTML tags and entities, markdown
heading/emphasis marks and collapses whitespace, so offsets always point at the original.

Idempotent: a file whose sha256 is already stored is skipped, and chunks are unique by the sha256 of
their text, so re-ingesting (the same file, or a copy under another name) adds nothing. Bad input is
never fatal: unreadable, empty, binary (a NUL byte) or non-UTF-8 files, unsupported suffixes and
malformed JSONL lines are skipped, each with a log line naming the file, and counted in the report.
One transaction per file.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlite_utils import Database

log = logging.getLogger("zpd.corpus")

SUFFIXES = (".txt", ".md", ".jsonl")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_TAG = re.compile(r"<[^>\n]{1,200}>")
_MD_MARK = re.compile(r"(?m)^[ \t]*(#{1,6}[ \t]+|>[ \t]?|[-*+][ \t]+)|(\*\*|__|`{1,3})")
_SPACE = re.compile(r"\s+")


@dataclass
class IngestReport:
    files_seen: int = 0
    files_ingested: int = 0
    files_already: int = 0
    chunks_added: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)
    """reason (unreadable, empty, binary, not-utf8, unsupported, bad-record) -> files."""

    @property
    def num_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def as_dict(self) -> dict:
        return {"files_seen": self.files_seen, "files_ingested": self.files_ingested,
                "files_already": self.files_already, "chunks_added": self.chunks_added,
                "skipped": {k: len(v) for k, v in self.skipped.items()}}


def clean(text: str) -> str:
    """The text without HTML tags/entities and markdown marks, whitespace collapsed."""
    text = html.unescape(_TAG.sub(" ", text))
    return _SPACE.sub(" ", _MD_MARK.sub(" ", text)).strip()


def spans(text: str, max_chars: int, min_chars: int = 0) -> list[tuple[int, int]]:
    """Chunk spans over ``text``: whole paragraphs packed up to ``max_chars``; a longer paragraph is cut
    at the last whitespace before the limit. A piece shorter than ``min_chars`` joins its predecessor (a
    heading, the tail of a cut paragraph), so nothing is lost for being short."""
    paragraphs, pos = [], 0
    for m in _PARAGRAPH.finditer(text):
        paragraphs.append((pos, m.start()))
        pos = m.end()
    paragraphs.append((pos, len(text)))
    pieces: list[tuple[int, int]] = []
    for start, end in paragraphs:
        while end - start > max_chars:
            cut = text.rfind(" ", start + 1, start + max_chars)
            cut = cut if cut > start else start + max_chars
            pieces.append((start, cut))
            start = cut
        if text[start:end].strip():
            pieces.append((start, end))
    out: list[tuple[int, int]] = []
    for start, end in pieces:
        if out and (end - out[-1][0] <= max_chars or end - start < min_chars):
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    if len(out) > 1 and out[0][1] - out[0][0] < min_chars:  # a short opening piece joins the next
        out[1:2], out[:1] = [(out[0][0], out[1][1])], []
    return out


def _skip(report: IngestReport, reason: str, name: str, detail: str = "") -> None:
    report.skipped.setdefault(reason, []).append(name)
    log.warning("corpus file skipped", extra={"file": name, "reason": reason, "detail": detail})


def _records(raw: str, suffix: str, text_field: str, name: str, report: IngestReport) -> list[tuple[int, str]]:
    if suffix != ".jsonl":
        return [(0, raw)]
    out = []
    for i, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)[text_field]
            if not isinstance(value, str):
                raise TypeError(f"{text_field!r} is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            _skip(report, "bad-record", f"{name}:{i}", str(exc)[:200])
            continue
        out.append((i, value))
    return out


def ingest(db: Database, folder: Path, *, max_chars: int = 800, min_chars: int = 20,
           text_field: str = "text") -> IngestReport:
    """Ingest every supported file under ``folder`` into ``corpus_chunks``; see the module docstring."""
    folder = Path(folder)
    report = IngestReport()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        report.files_seen += 1
        if path.suffix.lower() not in SUFFIXES:
            _skip(report, "unsupported", name)
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            _skip(report, "unreadable", name, str(exc))
            continue
        if b"\x00" in data[:8192]:
            _skip(report, "binary", name)
            continue
        try:
            raw = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            _skip(report, "not-utf8", name, str(exc))
            continue
        digest = hashlib.sha256(data).hexdigest()
        if db.execute("SELECT 1 FROM corpus_chunks WHERE source_sha256 = ? LIMIT 1", [digest]).fetchone():
            report.files_already += 1
            continue
        rows = []
        for record, text in _records(raw, path.suffix.lower(), text_field, name, report):
            for start, end in spans(text, max_chars, min_chars):
                chunk = clean(text[start:end])
                if len(chunk) >= min_chars:
                    rows.append((name, digest, record, start, end, chunk,
                                 hashlib.sha256(chunk.encode()).hexdigest(), time.time()))
        if not rows:
            _skip(report, "empty", name)
            continue
        with db.atomic():
            before = db.conn.total_changes
            db.conn.executemany(
                """INSERT OR IGNORE INTO corpus_chunks (source, source_sha256, record, start_char, end_char, text,
                       text_sha256, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""", rows)
            report.chunks_added += db.conn.total_changes - before
        report.files_ingested += 1
    log.info("corpus ingested", extra=report.as_dict())
    return report


def chunks(db: Database) -> list[dict]:
    """Every stored chunk, in id order (id, source, record, start_char, end_char, text)."""
    return list(db.query("SELECT id, source, record, start_char, end_char, text FROM corpus_chunks ORDER BY id"))
