"""The self-play policy (``curriculum.policy = "self-play"``): the learner proposes its own tasks.

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
  kill-and-resume re-makes the same proposals. A domain without ``parse`` (knowledge, dataset) has its candidates made by the domain at the
  zpd-band difficulties, as under zpd-band (without escalations).
* **Solve**: CALIBRATE measures the proposed tasks like any other; the learner trains on the ZPD
  (``select`` is zpd-band's).
* **Reward and proposer update** (TRAIN, ``train_proposer``, after the solver's training): a valid new
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
with the bootstrap set afterwards, so the solver's SFT does not make the learner forget it.

Cold start: a learner whose round 0 was not self-play (a policy changed mid-run, a benchmark's shared
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

import json
import math
import random
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from zpd.store.rounds import link_or_copy_tree

from .context import RunContext, derive_seed
from .curriculum import Policy, register
from .domains.base import Parses, capability

PROMPT_PREFIX = "propose:"


def proposer_prompt(level: float) -> str:
    """The proposer's prompt for a difficulty level, e.g. ``propose:3``."""
    return f"{PROMPT_PREFIX}{level:g}"


def proposer_levels(domain: Any) -> list[float]:
    """The integer difficulty levels of a domain's range (what the proposer is asked for)."""
    lo, hi = math.ceil(domain.min_difficulty), math.floor(domain.max_difficulty)
    return [float(x) for x in range(lo, hi + 1)] or [float(domain.min_difficulty)]


def snap_level(domain: Any, difficulty: float) -> float:
    levels = proposer_levels(domain)
    return min(levels, key=lambda x: (abs(x - difficulty), x))


def proposer_examples(domains: dict[str, Any], num: int, seed: int, exclude: set[str]) -> list[dict]:
    """``num`` bootstrap rows teaching the proposer's format (domains with ``parse`` only): the prompt
    ``propose:<level>`` and, as the response, the bare prompt of a task the domain makes at that level.
    Deterministic for ``seed``; tasks in ``exclude`` (the eval sets) never appear."""
    names = sorted(n for n, d in domains.items() if capability(d, Parses) is not None)
    if not names or num <= 0:
        return []
    rng = random.Random(f"{seed}:propose")
    out: list[dict] = []
    for _ in range(num * 50):
        if len(out) == num:
            break
        domain = domains[rng.choice(names)]
        level = rng.choice(proposer_levels(domain))
        task = domain.make_task(level, rng)
        if task is None or task.content_hash in exclude:
            continue
        out.append({"prompt": proposer_prompt(level), "response": task.prompt, "domain": task.domain,
                    "answer": task.prompt})
    return out


def learnability(p: float, kind: str) -> float:
    """The reward of a valid proposal whose task the solver passes alone at rate ``p``."""
    if kind == "azr":
        return 1.0 - p if 0.0 < p < 1.0 else 0.0
    return min(p, 1.0 - p)


def proposal_reward(cfg: Any, *, valid: bool, duplicate: bool, p_solo: float | None) -> float | None:
    """A proposal's reward (``cfg``: CurriculumConfig); None when its task has no pass rate yet."""
    if not valid:
        return cfg.selfplay_invalid_reward
    if duplicate:
        return -cfg.selfplay_duplicate_penalty
    if p_solo is None:
        return None
    return learnability(p_solo, cfg.selfplay_reward)


@register
class SelfPlay(Policy):
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
        learner_round = ctx.round_row(round_n).parent_learner_round
        gen = ctx.generator(ctx.learner_dir(learner_round))
        seed = derive_seed(ctx.cfg.run.seed, round_n, "propose", domain_name)
        outs = _sample_groups(ctx, round_n, domain_name, gen, prompts, size, seed)
        known = ctx.known_hashes()
        tasks: list[Any] = []
        rows: list[dict] = []
        for group_id, (level, prompt, completions) in enumerate(zip(levels, prompts, outs, strict=True)):
            for idx, c in enumerate(completions):
                task = None if c.failed else parse(c.text)
                valid = task is not None and bool(domain.grade(task, domain.solution(task)))
                duplicate = valid and task.content_hash in known
                if valid and not duplicate:
                    known.add(task.content_hash)
                    tasks.append(replace(task, meta={**task.meta, "proposal": {
                        "round": round_n, "group": group_id, "sample": idx, "level": level}}))
                rows.append(dict(round=round_n, domain=domain_name, group_id=group_id, sample_idx=idx, level=level,
                                 prompt=prompt, output=c.text, finish_reason=c.finish_reason, valid=int(valid),
                                 duplicate=int(duplicate), content_hash=task.content_hash if valid else None))
        ctx.db["proposals"].insert_all(rows, ignore=True)
        ctx.log.info("proposed", extra={"domain": domain_name, "proposals": len(rows),
                                        "valid": sum(r["valid"] for r in rows),
                                        "duplicates": sum(r["duplicate"] for r in rows), "new": len(tasks)})
        return tasks


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
    from zpd.trainer.generate import Completion

    log = ReplyLog(work_dir(ctx.state_dir, round_n) / "proposals.jsonl")
    cfg = ctx.cfg.curriculum
    outs: list[list[Any]] = []
    for start in range(0, len(prompts), GROUPS_PER_CALL):
        groups = range(start, min(len(prompts), start + GROUPS_PER_CALL))
        keys = [f"{domain_name}:{seed}:{g}:{prompts[g]}" for g in groups]
        if all(log.get(k) is not None for k in keys):
            outs += [[Completion(**c) for c in log.get(k)["samples"]] for k in keys]
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


