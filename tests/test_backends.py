"""The trainer-backend registry, the typed job parameters and the file names a job shares with the daemon."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from zpd.configs.schema import TrainConfig, ZpdConfig
from zpd.trainer.backends import BACKENDS, PROPOSER_BACKEND, EmbeddedBackend, backend_for, embedded_backend
from zpd.trainer.spec import CPTParams, GroupsParams, GRPOParams, JobFiles, Pretrain, SFTParams, TrainJob


def test_every_configurable_backend_is_registered_with_its_example_kind() -> None:
    names = typing.get_args(TrainConfig.model_fields["backend"].annotation)
    assert set(names) | {PROPOSER_BACKEND} == set(BACKENDS)
    kinds = {n: backend_for(n).example_kind for n in names}
    assert kinds == {"embedded-sft": "sft", "embedded-grpo": "rl", "verl-sft": "sft", "verl-grpo": "rl"}
    assert [n for n in BACKENDS if isinstance(BACKENDS[n], EmbeddedBackend)] == [
        "embedded-sft", "embedded-grpo", "embedded-grpo-groups"]
    with pytest.raises(ValueError, match="unknown trainer backend 'nope'"):
        backend_for("nope")
    with pytest.raises(ValueError, match="not one a training job runs"):
        embedded_backend("verl-sft")


def test_round_params_are_typed_per_backend() -> None:
    cfg = ZpdConfig()
    sft = backend_for("embedded-sft").round_params(cfg, 7, "cpu")
    assert sft == SFTParams(epochs=cfg.train.epochs, batch_size=cfg.train.batch_size,
                            learning_rate=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay,
                            seed=7)
    grpo = backend_for("embedded-grpo").round_params(cfg, 7, "cpu")
    assert isinstance(grpo, GRPOParams) and grpo.num_samples == cfg.train.grpo_num_samples
    assert grpo.temperature == max(cfg.calibration.temperature, 0.5)
    assert backend_for("verl-grpo").round_params(cfg, 7, "cpu") is None


def test_a_job_crosses_the_process_boundary_with_its_types(tmp_path: Path) -> None:
    files = JobFiles(tmp_path / "learner")
    job = TrainJob(PROPOSER_BACKEND, "base", str(files.tmp), str(files.data),
                   GroupsParams(steps=2, learning_rate=1e-4, seed=3,
                                format=SFTParams(epochs=1.0, batch_size=4, learning_rate=1e-3)),
                   str(files.result), pretrain=Pretrain("texts.jsonl", CPTParams(epochs=2, batch_size=1,
                                                                                 learning_rate=1e-3)))
    text = job.to_json()
    assert TrainJob.backend_of(text) == PROPOSER_BACKEND
    back = TrainJob.from_json(text, embedded_backend(PROPOSER_BACKEND).params_type)
    assert back == job and isinstance(back.params, GroupsParams) and isinstance(back.params.format, SFTParams)
    plain = TrainJob("embedded-sft", "base", "out", "data",
                     SFTParams(epochs=1, batch_size=1, learning_rate=1.0))
    assert TrainJob.from_json(plain.to_json(), SFTParams) == plain


def test_the_daemon_and_the_child_name_a_jobs_files_alike(tmp_path: Path) -> None:
    out = tmp_path / "learner"
    files = JobFiles(out)
    names = {k: getattr(files, k).name for k in ("tmp", "data", "result", "checkpoints", "cpt_data", "spec",
                                                  "cpt_model", "cpt_result", "format_model")}
    assert names == {"tmp": "learner.tmp", "data": "learner.data.jsonl", "result": "learner.result.json",
                     "checkpoints": "learner.ckpt", "cpt_data": "learner.cpt.jsonl",
                     "spec": "learner.result.json.job.json", "cpt_model": "learner.tmp.cpt",
                     "cpt_result": "learner.result.json.cpt.json", "format_model": "learner.tmp.format"}
    job = TrainJob("embedded-sft", "base", str(files.tmp), str(files.data),
                   SFTParams(epochs=1, batch_size=1, learning_rate=1.0), str(files.result))
    assert (job.spec_path, job.cpt_out_dir, job.cpt_result_path, job.format_out_dir) == (
        files.spec, files.cpt_model, files.cpt_result, files.format_model)


def test_a_policy_trains_the_round_learner_unless_it_adds_a_step_of_its_own(tmp_path: Path) -> None:
    from zpd.configs.schema import CurriculumConfig
    from zpd.loop.curriculum import AfterTrain, build_source_for

    band = build_source_for(CurriculumConfig(), spread=1.0)
    assert band.train_output(tmp_path) == tmp_path / "learner"
    ctx = typing.cast(typing.Any, None)  # the default hook reads nothing
    assert band.after_train(ctx, 1, trained=tmp_path / "learner", out=tmp_path / "learner") == AfterTrain()
    selfplay = build_source_for(CurriculumConfig(policy="self-play"), spread=1.0)
    assert selfplay.train_output(tmp_path) == tmp_path / "solver"
    assert type(selfplay).after_train is not type(band).after_train
