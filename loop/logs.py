"""Logs: JSON lines in ``logs/zpd.jsonl`` (size-based rotation), and the terminal.

Each JSON record is one object: ``ts, level, event, round, phase`` plus any ``extra=`` fields; the file
always holds them (other tools and the tests read it). The console (stdout) shows the same records

* ``human`` (the default): one short line per record, ``12:04:31  round 1 calibrate  calibrated
  fates: zpd 16, mastered 6``; long phases get a progress bar with an ETA on stderr when it is a
  terminal, and a plain progress line every ``HEARTBEAT_SECONDS`` when it is not (a pipe, a test);
* ``json`` (``zpd start --log-format json``, for systemd's journal): the JSON records, nothing else.

Python warnings are routed into the logs (``logging.captureWarnings``): they are records of the run,
kept in the file (and on stdout in ``json``), never printed raw on a human's terminal.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import Any, Literal

LOGGER_NAME = "zpd"
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
LogFormat = Literal["human", "json"]
LOG_FORMATS: tuple[str, ...] = ("human", "json")
HEARTBEAT_SECONDS = 30.0
# Records the progress display replaces on a human console (it shows the same figures, live).
_SHOWN_AS_PROGRESS = {"training progress"}


class RoundContext:
    """What the daemon is doing right now; every record is stamped with it."""

    round: int | None = None
    phase: str = "idle"


CONTEXT = RoundContext()


class ConsoleSettings:
    """How the console shows records; ``zpd start --log-format`` sets it before the daemon logs."""

    format: LogFormat = "human"


CONSOLE = ConsoleSettings()


def set_console_format(fmt: LogFormat) -> None:
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    CONSOLE.format = fmt


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "round": CONTEXT.round,
            "phase": CONTEXT.phase,
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_value(x)}" for k, x in v.items()) or "none"
    if isinstance(v, list | tuple):
        return ", ".join(_value(x) for x in v) or "none"
    return "none" if v is None else str(v)


class HumanFormatter(logging.Formatter):
    """``HH:MM:SS  round R phase  event  key: value; ...``; multi-line values (a trainer's log tail)
    indented below; an exception as its last line only (the traceback is in ``logs/zpd.jsonl``)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        where = "zpd" if CONTEXT.round is None else f"round {CONTEXT.round} {CONTEXT.phase}"
        level = "" if record.levelno == logging.INFO else f"{record.levelname}: "
        fields = {k: v for k, v in _fields(record).items()
                  if k not in ("round", "phase") or v != getattr(CONTEXT, k)}
        inline: list[str] = []
        below: list[str] = []
        for key, value in fields.items():
            text = _value(value)
            (below if "\n" in text else inline).append(f"{key}: {text}")
        line = f"{stamp}  {where}  {level}{record.getMessage()}"
        if inline:
            line += "  (" + "; ".join(inline) + ")"
        for block in below:
            line += "\n    " + block.replace("\n", "\n    ")
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line += f"\n    {type(exc).__name__}: {exc} (traceback in logs/zpd.jsonl)"
        return line


class HumanConsoleHandler(logging.StreamHandler):
    """Human lines on stdout that never glue onto a progress bar: a live bar is cleared, the line
    written, and the bar redrawn below it (tqdm's ``external_write_mode``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in _SHOWN_AS_PROGRESS and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            with tqdm.external_write_mode(file=self.stream):
                super().emit(record)
        except Exception:  # noqa: BLE001 - logging must never take the daemon down
            self.handleError(record)


def setup_logging(log_dir: Path | None, level: str = "INFO", max_bytes: int = 10_000_000,
                  backups: int = 5) -> logging.Logger:
    # A daemon must not print tracebacks to stderr when a log write fails (a full disk): the stdout
    # handler still carries every record, and the stop itself is reported in one line.
    logging.raiseExceptions = False
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.setLevel(level)
    logger.propagate = False
    fmt = JsonFormatter()
    if CONSOLE.format == "json":
        stream: logging.Handler = logging.StreamHandler(sys.stdout)
        stream.setFormatter(fmt)
    else:
        stream = HumanConsoleHandler(sys.stdout)
        stream.setFormatter(HumanFormatter())
    logger.addHandler(stream)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(log_dir / "zpd.jsonl", maxBytes=max_bytes,
                                                       backupCount=backups)
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    _route_warnings(logger)
    return logger


def _route_warnings(logger: logging.Logger) -> None:
    """Python warnings (a library's FutureWarning, say) become records of the ``zpd`` logger: in the
    log file always, on a human console only as one line, never as the raw two-line warning."""
    logging.captureWarnings(True)
    py = logging.getLogger("py.warnings")
    py.handlers.clear()
    py.propagate = False
    file_handlers = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
    for h in file_handlers if CONSOLE.format == "human" else logger.handlers:
        py.addHandler(h)


def close_logging() -> None:
    """Detach and close the run's file handlers and stop capturing warnings, so that nothing emitted
    after the daemon stops (a ResourceWarning at garbage collection, in a process that goes on) lands
    in this run's ``logs/zpd.jsonl``."""
    logging.captureWarnings(False)
    logging.getLogger("py.warnings").handlers.clear()
    log = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in log.handlers if isinstance(h, logging.FileHandler)]:
        log.removeHandler(handler)
        handler.close()


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


_UNITS = {"calibrate": "task", "train": "step", "measure": "item"}


class Progress:
    """Progress of a long phase (``label`` such as ``round 3 calibrate``, ``total`` units).

    On a human console with stderr a terminal: a tqdm bar with rate and ETA. On a human console
    without a terminal: a plain line every ``HEARTBEAT_SECONDS`` (and none for phases shorter than
    that). With ``--log-format json`` or ``enabled=False`` (``logging.progress``): nothing."""

    def __init__(self, label: str, total: int, enabled: bool = True) -> None:
        self.label, self.total = label, max(total, 1)
        self.enabled = enabled and CONSOLE.format == "human"
        self.start = self.last_line = time.monotonic()
        self.bar = None
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=label, unit=_UNITS.get(label.rsplit(" ", 1)[-1], "it"),
                            file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.5)

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(max(0, min(done, self.total) - self.bar.n))
            return
        now = time.monotonic()
        if now - self.last_line >= HEARTBEAT_SECONDS and done < self.total:
            self.last_line = now
            elapsed = now - self.start
            eta = elapsed / done * (self.total - done) if done else None
            sys.stdout.write(f"{time.strftime('%H:%M:%S')}  {self.label}: {done}/{self.total} "
                             f"({100 * done / self.total:.0f}%), {_clock(elapsed)} elapsed"
                             + (f", about {_clock(eta)} left\n" if eta is not None else "\n"))
            sys.stdout.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