def score_proposals(ctx: RunContext, round_n: int) -> list[dict]:
    """Link this round's valid new proposals to their tasks and store every proposal's reward (idempotent);
    returns the proposal rows with ``reward`` (None: not yet calibrated)."""
    cfg = ctx.cfg.curriculum
    with ctx.db.atomic():
        ctx.db.execute(
            """UPDATE proposals SET task_id = (SELECT t.id FROM tasks t WHERE t.content_hash = proposals.content_hash)
               WHERE round = ? AND valid = 1 AND duplicate = 0""", [round_n])
        rows = list(ctx.db.query(
            """SELECT p.*, t.p_solo FROM proposals p LEFT JOIN tasks t ON t.id = p.task_id
               WHERE p.round = ? ORDER BY p.domain, p.group_id, p.sample_idx""", [round_n]))
        for r in rows:
            r["reward"] = None if r["finish_reason"] == "error" else proposal_reward(  # no answer: not its fault
                cfg, valid=bool(r["valid"]), duplicate=bool(r["duplicate"]), p_solo=r["p_solo"])
            ctx.db.execute("UPDATE proposals SET reward = ? WHERE id = ?", [r["reward"], r["id"]])
    return rows


def train_proposer(ctx: RunContext, round_n: int, *, solver: Path, out: Path) -> dict:
    """TRAIN's second step under self-play: the proposer's GRPO update of ``solver`` into ``out`` (see the
    module docstring). Returns the round's proposer figures (``rounds`` columns)."""
    from zpd.trainer.model import resolve_device

    from .train import run_trainer

    rows = score_proposals(ctx, round_n)
    scored = [r for r in rows if r["reward"] is not None]
    figures = {
        "proposer_loss": None,
        "proposer_reward": sum(r["reward"] for r in scored) / len(scored) if scored else None,
        "proposer_valid_ratio": sum(r["valid"] for r in rows) / len(rows) if rows else None,
        "proposer_duplicate_ratio": sum(r["duplicate"] for r in rows) / len(rows) if rows else None,
        "proposer_tokens": 0,
    }
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in scored:
        groups.setdefault((r["domain"], r["group_id"]), []).append(r)
    signal = {k: g for k, g in groups.items() if len(g) > 1 and len({r["reward"] for r in g}) > 1}
    cfg = ctx.cfg.curriculum
    repair = bool(rows) and figures["proposer_valid_ratio"] < cfg.selfplay_format_repair_below
    fmt = format_examples(ctx) if repair else []
    result_file = out.parent / f"{out.name}.result.json"
    if out.is_dir():  # updated before a kill that came ahead of the phase commit
        if result_file.is_file():
            result = json.loads(result_file.read_text())
            figures.update(proposer_loss=result.get("loss"), proposer_tokens=result.get("num_tokens") or 0)
    elif not (signal or fmt) or not ctx.cfg.train.backend.startswith("embedded"):
        if signal or fmt:
            ctx.log.warning("the proposer update needs an embedded trainer backend; skipped",
                            extra={"backend": ctx.cfg.train.backend})
        tmp = out.parent / f"{out.name}.tmp"
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        link_or_copy_tree(solver, tmp)
        tmp.rename(out)
    else:
        seed = derive_seed(ctx.cfg.run.seed, round_n, "proposer") % 2**31
        device = resolve_device(ctx.cfg.learner.device)
        data = [{"group": f"{d}:{gid}", "prompt": r["prompt"], "completion": r["output"],
                 "ended": r["finish_reason"] == "stop", "reward": r["reward"]}
                for (d, gid), g in sorted(signal.items()) for r in g]
        data += [{"format": True, "prompt": r["prompt"], "response": r["response"]} for r in fmt]
        params = dict(steps=cfg.selfplay_steps, learning_rate=cfg.selfplay_learning_rate, seed=seed, device=device)
        if fmt:
            ctx.log.info("proposer format fine-tune first", extra={"valid_ratio": figures["proposer_valid_ratio"],
                                                                   "examples": len(fmt)})
            params["format"] = dict(epochs=ctx.cfg.bootstrap.epochs, batch_size=ctx.cfg.train.batch_size,
                                    learning_rate=ctx.cfg.train.learning_rate, seed=seed, device=device)
        result = run_trainer(ctx, backend="embedded-grpo-groups", learner=solver, data=data, out=out, params=params,
                             round_n=round_n)
        figures.update(proposer_loss=result.get("loss"), proposer_tokens=result.get("num_tokens") or 0)
    ctx.log.info("proposer trained", extra={**figures, "groups": len(groups), "groups_with_signal": len(signal),
                                            "format_examples": len(fmt)})
    return figures


def format_examples(ctx: RunContext) -> list[dict]:
    """The proposer's format lesson for a round whose proposals were mostly invalid: the bootstrap's
    proposer rows (as many as the bootstrap has, at least 100) and as many of its solver rows (so the lesson
    does not wipe out what the solver knows). Deterministic: the bootstrap's seed."""
    from .bootstrap import bootstrap_set, eval_hashes

    boot = ctx.cfg.bootstrap
    n = max(100, round(boot.num_examples * ctx.cfg.curriculum.selfplay_bootstrap_fraction))
    seed, exclude = derive_seed(ctx.cfg.run.seed, "bootstrap"), eval_hashes(ctx)
    proposing = proposer_examples(ctx.domains, n, seed, exclude)
    if not proposing:
        return []
    return proposing + bootstrap_set(ctx.domains, boot.model_copy(update={"num_examples": len(proposing)}), seed,
                                     exclude)
