"""Round directories and the one commit protocol for them.

Layout (DESIGN.md)::

    rounds/round_000042/   learner/  config.json  state.db  manifest.json  COMPLETE
    LATEST                 one line: the newest committed round

Commit (``commit_round``): stage ``rounds/.round_000042.tmp/`` (learner hard-linked or copied, the
config, the store as of the round: a backup-API copy ``state.db``, or ``store.delta`` + ``base_round``
(``store/delta.py``), the manifest with sha256 of every file), fsync everything,
write ``COMPLETE`` last, rename the directory into place, fsync ``rounds/``, then atomically rewrite
``LATEST``. Only after that does the caller mark the round committed in SQLite; at start-up the disk
is the truth (``committed_on_disk``) and the database is reconciled to it (``reconcile``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json, atomic_write_text, fsync_dir, fsync_tree
from .connect import transaction
from .readmodel import COMPLETE, committed_on_disk, round_name, rounds_dir

MANIFEST_FORMAT = 1


def round_dir(state_dir: Path, n: int) -> Path:
    return rounds_dir(state_dir) / round_name(n)


def work_dir(state_dir: Path, n: int) -> Path:
    """Scratch space of an uncommitted round (its trained learner waits here until SNAPSHOT)."""
    return Path(state_dir) / "work" / round_name(n)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def link_or_copy_tree(src: Path, dst: Path) -> None:
    """Copy a learner directory, hard-linking files where possible (learner files are never modified
    in place, so rounds can share them; deleting one round's link leaves the other intact)."""

    def _link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=_link)


def build_manifest(root: Path, round_n: int, parent_round: int | None, version: str) -> dict:
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in (COMPLETE, "manifest.json"):
            continue
        files[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return {
        "format_version": MANIFEST_FORMAT,
        "round": round_n,
        "parent_round": parent_round,
        "zpd_version": version,
        "created_at": time.time(),
        "files": files,
    }


def verify_round(path: Path) -> list[str]:
    """Problems with a committed round directory (empty list = complete and matching its manifest)."""
    if not (path / COMPLETE).is_file():
        return [f"{path}: no COMPLETE marker"]
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        return [f"{path}/manifest.json: unreadable ({exc})"]
    problems = []
    for rel, info in manifest["files"].items():
        f = path / rel
        if not f.is_file():
            problems.append(f"{f}: missing")
        elif f.stat().st_size != info["bytes"] or sha256_file(f) != info["sha256"]:
            problems.append(f"{f}: does not match its manifest")
    return problems


def commit_round(
    state_dir: Path,
    round_n: int,
    *,
    parent_round: int | None,
    learner_src: Path,
    config_json: str,
    backup_db: Callable[[Path], None] | None = None,
    version: str,
    extra_files: dict[str, str] | None = None,
    write_store: Callable[[Path], None] | None = None,
) -> Path:
    """Atomically publish round ``round_n``. Idempotent: an existing COMPLETE directory is kept. The
    store goes in by ``write_store(stage)`` (any files it writes there are hashed with the rest) or, when
    that is None, ``backup_db(stage / "state.db")``."""
    final = round_dir(state_dir, round_n)
    if (final / COMPLETE).is_file():
        return final
    root = rounds_dir(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    stage = root / f".{round_name(round_n)}.tmp"
    if stage.exists():
        shutil.rmtree(stage)
    if final.exists():  # a directory without COMPLETE cannot be a committed round
        shutil.rmtree(final)
    stage.mkdir()
    link_or_copy_tree(learner_src, stage / "learner")
    (stage / "config.json").write_text(config_json)
    for rel, text in (extra_files or {}).items():
        (stage / rel).write_text(text)
    if write_store is not None:
        write_store(stage)
    elif backup_db is not None:
        backup_db(stage / "state.db")
    else:
        raise ValueError("commit_round needs write_store or backup_db")
    manifest = build_manifest(stage, round_n, parent_round, version)
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=2))
    fsync_tree(stage)
    atomic_write_text(stage / COMPLETE, f"{round_n}\n")
    os.rename(stage, final)
    fsync_dir(root)
    atomic_write_text(Path(state_dir) / "LATEST", f"{round_n}\n")
    return final


