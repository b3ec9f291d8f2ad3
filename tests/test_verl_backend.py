"""The verl backends against the real verl 0.9.1 (CPU: no verl trainer runs, everything around it does).

Skipped where verl is not installed, unless ZPD_REQUIRE_VERL=1 (CI installs the verl extra and sets
it, so a broken install fails instead of skipping). The Ray tests start a real one-CPU Ray cluster on
loopback and submit a *stand-in* entry point (STANDIN below, not verl: verl needs a GPU) that reads
zpd's Hydra overrides, prints verl-style step lines and writes a verl-style checkpoint, so
submit / poll / logs / stop / ingest all run for real.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from optional import require

require("verl")

from zpd.configs.schema import LearnerConfig, ZpdConfig  # noqa: E402
from zpd.trainer.job import TrainJobFailed, TrainJobStopped  # noqa: E402
from zpd.trainer.model import create_learner  # noqa: E402
from zpd.trainer.verl import (  # noqa: E402
    build_grpo_overrides,
    build_sft_overrides,
    preflight,
    train_with_verl,
)
from zpd.trainer.verl import data as verl_data  # noqa: E402
from zpd.trainer.verl.overrides import RoundPaths  # noqa: E402
from zpd.trainer.verl.run import stage_tokenizer  # noqa: E402

TINY = LearnerConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=64)
ROWS = [{"prompt": f"{a}+{b}", "response": str(a + b), "domain": "arithmetic", "answer": str(a + b)}
        for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (12, 30), (9, 9)]]
REWARD_FILE = Path(verl_data.__file__).with_name("reward.py")


@pytest.fixture(scope="module")
def learner(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("learner") / "learner"
    create_learner(path, TINY, seed=0)
    return path


def _compose(config_name: str, overrides: list[str]):
    import verl
    from hydra import compose, initialize_config_dir

    cfg_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=cfg_dir, version_base=None):
        return compose(config_name=config_name, overrides=overrides)


def _exact_ids(learner: Path, text: str) -> list[int]:
    """The learner's own ids (one per character, "\\n" and " " included)."""
    from transformers import PreTrainedTokenizerFast

    ids = PreTrainedTokenizerFast.from_pretrained(learner)(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    return ids


def _paths(tmp_path: Path, learner: Path) -> RoundPaths:
    return RoundPaths(train_file=tmp_path / "train.parquet", model_dir=learner, ckpt_dir=tmp_path / "ckpt",
                      tokenizer_dir=stage_tokenizer(learner, tmp_path / "tokenizer"), reward_file=REWARD_FILE)


# -- overrides compose with verl's own config and pass its checks ----------------------------------
def test_sft_overrides_compose_and_validate(tmp_path: Path, learner: Path):
    from verl.utils.config import omega_conf_to_dataclass

    cfg = ZpdConfig()
    cfg.verl.learning_rate = 2e-5
    for resume in (False, True):
        c = _compose("sft_trainer_engine", build_sft_overrides(cfg, _paths(tmp_path, learner),
                                                               num_rows=len(ROWS),
                                                               round_n=3, resume=resume))
        assert c.trainer.resume_mode == ("auto" if resume else "disable")
    assert c.optim.lr == 2e-5 and "hf_model" in c.checkpoint.save_contents
    assert Path(c.trainer.default_local_dir).is_absolute() and c.data.pad_mode == "no_padding"
    # What verl's SFTTrainer._build_config does: the model config loads our learner and tokenizer.
    model = omega_conf_to_dataclass(c.model)
    optim = omega_conf_to_dataclass(c.optim)
    omega_conf_to_dataclass(c.engine)
    omega_conf_to_dataclass(c.checkpoint)
    assert optim.lr == 2e-5
    assert model.tokenizer("1 +\n2", add_special_tokens=False)["input_ids"] == _exact_ids(learner, "1 +\n2")
    # Unknown keys are refused, so a typo in zpd's overrides cannot pass silently.
    with pytest.raises(Exception, match="promt_key"):
        _compose("sft_trainer_engine", ["data.promt_key=x"])


def test_grpo_overrides_compose_and_validate(tmp_path: Path, learner: Path):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    cfg = ZpdConfig()
    cfg.train.grpo_prompts_per_step = 4
    c = _compose("ppo_trainer", build_grpo_overrides(cfg, _paths(tmp_path, learner), num_rows=len(ROWS),
                                                     round_n=2, resume=False))
    validate_config(c, use_reference_policy=need_reference_policy(c), use_critic=need_critic(c))
    assert c.algorithm.adv_estimator == "grpo"
    assert c.algorithm.filter_groups.enable is True and c.algorithm.filter_groups.metric == "acc"
    assert c.reward.custom_reward_function.path == str(REWARD_FILE)
    assert c.actor_rollout_ref.rollout.n == cfg.train.grpo_num_samples
    cfg.verl.filter_groups = False
    cfg.verl.lora_rank = 8
    c = _compose("ppo_trainer", build_grpo_overrides(cfg, _paths(tmp_path, learner), num_rows=len(ROWS),
                                                     round_n=2, resume=True))
    # (validate_config on a LoRA rollout asks vLLM for its LoRA support: vLLM is not installed on CPU.)
    assert c.trainer.resume_mode == "auto"
    assert c.algorithm.filter_groups.enable is False and c.actor_rollout_ref.model.lora_rank == 8


# -- parquet loads with verl's datasets and the learner's own tokenizer ---------------------------
def test_sft_parquet_loads_with_multiturn_dataset(tmp_path: Path, learner: Path):
    from omegaconf import OmegaConf
    from verl.utils import hf_tokenizer
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    path = verl_data.write_sft_parquet(ROWS, tmp_path / "train.parquet")
    tok = hf_tokenizer(str(stage_tokenizer(learner,
                                           tmp_path / "tok") or learner))  # what verl's model config loads
    ds = MultiTurnSFTDataset(str(path), tok, OmegaConf.create({"max_length": 64, "pad_mode": "no_padding",
                                                               "truncation": "error"}))
    assert len(ds) == len(ROWS)
    item = ds[4]
    ids, mask = item["input_ids"].tolist(), item["loss_mask"].tolist()
    trained = tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
    # Only the assistant turn is trained: its answer and end-of-turn, never the user's prompt.
    assert trained.startswith("42") and "12+30" not in trained
    assert tok.decode(ids).startswith("<|im_start|>user\n12+30<|im_end|>\n<|im_start|>assistant\n42")


def test_rl_parquet_loads_with_rlhf_dataset(tmp_path: Path, learner: Path):
    from omegaconf import OmegaConf
    from verl.utils import hf_tokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    path = verl_data.write_rl_parquet(ROWS, tmp_path / "rl.parquet")
    tok = hf_tokenizer(str(stage_tokenizer(learner, tmp_path / "tok") or learner))
    ds = RLHFDataset(str(path), tok, OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 32,
                                                       "filter_overlong_prompts": False,
                                                       "truncation": "error"}))
    assert len(ds) == len(ROWS)
    item = ds[1]
    assert item["data_source"] == "zpd/arithmetic" and item["reward_model"]["ground_truth"] == "7"
    assert item["raw_prompt"] == [{"role": "user", "content": "3+4"}]
    assert item["extra_info"]["domain"] == "arithmetic" and item["extra_info"]["index"] == 1


