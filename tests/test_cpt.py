"""Continued pre-training: train_cpt on a tiny real model, the CPT step inside the trainer child job, and
the pretrain pool that TRAIN hands it (``[train.cpt]``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import torch

from zpd.configs.schema import KnowledgeConfig, LearnerConfig, ZpdConfig
from zpd.loop.context import rng_for
from zpd.loop.domains.knowledge.domain import Knowledge
from zpd.loop.pretrain import job_fields, pretrain_texts
from zpd.store.db import open_store
from zpd.trainer.cpt import encode_texts, train_cpt
from zpd.trainer.job import TrainJob, run_job
from zpd.trainer.model import create_learner, load_learner
from zpd.trainer.sft import collate, token_mean_loss
from zpd.trainer.spec import CPTParams, Pretrain, SFTParams

TINY = LearnerConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=128)


def _text_loss(learner: Path, texts: list[str]) -> float:
    model, tok = load_learner(learner, "cpu")
    ids, mask, labels = collate(encode_texts(tok, texts, 128), tok.pad_token_id)
    with torch.no_grad():
        return float(token_mean_loss(model, ids, mask, labels))


def test_cpt_teaches_the_corpus_text_itself(tmp_path: Path) -> None:
    create_learner(tmp_path / "tiny", TINY, seed=0)
    texts = Knowledge(KnowledgeConfig(enabled=True, num_people=6, num_orgs=3, num_cities=3,
                                      num_countries=2)).corpus_texts()
    assert texts and all("'s " in t for t in texts)
    before = _text_loss(tmp_path / "tiny", texts)
    steps: list[int] = []
    result = train_cpt(tmp_path / "tiny", texts + ["", "  "], tmp_path / "out", epochs=30, batch_size=8,
                       learning_rate=3e-3, on_step=lambda s, total, loss, tok: steps.append(s))
    after = _text_loss(tmp_path / "out", texts)
    assert after < 0.7 * before, (before, after)
    assert result.num_steps == len(steps) == steps[-1] and result.num_tokens > sum(len(t) for t in texts)
    # Every token is a target (no prompt masked): the labels are the inputs, eos included, capped at max_len.
    tok = load_learner(tmp_path / "out", "cpu")[1]
    (ids, labels), = encode_texts(tok, ["Tal's mentor is Rok."], 8)
    assert ids == labels and len(ids) == 8


def test_the_trainer_job_runs_cpt_first_then_sft_from_its_model(tmp_path: Path) -> None:
    create_learner(tmp_path / "learner", TINY, seed=0)
    data, corpus = tmp_path / "data.jsonl", tmp_path / "cpt.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i}+1",
                                        "response": str(i + 1)}) + "\n" for i in range(8)))
    corpus.write_text("".join(json.dumps({"text": f"Fact number {i} is {i * 7}."}) + "\n" for i in range(16)))
    job = TrainJob("embedded-sft", str(tmp_path / "learner"), str(tmp_path / "out.tmp"), str(data),
                   params=SFTParams(epochs=1.0, batch_size=4, learning_rate=1e-3, seed=0),
                   result_path=str(tmp_path / "out.result.json"),
                   pretrain=Pretrain(str(corpus), CPTParams(epochs=2.0, batch_size=4, learning_rate=1e-3)))
    events: list[dict] = []
    result = run_job(job, timeout_seconds=300, on_progress=events.append)
    kinds = [e["event"] for e in events]
    assert kinds.count("cpt-step") == 8 and kinds.count("step") == 2
    assert kinds.index("cpt-step") < kinds.index("step")  # CPT first, in the same child (one start event)
    assert kinds.count("start") == 1 and result.num_steps == 2
    cpt = json.loads((tmp_path / "out.result.json.cpt.json").read_text())
    assert cpt["num_steps"] == 8 and cpt["num_tokens"] > 0
    assert (tmp_path / "out.tmp" / "model.safetensors").is_file() and (tmp_path / "out.tmp.cpt").is_dir()


def test_cpt_is_off_by_default() -> None:
    assert ZpdConfig().train.cpt.enabled is False


def _ctx(tmp_path: Path, **cpt):
    cfg = ZpdConfig.model_validate({"domains": {"arithmetic": {"enabled": False},
                                                "knowledge": {"enabled": True}},
                                    "train": {"cpt": {"enabled": True, **cpt}}})
    tmp_path.mkdir(parents=True, exist_ok=True)
    db = open_store(tmp_path / "state.db")
    for i, (fate, rnd) in enumerate([("mastered", 1), ("zpd", 1), ("mastered", 2), ("mastered", 3)]):
        db.execute("""INSERT INTO tasks (domain, difficulty, prompt, answer, guidance, canonical,
                          content_hash, round, fate, fate_round)
                      VALUES ('knowledge', 1, ?, ?, '', ?, ?, ?, ?, ?)""",
                   [f"Q{i}?", f"A{i}", f"c{i}", f"h{i}", rnd, fate, rnd])
    domains = {"knowledge": Knowledge(cfg.domains.knowledge)}
    return SimpleNamespace(cfg=cfg, db=db, domains=domains, log=logging.getLogger("test"))


def test_the_pretrain_pool_is_the_corpus_and_every_task_mastered_so_far(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    docs = ctx.domains["knowledge"].corpus_texts()
    assert len(docs) == 55  # one document per entity of the default world (30 + 10 + 10 + 5)
    texts = pretrain_texts(ctx, 2)
    assert texts == docs + ["Q2?\nA2", "Q0?\nA0"]  # round 3's is not in yet, the zpd task never
    fields = job_fields(ctx, 2, tmp_path / "work" / "learner")
    assert fields is not None
    rows = [json.loads(line)["text"] for line in Path(fields.data_path).read_text().splitlines()]
    assert rows == texts and fields.params.epochs == 1.0
    assert fields.params.seed == rng_for(ctx.cfg.run.seed, 2, "cpt").randrange(2**31)
    assert pretrain_texts(_ctx(tmp_path / "m", sources=["mastered"], max_texts=2),
                          3) == ["Q3?\nA3", "Q2?\nA2"]
    off = _ctx(tmp_path / "off")
    off.cfg.train.cpt.enabled = False
    assert job_fields(off, 2, tmp_path / "x") is None
    verl = _ctx(tmp_path / "verl")
    verl.cfg.train.backend = "verl-sft"
    assert job_fields(verl, 2, tmp_path / "y") is None
