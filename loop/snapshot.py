"""SNAPSHOT: commit the round atomically (store/rounds.py's protocol), then prune by retention.

The disk is the truth: the round directory with ``COMPLETE`` and ``LATEST`` are written first, the
store's ``status = 'committed'`` after. ``store.rounds.reconcile`` (at start-up) marks a round committed
when its directory is complete but the store had not heard of it yet.

The round's store is a full copy or a delta against the last full round (``store/delta.py``, config
``[snapshot]``); a full round's commit also restarts the delta log, in the transaction that marks it
committed, so the next deltas apply to it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import zpd
from zpd.store import delta
from zpd.store.connect import transaction
from zpd.store.db import backup_to
from zpd.store.rounds import (
    commit_round,
    committed_on_disk,
    mark_committed,
    prune,
    rounds_to_prune,
    work_dir,
)

from .context import RunContext


def run(ctx: RunContext, round_n: int) -> None:
    row = ctx.round_row(round_n)
    delta.ensure_tracking(ctx.db)
    base = delta.plan(ctx.db, ctx.state_dir, round_n, full_every=ctx.cfg.snapshot.full_every,
                      min_bytes=ctx.cfg.snapshot.delta_min_bytes)
    written: list[int | None] = []

    def write_store(stage: Path) -> None:
        delta.write_store(ctx.db, stage, round_n, base, lambda dest: backup_to(ctx.db, dest))
        written.append(base)

    commit_round(
        ctx.state_dir, round_n,
        parent_round=row.parent_learner_round,
        learner_src=work_dir(ctx.state_dir, round_n) / "learner",
        config_json=row.config_json or "",  # set when the round began (round.start_round)
        write_store=write_store,
        version=zpd.__version__,
    )
    with transaction(ctx.db):
        if written == [None]:  # this call wrote a full copy, and nothing changed since: deltas start here
            delta.reset_base(ctx.db, round_n)
        mark_committed(ctx.db, round_n)  # after the reset: this update is one of the changes it logs
    shutil.rmtree(work_dir(ctx.state_dir, round_n), ignore_errors=True)
    storage = ctx.cfg.storage
    current = ctx.current_learner_round()
    on_disk = committed_on_disk(ctx.state_dir)
    victims = rounds_to_prune(on_disk, keep_last=storage.keep_last,
                              keep_every=storage.keep_every, keep_all=storage.keep_all,
                              protect={0} | ({current} if current is not None else set()))
    kept = [n for n in on_disk if n not in victims]
    needed = delta.bases_needed(ctx.state_dir, kept)
    victims = [n for n in victims if n not in needed]
    prune(ctx.state_dir, victims)
    if victims:
        ctx.log.info("pruned rounds", extra={"rounds": victims})