# -- the reward module through verl's custom reward loader ----------------------------------------
def _reward_fn(path: Path = REWARD_FILE):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    return get_custom_reward_fn(OmegaConf.create(
        {"reward": {"custom_reward_function": {"path": str(path), "name": "compute_score"}}}))


def test_reward_module_loads_through_verl_and_scores(tmp_path: Path):
    fn = _reward_fn()
    info = {"domain": "arithmetic", "prompt": "3+4", "index": 1}
    assert fn(data_source="zpd/arithmetic", solution_str=" 7", ground_truth="7", extra_info=info) == 1.0
    assert fn(data_source="zpd/arithmetic", solution_str="8", ground_truth="7", extra_info=info) == 0.0
    # verl may pass more keyword arguments (reward-router fields); the domain can come from data_source.
    assert fn(data_source="zpd/arithmetic", solution_str="7", ground_truth="7", extra_info=None,
              reward_router_address=None) == 1.0


def test_reward_grades_dataset_and_knowledge_tasks_as_calibration_does(tmp_path: Path, learner: Path):
    """Rows carry their task (task_json) through the parquet and verl's RLHFDataset into the reward:
    a dataset task graded by math-verify and a knowledge answer after its reasoning chain score 1.0
    (by exact match against the answer both scored 0.0), and their wrong answers 0.0."""
    import json
    import random
    from dataclasses import asdict

    from omegaconf import OmegaConf
    from verl.utils import hf_tokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from zpd.configs.load import SHIPPED_DIR
    from zpd.configs.schema import DatasetConfig, KnowledgeConfig
    from zpd.loop.domains.base import _REGISTRY
    from zpd.loop.domains.registry import registered

    registered()
    ds = _REGISTRY["dataset"](DatasetConfig(enabled=True, path=SHIPPED_DIR / "data" / "word_problems.jsonl",
                                            grader="math-verify", eval_size=8, bootstrap_size=8))
    dtask = next(t for t in ds.tasks.values() if t.answer == "42")
    ktask = _REGISTRY["knowledge"](KnowledgeConfig(enabled=True)).make_task(2.0, random.Random(0))
    rows = [{"prompt": t.prompt, "response": "", "domain": t.domain, "answer": t.answer,
             "task_json": json.dumps(asdict(t))} for t in (dtask, ktask)]
    path = verl_data.write_rl_parquet(rows, tmp_path / "rl.parquet")
    tok = hf_tokenizer(str(stage_tokenizer(learner, tmp_path / "tok") or learner))
    items = RLHFDataset(str(path), tok, OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 512,
                                                          "filter_overlong_prompts": False,
                                                          "truncation": "right"}))
    fn = _reward_fn()

    def score(i: int, text: str) -> float:
        item = items[i]
        return fn(data_source=item["data_source"], solution_str=text,
                  ground_truth=item["reward_model"]["ground_truth"], extra_info=item["extra_info"])

    assert score(0, "46 - 4 leaves #### $\\frac{84}{2}$") == 1.0  # math-verify: 84/2 = 42
    assert score(0, "#### 41") == 0.0
    chain = ">".join(ktask.meta["chain"])
    assert score(1, f" {chain}") == 1.0 and score(1, "x>nobody") == 0.0
