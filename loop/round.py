"""The round's state machine, in one place.

    round 0:    BOOTSTRAP ------------------------> MEASURE -> SNAPSHOT
    round N>0:  SYNTHESIZE -> CALIBRATE -> TRAIN -> MEASURE -> SNAPSHOT -> (round N+1)

``rounds.phase`` in the store names the next phase to run. Each phase commits its outputs in the
same transaction that moves ``phase`` on, so running a round is simply: look up the phase, run it,
repeat until ``done``. A restarted daemon re-enters at the recorded phase.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from zpd.configs.load import to_json
from zpd.configs.schema import ZpdConfig
from zpd.configs.vocabulary import Phase

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
        ctx.db.execute(
            """INSERT OR IGNORE INTO rounds (id, status, phase, started_at, parent_learner_round, config_json)
               VALUES (?, 'running', ?, ?, ?, ?)""",
            [round_n, FIRST_PHASE[round_n == 0], time.time(), ctx.current_learner_round(), to_json(ctx.cfg)],
        )
    return ZpdConfig.model_validate_json(ctx.round_row(round_n)["config_json"])


def run_round(ctx: RunContext, round_n: int, on_phase: Callable[[str], None] | None = None) -> None:
    """Run round ``round_n`` from wherever it stands to committed. Raises Stopped or a phase's error."""
    ctx.cfg = start_round(ctx, round_n)
    CONTEXT.round = round_n
    from zpd.trainer.threads import apply_threads, threads_for

    apply_threads(threads_for(ctx.cfg))  # generation in this process; each training job gets its own count
    ingestion.ingest_for_round(ctx, round_n)  # domains.knowledge.corpus_dir: new documents, bad ones counted
    while (phase := ctx.round_row(round_n)["phase"]) != "done":
        ctx.check_stop()
        CONTEXT.phase = phase
        if on_phase:
            on_phase(phase)
        t0 = time.monotonic()
        PHASES[phase](ctx, round_n)
        seconds = time.monotonic() - t0
        ctx.metrics.observe_phase(phase, seconds)
        with ctx.db.atomic():
            timings = json.loads(ctx.round_row(round_n)["timings_json"] or "{}")
            timings[phase] = round(timings.get(phase, 0.0) + seconds, 3)
            ctx.db.execute("UPDATE rounds SET timings_json = ? WHERE id = ?", [json.dumps(timings), round_n])
