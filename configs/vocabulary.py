"""The project's vocabulary: the names of a task's fates and of the round's phases, in one place.

Every layer may import this module (it imports nothing of zpd), so the store, the loop, the metrics and
the reports derive their lists from it instead of spelling the names again. The names are what the store
holds (``tasks.fate``, ``rounds.phase``, ``controller.phase``), what ``status --json`` prints and what the
metrics label: :class:`enum.StrEnum` members compare, hash, format and bind to SQLite as those strings.
The tuples of plain strings below keep the reprs of derived lists unchanged (error messages print them).
The migrations' SQL keeps its own literals: migrations are history.
"""

from __future__ import annotations

from enum import StrEnum


class Fate(StrEnum):
    """Where a task stands: made, routed by calibration, held out, or dropped (``tasks.fate``)."""

    PENDING = "pending"
    """Synthesized and not yet calibrated (or waiting for the teacher's budget): the next CALIBRATE takes
    it."""

    MASTERED = "mastered"
    """The learner solves it alone (solo pass rate above ``curriculum.solo_max_ratio``): the pre-training
    pool (AgentFrontier's D_pretrain)."""

    ZPD = "zpd"
    """Failed alone, solved with guidance (guided pass rate at least ``curriculum.guided_min_ratio``): in the
    Zone of Proximal Development, the training data."""

    BEYOND = "beyond"
    """Failed even with guidance: deferred (simplified into new candidates by later rounds)."""

    REVIEW = "review"
    """Failed even with guidance, sent to the human-review queue (``curriculum.beyond_fate = "review"``,
    the paper's D_human); ``zpd review`` keeps it (back to pending) or drops it."""

    EXAM = "exam"
    """A frontier item (0/k solo, k/k guided) admitted to the evolving exam instead of training."""

    EVAL = "eval"
    """An item of the frozen per-domain eval set, made once at round 0; never calibrated nor trained on."""

    DROPPED = "dropped"
    """Removed by a human reviewer; never attempted again."""


class Phase(StrEnum):
    """A phase of a round, in the order a round runs them (``rounds.phase`` names the next one to run).

    Round 0 runs BOOTSTRAP, MEASURE, SNAPSHOT; every later round runs SYNTHESIZE to SNAPSHOT."""

    BOOTSTRAP = "bootstrap"
    """Round 0: the frozen eval sets are made and the learner is warmed up on the bootstrap curriculum
    (``bootstrap.enabled``, ``learner.warmup``)."""

    SYNTHESIZE = "synthesize"
    """New candidate tasks around each domain's frontier, deduplicated against the store."""

    CALIBRATE = "calibrate"
    """Solo and guided attempts of every pending task; each gets its fate."""

    TRAIN = "train"
    """The selected tasks (and replay) train the next learner, in a trainer child process."""

    MEASURE = "measure"
    """The new learner takes the eval set, the exam and the frontier probe; the promotion gate decides."""

    SNAPSHOT = "snapshot"
    """The round is committed atomically to disk, then marked committed in the store."""


class DaemonState(StrEnum):
    """What the daemon reports doing when no phase runs (``controller.phase``, the ``zpd_phase`` metric)."""

    IDLE = "idle"
    """Between rounds, or not started: no phase runs."""

    STOPPING = "stopping"
    """A stop was asked for: the daemon finishes at the next safe point and exits."""


DONE = "done"
"""``rounds.phase`` once SNAPSHOT has committed the round: nothing is left to run."""

FATES: tuple[str, ...] = tuple(f.value for f in Fate)
"""Every fate, in the order status and the metrics list them."""

CALIBRATED_FATES: tuple[str, ...] = tuple(f.value for f in (Fate.MASTERED, Fate.ZPD, Fate.BEYOND, Fate.REVIEW,
                                                            Fate.EXAM))
"""The fates CALIBRATE routes a task to (the task's ``fate_round`` is the round that routed it)."""

ROUND_PHASES: tuple[str, ...] = tuple(p.value for p in Phase)
"""The phases of a round, in order."""

DAEMON_PHASES: tuple[str, ...] = ROUND_PHASES + tuple(s.value for s in DaemonState)
"""Everything the daemon may report as its phase: a round's phase, idle or stopping."""