# -- a verl failure carries its log tail ------------------------------------------------------------
def test_a_bad_override_fails_with_verls_log_tail(tmp_path: Path, learner: Path):
    cfg = ZpdConfig()
    cfg.train.backend = "verl-sft"
    cfg.train.timeout_seconds = 120
    cfg.verl.extra_overrides = ["data.promt_key=x"]
    # torchrun itself would need a GPU to get far; Hydra rejects the override before that, in a real verl run.
    cfg.verl.command = [sys.executable, "-m", "verl.trainer.sft_trainer"]
    with pytest.raises(TrainJobFailed) as err:
        train_with_verl(cfg, backend="verl-sft", learner_dir=learner, rows=ROWS, out_dir=tmp_path / "out",
                        work_dir=tmp_path / "work", round_n=1, on_progress=None, should_stop=None,
                        resume=False)
    assert "exited with status" in str(err.value)
    assert "promt_key" in err.value.log_tail
    assert (tmp_path / "work" / "verl" / "verl.log").is_file()


# -- Ray Jobs: a real local cluster, a stand-in entry point -------------------------------------
STANDIN = textwrap.dedent('''
    """STAND-IN for verl's trainer (verl needs a GPU): reads zpd's overrides, prints verl-style step
    lines, writes a verl-style checkpoint whose huggingface/ holds the parent learner's weights."""
    import os, shutil, sys, time
    from pathlib import Path
    args = dict(a.lstrip("+").split("=", 1) for a in sys.argv[1:] if "=" in a)
    mode = os.environ.get("STANDIN_MODE", "ok")
    total = int(args["trainer.total_training_steps"])
    grpo = "actor_rollout_ref.model.path" in args
    if grpo:  # load zpd's reward the way verl's workers do, from the path they are given, and grade row 0
        import pyarrow.parquet as pq
        from omegaconf import OmegaConf
        from verl.trainer.ppo.reward import get_custom_reward_fn
        fn = get_custom_reward_fn(OmegaConf.create({"reward": {"custom_reward_function": {
            "path": args["reward.custom_reward_function.path"], "name": "compute_score"}}}))
        row = pq.read_table(args["data.train_files"]).to_pylist()[0]
        gt = row["reward_model"]["ground_truth"]
        print(f"reward of row 0's answer: {fn(row['data_source'], gt, gt, row['extra_info'])}", flush=True)
    for step in range(1, total + 1):
        if grpo:
            print(f"step:{step} - actor/pg_loss:{1.0 / step} - perf/total_num_tokens:100", flush=True)
        else:
            print(f"step:{step} - train/loss:{1.0 / step} - train/global_tokens:100 - train/lr:0.1",
                  flush=True)
    if mode == "fail":
        print("RuntimeError: stand-in failure for the test", flush=True)
        sys.exit(1)
    if mode == "hang":
        time.sleep(600)
    ckpt = Path(args["trainer.default_local_dir"])
    model = Path(args.get("model.path") or args["actor_rollout_ref.model.path"])
    hf = ckpt / f"global_step_{total}" / ("actor" if grpo else "") / "huggingface"
    hf.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(model / name, hf / name)
    (ckpt / "latest_checkpointed_iteration.txt").write_text(str(total))
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory, ray_head_slot):
    """A one-CPU Ray head on loopback, started (and ended, as a process tree) by this test module."""
    from zpd.trainer.job import kill_tree

    port, dash = _free_port(), _free_port()
    ray = Path(sys.executable).with_name("ray")
    temp = Path(f"/tmp/zr{os.getpid()}")  # Ray's socket paths must stay short
    proc = subprocess.Popen(
        [str(ray), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", "1", "--num-gpus", "0",
         "--temp-dir", str(temp), "--include-dashboard", "true", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the test's Ray head did not come up") from None
                time.sleep(1)
        yield address
    finally:
        # A throwaway head: what is left 3 s after TERM is KILLed (a 10 s grace cost 11-12 s of teardown).
        kill_tree(proc.pid, grace_seconds=3)
        proc.wait()


def _ray_cfg(address: str, shared: Path, standin: Path) -> ZpdConfig:
    cfg = ZpdConfig()
    cfg.train.backend = "verl-sft"
    cfg.train.timeout_seconds = 120
    cfg.train.batch_size = 2
    cfg.train.epochs = 1.0
    cfg.storage.shared_dir = shared
    cfg.verl.placement = "ray"
    cfg.verl.ray_address = address
    cfg.verl.ray_poll_seconds = 0.5
    cfg.verl.command = [sys.executable, str(standin)]
    return cfg


def test_ray_job_trains_streams_and_ingests(tmp_path: Path, learner: Path, ray_cluster: str):
    from zpd.trainer.model import load_learner

    standin = tmp_path / "standin_verl.py"
    standin.write_text(STANDIN)
    cfg = _ray_cfg(ray_cluster, tmp_path / "shared", standin)
    events: list[dict] = []
    result = train_with_verl(cfg, backend="verl-sft", learner_dir=learner, rows=ROWS,
                             out_dir=tmp_path / "out",
                             work_dir=tmp_path / "work", round_n=7, on_progress=events.append,
                             should_stop=None,
                             resume=False)
    assert [e["step"] for e in events] == [1, 2, 3] and events[-1]["total"] == 3
    assert events[-1]["tokens"] == 300 and result.num_tokens == 300 and result.num_steps == 3
    assert result.loss == pytest.approx(1 / 3)
    rdir = tmp_path / "shared" / "verl" / "round_000007"
    assert (rdir / "train.parquet").is_file() and (rdir / "base" / "model.safetensors").is_file()
    assert "step:3" in (rdir / "verl.log").read_text()
    model, tok = load_learner(tmp_path / "out", "cpu")  # the ingested learner is a usable HF directory
    assert tok("1\n2", add_special_tokens=False)["input_ids"] == _exact_ids(learner, "1\n2")
    assert model.config.num_hidden_layers == TINY.num_layers


def test_ray_grpo_job_finds_the_reward_on_shared_storage(tmp_path: Path, learner: Path, ray_cluster: str):
    """The reward module goes to the round's directory on storage.shared_dir: its path is the same on
    every node, wherever zpd is installed there (the daemon's own path of reward.py is not passed)."""
    import json
    from dataclasses import asdict

    from zpd.loop.domains.base import Task

    standin = tmp_path / "standin_verl.py"
    standin.write_text(STANDIN)
    cfg = _ray_cfg(ray_cluster, tmp_path / "shared", standin)
    cfg.train.backend = "verl-grpo"
    cfg.train.grpo_steps, cfg.train.grpo_prompts_per_step = 2, 2
    rows = [dict(r, task_json=json.dumps(asdict(Task("arithmetic", 1.0, r["prompt"], r["answer"], "",
                                                     r["prompt"]))))
            for r in ROWS]
    result = train_with_verl(cfg, backend="verl-grpo", learner_dir=learner, rows=rows,
                             out_dir=tmp_path / "out",
                             work_dir=tmp_path / "work", round_n=4, on_progress=None, should_stop=None,
                             resume=False)
    rdir = tmp_path / "shared" / "verl" / "round_000004"
    log = (rdir / "verl.log").read_text()
    assert "reward of row 0's answer: 1.0" in log and result.num_steps == 2
    assert (rdir / "zpd_reward.py").read_bytes() == REWARD_FILE.read_bytes()
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_ray_job_failure_and_stop(tmp_path: Path, learner: Path, ray_cluster: str, monkeypatch):
    from zpd.trainer.verl.ray_jobs import RayJobs

    standin = tmp_path / "standin_verl.py"
    standin.write_text(STANDIN)
    cfg = _ray_cfg(ray_cluster, tmp_path / "shared", standin)
    kwargs = dict(backend="verl-sft", learner_dir=learner, rows=ROWS, work_dir=tmp_path / "work",
                  on_progress=None, resume=False)
    monkeypatch.setenv("STANDIN_MODE", "fail")
    cfg.verl.command = ["env", "STANDIN_MODE=fail", sys.executable, str(standin)]
    with pytest.raises(TrainJobFailed) as err:
        train_with_verl(cfg, out_dir=tmp_path / "o1", round_n=1, should_stop=None, **kwargs)
    assert "FAILED" in str(err.value) and "stand-in failure" in err.value.log_tail

    cfg.verl.command = ["env", "STANDIN_MODE=hang", sys.executable, str(standin)]
    seen: list[dict] = []
    kwargs["on_progress"] = seen.append
    with pytest.raises(TrainJobStopped):
        train_with_verl(cfg, out_dir=tmp_path / "o2", round_n=2, should_stop=lambda: len(seen) >= 3, **kwargs)
    client = RayJobs(ray_cluster)
    jobs = [j for j in client._call("GET",
                                    "/api/jobs/") if str(j.get("submission_id",
                                                               "")).startswith("zpd-r000002")]
    assert jobs and all(j["status"] == "STOPPED" for j in jobs)


def test_preflight_against_a_cpu_ray_cluster(tmp_path: Path, ray_cluster: str):
    cfg = ZpdConfig()
    cfg.train.backend = "verl-grpo"
    cfg.storage.shared_dir = tmp_path
    cfg.verl.placement = "ray"
    cfg.verl.ray_address = ray_cluster
    cfg.verl.python = sys.executable  # the test's cluster runs jobs with the PATH it was started with
    with pytest.raises(Exception, match=r"offers 0 GPU\(s\) and the config asks for 1"):
        preflight(cfg)