def read_latest(state_dir: Path) -> int | None:
    try:
        return int((Path(state_dir) / "LATEST").read_text().strip())
    except (OSError, ValueError):
        return None


def clean_stale(state_dir: Path) -> list[Path]:
    """Remove half-built staging directories (``rounds/.round_*.tmp``) left by a kill."""
    removed = []
    root = rounds_dir(state_dir)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".round_") and p.name.endswith(".tmp"):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def rounds_to_prune(
    committed: list[int], *, keep_last: int, keep_every: int, keep_all: bool, protect: set[int]
) -> list[int]:
    if keep_all:
        return []
    keep = set(committed[-keep_last:]) | protect
    if keep_every:
        keep |= {n for n in committed if n % keep_every == 0}
    return [n for n in committed if n not in keep]


def prune(state_dir: Path, rounds: list[int]) -> None:
    """Delete pruned rounds; called only once the newer LATEST is durable."""
    for n in rounds:
        path = round_dir(state_dir, n)
        if path.exists():
            # Drop the marker first so a kill mid-delete never leaves a "complete" partial round.
            (path / COMPLETE).unlink(missing_ok=True)
            fsync_dir(path)
            shutil.rmtree(path, ignore_errors=True)
    if rounds:
        fsync_dir(rounds_dir(state_dir))


def mark_committed(db: Any, round_n: int) -> None:
    """The store's side of a commit, after the disk's (in the caller's transaction, or one of its own)."""
    with transaction(db) as conn:
        conn.execute("UPDATE rounds SET status = 'committed', phase = 'done', finished_at = ? WHERE id = ?",
                     [time.time(), round_n])


def reconcile(db: Any, state_dir: Path) -> list[int]:
    """Make the store and ``LATEST`` agree with the disk after a kill; returns rounds newly marked
    committed."""
    clean_stale(state_dir)
    on_disk = set(committed_on_disk(state_dir))
    conn = getattr(db, "conn", db)
    fixed = [n for (n,) in conn.execute("SELECT id FROM rounds WHERE status != 'committed'").fetchall()
             if n in on_disk]
    with transaction(db) as tx:
        for n in fixed:
            tx.execute("UPDATE rounds SET status = 'committed', phase = 'done', "
                       "finished_at = coalesce(finished_at, ?) WHERE id = ?", [time.time(), n])
    for (n,) in conn.execute("SELECT id FROM rounds WHERE status = 'committed'").fetchall():
        shutil.rmtree(work_dir(state_dir, n), ignore_errors=True)
    # A kill between a round directory's rename and the rewrite of LATEST (in ``commit_round``, in
    # seeding, in rollback) leaves LATEST behind the disk or absent: the newest COMPLETE round is the
    # truth (a rollback moves the later rounds aside before it rewrites LATEST).
    if on_disk and read_latest(state_dir) != max(on_disk):
        atomic_write_text(Path(state_dir) / "LATEST", f"{max(on_disk)}\n")
    return fixed


def is_committed(db: Any, round_n: int) -> bool:
    """Whether the store records round ``round_n`` as committed."""
    conn = getattr(db, "conn", db)
    row = conn.execute("SELECT 1 FROM rounds WHERE id = ? AND status = 'committed'", [round_n]).fetchone()
    return row is not None


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


__all__ = [
    "COMPLETE",
    "atomic_write_json",
    "build_manifest",
    "clean_stale",
    "commit_round",
    "committed_on_disk",
    "dir_bytes",
    "is_committed",
    "link_or_copy_tree",
    "mark_committed",
    "prune",
    "read_latest",
    "reconcile",
    "round_dir",
    "round_name",
    "rounds_dir",
    "rounds_to_prune",
    "verify_round",
    "work_dir",
]
