"""The daemon: ``zpd start``. Lock, open the store, serve metrics, then run rounds until told to stop.

Start-up is four steps, one method each (``loop/startup.py``): read-only checks; the controller lock
(so a second daemon is refused before it binds a port or writes a byte); the metrics port; the first
write. A refused start leaves no trace. Signals only set a stop flag; the loop stops at the next safe point
(between phases or batches; a training child is killed as a tree) and exits 0. A second signal aborts at once.
"""

from __future__ import annotations

import errno
import gc
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from zpd.configs.load import ConfigError
from zpd.configs.schema import ZpdConfig
from zpd.store import ledger_rounds
from zpd.store.connect import SqliteError
from zpd.store.db import is_storage_full
from zpd.store.ledger_controller import controller_stopped, set_controller_phase
from zpd.store.lock import ControllerLock
from zpd.store.readmodel import last_committed, next_round  # noqa: F401  next_round: re-exported
from zpd.store.rounds import dir_bytes, round_dir
from zpd.store.yields import domain_yields

from . import notify
from .context import Stopped
from .errors import PhaseFailed
from .logs import CONTEXT, close_logging, get_logger
from .round import run_round
from .startup import (  # noqa: F401  the exit codes are part of this module's surface
    EXIT_BUSY,
    EXIT_CORRUPT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    StartError,
    StartUp,
)
from .terminal import one_line

COMPONENT_OF_PHASE = {
    "bootstrap": "trainer",
    "train": "trainer",
    "calibrate": "generator",
    "measure": "generator",
    "synthesize": "store",
    "snapshot": "store",
}


class StorageFull(Exception):
    """The disk under the state directory is full or read-only."""


