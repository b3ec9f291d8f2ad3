"""What "handled" means for the attack suite (tests/test_attacks_*.py, bench/attacks.py), and helpers.

A case is handled when the command's answer is ONE line on stderr, the exit code is 2 or 4 (or a 4xx /
503 from serve), no traceback was printed, not one byte of the state directory changed (a digest of
every name, size and content before and after) and peak memory stayed under twice the baseline.
Cheap cases call ``zpd.loop.cli.main`` in-process (the CLI's own exit-code and message path); the
ones where a real process and its exit status matter run ``python -m zpd.loop.cli``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zpd.loop.daemon  # noqa: F401  imported before any baseline is taken: the CLI's own weight
from zpd.loop.cli import main


@dataclass
class Outcome:
    category: str
    case: str
    handled: bool
    detail: str


def tree_digest(path: Path) -> str | None:
    """A digest of every entry under ``path`` (names, sizes, contents); None when it does not exist.
    SQLite's ``-shm`` index and an empty ``-wal``, which any reader of a WAL store may create (and a
    killed reader leaves), are not content and are left out; a ``-wal`` holding frames is included."""
    if not os.path.lexists(path):
        return None
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        h.update(root.encode("utf-8", "surrogateescape"))
        for name in sorted(files):
            p = Path(root) / name
            if name.endswith("-shm") or (name.endswith("-wal") and p.stat().st_size == 0):
                continue
            h.update(name.encode("utf-8", "surrogateescape"))
            if p.is_symlink():
                h.update(os.readlink(p).encode("utf-8", "surrogateescape"))
            elif p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cli(*args: str) -> tuple[int, str]:
    """Run the CLI in this process: (exit code, stderr)."""
    err, out = io.StringIO(), io.StringIO()
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    return code, err.getvalue()


def judge_cli(category: str, case: str, run: Callable[[], tuple[int, str]], watched: list[Path],
              codes: tuple[int, ...] = (2, 4)) -> Outcome:
    """Run a refused-command case and judge it by the rules above."""
    before = [tree_digest(p) for p in watched]
    base = peak_rss_bytes()
    code, stderr = run()
    lines = stderr.strip().splitlines()
    problems = []
    if code not in codes:
        problems.append(f"exit {code}")
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines")
    if "Traceback" in stderr:
        problems.append("traceback")
    if [tree_digest(p) for p in watched] != before:
        problems.append("state directory changed")
    if peak_rss_bytes() > 2 * base:
        problems.append("memory over twice the baseline")
    return Outcome(category, case, not problems, "; ".join(problems) or (lines[0][:160] if lines else ""))
