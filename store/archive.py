"""Portable snapshot archives of a committed round, and seeding a new state directory from one.

An archive is an uncompressed tar (model weights barely compress) holding::

    SNAPSHOT.json                 {"format_version", "round", "zpd_version", "created_at", "files": {path: {bytes, sha256}}}
    round_000042/...              the committed round directory as it is on disk: learner/, config.json,
                                  state.db (the store as of that round, taken with SQLite's backup API),
                                  manifest.json, COMPLETE

``write_snapshot`` only reads the state directory (it works while the daemon runs) and writes the
archive atomically. ``seed_from_snapshot`` verifies every hash before it writes a byte into the
target, and refuses a truncated or altered archive.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path

from .atomic import atomic_path, atomic_write_text, fsync_dir, fsync_file, fsync_tree
from .rounds import COMPLETE, round_dir, round_name, rounds_dir, sha256_file, verify_round

ARCHIVE_FORMAT = 1
INDEX = "SNAPSHOT.json"


class SnapshotError(RuntimeError):
    """An archive that cannot be written or used; the message names the file and what is wrong."""


def write_snapshot(state_dir: Path, round_n: int, out: Path, version: str) -> dict:
    """Archive committed round ``round_n`` to ``out`` (atomically). Returns the archive index."""
    src = round_dir(state_dir, round_n)
    problems = verify_round(src)
    if problems:
        raise SnapshotError(f"round {round_n} cannot be archived: {problems[0]}")
    files = {}
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = f"{round_name(round_n)}/{path.relative_to(src).as_posix()}"
        files[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    index = {"format_version": ARCHIVE_FORMAT, "round": round_n, "zpd_version": version,
             "created_at": time.time(), "files": files}
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, tarfile.open(tmp, mode="w") as tar:
        data = json.dumps(index, indent=2).encode()
        info = tarfile.TarInfo(INDEX)
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
        for rel in files:
            tar.add(src / rel.split("/", 1)[1], arcname=rel, recursive=False)
    return index


def read_index(archive: Path) -> dict:
    try:
        with tarfile.open(archive, mode="r") as tar:
            member = tar.extractfile(INDEX)
            if member is None:
                raise SnapshotError(f"{archive}: no {INDEX} in the archive")
            return json.loads(member.read())
    except FileNotFoundError:
        raise SnapshotError(f"{archive}: no such file") from None
    except (tarfile.TarError, KeyError, ValueError, EOFError, OSError) as exc:
        raise SnapshotError(f"{archive}: not a readable zpd snapshot ({exc})") from None


def seed_from_snapshot(archive: Path, state_dir: Path) -> int:
    """Unpack a verified archive into an empty state directory; returns the archived round.

    The round directory and the store are staged inside ``state_dir`` and only renamed into place
    once every file matched its hash, so a bad archive leaves the directory as it was.
    """
    archive = Path(archive)
    index = read_index(archive)
    if index.get("format_version") != ARCHIVE_FORMAT:
        raise SnapshotError(f"{archive}: archive format {index.get('format_version')} is not supported")
    round_n = int(index["round"])
    stage = Path(state_dir) / f".seed-{os.getpid()}.tmp"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    try:
        try:
            with tarfile.open(archive, mode="r") as tar:
                names = set()
                for member in tar:
                    if member.name == INDEX:
                        continue
                    if member.name not in index["files"] or not member.isfile():
                        raise SnapshotError(f"{archive}: unexpected member {member.name!r}")
                    tar.extract(member, stage, filter="data")
                    names.add(member.name)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise SnapshotError(f"{archive}: truncated or unreadable ({exc})") from None
        missing = set(index["files"]) - names
        if missing:
            raise SnapshotError(f"{archive}: truncated: {len(missing)} file(s) missing, e.g. {sorted(missing)[0]}")
        for rel, info in index["files"].items():
            path = stage / rel
            if path.stat().st_size != info["bytes"] or sha256_file(path) != info["sha256"]:
                raise SnapshotError(f"{archive}: {rel} does not match its recorded sha256")
        unpacked = stage / round_name(round_n)
        problems = verify_round(unpacked)
        if problems:
            raise SnapshotError(f"{archive}: {problems[0]}")
        shutil.copyfile(unpacked / "state.db", stage / "state.db")
        fsync_tree(stage)
        rounds_dir(state_dir).mkdir(parents=True, exist_ok=True)
        os.rename(unpacked, round_dir(state_dir, round_n))
        fsync_dir(rounds_dir(state_dir))
        os.rename(stage / "state.db", Path(state_dir) / "state.db")
        fsync_file(Path(state_dir) / "state.db")
        fsync_dir(Path(state_dir))
        atomic_write_text(Path(state_dir) / "LATEST", f"{round_n}\n")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    assert (round_dir(state_dir, round_n) / COMPLETE).is_file()
    return round_n
