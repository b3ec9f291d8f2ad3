"""The self-play policy (loop/selfplay.py): proposal parsing, rewards, the proposer's bootstrap share, the
GRPO update on fixed groups, and a real two-round smoke run in which the learner proposes its tasks."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import torch
from harness import SMOKE, run_zpd

from zpd.configs.schema import ArithmeticConfig, BootstrapConfig, CurriculumConfig, LearnerConfig, ZpdConfig
from zpd.loop.bootstrap import bootstrap_set, propose_share
from zpd.loop.domains.arithmetic import Arithmetic
from zpd.loop.selfplay import learnability, proposal_reward, proposer_examples, proposer_prompt


def test_parse_accepts_expressions_of_the_domain_and_rejects_the_rest() -> None:
    dom = Arithmetic(ArithmeticConfig(max_difficulty=4))
    task = dom.parse(" 123+45\n")
    assert task is not None and (task.prompt, task.answer, task.difficulty) == ("123+45", "168", 3.0)
    assert task.content_hash == dom.parse("45+123").content_hash  # canonical: operands of a sum sorted
    assert task.content_hash == dom.task_for([123, 45], ["+"]).content_hash
    for bad in ("", "abc", "1+", "+1", "12 + 3", "07+3", "3+4+5", "5-3", "12345+1", "1+2=3", "2*3", "١+٢"):
        assert dom.parse(bad) is None, bad
    wide = Arithmetic(ArithmeticConfig(max_difficulty=4, operations=["+", "-"], max_operands=3))
    assert wide.parse("90-7+3").answer == "86" and wide.parse("90-7+3").difficulty == 3.5
    assert wide.parse("3+4+5").difficulty == 2.0
    assert wide.parse("9-10") is None  # negative results are not tasks of the domain
    assert wide.parse("1+2+3+4") is None  # more operands than max_operands
    assert Arithmetic(ArithmeticConfig(min_difficulty=2,
                                       max_difficulty=4)).parse("3+4") is None  # below the range
    rng = random.Random(0)
    for level in (1, 2, 3, 4):  # everything the domain makes parses back to the same task
        made = wide.make_task(level, rng)
        assert wide.parse(made.prompt).content_hash == made.content_hash


def test_rewards() -> None:
    assert learnability(0.5, "learnability") == 0.5
    assert learnability(0.25, "learnability") == 0.25 and learnability(0.75, "learnability") == 0.25
    assert learnability(0.0, "learnability") == learnability(1.0, "learnability") == 0.0
    assert learnability(0.25, "azr") == 0.75 and learnability(0.0, "azr") == learnability(1.0, "azr") == 0.0
    cfg = CurriculumConfig()
    assert proposal_reward(cfg, valid=False, duplicate=False, p_solo=None) == -1.0
    assert proposal_reward(cfg, valid=True, duplicate=True, p_solo=None) == -0.5
    assert proposal_reward(cfg, valid=True, duplicate=False, p_solo=0.5) == 0.5
    assert proposal_reward(cfg, valid=True, duplicate=False, p_solo=None) is None  # not calibrated yet
    azr = CurriculumConfig(selfplay_reward="azr", selfplay_duplicate_penalty=0.2, selfplay_invalid_reward=0.0)
    assert proposal_reward(azr, valid=True, duplicate=False, p_solo=0.25) == 0.75
    assert proposal_reward(azr, valid=True, duplicate=True, p_solo=None) == -0.2
    assert proposal_reward(azr, valid=False, duplicate=False, p_solo=None) == 0.0


def test_bootstrap_teaches_the_proposer_only_under_self_play() -> None:
    assert propose_share(ZpdConfig()) == 0.0
    sp = ZpdConfig.model_validate({"curriculum": {"policy": "self-play", "selfplay_bootstrap_fraction": 0.1}})
    assert propose_share(sp) == 0.1
    dom = Arithmetic(ArithmeticConfig(max_difficulty=4))
    cfg = BootstrapConfig(num_examples=200, max_guided_difficulty=2.0)
    exclude = {dom.make_task(1, random.Random(5)).content_hash}
    plain = bootstrap_set({"arithmetic": dom}, cfg, 7, exclude)
    assert plain == bootstrap_set({"arithmetic": dom}, cfg, 7, exclude, propose_fraction=0.0)
    mixed = bootstrap_set({"arithmetic": dom}, cfg, 7, exclude, propose_fraction=0.1)
    assert mixed == bootstrap_set({"arithmetic": dom}, cfg, 7, exclude, propose_fraction=0.1)  # deterministic
    assert len(mixed) == 200 and mixed[:180] == plain[:180]
    proposing = [r for r in mixed if r["prompt"].startswith("propose:")]
    assert len(proposing) == 20
    levels = set()
    for row in proposing:
        task = dom.parse(row["response"])
        assert task is not None and proposer_prompt(task.difficulty) == row["prompt"]
        assert task.content_hash not in exclude
        levels.add(task.difficulty)
    assert levels == {1.0, 2.0, 3.0, 4.0}
    assert proposer_examples({"arithmetic": dom}, 0, 7, set()) == []


def test_grpo_on_fixed_groups_moves_towards_the_rewarded_sample(tmp_path: Path) -> None:
    from zpd.trainer.grpo import train_grpo_groups
    from zpd.trainer.model import create_learner, load_learner
    from zpd.trainer.sft import SFTExample, collate, encode_examples

    cfg = LearnerConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_positions=64)
    create_learner(tmp_path / "base", cfg, seed=0)

    def logp(path: Path, response: str) -> float:
        model, tok = load_learner(path, "cpu")
        ids, mask, labels = collate(encode_examples(tok, [SFTExample("propose:1", response)]),
                                    tok.pad_token_id)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        target = labels[:, 1:]
        lp = torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return float((lp * (target != -100)).sum())

    groups = [[("propose:1", "2+3", True, 0.5), ("propose:1", "x9", True, -1.0),
               ("propose:1", "4+4", False, 0.0)],
              [("propose:2", "12+30", True, 0.0), ("propose:2", "12+31", True, 0.0)]]  # no variance: skipped
    result = train_grpo_groups(tmp_path / "base", groups, tmp_path / "out", steps=3, learning_rate=1e-2)
    assert result.num_steps == 3 and result.num_tokens > 0
    # The mean reward of every sample.
    assert abs(result.loss_history[0] - (0.5 - 1.0 + 0.0 + 0.0 + 0.0) / 5) < 1e-9
    assert logp(tmp_path / "out", "2+3") > logp(tmp_path / "base", "2+3")
    assert logp(tmp_path / "out", "x9") < logp(tmp_path / "base", "x9")


def _rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_self_play_smoke_run_proposes_trains_the_proposer_and_replays_exactly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    args = ("start", "--config", str(SMOKE), "--state-dir", str(state), "--set",
            'curriculum.policy="self-play"')
    out = run_zpd(*args, "--rounds", "2", "--log-format", "json", timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    db = state / "state.db"
    # Every proposal recorded: 24 candidates per round in groups of 4 -> 6 groups of 4 samples.
    counts = _rows(db, "SELECT round, count(*), count(DISTINCT group_id), sum(valid), sum(duplicate) "
                       "FROM proposals GROUP BY round ORDER BY round")
    assert [(r, n, g) for r, n, g, _, _ in counts] == [(1, 24, 6), (2, 24, 6)]
    assert all(v > 0 for _, _, _, v, _ in counts), counts
    assert _rows(db, "SELECT count(*) FROM proposals WHERE reward IS NULL") == [(0,)]
    assert _rows(db, "SELECT DISTINCT prompt FROM proposals WHERE prompt NOT LIKE 'propose:%'") == []
    # Valid new proposals became the round's candidates, and CALIBRATE gave each a fate.
    made = _rows(db, """SELECT p.round, t.round, t.fate, t.p_solo, p.reward, t.meta_json FROM proposals p
                        JOIN tasks t ON t.id = p.task_id""")
    new = _rows(db, "SELECT count(*) FROM proposals WHERE valid = 1 AND duplicate = 0")[0][0]
    assert len(made) == new > 0
    for p_round, t_round, fate, p_solo, reward, meta in made:
        assert p_round == t_round and fate in ("mastered", "zpd", "beyond", "exam") and p_solo is not None
        assert reward == min(p_solo, 1 - p_solo)
        assert json.loads(meta)["proposal"]["round"] == p_round
    candidates = _rows(db, "SELECT round, count(*) FROM tasks WHERE round >= 1 GROUP BY round ORDER BY round")
    assert candidates == _rows(db, "SELECT round, count(*) FROM proposals WHERE valid = 1 AND duplicate = 0 "
                                   "GROUP BY round ORDER BY round")
    assert _rows(db, "SELECT count(*) FROM proposals WHERE valid = 0 AND reward != -1.0") == [(0,)]
    # The proposer's update ran after the solver's, with its figures on the round.
    figures = _rows(db, "SELECT id, proposer_valid_ratio, proposer_reward, proposer_tokens, proposer_loss "
                        "FROM rounds WHERE id >= 1 ORDER BY id")
    assert [f[0] for f in figures] == [1, 2]
    for _, valid_ratio, reward, _, _ in figures:
        assert 0 < valid_ratio <= 1 and reward is not None
    assert any(tokens > 0 and loss is not None for *_, tokens, loss in figures), figures
    logged = [json.loads(line) for line in out.stdout.splitlines() + out.stderr.splitlines()
              if line.startswith("{") and '"proposer trained"' in line]
    assert [e["round"] for e in logged] == [1, 2]
    # Round 0 under self-play taught the format: the bootstrap learner proposes mostly valid expressions.
    assert figures[0][1] >= 0.5
    # Deterministic for (seed, round, domain): round 2 re-run after a rollback makes the same proposals.
    before = _rows(db,
                   "SELECT group_id, sample_idx, prompt, output, valid, reward FROM proposals WHERE round = "
                   "2 "
                       "ORDER BY group_id, sample_idx")
    assert run_zpd("rollback", "--state-dir", str(state), "--round", "1").returncode == 0
    assert _rows(db, "SELECT count(*) FROM proposals WHERE round = 2") == [(0,)]
    again = run_zpd(*args, "--rounds", "2", timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert _rows(db,
                 "SELECT group_id, sample_idx, prompt, output, valid, reward FROM proposals WHERE round = 2 "
                     "ORDER BY group_id, sample_idx") == before


def test_cold_start_from_a_round_0_that_was_not_self_play_learns_the_format(tmp_path: Path,
                                                                            round0_archive: Path) -> None:
    """The shared (zpd-band) round 0 never saw ``propose:``; the proposer step's format lesson repairs
    that."""
    state = tmp_path / "state"
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--from-snapshot",
                  str(round0_archive),
                  "--set", 'curriculum.policy="self-play"', "--rounds", "2", "--log-format", "json",
                  timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    ratios = dict(_rows(state / "state.db", "SELECT id, proposer_valid_ratio FROM rounds WHERE id >= 1"))
    assert ratios[1] < 0.5 and ratios[2] > ratios[1] + 0.2, ratios  # measured: 0.0 then 0.46 (1.0 in round 3)
    lessons = [json.loads(line) for line in out.stdout.splitlines() + out.stderr.splitlines()
               if '"proposer format fine-tune first"' in line]
    assert [e["round"] for e in lessons][:1] == [1]
