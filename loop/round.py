"""The round's state machine, in one place.

    round 0:    BOOTSTRAP ------------------------> MEASURE -> SNAPSHOT
    round N>0:  SYNTHESIZE -> CALIBRATE -> TRAIN -> MEASURE -> SNAPSHOT -> (round N+1)

``rounds.phase`` in the store names the next phase to run. Each phase commits its outputs in the
same transaction that moves ``phase`` on, so running a round is simply: look up the phase, run it,
repeat until ``done``. A restarted daemon re-enters at the recorded phase.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from zpd.configs.load import to_json
from zpd.configs.schema import ZpdConfig
from zpd.configs.vocabulary import Phase
from zpd.store import ledger_rounds

from . import bootstrap, calibrate, ingestion, measure, snapshot, synthesize, train
from .context import RunContext
from .logs import CONTEXT

PHASES: dict[str, Callable[[RunContext, int], None]] = {
    Phase.BOOTSTRAP: bootstrap.run,
    Phase.SYNTHESIZE: synthesize.run,
    Phase.CALIBRATE: calibrate.run,
    Phase.TRAIN: train.run,
    Phase.MEASURE: measure.run,
    Phase.SNAPSHOT: snapshot.run,
}

FIRST_PHASE = {True: Phase.BOOTSTRAP, False: Phase.SYNTHESIZE}


def start_round(ctx: RunContext, round_n: int) -> ZpdConfig:
    """Create the round's row (idempotent) and return the config it runs with: the config stored
    when it began, so a resume with a changed config applies the change from the next round."""
    with ctx.db.atomic():
        ledger_rounds.create_round(
            ctx.db,
            round_n,
            phase=FIRST_PHASE[round_n == 0],
            parent_learner_round=ctx.current_learner_round(),
            config_json=to_json(ctx.cfg),
        )
    return ZpdConfig.model_validate_json(ctx.round_row(round_n).config_json or "")


def run_round(ctx: RunContext, round_n: int, on_phase: Callable[[str], None] | None = None) -> None:
    """Run round ``round_n`` from wherever it stands to committed. Raises Stopped or a phase's error.
    The phases get a view of ``ctx`` with the round's config (``RunContext.for_round``); ``ctx`` itself is
    unchanged."""
    rctx = ctx.for_round(start_round(ctx, round_n))
    CONTEXT.round = round_n
    from zpd.trainer.threads import apply_threads, threads_for

    apply_threads(threads_for(rctx.cfg))  # generation in this process; each training job gets its own count
    ingestion.ingest_for_round(rctx, round_n)  # domains.knowledge.corpus_dir: new documents, bad ones counted
    while (phase := rctx.round_row(round_n).phase) != "done":
        rctx.check_stop()
        CONTEXT.phase = phase
        if on_phase:
            on_phase(phase)
        t0 = time.monotonic()
        PHASES[phase](rctx, round_n)
        seconds = time.monotonic() - t0
        rctx.metrics.observe_phase(phase, seconds)
        with rctx.db.atomic():
            ledger_rounds.add_phase_seconds(rctx.db, round_n, phase, seconds)
