"""Reading a user's problem file for the dataset domain: JSONL, CSV/TSV, parquet, or a saved HF
``datasets`` directory, through the field mapping of ``[domains.dataset]``.

Every row is checked before any is used (``read_items`` returns the whole, validated item list or
raises), so there is never a half-imported file: items reach the store only later, as tasks, inside
SYNTHESIZE's and the bootstrap's transactions. A bad row (broken JSON, not UTF-8, a missing or
mistyped field, an empty question or answer, an answer the numeric grader cannot read, a line longer
than ``max_row_bytes``, the same question with a different answer) either stops the import with
``DatasetFileError("FILE:LINE: why")`` (``on_bad_row = "reject"``) or is skipped and counted
(``"skip"``). Exact duplicates (same question, same answer) are dropped and counted in both modes.
Lines are numbered from 1 as an editor shows them; parquet and HF rows are "row N" (from 1).
"""

from __future__ import annotations

import csv
import json
import math
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .dataset_grading import parse_number

_OVERSIZE = "\udcff<oversize>"
MAPPED_FIELDS = ("question_field", "answer_field", "solution_field", "difficulty_field", "category_field")
"""The mapping keys of ``[domains.dataset]``; each one that is set must name a field the file has."""


class DatasetFileError(ValueError):
    """The file cannot be used; ``str(err)`` is one line naming the file (and line)."""


