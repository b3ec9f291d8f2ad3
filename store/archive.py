"""Portable snapshot archives of a committed round, and seeding a new state directory from one.

An archive is an uncompressed tar (model weights barely compress) holding::

    SNAPSHOT.json                 {"format_version", "round", "zpd_version", "created_at",
                                   "files": {path: {bytes, sha256}}}
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
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import delta
from .atomic import atomic_path, atomic_write_text, fsync_dir, fsync_file, fsync_tree
from .rounds import COMPLETE, round_dir, round_name, rounds_dir, sha256_file, verify_round

ARCHIVE_FORMAT = 1
INDEX = "SNAPSHOT.json"


class SnapshotError(RuntimeError):
    """An archive that cannot be written or used; the message names the file and what is wrong."""


def write_snapshot(state_dir: Path, round_n: int, out: Path, version: str) -> dict:
    """Archive committed round ``round_n`` to ``out`` (atomically). Returns the archive index. The
    archived round always holds a complete ``state.db``: a delta round's store is rebuilt from its base
    and delta (``store/delta.py``), and its manifest rewritten to list ``state.db`` instead."""
    src = round_dir(state_dir, round_n)
    problems = verify_round(src)
    if problems:
        raise SnapshotError(f"round {round_n} cannot be archived: {problems[0]}")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".zpd-snapshot-") as scratch:
        sources = _round_files(state_dir, round_n, Path(scratch))
        files = {}
        for rel, path in sources.items():
            files[f"{round_name(round_n)}/{rel}"] = {"bytes": path.stat().st_size,
                                                     "sha256": sha256_file(path)}
        index = {"format_version": ARCHIVE_FORMAT, "round": round_n, "zpd_version": version,
                 "created_at": time.time(), "files": files}
        with atomic_path(out) as tmp, tarfile.open(tmp, mode="w") as tar:
            data = json.dumps(index, indent=2).encode()
            info = tarfile.TarInfo(INDEX)
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
            for rel, path in sources.items():
                tar.add(path, arcname=f"{round_name(round_n)}/{rel}", recursive=False)
    return index


def _round_files(state_dir: Path, round_n: int, scratch: Path) -> dict[str, Path]:
    """The archived round's files (path in the round -> file to read): the round directory as it is, or
    for a delta round, its store rebuilt into ``scratch`` with a manifest that lists it."""
    src = round_dir(state_dir, round_n)
    found = {p.relative_to(src).as_posix(): p for p in sorted(src.rglob("*")) if p.is_file()}
    if delta.store_kind(src) != "delta":
        return found
    try:
        delta.materialize(state_dir, round_n, scratch / delta.FULL_NAME)
    except delta.DeltaError as exc:
        raise SnapshotError(f"round {round_n} cannot be archived: {exc}") from None
    manifest = json.loads((src / "manifest.json").read_text())
    for name in (delta.DELTA_NAME, delta.BASE_NAME):
        manifest["files"].pop(name, None)
        found.pop(name)
    full = scratch / delta.FULL_NAME
    manifest["files"][delta.FULL_NAME] = {"bytes": full.stat().st_size, "sha256": sha256_file(full)}
    manifest["files"] = dict(sorted(manifest["files"].items()))
    (scratch / "manifest.json").write_text(json.dumps(manifest, indent=2))
    found.update({delta.FULL_NAME: full, "manifest.json": scratch / "manifest.json"})
    return dict(sorted(found.items()))


MAX_INDEX_BYTES = 64 << 20
"""An index larger than this is refused before it is read (a round's index is a few KB)."""
_HEX = frozenset("0123456789abcdef")


def read_index(archive: Path) -> dict:
    """The archive's validated index (``check_index``). Reads only the tar headers and the index; a
    compressed archive is refused (zpd writes plain tars, and a compressed one could be a bomb)."""
    archive = Path(archive)
    try:
        if not stat.S_ISREG(archive.stat().st_mode):  # a FIFO would block tarfile forever
            raise SnapshotError(f"{archive}: not a regular file")
        with tarfile.open(archive, mode="r:") as tar:
            info = tar.getmember(INDEX)
            if not info.isfile() or info.size > MAX_INDEX_BYTES:
                raise SnapshotError(f"{archive}: {INDEX} is not a file of at most {MAX_INDEX_BYTES} bytes")
            member = tar.extractfile(info)
            if member is None:
                raise SnapshotError(f"{archive}: no {INDEX} in the archive")
            index = json.loads(member.read())
    except FileNotFoundError:
        raise SnapshotError(f"{archive}: no such file") from None
    except RecursionError:
        raise SnapshotError(f"{archive}: {INDEX} is nested too deeply") from None
    except KeyError:
        raise SnapshotError(f"{archive}: no {INDEX} in the archive") from None
    except (tarfile.TarError, ValueError, EOFError, OSError) as exc:
        raise SnapshotError(f"{archive}: not a readable zpd snapshot ({_short(exc)})") from None
    return check_index(index, archive)


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160] or type(exc).__name__


