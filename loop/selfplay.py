"""The self-play source (``curriculum.source = "self-play"``; the ``self-play`` policy is it with the zpd
selection): the learner proposes its own tasks.

One model, two roles, as in Absolute Zero (AZR), R-Zero and Agent0 (``reference/peers.md``):

* **Propose** (SYNTHESIZE, ``SelfPlay.propose``): the current learner is prompted with
  ``propose:<level>``, at levels drawn around the domain's frontier as zpd-band draws difficulties,
  and samples ``curriculum.selfplay_group_size`` proposals per prompt (one GRPO group) at
  ``selfplay_temperature``: ceil(n / group size) groups for the n candidates SYNTHESIZE asks for.
  Every proposal is checked: it must parse into a task of the domain (the domain's ``parse(text)``),
  be gradable (the domain grades its own reference solution correct) and not duplicate a stored task
  (eval and exam items included) or an earlier proposal of the round (content hash, i.e. canonical
  form). Valid, new proposals are returned as candidates (tagged in ``meta["proposal"]``); every
  proposal, valid or not, is a row of ``proposals`` (written in SYNTHESIZE's transaction). Every sample
  has its own seed, derived from ``(seed, round, "propose", domain)``, its group and its index, so a
  kill-and-resume re-makes the same proposals. A domain without ``parse`` (knowledge, dataset) has its
  candidates made by the domain at the zpd-band difficulties, as under zpd-band (without escalations).
* **Solve**: CALIBRATE measures the proposed tasks like any other; the learner trains on what
  ``curriculum.selection`` selects (the ZPD under the ``self-play`` policy).
* **Reward and proposer update** (TRAIN, the source's ``after_train``: ``train_proposer``): a valid new
  proposal earns the learnability of its task under the solver's solo pass rate p (``tasks.p_solo``):
  ``min(p, 1 - p)`` (``selfplay_reward = "learnability"``, R-Zero/Agent0) or ``1 - p`` for 0 < p < 1
  else 0 (``"azr"``); a duplicate earns ``-selfplay_duplicate_penalty``; an invalid proposal
  ``selfplay_invalid_reward`` (-1, as Agent0's unparsable questions). A proposal whose task is still
  pending (a paused teacher), or a sample the generator failed to produce (an endpoint error), has no
  reward and is left out of its group. The groups are used for a
  GRPO update (``trainer/grpo.py:train_grpo_groups``: group-normalised advantages, no KL) of the learner
  the solver's training just made (``work/solver`` -> ``work/learner``, a child process like every
  training job). The proposals were sampled by that learner's parent, the learner being trained this
  round, so the update is on-policy up to the round's solver step.

Round 0 teaches the format: under self-play ``selfplay_bootstrap_fraction`` of the bootstrap set is
``propose:<level>`` -> an expression of that level (``proposer_examples``), and that share is replayed
with the bootstrap set afterwards, so the solver's SFT does not make the learner forget it
(``loop/proposer_format.py``).

Cold start: a learner whose round 0 was not self-play (a source changed mid-run, a benchmark's shared
round 0) proposes nothing valid, and all-invalid groups carry no GRPO signal. So when fewer than
``selfplay_format_repair_below`` of a round's proposals are valid, the proposer step first fine-tunes on
the format (``format_examples``: the bootstrap's proposer rows with as many of its solver rows), in the
same child job, then makes the GRPO update.

Resumability: each TRAIN step is complete once its directory exists (``work/solver``, then
``work/learner``, each renamed from ``.tmp``); a kill in between reruns only the missing step from the
same stored proposals and rewards. The round's proposer figures (loss, mean reward, valid and duplicate
ratios, tokens) are written on the ``rounds`` row with the phase advance.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from zpd.configs.schema import CurriculumConfig
from zpd.store import examples as store
from zpd.store.examples import Proposal, ScoredProposal
from zpd.store.ledger_rounds import RoundUpdate
from zpd.trainer.backends import PROPOSER_BACKEND, backend_for, proposer_params
from zpd.trainer.spec import JobFiles

from .bootstrap import bootstrap_set, eval_hashes
from .context import RunContext, derive_seed
from .domains.base import Parses, capability
from .policy import AfterTrain, Source
from .proposer_format import proposer_examples, proposer_prompt, snap_level
from .trainjob import reuse_learner, run_trainer

__all__ = ["SelfPlay", "format_examples", "learnability", "proposal_reward", "proposer_examples",
           "proposer_prompt", "score_proposals", "train_proposer"]


def learnability(p: float, kind: str) -> float:
    """The reward of a valid proposal whose task the solver passes alone at rate ``p``."""
    if kind == "azr":
        return 1.0 - p if 0.0 < p < 1.0 else 0.0
    return min(p, 1.0 - p)


def proposal_reward(cfg: CurriculumConfig, *, valid: bool, duplicate: bool,
                    p_solo: float | None) -> float | None:
    """A proposal's reward (``cfg``: CurriculumConfig); None when its task has no pass rate yet."""
    if not valid:
        return cfg.selfplay_invalid_reward
    if duplicate:
        return -cfg.selfplay_duplicate_penalty
    if p_solo is None:
        return None
    return learnability(p_solo, cfg.selfplay_reward)


