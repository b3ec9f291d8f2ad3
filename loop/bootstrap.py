"""Round 0: the frozen eval sets, and a learner that can follow guidance at the easiest level.

The embedded learner starts from random weights, so the bootstrap teaches it the task format: bare
tasks up to ``bootstrap.max_solo_difficulty`` (what it may know alone) and guided tasks up to
``bootstrap.max_guided_difficulty`` (so it can read guidance above what it knows alone, which is what
opens a Zone of Proximal Development). Eval items never appear in it. A user's model
(``learner.path``) is round 0 as given (its tokenizer given the configured chat template and a pad
token), measured; the warm-up runs on it, in its prompt style, only with ``learner.warmup``.
"""

from __future__ import annotations

import math
import random
import shutil
from collections.abc import Mapping
from typing import Any

from zpd.configs.schema import BootstrapConfig, ZpdConfig
from zpd.store import examples as store
from zpd.store.rounds import link_or_copy_tree, work_dir
from zpd.trainer.backends import bootstrap_params

from .context import RunContext, derive_seed, rng_for
from .domains.base import Domain, OwnBootstrap, OwnEvalSet, SizesEvalSet, capability
from .domains.prompting import styled
from .proposer_format import proposer_examples
from .trainjob import reuse_learner, run_trainer


def make_eval_sets(ctx: RunContext) -> dict[str, int]:
    """Each domain's frozen eval set, made once with a fixed seed (idempotent: existing sets are kept)."""
    made = {}
    for name, domain in ctx.domains.items():
        if store.count_eval_tasks(ctx.db, name):
            continue
        own_eval = capability(domain, OwnEvalSet)
        carve = None if own_eval is None else own_eval.eval_items
        if carve is not None:  # a finite dataset carves its eval set out itself (loop/domains/dataset.py)
            made[name] = sum(ctx.insert_task(t, round_n=0, fate="eval") is not None for t in carve())
            continue
        rng = rng_for(ctx.cfg.run.seed, "eval", name)
        sizes = capability(domain, SizesEvalSet)
        count = 0
        for level in domain.eval_levels():
            per_level = domain.cfg.eval_per_level if sizes is None else sum(sizes.eval_sizes(level))
            level_count = 0
            for _ in range(per_level * 50):
                if level_count == per_level:
                    break
                if ctx.insert_task(domain.make_task(level, rng), round_n=0, fate="eval") is not None:
                    level_count += 1
            count += level_count
        made[name] = count
    return made


def eval_hashes(ctx: RunContext) -> set[str]:
    """The eval sets' content hashes: kept out of every training set."""
    return store.eval_hashes(ctx.db)


def bootstrap_set(domains: Mapping[str, Domain], cfg: BootstrapConfig, seed: int, exclude: set[str],
                  propose_fraction: float = 0.0) -> list[dict[str, Any]]:
    """``cfg.num_examples`` training rows, deterministic for ``seed``: bare tasks up to
    ``max_solo_difficulty`` and guided ones up to ``max_guided_difficulty`` (integer levels drawn
    uniformly), each answered with the domain's reference solution. Tasks in ``exclude`` (content
    hashes: the eval sets) never appear. With ``propose_fraction`` (self-play only: ``propose_share``)
    that share of the rows teaches the proposer's format instead (``loop/proposer_format.py``);
    the solver rows are then the first ones of the set made without it."""
    rng = random.Random(seed)
    names = sorted(domains)
    out: list[dict[str, Any]] = []
    proposing: list[dict[str, Any]] = []
    num_propose = 0
    if propose_fraction > 0:
        proposing = proposer_examples(domains, round(cfg.num_examples * propose_fraction), seed, exclude)
        num_propose = len(proposing)
    target = cfg.num_examples - num_propose
    # Looked up once per domain: a runtime protocol check costs 0.03-0.1 ms, thousands of draws a set.
    own = {name: capability(domains[name], OwnBootstrap) for name in names}
    for _ in range(cfg.num_examples * 50):
        if len(out) == target:
            break
        name = rng.choice(names)
        domain = domains[name]
        guided = rng.random() < cfg.guided_fraction
        own_bootstrap = own[name]
        pick = None if own_bootstrap is None else own_bootstrap.bootstrap_task
        if pick is not None:  # a finite dataset has a bootstrap share of its own, disjoint from eval and exam
            task = pick(rng)
        else:
            top = min(cfg.max_guided_difficulty if guided else cfg.max_solo_difficulty, domain.max_difficulty)
            levels = [float(x) for x in range(math.ceil(domain.min_difficulty), math.floor(top) + 1)] or [
                domain.min_difficulty]
            task = domain.make_task(float(rng.choice(levels)), rng)
        if task is None or task.content_hash in exclude:
            continue
        seen = styled(domain)
        out.append({"prompt": seen.prompt(task, guided), "response": seen.solution(task),
                    "domain": task.domain, "answer": task.answer})
    return out if not num_propose else out + proposing


def propose_share(cfg: ZpdConfig) -> float:
    """The bootstrap's proposer share under the configured policy (``cfg``: the whole ZpdConfig): 0
    unless the policy is self-play, so other policies' round 0 is unchanged."""
    cur = cfg.curriculum
    return cur.selfplay_bootstrap_fraction if cur.source == "self-play" else 0.0


def warms_up(cfg: ZpdConfig) -> bool:
    """Whether round 0 trains on the bootstrap set (``cfg``: the whole ZpdConfig): always for the embedded
    learner (``bootstrap.enabled``), for a user's model only when asked (``learner.warmup``)."""
    boot = cfg.bootstrap
    return boot.enabled and boot.num_examples > 0 and (cfg.learner.path is None or cfg.learner.warmup)


def run(ctx: RunContext, round_n: int) -> None:
    from zpd.trainer.model import adopt_user_model, create_learner, resolve_device

    with ctx.db.atomic():
        made = make_eval_sets(ctx)
    ctx.log.info("eval sets", extra={"items": made})
    work = work_dir(ctx.state_dir, round_n)
    work.mkdir(parents=True, exist_ok=True)
    base, out = work / "base", work / "learner"
    result: dict[str, Any] = {"loss": None, "num_tokens": 0}
    if not out.is_dir():
        if not base.is_dir():
            tmp = work / "base.tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            if ctx.cfg.learner.path is not None:
                link_or_copy_tree(ctx.cfg.learner.path, tmp)
                adopt_user_model(tmp, ctx.cfg.learner.chat_template)
            else:
                create_learner(tmp, ctx.cfg.learner, seed=ctx.cfg.run.seed)
            tmp.rename(base)
        cfg = ctx.cfg.bootstrap
        if warms_up(ctx.cfg):
            data = bootstrap_set(ctx.domains, cfg, derive_seed(ctx.cfg.run.seed, "bootstrap"),
                                 eval_hashes(ctx), propose_fraction=propose_share(ctx.cfg))
            ctx.log.info("bootstrap training", extra={"examples": len(data)})
            result = run_trainer(ctx, backend="embedded-sft", learner=base, data=data, out=out,
                                 params=bootstrap_params(ctx.cfg, resolve_device(ctx.cfg.learner.device)),
                                 round_n=round_n)
        else:
            if ctx.cfg.learner.path is not None:
                ctx.log.info("round 0 is the model as given (learner.path; learner.warmup = false): "
                             "measured, not trained")
            reuse_learner(base, out)
    with ctx.db.atomic():
        ctx.advance(round_n, "measure", train_loss=result.get("loss"),
                    train_tokens=result.get("num_tokens", 0))
