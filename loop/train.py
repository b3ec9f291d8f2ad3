"""TRAIN: the round's ZPD tasks become training data, and a trainer backend makes the next learner.

SFT (rejection-sampling fine-tuning): the prompt is the *bare* task and the target is the learner's
own successful guided answer, so it learns to do alone what it could only do with help. GRPO: the
bare task as an RL prompt with the verifiable answer as reward. Examples are inserted once per
(round, task, kind) with their lineage (task, attempt, round); the trainer runs as a child process
(timeout, kill as a tree on stop) and writes into ``work/round_N/learner.tmp``, renamed to
``learner`` only when complete. A rerun after a kill therefore retrains from the same examples,
or reuses a learner that was already complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from zpd.store import training
from zpd.store.atomic import atomic_write_text
from zpd.store.rounds import link_or_copy_tree, work_dir
from zpd.store.stats import round_yield_counts

from . import integrity
from .context import RunContext, Stopped, derive_seed, rng_for
from .domains.prompting import prompt_style
from .logs import Progress


class PhaseFailed(RuntimeError):
    """A phase failed in a way a retry may fix. ``component`` feeds zpd_failures_total."""

    def __init__(self, component: str, message: str) -> None:
        super().__init__(message)
        self.component = component


def example_kind(ctx: RunContext) -> str:
    return "rl" if ctx.cfg.train.backend.endswith("grpo") else "sft"


def build_examples(ctx: RunContext, round_n: int) -> int:
    """Insert this round's training examples (idempotent); returns how many the round has."""
    kind = example_kind(ctx)
    with ctx.db.atomic():
        # The policy's selection (tasks.selected); the target is the first correct guided sample, else
        # the first correct solo sample (loop/curriculum.py). Older stores: selected = (fate = 'zpd').
        # The prompt is the task as the learner reads it solo (the prompt style's): what it trains on.
        rows = [(r["task_id"], r["attempt_id"], ctx.domains[r["domain"]].solo_prompt(ctx.task_from_row(r)),
                 r["output"].strip() if kind == "sft" else r["answer"])
                for r in training.selected_targets(ctx.db, round_n) if r["attempt_id"] is not None]
        training.insert_examples(ctx.db, round_n, kind, rows)
    return training.count_examples(ctx.db, round_n, kind)


def _example_row(ctx: RunContext, r: dict) -> dict:
    return {"prompt": r["eprompt"], "response": r["response"], "domain": r["domain"], "answer": r["answer"],
            "task_json": json.dumps(asdict(ctx.task_from_row(r))),
            "prompt_style": prompt_style(ctx.cfg)}  # the GRPO reward grades in it (trainer/job.py)


def bootstrap_replay(ctx: RunContext) -> list[dict]:
    """The bootstrap set that every round replays (without it a tiny learner forgets how to read guidance
    and what it knew alone at the easiest level): made once, deterministically, and kept in the store
    under a key of everything it depends on; empty unless round 0 warmed the learner up for SFT."""
    from .bootstrap import bootstrap_set, eval_hashes, propose_share, warms_up

    if example_kind(ctx) != "sft" or not warms_up(ctx.cfg):
        return []

    seed = derive_seed(ctx.cfg.run.seed, "bootstrap")
    share = propose_share(ctx.cfg)
    key = hashlib.sha256(json.dumps([ctx.cfg.bootstrap.model_dump(mode="json"), seed, share,
                                     ctx.cfg.domains.model_dump(mode="json"), prompt_style(ctx.cfg)],
                                    sort_keys=True).encode()).hexdigest()
    return training.bootstrap_examples(ctx.db, key, lambda: bootstrap_set(
        ctx.domains, ctx.cfg.bootstrap, seed, eval_hashes(ctx), propose_fraction=share))


def training_set(ctx: RunContext, round_n: int) -> list[dict]:
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
    ids = dict(zip((p for p in picks if p < num_old),
                   training.earlier_example_ids(ctx.db, round_n, kind, [p for p in picks if p < num_old]), strict=True))
    rows = training.examples_by_id(ctx.db, list(ids.values()))
    replay = [_example_row(ctx, rows[ids[p]]) if p < num_old else boot[p - num_old] for p in picks]
    data = new + replay
    rng.shuffle(data)
    return data[: cfg.max_examples]