def check_index(index: object, archive: Path) -> dict:
    """Refuse an index that is not what ``write_snapshot`` writes: every file path relative, under the
    round's directory, without ``..``; sizes and hashes well-formed; and no more bytes than the archive
    holds (an uncompressed tar stores every byte of its members, so a claim of 20 GB in a 500 KB archive
    is a lie or a sparse member, caught before anything is extracted or hashed)."""
    where = f"{archive}: {INDEX}"
    if not isinstance(index, dict):
        raise SnapshotError(f"{where}: expected an object, got {type(index).__name__}")
    if index.get("format_version") != ARCHIVE_FORMAT:
        raise SnapshotError(
            f"{archive}: archive format {str(index.get('format_version'))[:20]} is not supported")
    round_n = index.get("round")
    if not isinstance(round_n, int) or isinstance(round_n, bool) or not 0 <= round_n < 10**6:
        raise SnapshotError(f"{where}: 'round' must be an integer in 0..999999, got {str(round_n)[:40]!r}")
    files = index.get("files")
    if not isinstance(files, dict) or not files:
        raise SnapshotError(f"{where}: 'files' must be a non-empty object of path -> {{bytes, sha256}}")
    created = index.get("created_at")
    if created is not None and (not isinstance(created, int | float) or isinstance(created, bool)):
        raise SnapshotError(f"{where}: 'created_at' must be a number")
    total = 0
    for rel, info in files.items():
        parts = rel.split("/")
        if (parts[0] != round_name(round_n) or len(parts) < 2 or any(p in ("", ".", "..") for p in parts)
                or "\\" in rel or "\x00" in rel):
            raise SnapshotError(
                f"{where}: file {rel[:80]!r} is not a relative path under {round_name(round_n)}/")
        size, digest = (info.get("bytes"), info.get("sha256")) if isinstance(info, dict) else (None, None)
        if (not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(digest, str)
                or len(digest) != 64 or not set(digest) <= _HEX):
            raise SnapshotError(
                f"{where}: file {rel[:80]!r} needs an integer 'bytes' >= 0 and a hex 'sha256'")
        total += size
    have = Path(archive).stat().st_size
    if total > have:
        raise SnapshotError(f"{archive}: truncated or altered: its index lists {total} bytes of files, "
                            f"the archive holds {have}")
    return index


def _check_members(tar: tarfile.TarFile, index: dict, archive: Path) -> None:
    """Every tar header against the index, before a byte is extracted: plain files only, each listed once
    with the size the index gives."""
    files, seen = index["files"], set()
    for member in tar.getmembers():
        if member.name == INDEX:
            continue
        info = files.get(member.name)
        if info is None or member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.name in seen:
            raise SnapshotError(f"{archive}: unexpected member {member.name[:80]!r}")
        if member.size != info["bytes"]:
            raise SnapshotError(f"{archive}: member {member.name[:80]!r} is {member.size} bytes, "
                                f"the index says {info['bytes']}")
        seen.add(member.name)


SEED_STAGE = ".seed-{pid}.tmp"


def stale_seed_stages(state_dir: Path) -> list[Path]:
    """Staging directories a killed seeding left behind (``.seed-PID.tmp``). Seeding runs only under the
    controller lock, so for a caller holding it every one is stale, whether its pid is dead or reused."""
    return sorted(p for p in Path(state_dir).glob(".seed-*.tmp") if p.is_dir() and not p.is_symlink())


def discard_interrupted_seed(state_dir: Path) -> list[str]:
    """Remove what a killed seeding left (call with the controller lock held): its stages and, when no
    store was published yet, the ``rounds/`` and ``LATEST`` it had published (seeding needs an empty
    directory, so they are its own). Returns the names removed."""
    state_dir = Path(state_dir)
    stages = stale_seed_stages(state_dir)
    removed = []
    if stages and not (state_dir / "state.db").exists():
        for name in ("LATEST", "rounds"):
            path = state_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
                removed.append(name)
            elif path.exists():
                path.unlink()
                removed.append(name)
    for stage in stages:
        shutil.rmtree(stage)
        removed.append(stage.name)
    return removed


def seed_from_snapshot(archive: Path, state_dir: Path, prepare: Callable[[Path], None] | None = None) -> int:
    """Unpack a verified archive into an empty state directory; returns the archived round.

    The round directory and the store are staged inside ``state_dir`` and only renamed into place
    once every file matched its hash, so a bad archive leaves the directory as it was. ``prepare`` is
    called with the staged store before it is published (to record where it was seeded from in the
    same step that makes it visible: a kill after the publish must not leave an unmarked store).
    """
    archive = Path(archive)
    index = read_index(archive)
    round_n = index["round"]
    need = sum(info["bytes"] for info in index["files"].values())
    free = shutil.disk_usage(state_dir).free
    if need * 2 > free:  # the round and a copy of its store
        raise SnapshotError(f"{archive}: needs about {need * 2} bytes free under {state_dir}, {free} are")
    stage = Path(state_dir) / SEED_STAGE.format(pid=os.getpid())
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    try:
        try:
            with tarfile.open(archive, mode="r:") as tar:
                _check_members(tar, index, archive)
                names = set()
                for member in tar.getmembers():
                    if member.name == INDEX:
                        continue
                    tar.extract(member, stage, filter="data")
                    names.add(member.name)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise SnapshotError(f"{archive}: truncated or unreadable ({_short(exc)})") from None
        missing = set(index["files"]) - names
        if missing:
            raise SnapshotError(
                f"{archive}: truncated: {len(missing)} file(s) missing, e.g. {sorted(missing)[0]}")
        for rel, info in index["files"].items():
            path = stage / rel
            if path.stat().st_size != info["bytes"] or sha256_file(path) != info["sha256"]:
                raise SnapshotError(f"{archive}: {rel} does not match its recorded sha256")
        unpacked = stage / round_name(round_n)
        problems = verify_round(unpacked)
        if problems:
            raise SnapshotError(f"{archive}: {problems[0]}")
        shutil.copyfile(unpacked / "state.db", stage / "state.db")
        if prepare is not None:
            prepare(stage / "state.db")
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