class Daemon(StartUp):
    def __init__(
        self,
        state_dir: Path,
        cfg: ZpdConfig,
        rounds_target: int | None = None,
        from_snapshot: Path | None = None,
        notes: list[str] | None = None,
    ) -> None:
        self.notes = list(notes or [])
        self.state_dir = Path(state_dir).resolve()
        self.from_snapshot = Path(from_snapshot).resolve() if from_snapshot else None
        self.cfg = cfg
        self.rounds_target = rounds_target
        self.stop = threading.Event()
        self.lock = ControllerLock(self.state_dir)
        self.log = get_logger()
        self._signals = 0
        self._last_beat = time.monotonic()
        self._ready = False
        self._started = time.monotonic()
        self.kind = "new"
        """What step 1 found: new, fresh (empty) or zpd (a state directory)."""

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
            set_controller_phase(self.db, phase, round_n)

    def _publish_committed(self) -> None:
        """Headline figures of the current learner, from the store, into the metrics."""
        last = last_committed(self.db)
        if last is None or self.metrics is None:
            return
        row = ledger_rounds.read_round(self.db, last)
        current = row.current_learner_round
        cur = row if current is None else ledger_rounds.read_round(self.db, current)
        if row.finished_at:
            self.metrics.set_last_success(row.finished_at)
        self.metrics.set_eval_accuracy(cur.eval_accuracy or 0.0)
        self.metrics.set_exam(row.exam_accuracy or 0.0, row.exam_items or 0)
        for domain, value in ledger_rounds.frontier_of(self.db, cur.id).items():
            self.metrics.set_frontier(domain, value)
        for domain, (accepted, calibrated) in domain_yields(self.db, last, last).get(last, {}).items():
            if domain in self.metrics.domains and calibrated:
                self.metrics.set_domain_yield(domain, accepted / calibrated)

    # -- signals ------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals += 1
        if self._signals == 1:
            self.log.info(
                "stop requested; stopping at the next safe point",
                extra={"signal": signal.Signals(signum).name},
            )
            self.stop.set()
            notify.notify("STOPPING=1")
            if self.metrics:
                self.metrics.set_phase("stopping")
            try:
                CONTEXT.phase = "stopping"
                with self.db.atomic():
                    set_controller_phase(self.db, "stopping")
            except SqliteError:
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
            if ledger_rounds.total_train_tokens(self.db) >= run.max_train_tokens:
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
            self.log.error(
                "not enough free disk for another round; stopping cleanly",
                extra={"free_bytes": free, "needed_bytes": int(need)},
            )
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
                component = (
                    exc.component if isinstance(exc, PhaseFailed) else COMPONENT_OF_PHASE.get(phase, "store")
                )
                self.metrics.failure(component)
                self.log.error(
                    "phase failed",
                    extra={"component": component, "error": str(exc)[-2000:], "attempt": attempt + 1},
                    exc_info=not isinstance(exc, PhaseFailed),
                )
                with self.db.atomic():
                    ledger_rounds.record_failure(self.db, n, str(exc)[-4000:])
                self.ctx.release_generators()  # a retry starts fresh engines / replicas, not the failed ones
                if attempt < cfg.max_retries and self.stop.wait(cfg.retry_backoff_seconds * 2**attempt):
                    raise Stopped() from None
        self.metrics.round_finished("failed")
        return False

    def run(self) -> int:
        try:
            self._open()
        except StartError:
            self._discard_refused_start()
            close_logging()
            raise
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        # What start-up made (the imports, config, domains, eval sets: ~400k objects) lives as long as the
        # daemon: out of the garbage collector's sight, so that a full collection in a round scans only
        # the round's own objects (it took 0.28 s of a 0.8 s smoke round otherwise). Still freed by
        # reference counting; undone when the run ends (a test may run the daemon in its own process).
        gc.freeze()
        code = EXIT_OK
        try:
            code = self._loop()
        finally:
            gc.unfreeze()
            self.ctx.release_generators(final=True)
            self.ctx.close_trainer()
            try:  # best effort: on a full or read-only disk these writes fail too
                self._set_phase("idle")
                with self.db.atomic():
                    controller_stopped(self.db)
            except SqliteError as exc:
                self.log.warning("could not record the stop in the store", extra={"error": str(exc)})
            self.metrics.close()
            self.lock.release()
            self.log.info("daemon stopped", extra={"exit_code": code})
            # Closed here, not whenever the garbage collector gets to it: closing checkpoints the WAL into
            # state.db, which must not happen after ``zpd start`` returned (to a test, in the same process).
            self.db.conn.close()
            close_logging()  # a later command in this process (a test's) must not write into this run
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
                reason = next(
                    (
                        m
                        for m in (
                            "database or disk is full",
                            os.strerror(errno.ENOSPC),
                            os.strerror(errno.EROFS),
                            os.strerror(errno.EDQUOT),
                        )
                        if m in text
                    ),
                    "",
                )
                # One line: a trainer's failure carries its log tail; the reason and the first line suffice.
                print(
                    f"zpd start: storage full or read-only ({reason or 'disk error'}); stopped cleanly at "
                    f"round {n}, the last committed round is intact: {text.splitlines()[0] if text else ''}",
                    file=sys.stderr,
                )
                return EXIT_FAILED
            except Stopped:
                self.metrics.round_finished("aborted")
                self.log.info("stopped at a safe point", extra={"round": n})
                return EXIT_OK
            if committed:
                self.metrics.round_finished("committed", time.time())
                self._publish_committed()
                self.log.info(
                    "round committed", extra={"round": n, "seconds": round(time.monotonic() - t0, 2)}
                )
                backoff = self.cfg.train.retry_backoff_seconds
                continue
            if self.rounds_target is not None:
                self.log.error("round failed after its retries", extra={"round": n})
                return EXIT_FAILED
            self.log.error(
                "round failed after its retries; waiting before trying again", extra={"wait_seconds": backoff}
            )
            if self.stop.wait(backoff):
                return EXIT_OK
            backoff = min(backoff * 2, 600.0)


def start(
    state_dir: Path,
    cfg: ZpdConfig,
    rounds_target: int | None,
    from_snapshot: Path | None = None,
    notes: list[str] | None = None,
) -> int:
    """Entry point of ``zpd start`` after argument parsing (``notes``: lines to log once logging is up).
    Returns the exit code."""
    daemon = Daemon(state_dir, cfg, rounds_target, from_snapshot, notes)
    try:
        return daemon.run()
    except StartError as exc:
        print(one_line(f"zpd start: {exc}"), file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(one_line(f"zpd start: config error: {exc}"), file=sys.stderr)
        return EXIT_USAGE
