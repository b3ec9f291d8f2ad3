"""SNAPSHOT: commit the round atomically (store/rounds.py's protocol), then prune by retention.

The disk is the truth: the round directory with ``COMPLETE`` and ``LATEST`` are written first, the
store's ``status = 'committed'`` after. ``reconcile`` (at start-up) marks a round committed when its
directory is complete but the store had not heard of it yet.
"""

from __future__ import annotations

import shutil
import time

from sqlite_utils import Database

import zpd
from zpd.store.db import backup_to
from zpd.store.rounds import (
    clean_stale,
    commit_round,
    committed_on_disk,
    prune,
    rounds_to_prune,
    work_dir,
)

from .context import RunContext


def run(ctx: RunContext, round_n: int) -> None:
    row = ctx.round_row(round_n)
    commit_round(
        ctx.state_dir, round_n,
        parent_round=row.parent_learner_round,
        learner_src=work_dir(ctx.state_dir, round_n) / "learner",
        config_json=row.config_json,
        backup_db=lambda dest: backup_to(ctx.db, dest),
        version=zpd.__version__,
    )
    with ctx.db.atomic():
        ctx.db.execute("UPDATE rounds SET status = 'committed', phase = 'done', finished_at = ? WHERE id = ?",
                       [time.time(), round_n])
    shutil.rmtree(work_dir(ctx.state_dir, round_n), ignore_errors=True)
    storage = ctx.cfg.storage
    current = ctx.current_learner_round()
    victims = rounds_to_prune(committed_on_disk(ctx.state_dir), keep_last=storage.keep_last,
                              keep_every=storage.keep_every, keep_all=storage.keep_all,
                              protect={0} | ({current} if current is not None else set()))
    prune(ctx.state_dir, victims)
    if victims:
        ctx.log.info("pruned rounds", extra={"rounds": victims})


def reconcile(db: Database, state_dir) -> list[int]:
    """Make the store agree with the disk after a kill; returns rounds newly marked committed."""
    clean_stale(state_dir)
    fixed = []
    on_disk = set(committed_on_disk(state_dir))
    for (n,) in db.execute("SELECT id FROM rounds WHERE status != 'committed'").fetchall():
        if n in on_disk:
            fixed.append(n)
    with db.atomic():
        for n in fixed:
            db.execute("UPDATE rounds SET status = 'committed', phase = 'done', finished_at = coalesce(finished_at, ?) "
                       "WHERE id = ?", [time.time(), n])
    for (n,) in db.execute("SELECT id FROM rounds WHERE status = 'committed'").fetchall():
        shutil.rmtree(work_dir(state_dir, n), ignore_errors=True)
    return fixed
