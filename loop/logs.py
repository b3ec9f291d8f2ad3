"""JSON-lines logs on stdout and in ``logs/zpd.jsonl`` (size-based rotation), carrying round and phase.

Each record is one JSON object: ``ts, level, event, round, phase`` plus any ``extra=`` fields.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import Any

LOGGER_NAME = "zpd"
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class RoundContext:
    """What the daemon is doing right now; every record is stamped with it."""

    round: int | None = None
    phase: str = "idle"


CONTEXT = RoundContext()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "round": CONTEXT.round,
            "phase": CONTEXT.phase,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(log_dir: Path | None, level: str = "INFO", max_bytes: int = 10_000_000, backups: int = 5) -> logging.Logger:
    # A daemon must not print tracebacks to stderr when a log write fails (a full disk): the stdout
    # handler still carries every record, and the stop itself is reported in one line.
    logging.raiseExceptions = False
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.setLevel(level)
    logger.propagate = False
    fmt = JsonFormatter()
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(log_dir / "zpd.jsonl", maxBytes=max_bytes, backupCount=backups)
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


class Progress:
    """A one-line progress display for long phases, only when stderr is a terminal."""

    def __init__(self, label: str, total: int, enabled: bool = True) -> None:
        self.label, self.total = label, max(total, 1)
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.monotonic()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        sys.stderr.write(f"\r{self.label}: {done}/{self.total} ({100 * done / self.total:.0f}%, {elapsed:.0f}s)")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