class BadRow(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Item:
    question: str
    answer: str
    solution: str
    difficulty: float | None
    category: str
    source: str
    """Where the row came from: ``FILE:LINE`` or ``FILE:row N``."""

    @property
    def canonical(self) -> str:
        return " ".join(self.question.split())


@dataclass
class ImportReport:
    path: str
    num_rows: int = 0
    num_items: int = 0
    num_skipped: int = 0
    num_duplicates: int = 0
    first_errors: list[str] = field(default_factory=list)


def detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "hf"
    suffix = path.suffix.lower()
    for name, suffixes in (("jsonl", (".jsonl", ".ndjson", ".json")), ("csv", (".csv", ".tsv")),
                           ("parquet", (".parquet", ".pq"))):
        if suffix in suffixes:
            return name
    raise DatasetFileError(f"{path}: cannot tell the file format from its name; set domains.dataset.format")


def _lines(fh: BinaryIO, max_bytes: int) -> Iterator[bytes]:
    """Raw lines, each at most ``max_bytes`` in memory: a longer line (a 100 MB line, say) is consumed
    in 1 MiB chunks and yielded as the ``_OVERSIZE`` sentinel instead."""
    while True:
        line = fh.readline(max_bytes + 1)
        if not line:
            return
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while (rest := fh.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield _OVERSIZE.encode("utf-8", "surrogateescape")
            continue
        yield line


def _jsonl_records(path: Path, max_bytes: int) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as fh:
        for num, raw in enumerate(_lines(fh, max_bytes), start=1):
            where = f"{path}:{num}"
            if raw == _OVERSIZE.encode("utf-8", "surrogateescape"):
                yield where, BadRow(f"line longer than {max_bytes} bytes (domains.dataset.max_row_bytes)")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield where, BadRow(f"not valid UTF-8 (byte {exc.start})")
                continue
            if num == 1:
                text = text.removeprefix("\ufeff")  # a UTF-8 byte order mark
            if not text.strip():
                continue
            try:
                yield where, json.loads(text)
            except json.JSONDecodeError as exc:
                yield where, BadRow(f"invalid JSON: {exc.msg} (column {exc.colno})")
            except RecursionError:
                yield where, BadRow("JSON nested too deeply")
            except ValueError as exc:  # an integer of more than 4300 digits
                yield where, BadRow(f"unusable JSON: {' '.join(str(exc).split())[:100]}")


def _csv_records(path: Path, max_bytes: int, required: dict[str, str]) -> Iterator[tuple[str, Any]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    csv.field_size_limit(max(max_bytes, 1024))
    with open(path, "rb") as fh:
        texts = (raw.decode("utf-8", "surrogateescape") for raw in _lines(fh, max_bytes))
        reader = csv.reader(texts, delimiter=delimiter)
        header: list[str] | None = None
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield f"{path}:{start}", BadRow(f"malformed CSV: {exc}")
                continue
            where = f"{path}:{start}"
            if not cells or all(not c.strip() for c in cells):
                continue
            joined = "".join(cells)
            if _OVERSIZE in joined:
                yield where, BadRow(f"line longer than {max_bytes} bytes (domains.dataset.max_row_bytes)")
                continue
            if any("\udc80" <= ch <= "\udcff" for ch in joined):
                yield where, BadRow("not valid UTF-8")
                continue
            if header is None:
                header = [c.strip() for c in cells]
                header[0] = header[0].removeprefix("\ufeff").strip()  # a UTF-8 byte order mark
                for key, column in required.items():
                    if column not in header:
                        raise DatasetFileError(f"{where}: no column {column!r} in the CSV header "
                                               f"(domains.dataset.{key})")
                continue
            if len(cells) != len(header):
                yield where, BadRow(f"{len(cells)} columns where the header has {len(header)}")
                continue
            yield where, dict(zip(header, cells, strict=True))


def _table_records(path: Path, fmt: str, split: str) -> Iterator[tuple[str, Any]]:
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        else:
            import datasets

            data = datasets.load_from_disk(str(path))
            if isinstance(data, datasets.DatasetDict):
                if split not in data:
                    raise DatasetFileError(f"{path}: no split {split!r} (has {', '.join(data)}); "
                                           "set domains.dataset.split")
                data = data[split]
            rows = iter(data)
    except DatasetFileError:
        raise
    except Exception as exc:  # pyarrow / datasets raise many types for unreadable files
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetFileError(f"{path}: cannot read {fmt} data: {why}") from None
    for num, row in enumerate(rows, start=1):
        yield f"{path}:row {num}", row


def _text(value: Any, name: str, *, numbers: bool) -> str:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # "\ud800" in JSON: a lone surrogate, which no store or tokenizer takes
            raise BadRow(f"field {name!r} holds a lone surrogate (\\ud800-\\udfff), "
                         "not valid Unicode") from None
        return value
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRow(f"field {name!r} is {value}")
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    kinds = "a string or a number" if numbers else "a string"
    raise BadRow(f"field {name!r} must be {kinds}, got {type(value).__name__}")


def _item(record: Any, where: str, cfg: Any) -> Item:
    if not isinstance(record, dict):
        raise BadRow(f"expected an object with fields, got {type(record).__name__}")
    for name in (cfg.question_field, cfg.answer_field, cfg.difficulty_field):
        if name is not None and record.get(name) is None:
            raise BadRow(f"missing field {name!r}")
    question = _text(record[cfg.question_field], cfg.question_field, numbers=False).strip()
    answer = _text(record[cfg.answer_field], cfg.answer_field, numbers=True).strip()
    solution = ""
    if cfg.solution_field is not None and record.get(cfg.solution_field) is not None:
        solution = _text(record[cfg.solution_field], cfg.solution_field, numbers=True).strip()
    marker = cfg.answer_marker
    if marker and marker in answer:  # GSM8K style: "worked solution #### 72"
        before, answer = (part.strip() for part in answer.rsplit(marker, 1))
        solution = solution or before
    if not question:
        raise BadRow(f"empty question (field {cfg.question_field!r})")
    if not answer:
        raise BadRow(f"empty answer (field {cfg.answer_field!r})")
    if cfg.grader == "numeric" and parse_number(answer) is None:
        raise BadRow(f"answer {answer[:40]!r} is not a number (domains.dataset.grader = 'numeric')")
    difficulty = None
    if cfg.difficulty_field is not None:
        raw = record[cfg.difficulty_field]
        try:
            if isinstance(raw, bool):
                raise ValueError
            difficulty = float(raw)
        except (TypeError, ValueError, OverflowError):
            raise BadRow(f"field {cfg.difficulty_field!r} must be a number, got {str(raw)[:40]!r}") from None
        if not math.isfinite(difficulty):
            raise BadRow(f"field {cfg.difficulty_field!r} is {difficulty}")
    category = ""
    if cfg.category_field is not None and record.get(cfg.category_field) is not None:
        value = record[cfg.category_field]
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise BadRow(f"field {cfg.category_field!r} must be a string, got {type(value).__name__}")
        category = _text(str(value), cfg.category_field, numbers=False).strip()
    return Item(question, answer, solution, difficulty, category, where)


def read_items(cfg: Any) -> tuple[list[Item], ImportReport]:
    """Every usable item of ``cfg.path`` (a ``DatasetConfig``), in file order, and what was dropped.
    Raises DatasetFileError on the first bad row when ``cfg.on_bad_row == "reject"``."""
    path = Path(cfg.path)
    if not path.exists():
        raise DatasetFileError(f"{path}: dataset file not found (domains.dataset.path)")
    fmt = detect_format(path, cfg.format)
    if fmt != "hf" and not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the start forever
        raise DatasetFileError(f"{path}: not a regular file (domains.dataset.path)")
    if fmt == "jsonl":
        records = _jsonl_records(path, cfg.max_row_bytes)
    elif fmt == "csv":
        required = {k: getattr(cfg, k) for k in MAPPED_FIELDS if getattr(cfg, k) is not None}
        records = _csv_records(path, cfg.max_row_bytes, required)
    else:
        records = _table_records(path, fmt, cfg.split)
    report = ImportReport(str(path))
    items: list[Item] = []
    seen: dict[str, Item] = {}
    optional = {k: getattr(cfg, k) for k in ("solution_field", "category_field")
                if getattr(cfg, k) is not None}
    found: set[str] = set()
    try:
        for where, record in records:
            report.num_rows += 1
            if isinstance(record, dict):
                found.update(key for key, name in optional.items() if name in record)
            try:
                if isinstance(record, BadRow):
                    raise record
                item = _item(record, where, cfg)
                first = seen.get(item.canonical)
                if first is not None:
                    if first.answer != item.answer:
                        raise BadRow(f"same question as {first.source} with a different answer "
                                     f"({item.answer[:30]!r} vs {first.answer[:30]!r})")
                    report.num_duplicates += 1
                    continue
            except BadRow as exc:
                if cfg.on_bad_row == "reject":
                    raise DatasetFileError(
                        f"{where}: {exc} (domains.dataset.on_bad_row = 'reject')") from None
                report.num_skipped += 1
                if len(report.first_errors) < 10:
                    report.first_errors.append(f"{where}: {exc}")
                continue
            seen[item.canonical] = item
            items.append(item)
    except OSError as exc:
        raise DatasetFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    report.num_items = len(items)
    for key in optional.keys() - found:  # set explicitly, so a typo must not silently mean "none"
        raise DatasetFileError(f"{path}: no row has the field {optional[key]!r} (domains.dataset.{key})")
    if not items:
        raise DatasetFileError(f"{path}: no usable rows ({report.num_rows} read, {report.num_skipped} bad, "
                               f"{report.num_duplicates} duplicates)")
    return items, report
