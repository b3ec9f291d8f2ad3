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
malformed JSONL lines (broken or too deeply nested JSON, a lone-surrogate text) are skipped, each with
a log line naming the file, and counted in the report. One transaction per file. Files are streamed
(hashed and checked in one pass, chunked in a second, stored in batches), so memory does not grow with
a file's size; symlinks out of the folder are not followed.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .sqlite import Database

log = logging.getLogger("zpd.corpus")

SUFFIXES = (".txt", ".md", ".jsonl")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_TAG = re.compile(r"<[^>\n]{1,200}>")
_MD_MARK = re.compile(r"(?m)^[ \t]*(#{1,6}[ \t]+|>[ \t]?|[-*+][ \t]+)|(\*\*|__|`{1,3})")
_SPACE = re.compile(r"\s+")
MAX_RECORD_BYTES = 16 << 20
"""A JSONL line longer than this is a bad record, read past in 1 MiB pieces and never held whole."""
_BLOCK_CHARS = 1 << 20


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


def _walk(folder: Path, report: IngestReport) -> list[tuple[str, Path]]:
    """(name, path) of every regular file under ``folder``, sorted. Symlinked directories are not entered;
    a symlinked file is taken only when it resolves inside the folder (a link to /etc/passwd is skipped
    as "outside"). FIFOs and other special files are not files (opening one could block forever)."""
    root = folder.resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        for entry in sorted(dirnames + filenames):
            path = base / entry
            name = path.relative_to(folder).as_posix()
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root):
                    report.files_seen += 1
                    _skip(report, "outside", name, "a symlink out of the folder")
                    continue
                if target.is_dir():
                    continue  # its files are reached under their own names
            if entry in filenames and path.is_file():
                found.append((name, path))
    return sorted(found)


def _scan(path: Path) -> tuple[str, bool]:
    """First pass, in blocks: the file's sha256, and whether it has a NUL byte in its first 8 KiB.
    Raises UnicodeDecodeError when it is not strict UTF-8, OSError when unreadable."""
    digest, decoder = hashlib.sha256(), codecs.getincrementaldecoder("utf-8")("strict")
    with open(path, "rb") as fh:
        head = True
        for block in iter(lambda: fh.read(1 << 20), b""):
            if head and b"\x00" in block[:8192]:
                return "", True
            head = False
            digest.update(block)
            decoder.decode(block)
        decoder.decode(b"", final=True)
    return digest.hexdigest(), False


