"""The daemon: ``zpd start``. Lock, open the store, serve metrics, then run rounds until told to stop.

Order at start-up (one method per step): 1. read-only checks (config, learner and domains, the kind
of directory, the snapshot index, the config the run pinned); 2. the controller lock, taken only in
an empty or zpd directory, so a second daemon is refused before it binds a port or writes a byte;
3. the metrics port; 4. the first write (seed, logs, the store: migrations, reconcile with the disk,
the config). A refusal after step 2 deletes the lock file it created: a refused start leaves no trace. Signals only set a stop
flag; the loop stops at the next safe point (between phases or batches; a training child is killed
as a tree) and exits 0. A second signal aborts at once.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

import zpd
from zpd.configs.load import ConfigError, changed_keys, immutable_changes, to_json
from zpd.configs.schema import ZpdConfig
from zpd.store.db import StoreError, StoreIOError, get_meta, is_storage_full, open_store, set_meta
from zpd.store.lock import ControllerLock, LockHeld, StateDirRefused, check_state_dir, fresh_dir_foreign
from zpd.store.rounds import dir_bytes, round_dir

from . import notify
from .context import RunContext, Stopped
from .domains.base import build_domains
from .logs import CONTEXT, get_logger, setup_logging
from .metrics import DaemonMetrics, is_loopback
from .round import run_round
from .snapshot import reconcile
from .train import PhaseFailed

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY, EXIT_CORRUPT = 0, 1, 2, 3, 4
COMPONENT_OF_PHASE = {"bootstrap": "trainer", "train": "trainer", "calibrate": "generator", "measure": "generator",
                      "synthesize": "store", "snapshot": "store"}


class StorageFull(Exception):
    """The disk under the state directory is full or read-only."""


class StartError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _mark_seeded(db_path: Path, mark: str) -> None:
    """Record ``seeded_from`` in a staged store, checkpointed into the file itself (only the file is
    published; a WAL beside it would be left behind)."""
    conn = sqlite3.connect(str(db_path))
    try:
        with conn:
            conn.execute("INSERT INTO meta(key, value) VALUES ('seeded_from', ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", [mark])
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def next_round(db) -> int:
    row = db.execute("SELECT id FROM rounds WHERE status = 'running' ORDER BY id LIMIT 1").fetchone()
    if row:
        return row[0]
    row = db.execute("SELECT max(id) FROM rounds WHERE status = 'committed'").fetchone()
    return 0 if row[0] is None else row[0] + 1


def last_committed(db) -> int | None:
    return db.execute("SELECT max(id) FROM rounds WHERE status = 'committed'").fetchone()[0]


class Daemon:
    def __init__(self, state_dir: Path, cfg: ZpdConfig, rounds_target: int | None = None,
                 from_snapshot: Path | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.from_snapshot = Path(from_snapshot).resolve() if from_snapshot else None
        self.cfg = cfg
        self.rounds_target = rounds_target
        self.stop = threading.Event()
        self.lock = ControllerLock(self.state_dir)
        self.log = get_logger()
        self.metrics: DaemonMetrics | None = None
        self.db = None
        self.ctx: RunContext | None = None
        self._signals = 0
        self._last_beat = time.monotonic()
        self._ready = False
        self._started = time.monotonic()
        self.kind = "new"
        """What step 1 found: new, fresh (empty) or zpd (a state directory)."""

    # -- start-up: four steps, so that a refused start leaves no trace -------------------------------
    def _open(self) -> None:
        domains = self._read_only_checks()
        self._take_lock()
        url = self._bind_port(domains)
        self._first_write(domains, url)

    def _read_only_checks(self) -> dict:
        """Step 1, nothing written: the config (parsed by the CLI), the learner and domains (a bad task file
        exits 2; a verl backend that cannot run here exits 1 saying what to install), the kind of
        directory, the snapshot index, the config the run pinned, the metrics bind address."""
        domains = build_domains(self.cfg.domains)
        if self.cfg.train.backend.startswith("verl"):
            from zpd.trainer.verl import VerlUnavailable, preflight

            try:
                preflight(self.cfg)
            except VerlUnavailable as exc:
                raise StartError(EXIT_FAILED, f"train.backend={self.cfg.train.backend}: {exc}") from None
        self._check_snapshot_target()
        try:
            self.kind = check_state_dir(self.state_dir)
        except StateDirRefused as exc:
            raise StartError(exc.code, str(exc)) from None
        self._check_snapshot()
        self._check_pinned_config()
        m = self.cfg.metrics
        if m.enabled and not is_loopback(m.host) and not os.environ.get(m.token_env):
            raise StartError(EXIT_USAGE, f"config: metrics.host: metrics.host {m.host!r} is not a loopback "
                                         f"address and requires a bearer token in ${m.token_env}")
        return domains

    def _check_snapshot_target(self) -> None:
        if self.from_snapshot is None or not self.state_dir.is_dir() or (self.state_dir / "state.db").exists():
            return
        others = fresh_dir_foreign(self.state_dir)
        if others:
            raise StartError(EXIT_USAGE, f"--from-snapshot: {self.state_dir} is not empty (found {others[0]})")

    def _check_snapshot(self) -> None:
        """``--from-snapshot``: the index is valid; the directory is empty, or was seeded by this archive
        (then the flag is ignored); anything else is refused."""
        if self.from_snapshot is None:
            return
        from zpd.store.archive import SnapshotError, read_index

        try:
            index = read_index(self.from_snapshot)
        except SnapshotError as exc:
            raise StartError(EXIT_USAGE, f"--from-snapshot: {exc}") from None
        if self.kind != "zpd":
            self._seed_index = index
            return
        from zpd.store.db import open_readonly

        try:
            db = open_readonly(self.state_dir / "state.db")
            seeded = json.loads(get_meta(db, "seeded_from") or "null")
            db.conn.close()
        except (StoreError, ValueError):
            seeded = None
        if isinstance(seeded, dict) and (seeded.get("round"), seeded.get("created_at")) == (
                index.get("round"), index.get("created_at")):
            return  # this archive seeded this directory before: resume it
        raise StartError(EXIT_USAGE, f"--from-snapshot: {self.state_dir} is not empty and was not seeded by "
                                     f"{self.from_snapshot}; give an empty state directory (or drop "
                                     "--from-snapshot to resume it)")

    def _check_pinned_config(self) -> None:
        if self.kind != "zpd":
            return
        from zpd.store.db import open_readonly

        db = open_readonly(self.state_dir / "state.db")
        try:
            stored = get_meta(db, "config_json")
        finally:
            db.conn.close()
        bad = immutable_changes(json.loads(stored), json.loads(to_json(self.cfg))) if stored else []
        if bad:
            raise StartError(EXIT_USAGE, f"config: {bad[0]} cannot change in a running state directory "
                                         f"({self.state_dir}); start a new one or restore the old value")

    def _take_lock(self) -> None:
        """Step 2: the lock, only in an empty directory or a zpd one (step 1 said which)."""
        missing = [p for p in (self.state_dir, *self.state_dir.parents) if not p.exists()]
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._made_dirs = missing
            self.lock.acquire()
        except LockHeld as exc:
            raise StartError(EXIT_BUSY, str(exc)) from None
        except OSError as exc:
            raise StartError(EXIT_FAILED, f"{self.state_dir}: cannot write the state directory: "
                                          f"{exc.strerror or exc}") from None

    def _bind_port(self, domains: dict) -> str | None:
        """Step 3: the metrics port (a busy one refuses the start before the store is touched)."""
        self.metrics = DaemonMetrics(sorted(domains), zpd.__version__)
        if not self.cfg.metrics.enabled:
            return None
        m = self.cfg.metrics
        try:
            return self.metrics.serve(m.host, m.port, os.environ.get(m.token_env) or None,
                                      ready=lambda: self._ready and not self.stop.is_set(), healthy=self._healthy,
                                      token_env=m.token_env)
        except ValueError as exc:
            raise StartError(EXIT_USAGE, f"config: metrics.host: {exc}") from None
        except OSError as exc:
            raise StartError(EXIT_FAILED, f"metrics.port: cannot listen on {m.host}:{m.port}: {exc}") from None

    def _discard_refused_start(self) -> None:
        """A refusal after step 2: close the port, delete the lock file if this start created it, and the
        directories it made if they are still empty."""
        if self.metrics is not None:
            self.metrics.close()
        self.lock.release(discard=True)
        for path in getattr(self, "_made_dirs", []):
            try:
                path.rmdir()
            except OSError:
                break

    def _seed(self) -> None:
        """Unpack ``--from-snapshot`` into the (empty) directory; a no-op when step 1 found it seeded."""
        index = getattr(self, "_seed_index", None)
        if index is None:
            return
        from zpd.store.archive import SnapshotError, seed_from_snapshot

        mark = json.dumps({"archive": str(self.from_snapshot), "round": index["round"],
                           "created_at": index.get("created_at")})
        try:
            seed_from_snapshot(self.from_snapshot, self.state_dir, prepare=lambda db: _mark_seeded(db, mark))
        except SnapshotError as exc:
            raise StartError(EXIT_USAGE, f"--from-snapshot: {exc}") from None

    def _check_config(self) -> None:
        new = json.loads(to_json(self.cfg))
        stored = get_meta(self.db, "config_json")
        if stored:
            old = json.loads(stored)
            bad = immutable_changes(old, new)
            if bad:
                raise StartError(EXIT_USAGE, f"config: {bad[0]} cannot change in a running state directory "
                                             f"({self.state_dir}); start a new one or restore the old value")
            changed = changed_keys(old, new)
            if changed:
                self.log.info("config changed on resume; applies from the next round", extra={"keys": changed})
        with self.db.atomic():
            set_meta(self.db, "config_json", to_json(self.cfg))

    def _first_write(self, domains: dict, url: str | None) -> None:
        """Step 4: stale seeding stages removed, the seed, logs, the store, reconcile, the config pinned."""
        from zpd.store.archive import discard_interrupted_seed

        try:
            removed = discard_interrupted_seed(self.state_dir)  # a kill while seeding; we hold the lock
            self._seed()
            setup_logging(self.state_dir / "logs", self.cfg.logging.level, self.cfg.logging.max_bytes,
                          self.cfg.logging.backups)
        except OSError as exc:
            raise StartError(EXIT_FAILED, f"{self.state_dir}: cannot write the state directory: "
                                          f"{exc.strerror or exc}") from None
        try:
            self.db = open_store(self.state_dir / "state.db")
        except StoreIOError as exc:
            raise StartError(EXIT_FAILED, str(exc)) from None
        except StoreError as exc:
            raise StartError(EXIT_CORRUPT, str(exc)) from None
        if removed:
            self.log.warning("removed what an interrupted seeding left", extra={"removed": removed})
        self.log.info("store opened", extra={"sqlite_version": sqlite3.sqlite_version, "state_dir": str(self.state_dir)})
        fixed = reconcile(self.db, self.state_dir)
        if fixed:
            self.log.info("reconciled rounds committed on disk", extra={"rounds": fixed})
        self._check_config()
        with self.db.atomic():
            self.db.execute(
                "INSERT OR REPLACE INTO controller (id, pid, round, phase, metrics_url, started_at, updated_at) "
                "VALUES (1, ?, ?, 'idle', ?, ?, ?)",
                [os.getpid(), next_round(self.db), url, time.time(), time.time()],
            )
        self.ctx = RunContext(self.state_dir, self.cfg, self.db, domains, self.metrics, self.log, self.stop,
                              beat=self.beat)
        for domain in domains.values():  # a domain that needs the run (the knowledge domain's question writer)
            attach = getattr(domain, "attach", None)
            if attach is not None:
                attach(self.ctx)
        self._publish_committed()
        self._ready = True
        notify.notify("READY=1")
        self.log.info("daemon ready", extra={"pid": os.getpid(), "metrics_url": url, "version": zpd.__version__})

    # -- health -------------------------------------------------------------------------------
    def beat(self) -> None:
        self._last_beat = time.monotonic()
        notify.notify("WATCHDOG=1")

    def _healthy(self) -> bool:
        return time.monotonic() - self._last_beat < max(600.0, self.cfg.train.timeout_seconds)

    def _set_phase(self, phase: str, round_n: int | None = None) -> None:
        self.beat()
        if self.metrics:
            self.metrics.set_phase(phase)
        with self.db.atomic():
            self.db.execute("UPDATE controller SET phase = ?, round = coalesce(?, round), updated_at = ? WHERE id = 1",
                            [phase, round_n, time.time()])

    def _publish_committed(self) -> None:
        """Headline figures of the current learner, from the store, into the metrics."""
        last = last_committed(self.db)
        if last is None or self.metrics is None:
            return
        row = next(self.db.query("SELECT * FROM rounds WHERE id = ?", [last]))
        cur = next(self.db.query("SELECT * FROM rounds WHERE id = ?", [row["current_learner_round"]]))
        if row["finished_at"]:
            self.metrics.set_last_success(row["finished_at"])
        self.metrics.set_eval_accuracy(cur["eval_accuracy"] or 0.0)
        self.metrics.set_exam(row["exam_accuracy"] or 0.0, row["exam_items"] or 0)
        for domain, value in self.db.execute("SELECT domain, value FROM frontier WHERE round = ?",
                                             [cur["id"]]).fetchall():
            self.metrics.set_frontier(domain, value)

    # -- signals ------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals += 1
        if self._signals == 1:
            self.log.info("stop requested; stopping at the next safe point", extra={"signal": signal.Signals(signum).name})
            self.stop.set()
            notify.notify("STOPPING=1")
            if self.metrics:
                self.metrics.set_phase("stopping")
            try:
                CONTEXT.phase = "stopping"
                with self.db.atomic():
                    self.db.execute("UPDATE controller SET phase = 'stopping', updated_at = ? WHERE id = 1", [time.time()])
            except sqlite3.Error:
                pass  # a write in flight in the main thread; status will see 'stopping' from metrics
        else:
            self.log.warning("second signal: aborting now")
            import psutil

            for child in psutil.Process().children(recursive=True):
                try:
                    child.kill()
                except psutil.Error:
                    pass
            os._exit(130)

    # -- the loop -------------------------------------------------------------------------------
    def _stop_condition(self) -> str | None:
        run = self.cfg.run
        if run.max_wall_seconds is not None and time.monotonic() - self._started >= run.max_wall_seconds:
            return "run.max_wall_seconds reached"
        if run.max_train_tokens is not None:
            used = self.db.execute("SELECT coalesce(sum(train_tokens), 0) FROM rounds").fetchone()[0]
            if used >= run.max_train_tokens:
                return "run.max_train_tokens reached"
        return None

    def _disk_ok(self) -> bool:
        free = shutil.disk_usage(self.state_dir).free
        self.metrics.set_disk_free(free)
        last = last_committed(self.db)
        if last is None or not round_dir(self.state_dir, last).is_dir():
            return True
        need = self.cfg.storage.min_free_ratio * dir_bytes(round_dir(self.state_dir, last))
        if free < need:
            self.log.error("not enough free disk for another round; stopping cleanly",
                           extra={"free_bytes": free, "needed_bytes": int(need)})
            self.metrics.failure("store")
            return False
        return True

    def _run_with_retries(self, n: int) -> bool:
        """Run round n; True when committed. Raises Stopped."""
        cfg = self.cfg.train
        for attempt in range(cfg.max_retries + 1):
            try:
                run_round(self.ctx, n, on_phase=lambda p: self._set_phase(p, n))
                return True
            except Stopped:
                raise
            except Exception as exc:
                if is_storage_full(exc):
                    # Not transient: retrying would only fail half-way again. Stop cleanly; the last
                    # committed round is intact (nothing of this round was committed).
                    self.metrics.failure("store")
                    self.log.error("storage full or read-only; stopping", extra={"error": str(exc)})
                    raise StorageFull(str(exc)) from None
                phase = CONTEXT.phase
                component = exc.component if isinstance(exc, PhaseFailed) else COMPONENT_OF_PHASE.get(phase, "store")
                self.metrics.failure(component)
                self.log.error("phase failed", extra={"component": component, "error": str(exc)[-2000:],
                                                      "attempt": attempt + 1}, exc_info=not isinstance(exc, PhaseFailed))
                with self.db.atomic():
                    self.db.execute("UPDATE rounds SET failures = failures + 1, last_error = ? WHERE id = ?",
                                    [str(exc)[-4000:], n])
                if attempt < cfg.max_retries and self.stop.wait(cfg.retry_backoff_seconds * 2**attempt):
                    raise Stopped() from None
        self.metrics.round_finished("failed")
        return False

    def run(self) -> int:
        try:
            self._open()
        except StartError:
            self._discard_refused_start()
            raise
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        code = EXIT_OK
        try:
            code = self._loop()
        finally:
            self.ctx.release_generators()
            try:  # best effort: on a full or read-only disk these writes fail too
                self._set_phase("idle")
                with self.db.atomic():
                    self.db.execute("UPDATE controller SET pid = NULL, updated_at = ? WHERE id = 1", [time.time()])
            except sqlite3.Error as exc:
                self.log.warning("could not record the stop in the store", extra={"error": str(exc)})
            self.metrics.close()
            self.lock.release()
            self.log.info("daemon stopped", extra={"exit_code": code})
        return code

    def _loop(self) -> int:
        backoff = self.cfg.train.retry_backoff_seconds
        while True:
            n = next_round(self.db)
            if self.rounds_target is not None and n > self.rounds_target:
                self.log.info("target round committed", extra={"rounds": self.rounds_target})
                return EXIT_OK
            reason = self._stop_condition()
            if reason:
                self.log.info("stopping: " + reason)
                return EXIT_OK
            if self.stop.is_set():
                return EXIT_OK
            if not self._disk_ok():
                return EXIT_FAILED
            self.metrics.set_round(n)
            t0 = time.monotonic()
            try:
                committed = self._run_with_retries(n)
            except StorageFull as exc:
                self.metrics.round_finished("aborted")
                text = str(exc)
                reason = next((m for m in ("database or disk is full", os.strerror(errno.ENOSPC),
                                           os.strerror(errno.EROFS), os.strerror(errno.EDQUOT)) if m in text), "")
                # One line: a trainer's failure carries its log tail; the reason and the first line suffice.
                print(f"zpd start: storage full or read-only ({reason or 'disk error'}); stopped cleanly at round "
                      f"{n}, the last committed round is intact: {text.splitlines()[0] if text else ''}",
                      file=sys.stderr)
                return EXIT_FAILED
            except Stopped:
                self.metrics.round_finished("aborted")
                self.log.info("stopped at a safe point", extra={"round": n})
                return EXIT_OK
            if committed:
                self.metrics.round_finished("committed", time.time())
                self._publish_committed()
                self.log.info("round committed", extra={"round": n, "seconds": round(time.monotonic() - t0, 2)})
                self.ctx.cfg = self.cfg  # the next round runs with the daemon's config
                backoff = self.cfg.train.retry_backoff_seconds
                continue
            if self.rounds_target is not None:
                self.log.error("round failed after its retries", extra={"round": n})
                return EXIT_FAILED
            self.log.error("round failed after its retries; waiting before trying again", extra={"wait_seconds": backoff})
            if self.stop.wait(backoff):
                return EXIT_OK
            backoff = min(backoff * 2, 600.0)


def start(state_dir: Path, cfg: ZpdConfig, rounds_target: int | None, from_snapshot: Path | None = None) -> int:
    """Entry point of ``zpd start`` after argument parsing. Returns the exit code."""
    from .cli import one_line

    daemon = Daemon(state_dir, cfg, rounds_target, from_snapshot)
    try:
        return daemon.run()
    except StartError as exc:
        print(one_line(f"zpd start: {exc}"), file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(one_line(f"zpd start: config error: {exc}"), file=sys.stderr)
        return EXIT_USAGE
