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

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from zpd.store.atomic import atomic_write_text
from zpd.store.rounds import link_or_copy_tree, work_dir

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
        rows = ctx.db.query(
            # The policy's selection (tasks.selected); the target is the first correct guided sample, else
            # the first correct solo sample (loop/curriculum.py). Older stores: selected = (fate = 'zpd').
            """SELECT t.id AS task_id, t.*,
                      (SELECT a.id FROM attempts a WHERE a.task_id = t.id AND a.round = ? AND a.correct = 1
                         ORDER BY a.mode = 'guided' DESC, a.sample_idx LIMIT 1) AS attempt_id
               FROM tasks t WHERE t.selected = 1 AND t.fate_round = ? AND t.fate != 'exam' ORDER BY t.id""",
            [round_n, round_n],
        )
        for row in list(rows):
            if row["attempt_id"] is None:
                continue
            output = ctx.db.execute("SELECT output FROM attempts WHERE id = ?", [row["attempt_id"]]).fetchone()[0]
            response = output.strip() if kind == "sft" else row["answer"]
            # The prompt as the learner reads it solo (the prompt style's), which is what it trains on.
            prompt = ctx.domains[row["domain"]].solo_prompt(ctx.task_from_row(row))
            ctx.db.execute(
                """INSERT OR IGNORE INTO train_examples (round, task_id, attempt_id, kind, prompt, response)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                [round_n, row["task_id"], row["attempt_id"], kind, prompt, response],
            )
    return ctx.db.execute("SELECT count(*) FROM train_examples WHERE round = ? AND kind = ?", [round_n, kind]).fetchone()[0]


def training_set(ctx: RunContext, round_n: int) -> list[dict]:
    """This round's examples plus a replay sample of earlier rounds' (seeded by round)."""
    cfg, kind = ctx.cfg.train, example_kind(ctx)
    style = prompt_style(ctx.cfg)  # the GRPO reward grades in it (trainer/job.py)

    def rows(where: str) -> list[dict]:
        return [
            {"prompt": r["eprompt"], "response": r["response"], "domain": r["domain"], "answer": r["answer"],
             "task_json": json.dumps(asdict(ctx.task_from_row(r))), "prompt_style": style}
            for r in ctx.db.query(
                f"""SELECT e.prompt AS eprompt, e.response, t.* FROM train_examples e JOIN tasks t ON t.id = e.task_id
                    WHERE e.round {where} ? AND e.kind = ? ORDER BY e.id""",
                [round_n, kind],
            )
        ]

    new, old = rows("="), rows("<")
    from .bootstrap import bootstrap_set, eval_hashes, propose_share, warms_up

    if kind == "sft" and warms_up(ctx.cfg):
        # The bootstrap set is replayed too (re-made deterministically, nothing stored): without it a
        # tiny learner forgets how to read guidance and what it knew alone at the easiest level.
        old += bootstrap_set(ctx.domains, ctx.cfg.bootstrap, derive_seed(ctx.cfg.run.seed, "bootstrap"),
                             eval_hashes(ctx), propose_fraction=propose_share(ctx.cfg))
    rng = rng_for(ctx.cfg.run.seed, round_n, "replay")
    replay = rng.sample(old, min(len(old), int(cfg.replay_ratio * len(new))))
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
    job = TrainJob(
        backend=backend, learner_dir=str(learner), out_dir=str(tmp), data_path=str(data_path),
        params=params, result_path=str(out.parent / f"{out.name}.result.json"), pretrain=pretrain or {},
    )
    last_tokens = 0

    last_log = time.monotonic()
    bar: Progress | None = None

    def on_progress(event: dict) -> None:
        nonlocal last_tokens, last_log, bar
        ctx.beat()
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
    try:
        if backend.startswith("verl"):
            from zpd.trainer.verl import train_with_verl

            result = train_with_verl(ctx.cfg, backend=backend, learner_dir=learner, rows=data, out_dir=tmp,
                                     work_dir=out.parent, round_n=round_n, on_progress=on_progress,
                                     should_stop=ctx.stop.is_set, resume=resume)
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
    return {"loss": result.loss, "num_tokens": result.num_tokens, "num_steps": result.num_steps, "seconds": result.seconds}


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
    parent = ctx.learner_dir(row["parent_learner_round"])
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
    calibrated, accepted = ctx.db.execute(
        """SELECT count(*), coalesce(sum(fate IN ('zpd', 'exam')), 0) FROM tasks
           WHERE fate_round = ? AND fate IN ('mastered', 'zpd', 'beyond', 'review', 'exam')""", [round_n]).fetchone()
    usd, tokens = ctx.db.execute(
        "SELECT coalesce(sum(cost_usd), 0), coalesce(sum(completion_tokens), 0) FROM generation_usage WHERE round = ?",
        [round_n]).fetchone()
    return {"yield_ratio": accepted / calibrated if calibrated else None,
            "cost_per_accepted_usd": usd / accepted if accepted else None,
            "tokens_per_accepted": tokens / accepted if accepted else None}