class SelfPlay(Source):
    name = "self-play"
    derives = False
    needs_pass_rate = True  # the proposer's reward is the solver's pass rate: all k solo samples

    def propose(self, ctx: RunContext, round_n: int, domain_name: str, domain: Any, n: int,
                rng: random.Random) -> list[Any] | None:
        parser = capability(domain, Parses)
        parse = None if parser is None else parser.parse
        if parse is None:
            return None  # the domain makes its candidates at the zpd-band difficulties
        if n <= 0:
            return []
        cfg = self.cfg
        size = cfg.selfplay_group_size
        num_groups = max(1, math.ceil(n / size))
        levels = [snap_level(domain, d) for d in self.difficulties(
            ctx, round_n, domain_name, domain.min_difficulty, domain.max_difficulty, num_groups, rng)]
        prompts = [proposer_prompt(level) for level in levels]
        gen = ctx.generator(ctx.learner_dir(ctx.parent_learner_round(round_n)))
        seed = derive_seed(ctx.cfg.run.seed, round_n, "propose", domain_name)
        outs = _sample_groups(ctx, round_n, domain_name, gen, prompts, size, seed)
        known = ctx.known_hashes()
        tasks: list[Any] = []
        rows: list[Proposal] = []
        for group_id, (level, prompt, completions) in enumerate(zip(levels, prompts, outs, strict=True)):
            for idx, c in enumerate(completions):
                parsed = None if c.failed else parse(c.text)
                gradable = parsed is not None and domain.grade(parsed, domain.solution(parsed))
                task = parsed if gradable else None
                valid = task is not None
                duplicate = task is not None and task.content_hash in known
                if task is not None and not duplicate:
                    known.add(task.content_hash)
                    tasks.append(replace(task, meta={**task.meta, "proposal": {
                        "round": round_n, "group": group_id, "sample": idx, "level": level}}))
                rows.append(Proposal(round=round_n, domain=domain_name, group_id=group_id, sample_idx=idx,
                                     level=level, prompt=prompt, output=c.text, finish_reason=c.finish_reason,
                                     valid=int(valid), duplicate=int(duplicate),
                                     content_hash=task.content_hash if task is not None else None))
        store.insert_proposals(ctx.db, rows)
        ctx.log.info("proposed", extra={"domain": domain_name, "proposals": len(rows),
                                        "valid": sum(r.valid for r in rows),
                                        "duplicates": sum(r.duplicate for r in rows), "new": len(tasks)})
        return tasks

    def train_output(self, work: Path) -> Path:
        """The solver's training makes ``work/solver``; the proposer's update makes ``work/learner``."""
        return work / "solver"

    def after_train(self, ctx: RunContext, round_n: int, *, trained: Path, out: Path) -> AfterTrain:
        figures = train_proposer(ctx, round_n, solver=trained, out=out)
        return AfterTrain(columns=figures, num_tokens=int(figures.get("proposer_tokens") or 0))


GROUPS_PER_CALL = 8
"""Proposal groups sampled per generator call; each call's samples are logged before the next one starts."""


def _sample_groups(ctx: RunContext, round_n: int, domain_name: str, gen: Any, prompts: list[str], size: int,
                   seed: int) -> list[list[Any]]:
    """Per prompt (one group each), ``size`` proposals. SYNTHESIZE commits once, at its end, so the samples
    are logged (``store/replies.py``, in the round's work directory) a few groups at a time and a rerun
    after a kill replays them: each sample depends only on its prompt and its own seed, so replayed and
    new samples are the ones an uninterrupted phase makes. Failed samples are not logged."""
    from zpd.store.replies import ReplyLog
    from zpd.store.rounds import work_dir
    from zpd.trainer.completion import Completion

    log = ReplyLog(work_dir(ctx.state_dir, round_n) / "proposals.jsonl")
    cfg = ctx.cfg.curriculum
    outs: list[list[Any]] = []
    for start in range(0, len(prompts), GROUPS_PER_CALL):
        groups = range(start, min(len(prompts), start + GROUPS_PER_CALL))
        keys = [f"{domain_name}:{seed}:{g}:{prompts[g]}" for g in groups]
        stored = [log.get(k) for k in keys]
        if all(entry is not None for entry in stored):
            outs += [[Completion(**c) for c in entry["samples"]] for entry in stored if entry is not None]
            continue
        ctx.check_stop()
        made = gen.generate([prompts[g] for g in groups], n=size, temperature=cfg.selfplay_temperature,
                            max_tokens=cfg.selfplay_max_tokens, seed=seed,
                            sample_seeds=[[derive_seed(seed, g, j) for j in range(size)] for g in groups])
        for key, samples in zip(keys, made, strict=True):
            if not any(c.failed for c in samples):
                log.put(key, {"samples": [asdict(c) for c in samples]})
        outs += made
    return outs


Scored = tuple[ScoredProposal, float | None]
"""A proposal and its reward (None: its task is not calibrated yet, or the sample failed)."""