def run_trainer(ctx: RunContext, *, backend: str, learner: Path, data: list[dict], out: Path, params: dict,
                round_n: int, resume: bool = False, pretrain: dict | None = None) -> dict:
    """Run one training job in a child process (or a verl run: local or on Ray); returns its result
    (loss, num_tokens, ...) as a dict. ``resume``: this round's training was interrupted before.
    ``pretrain``: continued pre-training first, in the same child (``loop/pretrain.py``)."""
    from zpd.trainer.job import TrainJob, TrainJobFailed, TrainJobStopped, run_job

    out.parent.mkdir(parents=True, exist_ok=True)
    data_path = out.parent / f"{out.name}.data.jsonl"
    atomic_write_text(data_path, "".join(json.dumps(row) + "\n" for row in data))
    tmp = out.parent / f"{out.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    from zpd.trainer.threads import threads_for

    ckpt_dir = out.parent / f"{out.name}.ckpt"  # survives a kill; removed once the learner is complete
    job = TrainJob(
        backend=backend, learner_dir=str(learner), out_dir=str(tmp), data_path=str(data_path),
        params=params, result_path=str(out.parent / f"{out.name}.result.json"), pretrain=pretrain or {},
        threads=threads_for(ctx.cfg), checkpoint_dir=str(ckpt_dir),
        checkpoint_seconds=ctx.cfg.train.checkpoint_seconds,
    )
    last_tokens = 0

    last_log = time.monotonic()
    bar: Progress | None = None

    def on_progress(event: dict) -> None:
        nonlocal last_tokens, last_log, bar
        ctx.beat()
        if event.get("event") == "resumed":
            ctx.log.info("training resumed from its checkpoint", extra={
                "part": event.get("part"), "step": event.get("step"), "total": event.get("total"),
                "seconds_saved": event.get("seconds_saved")})
        if event.get("event") == "step":
            if bar is None:
                bar = Progress(f"round {round_n} train", int(event.get("total") or 1), ctx.cfg.logging.progress)
            bar.update(int(event.get("step") or 0))
            tokens = int(event.get("tokens", 0))
            ctx.metrics.train_progress(float(event.get("loss", 0.0)), max(0, tokens - last_tokens))
            last_tokens = tokens
            if time.monotonic() - last_log >= 30 or event.get("step") == event.get("total"):
                last_log = time.monotonic()
                ctx.log.info("training progress", extra={"step": event.get("step"), "total": event.get("total"),
                                                         "loss": event.get("loss"), "tokens": tokens})

    ctx.release_generators()  # give the memory back before training
    began = time.monotonic()
    try:
        if backend.startswith("verl"):
            from zpd.trainer.verl import train_with_verl

            result = train_with_verl(ctx.cfg, backend=backend, learner_dir=learner, rows=data, out_dir=tmp,
                                     work_dir=out.parent, round_n=round_n, on_progress=on_progress,
                                     should_stop=ctx.stop.is_set, resume=resume)
        elif (worker := trainer_worker(ctx)) is not None:
            result = worker.run(job, timeout_seconds=ctx.cfg.train.timeout_seconds, on_progress=on_progress,
                                should_stop=ctx.stop.is_set)
        else:
            result = run_job(job, timeout_seconds=ctx.cfg.train.timeout_seconds, on_progress=on_progress,
                             should_stop=ctx.stop.is_set)
    except TrainJobStopped:
        raise Stopped() from None
    except TrainJobFailed as exc:
        tail = "\n".join(exc.log_tail.splitlines()[-5:]) if getattr(exc, "log_tail", "") else ""
        raise PhaseFailed("trainer", f"training failed: {exc}" + (f"\n{tail}" if tail else "")) from None
    finally:
        if bar is not None:
            bar.close()
    tmp.rename(out)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    # compute_seconds: inside the trainer (load, steps, save); wall_seconds adds start-up and hand-over.
    ctx.log.info("training job finished", extra={"backend": backend, "compute_seconds": round(result.seconds, 3),
                                                 "wall_seconds": round(time.monotonic() - began, 3)})
    return {"loss": result.loss, "num_tokens": result.num_tokens, "num_steps": result.num_steps, "seconds": result.seconds}


def trainer_worker(ctx: RunContext):
    """The run's persistent trainer worker (``train.persistent_worker``; auto: on for a CPU learner), made on
    first use and kept on ``ctx``; None when jobs get a fresh child each."""
    from zpd.trainer.model import resolve_device

    setting = ctx.cfg.train.persistent_worker
    if setting == "off" or (setting == "auto" and resolve_device(ctx.cfg.learner.device) != "cpu"):
        ctx.close_trainer()
        return None
    if ctx.trainer_worker is None:
        from zpd.trainer.worker import TrainerWorker

        ctx.trainer_worker = TrainerWorker(cwd=ctx.state_dir)
    return ctx.trainer_worker


