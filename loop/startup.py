"""Start-up of ``zpd start``, in four steps, one method each, so that a refused start leaves no trace:

1. ``_read_only_checks``: the config (parsed by the CLI), the learner and domains, the kind of directory
   (``zpd.store.lock.check_state_dir``), the snapshot index, the config the run pinned, the metrics
   bind address. Nothing is written.
2. ``_take_lock``: the controller lock, only in an empty directory or a zpd state directory's root.
3. ``_bind_port``: the metrics port (busy: refused before the store is touched).
4. ``_first_write``: an interrupted seeding cleaned up, the seed, logs, the store, reconcile, the config.

A refusal after step 2 (``StartError``) goes through ``_discard_refused_start``: the port closed, the
lock file deleted if this start created it, the directories it made removed while still empty.
``StartUp`` is mixed into ``zpd.loop.daemon.Daemon``, which owns the attributes used here.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import zpd
from zpd.configs.load import changed_keys, immutable_changes, to_json
from zpd.configs.schema import ZpdConfig
from zpd.store.connect import SQLITE_VERSION, mark_seeded
from zpd.store.db import Database, StoreError, StoreIOError, get_meta, open_store, set_meta
from zpd.store.ledger_controller import controller_started
from zpd.store.lock import ControllerLock, LockHeld, StateDirRefused, check_state_dir, fresh_dir_foreign
from zpd.store.readmodel import next_round
from zpd.store.rounds import reconcile
from zpd.trainer.backends import backend_for

from . import notify
from .context import RunContext
from .domain_services import DomainServices
from .domains.base import Attaches, capability
from .domains.prompting import prompt_style
from .domains.registry import build_domains
from .logs import setup_logging
from .metrics import DaemonMetrics, is_loopback

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY, EXIT_CORRUPT = 0, 1, 2, 3, 4


class StartError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StartUp:
    """The start-up steps of the daemon (see the module docstring). ``zpd.loop.daemon.Daemon`` sets the
    attributes declared here (``__init__``: the first group; these steps: the second) and the methods."""

    state_dir: Path
    cfg: ZpdConfig
    from_snapshot: Path | None
    notes: list[str]
    stop: threading.Event
    lock: ControllerLock
    log: logging.Logger
    kind: str
    _ready: bool
    metrics: DaemonMetrics
    """Made in step 3 (``_bind_port``)."""
    db: Database
    """Opened in step 4 (``_first_write``), as is ``ctx``."""
    ctx: RunContext
    _seed_index: dict[str, Any] | None
    _made_dirs: list[Path]

    def beat(self) -> None:
        raise NotImplementedError  # Daemon.beat

    def _healthy(self) -> bool:
        raise NotImplementedError  # Daemon._healthy

    def _publish_committed(self) -> None:
        raise NotImplementedError  # Daemon._publish_committed

    def _open(self) -> None:
        domains = self._read_only_checks()
        self._take_lock()
        url = self._bind_port(domains)
        self._first_write(domains, url)

    def _read_only_checks(self) -> dict:
        """Step 1, nothing written: the config (parsed by the CLI), the learner and domains (a bad task file
        exits 2; a verl backend that cannot run here exits 1 saying what to install), the kind of
        directory, the snapshot index, the config the run pinned, the metrics bind address."""
        domains = build_domains(self.cfg.domains, prompt_style(self.cfg))
        if not backend_for(self.cfg.train.backend).embedded:
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
        state_dir = self.state_dir
        if self.from_snapshot is None or not state_dir.is_dir() or (state_dir / "state.db").exists():
            return
        others = fresh_dir_foreign(self.state_dir)
        if others:
            raise StartError(
                EXIT_USAGE, f"--from-snapshot: {self.state_dir} is not empty (found {others[0]})"
            )

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
            index.get("round"),
            index.get("created_at"),
        ):
            return  # this archive seeded this directory before: resume it
        raise StartError(
            EXIT_USAGE,
            f"--from-snapshot: {self.state_dir} is not empty and was not seeded by "
            f"{self.from_snapshot}; give an empty state directory (or drop "
            "--from-snapshot to resume it)",
        )

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
            raise StartError(
                EXIT_USAGE,
                f"config: {bad[0]} cannot change in a running state directory "
                f"({self.state_dir}); start a new one or restore the old value",
            )

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
            raise StartError(
                EXIT_FAILED, f"{self.state_dir}: cannot write the state directory: {exc.strerror or exc}"
            ) from None

    def _bind_port(self, domains: dict) -> str | None:
        """Step 3: the metrics port (a busy one refuses the start before the store is touched)."""
        served = self.cfg.served.num_replicas if self.cfg.generation.backend == "served" else 0
        self.metrics = DaemonMetrics(sorted(domains), zpd.__version__, replicas=served)
        if not self.cfg.metrics.enabled:
            return None
        m = self.cfg.metrics
        try:
            return self.metrics.serve(
                m.host,
                m.port,
                os.environ.get(m.token_env) or None,
                ready=lambda: self._ready and not self.stop.is_set(),
                healthy=self._healthy,
                token_env=m.token_env,
            )
        except ValueError as exc:
            raise StartError(EXIT_USAGE, f"config: metrics.host: {exc}") from None
        except OSError as exc:
            raise StartError(
                EXIT_FAILED, f"metrics.port: cannot listen on {m.host}:{m.port}: {exc}"
            ) from None

    def _discard_refused_start(self) -> None:
        """A refusal after step 2: close the port, delete the lock file if this start created it, and the
        directories it made if they are still empty."""
        metrics = getattr(self, "metrics", None)  # absent when the port step was not reached
        if metrics is not None:
            metrics.close()
        self.lock.release(discard=True)
        for path in getattr(self, "_made_dirs", []):
            try:
                path.rmdir()
            except OSError:
                break

    def _seed(self) -> None:
        """Unpack ``--from-snapshot`` into the (empty) directory; a no-op when step 1 found it seeded."""
        index = getattr(self, "_seed_index", None)
        if index is None or self.from_snapshot is None:
            return
        from zpd.store.archive import SnapshotError, seed_from_snapshot

        mark = json.dumps(
            {
                "archive": str(self.from_snapshot),
                "round": index["round"],
                "created_at": index.get("created_at"),
            }
        )
        try:
            seed_from_snapshot(self.from_snapshot, self.state_dir, prepare=lambda db: mark_seeded(db, mark))
        except SnapshotError as exc:
            raise StartError(EXIT_USAGE, f"--from-snapshot: {exc}") from None

    def _check_config(self) -> None:
        new = json.loads(to_json(self.cfg))
        stored = get_meta(self.db, "config_json")
        if stored:
            old = json.loads(stored)
            bad = immutable_changes(old, new)
            if bad:
                raise StartError(
                    EXIT_USAGE,
                    f"config: {bad[0]} cannot change in a running state directory "
                    f"({self.state_dir}); start a new one or restore the old value",
                )
            changed = changed_keys(old, new)
            if changed:
                self.log.info(
                    "config changed on resume; applies from the next round", extra={"keys": changed}
                )
        with self.db.atomic():
            set_meta(self.db, "config_json", to_json(self.cfg))

    def _first_write(self, domains: dict, url: str | None) -> None:
        """Step 4: stale seeding stages removed, the seed, logs, the store, reconcile, the config pinned."""
        from zpd.store.archive import discard_interrupted_seed

        try:
            removed = discard_interrupted_seed(self.state_dir)  # a kill while seeding; we hold the lock
            self._seed()
            setup_logging(
                self.state_dir / "logs",
                self.cfg.logging.level,
                self.cfg.logging.max_bytes,
                self.cfg.logging.backups,
            )
            for note in self.notes:  # what the start-up checks (loop/learner_check.py) had to say
                self.log.info(note)
        except OSError as exc:
            raise StartError(
                EXIT_FAILED, f"{self.state_dir}: cannot write the state directory: {exc.strerror or exc}"
            ) from None
        try:
            self.db = open_store(self.state_dir / "state.db")
        except StoreIOError as exc:
            raise StartError(EXIT_FAILED, str(exc)) from None
        except StoreError as exc:
            raise StartError(EXIT_CORRUPT, str(exc)) from None
        if removed:
            self.log.warning("removed what an interrupted seeding left", extra={"removed": removed})
        self.log.info(
            "store opened", extra={"sqlite_version": SQLITE_VERSION, "state_dir": str(self.state_dir)}
        )
        fixed = reconcile(self.db, self.state_dir)
        if fixed:
            self.log.info("reconciled rounds committed on disk", extra={"rounds": fixed})
        self._check_config()
        with self.db.atomic():
            controller_started(self.db, pid=os.getpid(), round_n=next_round(self.db), metrics_url=url)
        self.ctx = RunContext(
            self.state_dir, self.cfg, self.db, domains, self.metrics, self.log, self.stop, beat=self.beat
        )
        # A domain that needs the run (the knowledge domain's question writer).
        for domain in domains.values():
            attach = capability(domain, Attaches)
            if attach is not None:
                attach.attach(DomainServices(self.ctx))
        self._publish_committed()
        self._ready = True
        notify.notify("READY=1")
        self.log.info(
            "daemon ready", extra={"pid": os.getpid(), "metrics_url": url, "version": zpd.__version__}
        )
