"""What TRAIN trains on: the round's examples, a replay sample of earlier rounds' and of the bootstrap set.

SFT (rejection-sampling fine-tuning): the prompt is the *bare* task and the target is its successful
guided answer, else a solo success, else the domain's reference solution (the one rule of every
selection, ``loop/selection.py``), so the learner learns to do alone what it could only do with help.
GRPO: the bare task as an RL prompt with the verifiable answer as reward. Examples are inserted once per
(round, task, kind) with their lineage (task, attempt, round), so a rerun after a kill trains on the
same ones. Every read goes through ``store/training.py`` and ``store/stats.py``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from zpd.store import training
from zpd.store.ledger_rounds import RoundUpdate
from zpd.store.stats import round_yield_counts
from zpd.trainer.backends import ExampleKind, backend_for

from .bootstrap import bootstrap_set, eval_hashes, propose_share, warms_up
from .context import RunContext, derive_seed, rng_for
from .domains.prompting import prompt_style


def example_kind(ctx: RunContext) -> ExampleKind:
    """The examples the configured backend trains on: ``sft`` or ``rl``."""
    return backend_for(ctx.cfg.train.backend).example_kind


def _target(ctx: RunContext, r: dict[str, Any], kind: ExampleKind) -> str | None:
    """A selected task's target (``loop/selection.py``): its first correct guided sample, else its first
    correct solo sample, else (``target_source = 'reference'``) the domain's reference solution; GRPO:
    the answer its reward checks."""
    if r["attempt_id"] is None and r["target_source"] != "reference":
        return None  # selected before m009 and never answered correctly: skipped, as it was then
    if kind != "sft":
        return str(r["answer"])
    if r["attempt_id"] is not None:
        return str(r["output"]).strip()
    return ctx.domains[r["domain"]].solution(ctx.task_from_row(r))


def build_examples(ctx: RunContext, round_n: int) -> int:
    """Insert this round's training examples (idempotent); returns how many the round has."""
    kind = example_kind(ctx)
    with ctx.db.atomic():
        # The selection's tasks (tasks.selected) with their targets. The prompt is the bare task as the
        # learner reads it solo (the prompt style's, without the guidance): what it must learn to do alone.
        rows = []
        for r in training.selected_targets(ctx.db, round_n):
            target = _target(ctx, r, kind)
            if target is not None:
                rows.append((r["task_id"], r["attempt_id"],
                             ctx.domains[r["domain"]].solo_prompt(ctx.task_from_row(r)), target))
        training.insert_examples(ctx.db, round_n, kind, rows)
    return training.count_examples(ctx.db, round_n, kind)


def _example_row(ctx: RunContext, r: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": r["eprompt"], "response": r["response"], "domain": r["domain"], "answer": r["answer"],
            "task_json": json.dumps(asdict(ctx.task_from_row(r))),
            "prompt_style": prompt_style(ctx.cfg)}  # the GRPO reward grades in it (trainer/backends.py)


def bootstrap_replay(ctx: RunContext) -> list[dict[str, Any]]:
    """The bootstrap set that every round replays (without it a tiny learner forgets how to read guidance
    and what it knew alone at the easiest level): made once, deterministically, and kept in the store
    under a key of everything it depends on; empty unless round 0 warmed the learner up for SFT."""
    if example_kind(ctx) != "sft" or not warms_up(ctx.cfg):
        return []

    seed = derive_seed(ctx.cfg.run.seed, "bootstrap")
    share = propose_share(ctx.cfg)
    key = hashlib.sha256(json.dumps([ctx.cfg.bootstrap.model_dump(mode="json"), seed, share,
                                     ctx.cfg.domains.model_dump(mode="json"), prompt_style(ctx.cfg)],
                                    sort_keys=True).encode()).hexdigest()
    return training.bootstrap_examples(ctx.db, key, lambda: bootstrap_set(
        ctx.domains, ctx.cfg.bootstrap, seed, eval_hashes(ctx), propose_fraction=share))


def training_set(ctx: RunContext, round_n: int) -> list[dict[str, Any]]:
    """This round's examples plus a replay sample of earlier rounds' and the bootstrap set (seeded by
    round). Reads this round's rows, the ids of earlier ones, and only the rows the sample drew."""
    cfg, kind = ctx.cfg.train, example_kind(ctx)
    new = [_example_row(ctx, r) for r in training.round_examples(ctx.db, round_n, kind)]
    num_old = training.count_earlier(ctx.db, round_n, kind)
    boot = bootstrap_replay(ctx)
    rng = rng_for(ctx.cfg.run.seed, round_n, "replay")
    # Positions into [earlier examples by id] + [bootstrap set]: random.sample draws positions from the
    # population's length alone, so this is the sample the whole list would have given.
    picks = rng.sample(range(num_old + len(boot)), min(num_old + len(boot), int(cfg.replay_ratio * len(new))))
    old = [p for p in picks if p < num_old]
    ids = dict(zip(old, training.earlier_example_ids(ctx.db, round_n, kind, old), strict=True))
    rows = training.examples_by_id(ctx.db, list(ids.values()))
    replay = [_example_row(ctx, rows[ids[p]]) if p < num_old else boot[p - num_old] for p in picks]
    data = new + replay
    rng.shuffle(data)
    return data[: cfg.max_examples]


def round_yield(ctx: RunContext, round_n: int) -> RoundUpdate:
    """The round's yield, AgentFrontier's |D_ZPD| / candidates: tasks calibrated this round that landed in the
    band (``zpd``, plus ``exam``, which admits only in-band items), over all calibrated this round; and the
    generation spent per accepted item (teacher USD, and generated tokens of every role). None when nothing
    was calibrated / accepted. Read from the store, so a rerun gives the same figures."""
    calibrated, accepted, usd, tokens = round_yield_counts(ctx.db, round_n)
    return RoundUpdate(yield_ratio=accepted / calibrated if calibrated else None,
                       cost_per_accepted_usd=usd / accepted if accepted else None,
                       tokens_per_accepted=tokens / accepted if accepted else None)
