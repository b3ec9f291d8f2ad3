"""The state database: one SQLite file (WAL) opened through sqlite-utils, with built-in migrations.

One writer, the daemon (or a command holding the controller lock); readers open it read-only
(``open_readonly``). Every phase commits its outputs in the same transaction that advances the
round's ``phase``, which is what makes a phase idempotent under SIGKILL.

Tables
    meta              key/value: app marker, format version, the run config
    rounds            one row per round: phase, status, timings, learner refs, headline figures
    tasks             every task ever made (candidates, eval and exam items), unique by content hash
    attempts          solo and guided attempts of calibration, unique per (task, round, mode, sample)
    exam_items        exam membership; version v = items admitted <= v and not graduated before v
    measurements      eval and exam answers of each round's learner
    train_examples    training data, with lineage to task, attempt and round
    frontier          per round and domain, the estimated frontier difficulty
    controller        one row: what the running daemon is doing (for ``status``)
    generation_usage  per round, role and model: requests, failures, tokens, cost (m003)
    failed_attempts   samples that produced no answer (endpoint down, malformed reply), never graded (m003)
    corpus_chunks     ingested document chunks with provenance (m004)
    review_verdicts   human-review verdicts imported by ``zpd review`` (m004)
    proposals         the self-play proposer's samples, valid or not, with their reward (m006)
    solo_totals       per task (domain, content hash): the learner's solo answers, kept on insert (m007)
    bootstrap_examples the replayed bootstrap set, made once per config key (m007)
    bandit_rewards    a memo of the bandit policy's per-round arm rewards, cleared by triggers (m007)
    fate_counts       tasks per fate, kept by triggers, for ``zpd status`` (m007)
    eval_splits       each eval task's split, validation or test (m010)

Per-round queries read only what the round touches (indexes of m007; ``bench/scale.py`` times them
at 1M tasks / 10M attempts); the few that must see all history read small tables (rounds, the totals).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from . import scale_schema, split_schema
from .connect import (
    APP_ID,
    FORMAT_VERSION,
    StoreError,
    StoreIOError,
    check_identity,
    connect,
    open_readonly_conn,
)
from .connect import IO_MESSAGES as _IO_MESSAGES
from .sqlite import Database, Migrations

__all__ = [
    "APP_ID",
    "Database",
    "FORMAT_VERSION",
    "StoreError",
    "StoreIOError",
    "open_readonly",
    "open_store",
]

migrations = Migrations("zpd")


@migrations()
def m001_wal(db: Database) -> None:
    pass  # WAL is switched on in open_store (it cannot run inside a migration's transaction)


@migrations()
def m002_schema(db: Database) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(
        """CREATE TABLE rounds (
            id INTEGER PRIMARY KEY,            -- the round number
            status TEXT NOT NULL,              -- running | committed
            phase TEXT NOT NULL,               -- the next phase to run (snapshot = about to commit)
            started_at REAL, finished_at REAL,
            parent_learner_round INTEGER,      -- whose learner this round started from
            current_learner_round INTEGER,     -- whose learner is current once this round commits
            promoted INTEGER,                  -- 1 if this round's learner passed the promotion gate
            config_json TEXT,                  -- the resolved config this round runs with
            timings_json TEXT NOT NULL DEFAULT '{}',
            eval_accuracy REAL, eval_by_domain_json TEXT,
            exam_accuracy REAL, exam_items INTEGER,
            train_loss REAL, train_tokens INTEGER, num_train_examples INTEGER,
            num_candidates INTEGER, num_duplicates INTEGER,
            failures INTEGER NOT NULL DEFAULT 0, last_error TEXT
        )"""
    )
    db.execute(
        """CREATE TABLE tasks (
            id INTEGER PRIMARY KEY,
            domain TEXT NOT NULL, difficulty REAL NOT NULL,
            prompt TEXT NOT NULL, answer TEXT NOT NULL, guidance TEXT NOT NULL,
            canonical TEXT NOT NULL, content_hash TEXT NOT NULL UNIQUE,
            parent_id INTEGER REFERENCES tasks(id),
            round INTEGER NOT NULL,            -- the round that made it
            fate TEXT NOT NULL, fate_round INTEGER,
            p_solo REAL, p_guided REAL,
            meta_json TEXT NOT NULL DEFAULT '{}'
        )"""
    )
    db.execute("CREATE INDEX tasks_round_fate ON tasks(round, fate)")
    db.execute("CREATE INDEX tasks_fate ON tasks(fate)")
    db.execute(
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            task_id INTEGER NOT NULL REFERENCES tasks(id), round INTEGER NOT NULL,
            learner_ref TEXT NOT NULL, role TEXT NOT NULL DEFAULT 'learner',
            mode TEXT NOT NULL CHECK (mode IN ('solo', 'guided')), sample_idx INTEGER NOT NULL,
            output TEXT NOT NULL, correct INTEGER NOT NULL, num_tokens INTEGER NOT NULL,
            latency_seconds REAL NOT NULL, finish_reason TEXT NOT NULL,
            UNIQUE (task_id, round, mode, sample_idx)
        )"""
    )
    db.execute(
        """CREATE TABLE exam_items (
            task_id INTEGER PRIMARY KEY REFERENCES tasks(id),
            domain TEXT NOT NULL, admitted_round INTEGER NOT NULL, graduated_round INTEGER
        )"""
    )
    db.execute(
        """CREATE TABLE measurements (
            id INTEGER PRIMARY KEY, round INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('eval','exam')), task_id INTEGER NOT NULL REFERENCES tasks(id),
            sample_idx INTEGER NOT NULL, output TEXT NOT NULL, correct INTEGER NOT NULL,
            UNIQUE (round, kind, task_id, sample_idx)
        )"""
    )
    db.execute(
        """CREATE TABLE train_examples (
            id INTEGER PRIMARY KEY, round INTEGER NOT NULL,
            task_id INTEGER NOT NULL REFERENCES tasks(id), attempt_id INTEGER REFERENCES attempts(id),
            kind TEXT NOT NULL CHECK (kind IN ('sft', 'rl', 'bootstrap')),
            prompt TEXT NOT NULL, response TEXT NOT NULL,
            UNIQUE (round, task_id, kind)
        )"""
    )
    db.execute(
        """CREATE TABLE frontier (
            round INTEGER NOT NULL, domain TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (round, domain)
        )"""
    )
    db.execute(
        """CREATE TABLE controller (
            id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER, round INTEGER, phase TEXT,
            metrics_url TEXT, started_at REAL, updated_at REAL
        )"""
    )