def train_params(ctx: RunContext, round_n: int) -> dict:
    from zpd.trainer.model import resolve_device

    cfg = ctx.cfg.train
    device = resolve_device(ctx.cfg.learner.device)
    seed = rng_for(ctx.cfg.run.seed, round_n, "train").randrange(2**31)
    if cfg.backend == "embedded-grpo":
        return dict(num_samples=cfg.grpo_num_samples, steps=cfg.grpo_steps, prompts_per_step=cfg.grpo_prompts_per_step,
                    learning_rate=cfg.learning_rate, max_tokens=ctx.cfg.calibration.max_tokens,
                    temperature=max(ctx.cfg.calibration.temperature, 0.5), seed=seed, device=device)
    return dict(epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                weight_decay=cfg.weight_decay, seed=seed, device=device)


def run(ctx: RunContext, round_n: int) -> None:
    row = ctx.round_row(round_n)
    parent = ctx.learner_dir(row.parent_learner_round)
    work = work_dir(ctx.state_dir, round_n)
    selfplay = ctx.cfg.curriculum.policy == "self-play"
    # Self-play: the solver's training makes work/solver, the proposer's update (loop/selfplay.py) makes
    # work/learner from it; each step is complete once its directory exists.
    out = work / ("solver" if selfplay else "learner")
    num_new = build_examples(ctx, round_n)
    # Exam integrity: the training set (new, replayed and bootstrap examples) against the exam and eval.
    data, decontamination = integrity.check(ctx.db, round_n, training_set(ctx, round_n), ctx.domains)
    result: dict = {"loss": None, "num_tokens": 0}
    if out.is_dir() or (work / "learner").is_dir():  # trained before a kill that came ahead of the phase commit
        result_file = work / f"{out.name}.result.json"
        if result_file.is_file():
            result = json.loads(result_file.read_text())
    elif num_new < max(ctx.cfg.train.min_examples, 1):
        ctx.log.info("too few new examples; the learner is kept", extra={"new_examples": num_new})
        work.mkdir(parents=True, exist_ok=True)
        link_or_copy_tree(parent, work / f"{out.name}.tmp")
        (work / f"{out.name}.tmp").rename(out)
    else:
        ctx.log.info("training", extra={"new_examples": num_new, "examples": len(data), "backend": ctx.cfg.train.backend})
        resume = (work / f"{out.name}.tmp").exists()
        from .pretrain import finish, job_fields

        result = run_trainer(ctx, backend=ctx.cfg.train.backend, learner=parent, data=data, out=out,
                             params=train_params(ctx, round_n), round_n=round_n, resume=resume,
                             pretrain=job_fields(ctx, round_n, out))
        result["num_tokens"] = (result.get("num_tokens") or 0) + finish(ctx, out).get("num_tokens", 0)
    proposer: dict = {}
    if selfplay:
        from .selfplay import train_proposer

        proposer = train_proposer(ctx, round_n, solver=out, out=work / "learner")
    figures = round_yield(ctx, round_n)
    with ctx.db.atomic():
        ctx.advance(round_n, "measure", train_loss=result.get("loss"),
                    train_tokens=(result.get("num_tokens") or 0) + (proposer.get("proposer_tokens") or 0),
                    num_train_examples=num_new, decontamination_json=json.dumps(decontamination), **figures,
                    **proposer)
    ctx.metrics.set_yield(figures["yield_ratio"], figures["cost_per_accepted_usd"])
    ctx.log.info("trained", extra={"loss": result.get("loss"), "tokens": result.get("num_tokens"),
                                   "decontamination": decontamination, **figures})


def round_yield(ctx: RunContext, round_n: int) -> dict:
    """The round's yield, AgentFrontier's |D_ZPD| / candidates: tasks calibrated this round that landed in the
    band (``zpd``, plus ``exam``, which admits only in-band items), over all calibrated this round; and the
    generation spent per accepted item (teacher USD, and generated tokens of every role). None when nothing
    was calibrated / accepted. Read from the store, so a rerun gives the same figures."""
    calibrated, accepted, usd, tokens = round_yield_counts(ctx.db, round_n)
    return {"yield_ratio": accepted / calibrated if calibrated else None,
            "cost_per_accepted_usd": usd / accepted if accepted else None,
            "tokens_per_accepted": tokens / accepted if accepted else None}