def score_proposals(ctx: RunContext, round_n: int) -> list[Scored]:
    """Link this round's valid new proposals to their tasks and store every proposal's reward (idempotent);
    returns the proposals with their reward."""
    cfg = ctx.cfg.curriculum
    with ctx.db.atomic():
        scored: list[Scored] = [
            (p, None if p.finish_reason == "error" else proposal_reward(  # no answer: not its fault
                cfg, valid=bool(p.valid), duplicate=bool(p.duplicate), p_solo=p.p_solo))
            for p in store.round_proposals(ctx.db, round_n)]
        store.set_proposal_rewards(ctx.db, [(p.id, reward) for p, reward in scored])
    return scored


def _figures(scored: list[Scored]) -> RoundUpdate:
    """The round's proposer figures (``rounds`` columns) before the update (loss and tokens: none yet)."""
    rewards = [r for _, r in scored if r is not None]
    n = len(scored)
    return RoundUpdate(
        proposer_loss=None,
        proposer_reward=sum(rewards) / len(rewards) if rewards else None,
        proposer_valid_ratio=sum(p.valid for p, _ in scored) / n if n else None,
        proposer_duplicate_ratio=sum(p.duplicate for p, _ in scored) / n if n else None,
        proposer_tokens=0,
    )


def train_proposer(ctx: RunContext, round_n: int, *, solver: Path, out: Path) -> RoundUpdate:
    """TRAIN's second step under self-play: the proposer's GRPO update of ``solver`` into ``out`` (see the
    module docstring). Returns the round's proposer figures (``rounds`` columns)."""
    from zpd.trainer.device import resolve_device

    scored = score_proposals(ctx, round_n)
    figures = _figures(scored)
    groups: dict[tuple[str, int], list[tuple[ScoredProposal, float]]] = {}
    for p, reward in scored:
        if reward is not None:
            groups.setdefault((p.domain, p.group_id), []).append((p, reward))
    signal = {k: g for k, g in groups.items() if len(g) > 1 and len({r for _, r in g}) > 1}
    cfg = ctx.cfg.curriculum
    valid_ratio = figures["proposer_valid_ratio"]
    repair = valid_ratio is not None and valid_ratio < cfg.selfplay_format_repair_below
    fmt = format_examples(ctx) if repair else []
    result_file = JobFiles(out).result
    embedded = backend_for(ctx.cfg.train.backend).embedded
    if out.is_dir():  # updated before a kill that came ahead of the phase commit
        if result_file.is_file():
            import json

            result = json.loads(result_file.read_text())
            figures.update(RoundUpdate(proposer_loss=result.get("loss"),
                                       proposer_tokens=result.get("num_tokens") or 0))
    elif not (signal or fmt) or not embedded:
        if signal or fmt:
            ctx.log.warning("the proposer update needs an embedded trainer backend; skipped",
                            extra={"backend": ctx.cfg.train.backend})
        reuse_learner(solver, out)
    else:
        seed = derive_seed(ctx.cfg.run.seed, round_n, "proposer") % 2**31
        data: list[dict[str, Any]] = [
            {"group": f"{d}:{gid}", "prompt": p.prompt, "completion": p.output,
             "ended": p.finish_reason == "stop", "reward": reward}
            for (d, gid), g in sorted(signal.items()) for p, reward in g]
        data += [{"format": True, "prompt": r["prompt"], "response": r["response"]} for r in fmt]
        if fmt:
            ctx.log.info("proposer format fine-tune first",
                         extra={"valid_ratio": valid_ratio, "examples": len(fmt)})
        device = resolve_device(ctx.cfg.learner.device)
        params = proposer_params(ctx.cfg, seed, device, format_first=bool(fmt))
        result = run_trainer(ctx, backend=PROPOSER_BACKEND, learner=solver, data=data, out=out, params=params,
                             round_n=round_n)
        figures.update(RoundUpdate(proposer_loss=result.get("loss"),
                                   proposer_tokens=result.get("num_tokens") or 0))
    ctx.log.info("proposer trained", extra={**figures, "groups": len(groups),
                                            "groups_with_signal": len(signal), "format_examples": len(fmt)})
    return figures


def format_examples(ctx: RunContext) -> list[dict[str, Any]]:
    """The proposer's format lesson for a round whose proposals were mostly invalid: the bootstrap's
    proposer rows (as many as the bootstrap has, at least 100) and as many of its solver rows (so the lesson
    does not wipe out what the solver knows). Deterministic: the bootstrap's seed."""
    boot = ctx.cfg.bootstrap
    n = max(100, round(boot.num_examples * ctx.cfg.curriculum.selfplay_bootstrap_fraction))
    seed, exclude = derive_seed(ctx.cfg.run.seed, "bootstrap"), eval_hashes(ctx)
    proposing = proposer_examples(ctx.domains, n, seed, exclude)
    if not proposing:
        return []
    solving = boot.model_copy(update={"num_examples": len(proposing)})
    return proposing + bootstrap_set(ctx.domains, solving, seed, exclude)