@migrations()
def m003_generation_usage(db: Database) -> None:
    """Generation accounting per round and role, failed attempts, and who graded each answer."""
    db.execute(
        """CREATE TABLE generation_usage (
            round INTEGER NOT NULL, role TEXT NOT NULL CHECK (role IN ('learner', 'teacher')),
            model TEXT NOT NULL,              -- learner round ref, or the teacher's pinned model
            num_requests INTEGER NOT NULL DEFAULT 0, num_failed INTEGER NOT NULL DEFAULT 0,
            prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            PRIMARY KEY (round, role, model)
        )"""
    )
    db.execute(
        """CREATE TABLE failed_attempts (   -- samples that produced no answer; never graded or in a pass rate
            id INTEGER PRIMARY KEY, round INTEGER NOT NULL, phase TEXT NOT NULL, role TEXT NOT NULL,
            task_id INTEGER REFERENCES tasks(id), mode TEXT, sample_idx INTEGER,
            error TEXT NOT NULL, created_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX failed_attempts_round ON failed_attempts(round)")
    db.execute("ALTER TABLE attempts ADD COLUMN grader TEXT")  # e.g. exact, math-verify, llm-judge:<model>
    db.execute("ALTER TABLE measurements ADD COLUMN grader TEXT")


@migrations()
def m004_knowledge_engine(db: Database) -> None:
    """Corpus chunks with provenance, human-review verdicts, and per-round yield and cost (issue 6)."""
    db.execute(
        """CREATE TABLE corpus_chunks (     -- cleaned chunks of ingested documents (store/corpus.py)
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,           -- the file, relative to the ingested folder
            source_sha256 TEXT NOT NULL,    -- of the file's bytes: re-ingesting the same file adds nothing
            record INTEGER NOT NULL,        -- JSONL line number (1-based); 0 for .txt/.md
            start_char INTEGER NOT NULL, end_char INTEGER NOT NULL,   -- offsets in the decoded text
            text TEXT NOT NULL, text_sha256 TEXT NOT NULL UNIQUE,
            ingested_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX corpus_chunks_source ON corpus_chunks(source_sha256)")
    db.execute(
        """CREATE TABLE review_verdicts (   -- zpd review --import: one verdict per task and import
            id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL REFERENCES tasks(id),
            verdict TEXT NOT NULL CHECK (verdict IN ('keep', 'drop')),
            old_answer TEXT NOT NULL, new_answer TEXT, note TEXT,
            source TEXT NOT NULL, imported_at REAL NOT NULL
        )"""
    )
    db.execute("ALTER TABLE rounds ADD COLUMN yield_ratio REAL")  # (zpd + exam) / calibrated candidates
    db.execute("ALTER TABLE rounds ADD COLUMN cost_per_accepted_usd REAL")  # teacher USD per accepted item
    db.execute("ALTER TABLE rounds ADD COLUMN tokens_per_accepted REAL")  # generated tokens per accepted item


@migrations()
def m005_curriculum(db: Database) -> None:
    """Training selection by the curriculum policy, calibration cost and exam integrity per round
    (issue 7)."""
    # selected: 1 when the policy trains on the task (set in CALIBRATE)
    db.execute("ALTER TABLE tasks ADD COLUMN selected INTEGER")
    db.execute("UPDATE tasks SET selected = (fate = 'zpd') WHERE fate_round IS NOT NULL")
    db.execute("ALTER TABLE rounds ADD COLUMN num_attempts INTEGER")  # samples CALIBRATE generated
    db.execute("ALTER TABLE rounds ADD COLUMN num_attempts_fixed INTEGER")  # what fixed-k would have made
    db.execute("ALTER TABLE rounds ADD COLUMN decontamination_json TEXT")  # the round's exam-integrity report


@migrations()
def m006_selfplay(db: Database) -> None:
    """The self-play proposer's samples and its per-round figures (loop/selfplay.py)."""
    db.execute(
        """CREATE TABLE proposals (
            id INTEGER PRIMARY KEY,
            round INTEGER NOT NULL, domain TEXT NOT NULL,
            group_id INTEGER NOT NULL,         -- one proposer prompt's samples (the GRPO group)
            sample_idx INTEGER NOT NULL,
            level REAL,                        -- the difficulty the prompt asked for
            prompt TEXT NOT NULL, output TEXT NOT NULL, finish_reason TEXT,
            valid INTEGER NOT NULL,            -- parses into a gradable task of the domain
            duplicate INTEGER NOT NULL,        -- valid, but already stored (or proposed earlier this round)
            content_hash TEXT,                 -- of the parsed task (valid proposals)
            task_id INTEGER,                   -- the task it became (valid, not duplicate; set in TRAIN)
            reward REAL,                       -- the proposer's reward (set in TRAIN)
            UNIQUE (round, domain, group_id, sample_idx)
        )"""
    )
    for col in (
        "proposer_loss REAL",
        "proposer_reward REAL",
        "proposer_valid_ratio REAL",
        "proposer_duplicate_ratio REAL",
        "proposer_tokens INTEGER",
    ):
        db.execute(f"ALTER TABLE rounds ADD COLUMN {col}")


@migrations()
def m007_scale(db: Database) -> None:
    """Per-round cost independent of history (issue 15): indexes, totals and memos (store/scale_schema.py)."""
    scale_schema.create(db)


@migrations()
def m008_raw_scores(db: Database) -> None:
    """The grader's raw score of each calibration attempt (reasoning-gym gives partial credit; ``correct``
    is score >= the domain's pass threshold). NULL for domains that grade pass/fail only."""
    db.execute("ALTER TABLE attempts ADD COLUMN score REAL")


@migrations()
def m009_target_source(db: Database) -> None:
    """Where a selected task's training target came from: guided | solo | reference (issue 13); NULL for
    selections made before (TRAIN then trains only on a correct attempt, as it did)."""
    db.execute("ALTER TABLE tasks ADD COLUMN target_source TEXT")


@migrations()
def m010_validation_split(db: Database) -> None:
    """Each eval task's split, validation or test, and the rounds' validation figures (split_schema.py)."""
    split_schema.create(db)


def is_storage_full(exc: BaseException) -> bool:
    """Whether an error means the disk is full or read-only (not worth retrying)."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.OperationalError) and any(m in str(exc).lower() for m in _IO_MESSAGES[:3]):
        return True
    # A child (the trainer) that could not write its output reports it in its message.
    text = str(exc)
    return any(
        m in text for m in (os.strerror(errno.ENOSPC), os.strerror(errno.EROFS), os.strerror(errno.EDQUOT))
    )


def _check_identity(db: Database, path: Path) -> None:
    check_identity(db.conn, path)


# Tables whose size grows with the number of rounds, not with tasks or attempts: checked on every start.
SMALL_TABLES = (
    "sqlite_master",
    "_sqlite_migrations",
    "meta",
    "rounds",
    "controller",
    "frontier",
    "exam_items",
    "generation_usage",
)


def start_up_check(conn: sqlite3.Connection, path: Path) -> str:
    """Check the store before use, in time bounded by the number of rounds; returns "full" or "bounded".

    A full ``PRAGMA quick_check`` (every page of every table and index: seconds at 1M tasks) runs only
    when the last daemon did not record a clean stop (``controller.pid`` still set: killed, crashed, or
    the machine lost power), which is the only way a WAL store written with ``synchronous = FULL`` can
    be left torn (a disk that lies about fsync included). After a clean stop, the schema and the tables
    that steer the loop (rounds, meta, exam, frontier, migrations) are checked with
    ``quick_check(table)``; a file that is not SQLite, truncated or overwritten at its start fails here
    already. Pages of the big tables damaged later (by the disk, while nothing ran) are still reported:
    SQLite raises "database disk image is malformed" on the first read of such a page, and the next
    start after that unclean stop checks everything. Raises StoreError naming the file.
    """
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    unclean = True
    if "controller" in tables:
        row = conn.execute("SELECT pid FROM controller WHERE id = 1").fetchone()
        unclean = row is not None and row[0] is not None
    checks = [None] if unclean else [t for t in SMALL_TABLES if t in tables or t == "sqlite_master"]
    for table in checks:
        sql = "PRAGMA quick_check" if table is None else f"PRAGMA quick_check('{table}')"
        ok = conn.execute(sql).fetchone()[0]
        if ok != "ok":
            raise StoreError(f"{path}: database is corrupt (quick_check: {ok})")
    return "full" if unclean else "bounded"


def open_store(path: Path) -> Database:
    """Open (creating if absent) the daemon's read-write connection; apply migrations.

    Raises StoreError when the file is not SQLite, fails its start-up check (``start_up_check``), or is
    not ours. An existing file is never overwritten or "repaired".
    """
    path = Path(path)
    fresh = not path.exists() or path.stat().st_size == 0
    try:
        conn = connect(path, readonly=False)
        if not fresh:
            start_up_check(conn, path)
        db = Database(conn)
        if not fresh:
            tables = db.table_names()
            if tables and "_sqlite_migrations" not in tables:
                raise StoreError(
                    f"{path}: not a zpd state database (foreign tables: {', '.join(tables[:5])})"
                )
            if "meta" in tables:
                _check_identity(db, path)
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed round must survive power loss; writes are rare (a few per batch).
        conn.execute("PRAGMA synchronous = FULL")
        migrations.apply(db)
        with db.atomic():
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('app', ?)", [APP_ID])
            db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('format_version', ?)", [str(FORMAT_VERSION)]
            )
        _check_identity(db, path)
        return db
    except sqlite3.OperationalError as exc:
        if any(m in str(exc).lower() for m in _IO_MESSAGES):
            raise StoreIOError(
                f"{path}: cannot open state database: {exc} (is the disk full or read-only?)"
            ) from None
        raise StoreError(f"{path}: cannot open state database: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot open state database: {exc}") from None


def open_readonly(path: Path) -> Database:
    """A read-only connection for ``export``, ``serve``, ``report``; works while the daemon writes.
    (``status`` uses ``connect.open_readonly_conn`` directly, without sqlite-utils.)"""
    return Database(open_readonly_conn(path))


def get_meta(db: Database, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return row[0] if row else None


def set_meta(db: Database, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )


def backup_to(db: Database, dest: Path) -> None:
    """A consistent copy via SQLite's backup API (never a file copy of a live database)."""
    target = sqlite3.connect(str(dest))
    try:
        db.conn.backup(target)
        target.execute("PRAGMA journal_mode = DELETE")  # a self-contained single file
    finally:
        target.close()
