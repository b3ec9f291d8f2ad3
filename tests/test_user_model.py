"""Your own model (``learner.path``): the start-up check, the instruct prompt style, end-of-turn and eos
handling, and real ``zpd start`` runs on tiny Llama and GPT-2 models made here with a BPE tokenizer
trained here and no pad token (``user_models.py``).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from harness import SMOKE, query, run_zpd
from user_models import make_user_model

from zpd.configs.load import ConfigError, key_origin, load_config
from zpd.configs.schema import ArithmeticConfig
from zpd.loop.domains.arithmetic import Arithmetic
from zpd.loop.domains.prompting import Styled, final_answer
from zpd.loop.domains.registry import grader_for
from zpd.loop.learner_check import check_learner


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("user-models")
    return {"llama": make_user_model(root / "llama", "llama"), "gpt2": make_user_model(root / "gpt2", "gpt2"),
            "bare": make_user_model(root / "bare", "llama", chat_template=None)}


def _check(model: Path, *sets: str) -> list[str]:
    overrides = [f"learner.path={model}", *sets]
    cfg = load_config(SMOKE, overrides)
    return check_learner(cfg, lambda key: key_origin(key, SMOKE, overrides))


# -- prompts and grading --------------------------------------------------------------------------
def test_bare_style_is_the_embedded_format_unchanged() -> None:
    dom = Styled(Arithmetic(ArithmeticConfig()), "bare")
    task = dom.task_for([57, 68], ["+"])
    assert dom.solo_prompt(task) == "57+68" and dom.guided_prompt(task) == "57+68|7+8=15;5+6+1=12"
    assert dom.solution(task) == "7+8=15;5+6+1=12>125"
    assert dom.grade(task, "7+8=15;5+6+1=12>125") and not dom.grade(task, "The answer is 125.")


def test_instruct_prompts_state_the_answer_format() -> None:
    dom = Styled(Arithmetic(ArithmeticConfig()), "instruct")
    task = dom.task_for([57, 68], ["+"])
    solo, guided = dom.solo_prompt(task), dom.guided_prompt(task)
    assert "57+68" in solo and '"Answer: <number>"' in solo and "7+8=15" not in solo
    assert "7+8=15;5+6+1=12" in guided and '"Answer: <number>"' in guided
    assert dom.solution(task) == "7+8=15;5+6+1=12\nAnswer: 125" and dom.grade(task, dom.solution(task))


@pytest.mark.parametrize("output, correct", [
    ("The answer is 125.", True),
    ("Answer: 125", True),
    ("57+68 = 125", True),
    ("First 7+8=15, carry 1; then 5+6+1=12.\n**Answer:** 125", True),
    ("So the final answer is $\\boxed{125}$.", True),
    ("7+8=15;5+6+1=12>125", True),
    ("The answer is 124.", False),
    ("Answer: 125 or maybe 126", False),
    ("I cannot compute that.", False),
    ("", False),
])
def test_prose_answers_are_graded_on_the_extracted_final_answer(output: str, correct: bool) -> None:
    dom = Styled(Arithmetic(ArithmeticConfig()), "instruct")
    task = dom.task_for([57, 68], ["+"])
    assert dom.grade(task, output) is correct
    # The GRPO reward in a training child grades the same way (trainer/job.py: grader_for).
    assert grader_for("arithmetic", "instruct")(task, output) is correct


def test_final_answer_extraction() -> None:
    assert final_answer("The answer is 1,025.") == "1,025"
    assert final_answer("work\nAnswer: Paris.") == "Paris"
    assert final_answer("3 + 4 = 7 #### 7") == "7"
    assert final_answer("  42 ") == "42"


# -- generation and SFT: eos ids and end of turn --------------------------------------------------
def test_generation_stops_on_every_generation_config_eos_id(models) -> None:
    import torch

    from zpd.trainer.generate import sample_rows
    from zpd.trainer.model import load_learner
    from zpd.trainer.tokenizer import encode_user_prompts

    model, tok = load_learner(models["llama"], "cpu")
    with torch.no_grad():  # a zero output matrix: every logit ties, and greedy decoding picks id 0 each step
        model.get_output_embeddings().weight.zero_()
    assert tok.convert_ids_to_tokens(0) == "<unk>" and tok.eos_token_id != 0
    prompt = encode_user_prompts(tok, ["Compute 1+2."])
    # Id 0 listed in generation_config's eos ids (a list, as chat models ship it): the row stops at once.
    model.generation_config.eos_token_id = [tok.eos_token_id, 0]
    row = sample_rows(model, tok, prompt, temperature=0.0, max_tokens=8, generator=torch.Generator())[0]
    assert row.finish_reason == "stop" and row.completion_ids == [0]
    model.generation_config.eos_token_id = tok.eos_token_id
    row = sample_rows(model, tok, prompt, temperature=0.0, max_tokens=8, generator=torch.Generator())[0]
    assert row.finish_reason == "length" and row.completion_ids == [0] * 8


def test_stop_ids_cover_the_template_end_of_turn_and_the_tokenizer_eos(models) -> None:
    from zpd.trainer.chat import end_of_turn, stop_token_ids
    from zpd.trainer.model import load_tokenizer

    gpt2 = load_tokenizer(models["gpt2"])
    im_end = gpt2.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn(gpt2).ids == [im_end] != [gpt2.eos_token_id]
    assert stop_token_ids(gpt2, None) == {gpt2.eos_token_id, im_end}
    llama = load_tokenizer(models["llama"])
    assert end_of_turn(llama).ids == [llama.eos_token_id]  # Zephyr ends a turn with </s>


def test_sft_targets_end_with_the_templates_end_of_turn_token(models, tmp_path: Path) -> None:
    from zpd.trainer.model import create_learner, load_tokenizer
    from zpd.trainer.sft import IGNORE, SFTExample, encode_examples

    create_learner(tmp_path / "embedded", load_config(SMOKE).learner, seed=0)
    cases = {"gpt2": "<|im_end|>", "llama": "</s>"}
    for name, token in cases.items():
        tok = load_tokenizer(models[name])
        ids, labels = encode_examples(tok, [SFTExample("Compute 1+2.", "Answer: 3")])[0]
        target = [t for t in labels if t != IGNORE]
        assert target[-1] == tok.convert_tokens_to_ids(token) and ids[-1] == target[-1]
        assert tok.decode(target[:-1]).strip() == "Answer: 3"
    char = load_tokenizer(tmp_path / "embedded")  # the embedded learner: its eos, as before
    assert encode_examples(char, [SFTExample("1+2", "3")])[0][1][-1] == char.eos_token_id


def test_sft_trains_a_model_whose_tokenizer_has_no_pad_token(models, tmp_path: Path) -> None:
    from zpd.trainer.sft import SFTExample, train_sft

    examples = [SFTExample(f"Compute {a}+{b}.", f"Answer: {a + b}") for a in range(4) for b in range(4)]
    result = train_sft(models["gpt2"], examples, tmp_path / "out", epochs=1, batch_size=5, learning_rate=1e-3)
    assert result.num_tokens > 0 and result.loss == result.loss  # ran, and the loss is a number (not NaN)
    assert json.loads((models["gpt2"] / "tokenizer_config.json").read_text()).get("pad_token") is None


def test_generated_text_keeps_the_spaces_of_a_sentencepiece_style_vocabulary(models) -> None:
    from zpd.trainer.generate import _id_table
    from zpd.trainer.model import load_tokenizer

    tok = load_tokenizer(models["llama"])
    ids = tok("The answer is 125.", add_special_tokens=False)["input_ids"]
    assert "".join(_id_table(tok)[i] for i in ids).strip() == "The answer is 125."


# -- the start-up check --------------------------------------------------------------------------
def test_check_passes_a_good_model_and_notes_the_pad_fallback_once(models) -> None:
    notes = _check(models["gpt2"])
    assert len(notes) == 1 and "no pad token" in notes[0] and "<|endoftext|>" in notes[0]


def test_check_names_the_key_and_where_its_value_came_from(models, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _check(models["bare"])
    msg = str(err.value)
    assert "\n" not in msg and "learner.path" in msg and "no chat template" in msg
    assert msg.startswith(f"--set learner.path={models['bare']}:")
    # A config key supplies the template instead.
    assert _check(models["bare"], "learner.chat_template=chatml")
    # Too short a context for the prompts plus what is generated: names the key and its origin.
    short = make_user_model(tmp_path / "short", "gpt2", context=64)
    with pytest.raises(ConfigError, match=r"calibration.max_tokens = 48 \(from .*smoke.toml\)"):
        _check(short)


def test_check_reads_weight_headers(models, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    garbage = tmp_path / "garbage"
    shutil.copytree(models["gpt2"], garbage)
    (garbage / "model.safetensors").write_bytes(b"\0not safetensors" * 64)
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        _check(garbage)
    peft = tmp_path / "peft"  # PEFT-keyed weights: every key would be missing on load (random weights)
    shutil.copytree(models["gpt2"], peft)
    tensors = load_file(str(models["gpt2"] / "model.safetensors"))
    save_file({f"base_model.model.{k}": v for k, v in tensors.items()}, str(peft / "model.safetensors"))
    with pytest.raises(ConfigError, match="weights do not match config.json"):
        _check(peft)


def test_a_missing_path_from_set_is_blamed_on_the_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, [f"learner.path={tmp_path / 'nope'}"])
    assert str(err.value).startswith(f"--set learner.path={tmp_path / 'nope'}: learner.path:")
    assert "does not exist" in str(err.value) and str(SMOKE) not in str(err.value)


def test_key_origin_is_the_last_set_else_the_file() -> None:
    sets = ["learner.path=/a", "calibration.num_solo=2", "learner.path=/b",
            "learner={chat_template='chatml'}"]
    assert key_origin("learner.path", Path("c.toml"), sets[:3]) == "--set learner.path=/b"
    assert key_origin("learner.chat_template", Path("c.toml"), sets) == "--set " + sets[3]
    assert key_origin("calibration.max_tokens", Path("c.toml"), sets) == "c.toml"


def test_round0_copy_leaves_the_users_files_alone(models, tmp_path: Path) -> None:
    from zpd.store.rounds import link_or_copy_tree
    from zpd.trainer.model import adopt_user_model, load_tokenizer

    before = {p.name: p.read_bytes() for p in models["bare"].iterdir()}
    copy = tmp_path / "copy"
    link_or_copy_tree(models["bare"], copy)
    adopt_user_model(copy, "chatml")
    assert {p.name: p.read_bytes() for p in models["bare"].iterdir()} == before
    tok = load_tokenizer(copy)
    assert "<|im_start|>" in tok.chat_template
    assert json.loads((copy / "tokenizer_config.json").read_text())["pad_token"] == tok.eos_token
    assert os.stat(copy / "model.safetensors").st_ino == os.stat(models["bare"] / "model.safetensors").st_ino


# -- zpd start, end to end ------------------------------------------------------------------------
# Round 1 on arithmetic up to two digits, answers as "Answer: <number>"; no exam admissions, so every
# in-band task is a zpd task. The warm-up (requested: learner.warmup) shows guided one-digit sums only,
# in the instruct chat format: enough for a random tiny model to read the column sum off the guidance,
# never the solo prompt, so solo attempts fail where guided ones succeed.
RUN = ["learner.warmup=true", "domains.arithmetic.max_difficulty=2", "domains.arithmetic.response=answer",
       "bootstrap.guided_fraction=1.0", "bootstrap.max_guided_difficulty=1", "synthesis.num_candidates=16",
       "calibration.max_tokens=16", "measure.max_tokens=16", "exam.admit_per_round=0", "train.max_retries=0"]
WARMUP = {"llama": ["bootstrap.num_examples=64", "bootstrap.epochs=1"],  # only that training runs
          "gpt2": ["bootstrap.num_examples=1000", "bootstrap.epochs=4"]}  # measured: guided 0.95, solo 0.05


def _start(model: Path, state: Path, sets: list[str], rounds: int = 1):
    args = ["start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", str(rounds),
            "--set", f"learner.path={model}"]
    for s in sets:
        args += ["--set", s]
    return run_zpd(*args, timeout=900)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_start_trains_a_user_model_without_pad_token(models, tmp_path: Path, arch: str) -> None:
    state = tmp_path / "state"
    out = _start(models[arch], state, RUN + WARMUP[arch])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert query(state, "SELECT count(*) FROM rounds WHERE status = 'committed'")[0][0] == 2
    assert query(state, "SELECT train_tokens FROM rounds WHERE id = 0")[0][0] > 0
    log = (state / "logs" / "zpd.jsonl").read_text().splitlines()
    assert len([line for line in log if "no pad token" in line]) == 1
    if arch == "gpt2":  # ChatML: its turns end with <|im_end|>, which is not its eos
        zpd = query(state, "SELECT count(*) FROM tasks WHERE fate_round = 1 AND fate = 'zpd'")[0][0]
        fates = query(state, "SELECT fate, count(*) FROM tasks WHERE fate_round = 1 GROUP BY fate")
        assert zpd > 0, fates


def test_start_without_chat_template_exits_2_and_creates_nothing(models, tmp_path: Path) -> None:
    state = tmp_path / "state"
    out = _start(models["bare"], state, [])
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "learner.path" in lines[0] and f"--set learner.path={models['bare']}" in lines[0]
    assert not state.exists()


def test_round0_is_the_model_as_given(models, tmp_path: Path) -> None:
    state = tmp_path / "state"
    out = _start(models["llama"], state, ["domains.arithmetic.max_difficulty=2", "measure.max_tokens=8"],
                 rounds=0)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    tokens, accuracy = query(state, "SELECT train_tokens, eval_accuracy FROM rounds WHERE id = 0")[0]
    assert tokens == 0 and accuracy is not None  # measured, not trained
    assert query(state, "SELECT count(*) FROM measurements WHERE round = 0 AND kind = 'eval'")[0][0] > 0
    learner = state / "rounds" / "round_000000" / "learner"
    given = (models["llama"] / "model.safetensors").read_bytes()
    assert (learner / "model.safetensors").read_bytes() == given
    assert "round 0 is the model as given" in (state / "logs" / "zpd.jsonl").read_text()


def test_instruct_prompts_fit_the_context_check(models) -> None:
    # The check renders the run's real prompts: the instruct style makes them longer than the bare ones.
    from zpd.loop.learner_check import _probe_prompts

    cfg = load_config(SMOKE, [f"learner.path={models['gpt2']}"])
    prompts = _probe_prompts(cfg)
    assert prompts and all('"Answer: <number>"' in p for p in prompts)
    rng = random.Random(0)
    assert max(len(p) for p in prompts) > len(Arithmetic(cfg.domains.arithmetic).make_task(4, rng).prompt) * 3