def _text_segments(path: Path) -> Iterator[tuple[int, str]]:
    """The decoded text in pieces of about ``_BLOCK_CHARS``, each cut at a paragraph break (or, in a
    paragraph longer than that, at whitespace), with its character offset: memory stays bounded."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        buf, offset = "", 0
        while True:
            block = fh.read(_BLOCK_CHARS)
            buf += block
            if not block:
                if buf:
                    yield offset, buf
                return
            if len(buf) < _BLOCK_CHARS:
                continue
            cut = None
            for m in _PARAGRAPH.finditer(buf, len(buf) // 2):
                cut = m
            if cut is not None:
                yield offset, buf[: cut.start()]
                offset, buf = offset + cut.end(), buf[cut.end():]
            else:
                at = buf.rfind(" ", len(buf) // 2)
                at = at if at > 0 else len(buf)
                yield offset, buf[:at]
                offset, buf = offset + at, buf[at:]


def _jsonl_records(path: Path, text_field: str, name: str, report: IngestReport) -> Iterator[tuple[int, str]]:
    with open(path, "rb") as fh:
        for i, raw in enumerate(iter(lambda: fh.readline(MAX_RECORD_BYTES + 1), b""), start=1):
            if len(raw) > MAX_RECORD_BYTES:
                while (rest := fh.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass
                _skip(report, "bad-record", f"{name}:{i}", f"longer than {MAX_RECORD_BYTES} bytes")
                continue
            line = raw.decode("utf-8")  # the first pass checked it
            if i == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            try:
                value = json.loads(line)[text_field]
                if not isinstance(value, str):
                    raise TypeError(f"{text_field!r} is not a string")
                value.encode("utf-8")  # "\ud800": a lone surrogate no store or tokenizer takes
            except RecursionError:
                _skip(report, "bad-record", f"{name}:{i}", "nested too deeply")
                continue
            except (ValueError, KeyError, TypeError, IndexError) as exc:  # UnicodeEncodeError is a ValueError
                _skip(report, "bad-record", f"{name}:{i}", str(exc)[:200])
                continue
            yield i, value


def _rows(path: Path, name: str, digest: str, text_field: str, max_chars: int, min_chars: int,
          report: IngestReport) -> Iterator[tuple]:
    if path.suffix.lower() == ".jsonl":
        pieces = ((record, 0, text) for record, text in _jsonl_records(path, text_field, name, report))
    else:
        pieces = ((0, offset, text) for offset, text in _text_segments(path))
    for record, offset, text in pieces:
        for start, end in spans(text, max_chars, min_chars):
            chunk = clean(text[start:end])
            if len(chunk) >= min_chars:
                yield (name, digest, record, offset + start, offset + end, chunk,
                       hashlib.sha256(chunk.encode()).hexdigest(), time.time())


def ingest(db: Database, folder: Path, *, max_chars: int = 800, min_chars: int = 20,
           text_field: str = "text") -> IngestReport:
    """Ingest every supported file under ``folder`` into ``corpus_chunks``; see the module docstring."""
    folder = Path(folder)
    report = IngestReport()
    for name, path in _walk(folder, report):
        report.files_seen += 1
        if path.suffix.lower() not in SUFFIXES:
            _skip(report, "unsupported", name)
            continue
        try:
            digest, binary = _scan(path)
        except OSError as exc:
            _skip(report, "unreadable", name, str(exc))
            continue
        except UnicodeDecodeError as exc:
            _skip(report, "not-utf8", name, str(exc))
            continue
        if binary:
            _skip(report, "binary", name)
            continue
        if db.execute("SELECT 1 FROM corpus_chunks WHERE source_sha256 = ? LIMIT 1", [digest]).fetchone():
            report.files_already += 1
            continue
        added = _store_file(db, _rows(path, name, digest, text_field, max_chars, min_chars, report))
        if added is None:
            _skip(report, "unreadable", name, "changed or unreadable while ingested")
        elif added < 0:
            _skip(report, "empty", name)
        else:
            report.chunks_added += added
            report.files_ingested += 1
    log.info("corpus ingested", extra=report.as_dict())
    return report


class _Unreadable(Exception):
    pass


def _store_file(db: Database, rows: Iterator[tuple]) -> int | None:
    """One transaction per file, fed in batches: chunks added, -1 when the file made none, None when it
    could not be read to the end (nothing of it is stored)."""
    seen = 0
    try:
        with db.atomic():
            before = db.conn.total_changes
            while True:
                try:
                    batch = list(itertools.islice(rows, 512))
                except (OSError, UnicodeDecodeError) as exc:
                    raise _Unreadable(str(exc)) from None
                if not batch:
                    break
                seen += len(batch)
                db.conn.executemany(
                    """INSERT OR IGNORE INTO corpus_chunks (source, source_sha256, record, start_char,
                           end_char, text, text_sha256, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                    batch,
                )
            added = db.conn.total_changes - before
    except _Unreadable:
        return None
    return added if seen else -1


def chunks(db: Database) -> list[dict]:
    """Every stored chunk, in id order (id, source, record, start_char, end_char, text)."""
    return list(
        db.query("SELECT id, source, record, start_char, end_char, text FROM corpus_chunks ORDER BY id")
    )


def chunk_stamp(db: Database) -> tuple[int, int | None]:
    """(number of chunks, largest id): chunks are only ever added, so an unchanged stamp is an unchanged
    chunk set."""
    count, top = db.execute("SELECT count(*), max(id) FROM corpus_chunks").fetchone()
    return int(count), top
