"""The daemon: ``zpd start``. Lock, open the store, serve metrics, then run rounds until told to stop.

Order at start-up (DESIGN.md): the controller lock before anything else, so a second daemon is
refused before it binds a port or writes a byte; then the store (migrations, reconcile with the
disk), the config check against the run's, the metrics port, readiness. Signals only set a stop
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
from zpd.store.lock import ControllerLock, LockHeld
from zpd.store.readmodel import last_committed, next_round
from zpd.store.rounds import dir_bytes, round_dir
from zpd.store.yields import domain_yields

from . import notify
from .context import RunContext, Stopped
from .domains.base import build_domains
from .domains.prompting import prompt_style
from .logs import CONTEXT, get_logger, setup_logging
from .metrics import DaemonMetrics
from .round import run_round
from .snapshot import reconcile
from .train import PhaseFailed

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY, EXIT_CORRUPT = 0, 1, 2, 3, 4
COMPONENT_OF_PHASE = {"bootstrap": "trainer", "train": "trainer", "calibrate": "generator", "measure": "generator",
                      "synthesize": "store", "snapshot": "store"}
_ALLOWED_IN_FRESH_DIR = {"controller.lock", "logs", "state.db", "state.db-wal", "state.db-shm", "state.db-journal"}


class StorageFull(Exception):
    """The disk under the state directory is full or read-only."""


class StartError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Daemon:
    def __init__(self, state_dir: Path, cfg: ZpdConfig, rounds_target: int | None = None,
                 from_snapshot: Path | None = None, notes: list[str] | None = None) -> None:
        self.notes = list(notes or [])
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

    # -- start-up ---------------------------------------------------------------------------
    def _check_dir(self) -> None:
        if self.state_dir.exists() and not self.state_dir.is_dir():
            raise StartError(EXIT_USAGE, f"{self.state_dir}: not a directory")
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def _check_foreign(self) -> None:
        if (self.state_dir / "state.db").exists():
            return
        foreign = sorted(p.name for p in self.state_dir.iterdir() if p.name not in _ALLOWED_IN_FRESH_DIR)
        if foreign:
            raise StartError(EXIT_CORRUPT, f"{self.state_dir}: not empty and not a zpd state directory "
                                           f"(found {', '.join(foreign[:5])}); refusing to use it")

    def _seed(self) -> None:
        """``--from-snapshot``: seed an empty directory; ignored on one it already seeded; else refused."""
        if self.from_snapshot is None:
            return
        from zpd.store.archive import SnapshotError, read_index, seed_from_snapshot

        db_path = self.state_dir / "state.db"
        if db_path.exists():
            from zpd.store.db import open_readonly

            try:
                db = open_readonly(db_path)
                seeded = json.loads(get_meta(db, "seeded_from") or "null")
                db.conn.close()
                index = read_index(self.from_snapshot)
            except (StoreError, SnapshotError, ValueError):
                seeded, index = None, None
            if seeded and index and (seeded.get("round"), seeded.get("created_at")) == (
                    index.get("round"), index.get("created_at")):
                return  # this archive seeded this directory before: resume it
            raise StartError(EXIT_USAGE, f"--from-snapshot: {self.state_dir} is not empty and was not seeded by "
                                         f"{self.from_snapshot}; give an empty state directory (or drop "
                                         "--from-snapshot to resume it)")
        others = sorted(p.name for p in self.state_dir.iterdir() if p.name not in _ALLOWED_IN_FRESH_DIR)
        if others:
            raise StartError(EXIT_USAGE, f"--from-snapshot: {self.state_dir} is not empty (found {others[0]})")
        try:
            index = read_index(self.from_snapshot)
            round_n = seed_from_snapshot(self.from_snapshot, self.state_dir)
        except SnapshotError as exc:
            raise StartError(EXIT_USAGE, f"--from-snapshot: {exc}") from None
        try:
            db = open_store(db_path)
        except StoreError as exc:
            raise StartError(EXIT_CORRUPT, f"--from-snapshot: {exc}") from None
        with db.atomic():
            set_meta(db, "seeded_from", json.dumps({"archive": str(self.from_snapshot), "round": round_n,
                                                    "created_at": index.get("created_at")}))
        db.conn.close()

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

    def _open(self) -> None:
        # Domains and the trainer's preflight first: a bad task file (exit 2) or a verl backend that cannot
        # run here (exit 1, saying what to install or where to run) must not leave a state directory behind.
        domains = build_domains(self.cfg.domains, prompt_style(self.cfg))
        if self.cfg.train.backend.startswith("verl"):
            from zpd.trainer.verl import VerlUnavailable, preflight

            try:
                preflight(self.cfg)
            except VerlUnavailable as exc:
                raise StartError(EXIT_FAILED, f"train.backend={self.cfg.train.backend}: {exc}") from None
        if "served" in (self.cfg.generation.backend, self.cfg.generation.measure_backend):
            from zpd.trainer.replicas import ReplicaFailed
            from zpd.trainer.served import preflight as served_preflight

            try:
                served_preflight(self.cfg.served)
            except ReplicaFailed as exc:
                raise StartError(EXIT_FAILED, f"generation.backend=served: {exc}") from None
        try:
            self._check_dir()
            self.lock.acquire()
            self._seed()
            self._check_foreign()
            setup_logging(self.state_dir / "logs", self.cfg.logging.level, self.cfg.logging.max_bytes,
                          self.cfg.logging.backups)
            for note in self.notes:  # what the start-up checks (loop/learner_check.py) had to say
                self.log.info(note)
        except LockHeld as exc:
            raise StartError(EXIT_BUSY, str(exc)) from None
        except OSError as exc:
            raise StartError(EXIT_FAILED, f"{self.state_dir}: cannot write the state directory: "
                                          f"{exc.strerror or exc}") from None
        try:
            self.db = open_store(self.state_dir / "state.db")
        except StoreIOError as exc:
            raise StartError(EXIT_FAILED, str(exc)) from None
        except StoreError as exc:
            raise StartError(EXIT_CORRUPT, str(exc)) from None
        self.log.info("store opened", extra={"sqlite_version": sqlite3.sqlite_version, "state_dir": str(self.state_dir)})
        fixed = reconcile(self.db, self.state_dir)
        if fixed:
            self.log.info("reconciled rounds committed on disk", extra={"rounds": fixed})
        self._check_config()
        served = self.cfg.served.num_replicas if self.cfg.generation.backend == "served" else 0
        self.metrics = DaemonMetrics(sorted(domains), zpd.__version__, replicas=served)
        url = None
        if self.cfg.metrics.enabled:
            m = self.cfg.metrics
            try:
                url = self.metrics.serve(m.host, m.port, os.environ.get(m.token_env) or None,
                                         ready=lambda: self._ready and not self.stop.is_set(), healthy=self._healthy,
                                         token_env=m.token_env)
            except ValueError as exc:
                raise StartError(EXIT_USAGE, f"config: metrics.host: {exc}") from None
            except OSError as exc:
                raise StartError(EXIT_FAILED, f"metrics.port: cannot listen on {m.host}:{m.port}: {exc}") from None
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
        for domain, (accepted, calibrated) in domain_yields(self.db, last, last).get(last, {}).items():
            if domain in self.metrics.domains and calibrated:
                self.metrics.set_domain_yield(domain, accepted / calibrated)

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
                self.ctx.release_generators()  # a retry starts fresh engines / replicas, not the failed ones
                if attempt < cfg.max_retries and self.stop.wait(cfg.retry_backoff_seconds * 2**attempt):
                    raise Stopped() from None
        self.metrics.round_finished("failed")
        return False

    def run(self) -> int:
        try:
            self._open()
        except StartError:
            self.lock.release()
            raise
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        code = EXIT_OK
        try:
            code = self._loop()
        finally:
            self.ctx.release_generators(final=True)
            self.ctx.close_trainer()
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


def start(state_dir: Path, cfg: ZpdConfig, rounds_target: int | None, from_snapshot: Path | None = None,
          notes: list[str] | None = None) -> int:
    """Entry point of ``zpd start`` after argument parsing (``notes``: lines to log once logging is up).
    Returns the exit code."""
    daemon = Daemon(state_dir, cfg, rounds_target, from_snapshot, notes)
    try:
        return daemon.run()
    except StartError as exc:
        print(f"zpd start: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"zpd start: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
