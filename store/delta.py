"""Delta snapshots: a round's store as the rows changed since a base round's full copy (issue 15).

A committed round holds either ``state.db`` (a full copy, SQLite's backup API) or ``store.delta`` plus
``base_round`` (DESIGN "State directory"). ``store.delta`` is itself a SQLite file: for each table, the
rows that differ from the base round's copy, and ``_delta_info`` (its round, base round, and a hash of
the schema it applies to). The base is always a full round: a delta is cumulative since that base (not a
chain of one delta per round), so retention needs to keep only one base per delta round and a rebuild
applies one file. A full copy is written at least every ``snapshot.full_every`` rounds.

Exact by construction, not by knowing which code updates what:

* Tables in ``TRACKED`` (those whose size grows with tasks or attempts, plus ``rounds``) get triggers
  that log, into ``delta_log``, the key of every row updated or deleted at or below the base's
  high-water mark (``delta_state``), and of every row inserted there (``EXPLICIT_IDS``); for a rowid
  table, the rows above that mark are the ones added since the base. WITHOUT ROWID tables log every
  insert, update and delete.
  The delta holds, per tracked table, the rows above the mark and the current version of every logged
  key; applying it deletes the logged keys from the base's copy and inserts the delta's rows.
* Every other table (meta, controller, frontier, exam items, usage, the memos, the log itself, ...) is
  small and is copied whole; a table added by a later migration is copied whole too.
* A delta is written only when the base's schema equals the live one (so the triggers were in place
  when the base was copied) and the live log belongs to that base (``delta_state.base_round``, reset
  in the commit transaction of every full round, and by a rollback to one); otherwise the round is full.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .connect import StoreError, transaction
from .readmodel import COMPLETE, committed_on_disk, round_name, rounds_dir
from .rounds import verify_round

DELTA_NAME = "store.delta"
BASE_NAME = "base_round"
FULL_NAME = "state.db"
LOG = "delta_log"
STATE = "delta_state"
INFO = "_delta_info"
DELTA_FORMAT = 1

TRACKED = ("tasks", "attempts", "measurements", "train_examples", "failed_attempts", "proposals",
           "corpus_chunks", "bootstrap_examples", "rounds", "solo_totals")
"""Tables tracked row by row: those that grow with tasks, attempts or rounds. The others are copied whole."""
EXPLICIT_IDS = ("rounds", "bootstrap_examples")
"""Tracked rowid tables whose inserts name the id (the round number, the set's index): an insert at or
below the mark is logged. Every other tracked rowid table is inserted into only with ids SQLite assigns
(the largest + 1), so a new row lies above the mark unless the largest rows were deleted, and deletions
are logged; this saves a trigger per inserted attempt (a third of the insert rate)."""


class DeltaError(StoreError):
    """A round's store cannot be rebuilt (a delta or its base damaged or missing); names the file."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _tables(conn: sqlite3.Connection, schema: str = "main") -> list[str]:
    return [r[0] for r in conn.execute(
        f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table' AND name != 'sqlite_schema' "
        "ORDER BY rowid")]


def _columns(conn: sqlite3.Connection, table: str, schema: str = "main") -> list[tuple[str, str, int]]:
    """(name, declared type, pk position) of each column."""
    return [(r[1], str(r[2]).upper(), int(r[5]))
            for r in conn.execute(f"PRAGMA {schema}.table_info({_quote(table)})")]


def _has_rowid(conn: sqlite3.Connection, table: str, schema: str = "main") -> bool:
    try:
        conn.execute(f"SELECT rowid FROM {schema}.{_quote(table)} LIMIT 0")
    except sqlite3.OperationalError:
        return False
    return True


def _copy_columns(conn: sqlite3.Connection, table: str, schema: str = "main") -> tuple[list[str], bool]:
    """The columns that reproduce a row exactly, and whether ``rowid`` must be carried as ``_delta_rowid``
    (a rowid table without an INTEGER PRIMARY KEY alias)."""
    cols = _columns(conn, table, schema)
    pks = [c for c in cols if c[2]]
    alias = len(pks) == 1 and pks[0][1] == "INTEGER"
    return [c[0] for c in cols], _has_rowid(conn, table, schema) and not alias


def _key_sql(conn: sqlite3.Connection, table: str, row: str) -> str:
    """The logged key of ``row`` (OLD or NEW): its rowid, or a JSON array of a WITHOUT ROWID table's key."""
    if _has_rowid(conn, table):
        return f"{row}.rowid"
    pks = sorted((c for c in _columns(conn, table) if c[2]), key=lambda c: c[2])
    return "json_array(" + ", ".join(f"{row}.{_quote(c[0])}" for c in pks) + ")"


def _key_match(conn: sqlite3.Connection, table: str, schema: str, log: str) -> str:
    """A WHERE clause: the row's key is among the keys ``log`` (a log table) holds for ``table``."""
    lit = "'" + table.replace("'", "''") + "'"
    if _has_rowid(conn, table, schema):
        return f"rowid IN (SELECT k FROM {log} WHERE tbl = {lit})"
    pks = sorted((c for c in _columns(conn, table, schema) if c[2]), key=lambda c: c[2])
    cols = ", ".join(_quote(c[0]) for c in pks)
    keys = ", ".join(f"json_extract(k, '$[{i}]')" for i in range(len(pks)))
    return f"({cols}) IN (SELECT {keys} FROM {log} WHERE tbl = {lit})"


def ensure_tracking(db: Any) -> None:
    """Create the log, its state and the tracking triggers where missing (idempotent; a schema change the
    first time, so the next full copy is the first base a delta can use)."""
    with transaction(db) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {LOG} (tbl TEXT NOT NULL, k NOT NULL, "
                     "PRIMARY KEY (tbl, k)) WITHOUT ROWID")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {STATE} (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        present = set(_tables(conn))
        for table in (t for t in TRACKED if t in present):
            lit = "'" + table + "'"
            mark = f"coalesce((SELECT value FROM {STATE} WHERE key = 'hwm:{table}'), -1)"
            rowid = _has_rowid(conn, table)
            for event, rows in (("INSERT", ("NEW",)), ("UPDATE", ("OLD", "NEW")), ("DELETE", ("OLD",))):
                if event == "INSERT" and rowid and table not in EXPLICIT_IDS:
                    continue
                when = "" if not rowid else " WHEN " + " OR ".join(f"{r}.rowid <= {mark}" for r in rows)
                # Not INSERT OR IGNORE: an outer statement's conflict policy overrides a trigger's.
                body = " ".join(f"INSERT INTO {LOG} (tbl, k) SELECT {lit}, {k} WHERE NOT EXISTS "
                                f"(SELECT 1 FROM {LOG} WHERE tbl = {lit} AND k = {k});"
                                for k in (_key_sql(conn, table, r) for r in rows))
                conn.execute(f"CREATE TRIGGER IF NOT EXISTS {table}_delta_{event.lower()} AFTER {event} "
                             f"ON {_quote(table)}{when} BEGIN {body} END")


def reset_base(db: Any, round_n: int) -> None:
    """The live store now equals round ``round_n``'s full copy: later deltas apply to it. Clears the log
    and records each tracked rowid table's high-water mark (in the caller's transaction)."""
    with transaction(db) as conn:
        if STATE not in _tables(conn):
            return
        conn.execute(f"DELETE FROM {LOG}")
        conn.execute(f"INSERT OR REPLACE INTO {STATE} (key, value) VALUES ('base_round', ?)", [round_n])
        present = set(_tables(conn))
        for table in (t for t in TRACKED if t in present and _has_rowid(conn, t)):
            top = conn.execute(f"SELECT coalesce(max(rowid), 0) FROM {_quote(table)}").fetchone()[0]
            conn.execute(f"INSERT OR REPLACE INTO {STATE} (key, value) VALUES (?, ?)", [f"hwm:{table}", top])


def schema_hash(conn: sqlite3.Connection, schema: str = "main") -> str:
    rows = conn.execute(f"SELECT type, name, tbl_name, coalesce(sql, '') FROM {schema}.sqlite_master "
                        "ORDER BY type, name").fetchall()
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def store_kind(round_path: Path) -> str:
    """'full' (``state.db``), 'delta' (``store.delta`` + ``base_round``) or 'none'."""
    if (round_path / FULL_NAME).is_file():
        return "full"
    return "delta" if (round_path / DELTA_NAME).is_file() else "none"


def read_base(round_path: Path) -> int:
    """The base round a delta round's store applies to; DeltaError when unreadable."""
    try:
        return int((round_path / BASE_NAME).read_text().strip())
    except (OSError, ValueError):
        raise DeltaError(f"{round_path / BASE_NAME}: missing or not a round number") from None


def _round_path(state_dir: Path, n: int) -> Path:
    return rounds_dir(state_dir) / round_name(n)


def _uri(path: Path, mode: str) -> str:
    return f"{Path(path).resolve().as_uri()}?mode={mode}"


def _main_file(conn: sqlite3.Connection) -> Path:
    return Path(next(r[2] for r in conn.execute("PRAGMA database_list") if r[1] == "main"))


def plan(db: Any, state_dir: Path, round_n: int, *, full_every: int, min_bytes: int) -> int | None:
    """The base round ``round_n``'s store can be written as a delta against, or None: a full copy.

    A delta needs: a store of at least ``min_bytes``; a previous committed round whose store is full or a
    delta (its base is then ours too); fewer than ``full_every`` rounds since that base; the live log kept
    since that base; and the base's copy with the live schema. Call after ``ensure_tracking``."""
    conn = getattr(db, "conn", db)
    if full_every <= 1 or _main_file(conn).stat().st_size < min_bytes or STATE not in _tables(conn):
        return None
    earlier = [n for n in committed_on_disk(state_dir) if n < round_n]
    if not earlier:
        return None
    prev = _round_path(state_dir, earlier[-1])
    try:
        base = earlier[-1] if store_kind(prev) == "full" else read_base(prev)
    except DeltaError:
        return None
    row = conn.execute(f"SELECT value FROM {STATE} WHERE key = 'base_round'").fetchone()
    base_path = _round_path(state_dir, base)
    if (round_n - base >= full_every or row is None or row[0] != base
            or not (base_path / COMPLETE).is_file() or store_kind(base_path) != "full"):
        return None
    try:
        copy = sqlite3.connect(_uri(base_path / FULL_NAME, "ro"), uri=True)
        try:
            same = schema_hash(copy) == schema_hash(conn)
        finally:
            copy.close()
    except sqlite3.DatabaseError:
        return None
    return base if same else None


def write_delta(db: Any, out: Path, round_n: int, base: int) -> None:
    """Write ``out`` (a new SQLite file): the live store's rows that differ from round ``base``'s copy."""
    live = _main_file(getattr(db, "conn", db))
    conn = sqlite3.connect(_uri(out, "rwc"), uri=True, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = OFF")  # a new file, fsynced and hashed by the commit
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("ATTACH DATABASE ? AS src", [_uri(live, "ro")])
        conn.execute("BEGIN")  # one read transaction on src: every table as of the same instant
        conn.execute(f"CREATE TABLE {INFO} (key TEXT PRIMARY KEY, value)")
        info: dict[str, object] = {"format_version": DELTA_FORMAT, "round": round_n, "base_round": base,
                                   "schema": schema_hash(conn, "src")}
        marks = dict(conn.execute(f"SELECT key, value FROM src.{STATE}").fetchall())
        for table in _tables(conn, "src"):
            cols, carry = _copy_columns(conn, table, "src")
            sel = ", ".join((["rowid AS _delta_rowid"] if carry else []) + [_quote(c) for c in cols])
            src, dst = f"src.{_quote(table)}", _quote("x_" + table)
            if table not in TRACKED:
                conn.execute(f"CREATE TABLE {dst} AS SELECT {sel} FROM {src}")
                info[f"table:{table}"] = "whole"
                continue
            logged = _key_match(conn, table, "src", f"src.{LOG}")
            if _has_rowid(conn, table, "src"):
                hwm = marks.get(f"hwm:{table}")
                if not isinstance(hwm, int):
                    raise DeltaError(f"{live}: no high-water mark for {table}; a full copy is needed")
                conn.execute(f"CREATE TABLE {dst} AS SELECT {sel} FROM {src} WHERE rowid > {hwm} "
                             f"UNION ALL SELECT {sel} FROM {src} WHERE rowid <= {hwm} AND {logged}")
            else:
                conn.execute(f"CREATE TABLE {dst} AS SELECT {sel} FROM {src} WHERE {logged}")
            info[f"table:{table}"] = "tracked"
        conn.executemany(f"INSERT INTO {INFO} (key, value) VALUES (?, ?)", list(info.items()))
        conn.execute("COMMIT")
    finally:
        conn.close()


def write_store(db: Any, stage: Path, round_n: int, base: int | None, full: Callable[[Path], None]) -> None:
    """The round's store into ``stage``: ``full(path)`` writes ``state.db`` when ``base`` is None, else
    ``store.delta`` and ``base_round``."""
    if base is None:
        full(stage / FULL_NAME)
        return
    write_delta(db, stage / DELTA_NAME, round_n, base)
    (stage / BASE_NAME).write_text(f"{base}\n")


def apply_delta(db_path: Path, delta_path: Path, base: int) -> None:
    """Apply a delta to a copy of its base round's store, in one transaction. The copy's triggers are
    dropped for the transaction and re-created as they were, so applying rows fires nothing: every row
    (the memos and totals that triggers keep included) comes from the delta or the base, exactly."""
    conn = sqlite3.connect(str(db_path), isolation_level=None, uri=True)
    try:
        conn.execute("ATTACH DATABASE ? AS d", [_uri(delta_path, "ro")])
        try:
            info = dict(conn.execute(f"SELECT key, value FROM d.{INFO}").fetchall())
        except sqlite3.DatabaseError as exc:
            raise DeltaError(f"{delta_path}: not a readable store delta ({exc})") from None
        if info.get("format_version") != DELTA_FORMAT or info.get("base_round") != base:
            raise DeltaError(f"{delta_path}: format {info.get('format_version')}, base round "
                             f"{info.get('base_round')}; expected format {DELTA_FORMAT} on round {base}")
        if info.get("schema") != schema_hash(conn):
            raise DeltaError(f"{delta_path}: applies to another schema than round {base}'s store")
        conn.execute("BEGIN")
        triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                                "ORDER BY rowid").fetchall()
        for name, _sql in triggers:
            conn.execute(f"DROP TRIGGER {_quote(name)}")
        for key, kind in info.items():
            if not key.startswith("table:"):
                continue
            table = key[len("table:"):]
            cols, carry = _copy_columns(conn, table)
            into = ", ".join((["rowid"] if carry else []) + [_quote(c) for c in cols])
            sel = ", ".join((["_delta_rowid"] if carry else []) + [_quote(c) for c in cols])
            where = _key_match(conn, table, "main", f"d.{_quote('x_' + LOG)}") if kind == "tracked" else "1"
            conn.execute(f"DELETE FROM main.{_quote(table)} WHERE {where}")
            conn.execute(
                f"INSERT INTO main.{_quote(table)} ({into}) SELECT {sel} FROM d.{_quote('x_' + table)}")
        for _name, sql in triggers:
            conn.execute(sql)
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise DeltaError(f"{delta_path}: cannot be applied to round {base}'s store ({exc})") from None
    finally:
        conn.close()


def materialize(state_dir: Path, round_n: int, dest: Path) -> None:
    """Write round ``round_n``'s complete store to ``dest`` (a new file): a copy of its ``state.db``, or
    its base's rebuilt and its delta applied. Every file read is checked against its round's manifest
    first; a damaged or missing one raises DeltaError naming it."""
    path = _round_path(state_dir, round_n)
    problems = verify_round(path)
    if problems:
        raise DeltaError(f"round {round_n}'s store cannot be used: {problems[0]}")
    kind = store_kind(path)
    if kind == "full":
        shutil.copyfile(path / FULL_NAME, dest)
        return
    if kind != "delta":
        raise DeltaError(f"{path}: holds neither {FULL_NAME} nor {DELTA_NAME}")
    base = read_base(path)
    if not 0 <= base < round_n:
        raise DeltaError(f"{path / BASE_NAME}: base round {base} is not an earlier round")
    if not (_round_path(state_dir, base) / COMPLETE).is_file():
        raise DeltaError(f"round {round_n}'s store needs round {base}, which is not on disk")
    materialize(state_dir, base, dest)
    apply_delta(dest, path / DELTA_NAME, base)


def bases_needed(state_dir: Path, rounds: list[int]) -> set[int]:
    """The base rounds the stores of ``rounds`` apply to (retention keeps them with the rounds)."""
    need: set[int] = set()
    for n in rounds:
        path = _round_path(state_dir, n)
        if store_kind(path) == "delta":
            try:
                need.add(read_base(path))
            except DeltaError:
                continue
    return need


def restore(db: Any, state_dir: Path, round_n: int, rebuilt: Path | None) -> None:
    """Replace the live store's content with round ``round_n``'s (SQLite's backup API: one transaction):
    its ``state.db``, or for a delta round ``rebuilt`` (``materialize``'s output, removed after)."""
    conn = getattr(db, "conn", db)
    path = _round_path(state_dir, round_n)
    full = store_kind(path) == "full"
    src_path = path / FULL_NAME if full else rebuilt
    if src_path is None:
        raise DeltaError(f"{path}: a delta round's store must be rebuilt before it is restored")
    try:
        src = sqlite3.connect(_uri(src_path, "ro"), uri=True)
        try:
            src.backup(conn)
        finally:
            src.close()
    finally:
        if not full:
            src_path.unlink(missing_ok=True)
    conn.execute("PRAGMA journal_mode = WAL")
    if full:  # the store is now that full copy: later deltas apply to it
        reset_base(db, round_n)
