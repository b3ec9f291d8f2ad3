"""The embedded learner end to end on a tiny real model: tokenizer, create/load, generation, SFT, GRPO."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zpd.configs.schema import LearnerConfig
from zpd.trainer.generate import EmbeddedGenerator
from zpd.trainer.grpo import train_grpo
from zpd.trainer.model import create_learner, load_learner, num_parameters, resolve_device
from zpd.trainer.sft import SFTExample, train_sft
from zpd.trainer.tokenizer import build_char_tokenizer, user_prompt_text

TINY = LearnerConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=128)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    create_learner(tmp_path / "tiny", TINY, seed=0)
    return tmp_path / "tiny"


def test_tokenizer_round_trips_text_and_applies_chat_template() -> None:
    tok = build_char_tokenizer()
    text = "57+68|7+8=15;5+6+1=12\n ~"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    prompt = user_prompt_text(tok, "1+2")
    assert prompt == "<|im_start|>user\n1+2<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|pad|>"
    assert tok(prompt, add_special_tokens=False)["input_ids"][0] == tok.convert_tokens_to_ids("<|im_start|>")


def test_create_is_deterministic_and_loads(tmp_path: Path) -> None:
    create_learner(tmp_path / "a", TINY, seed=3)
    create_learner(tmp_path / "b", TINY, seed=3)
    create_learner(tmp_path / "llama", TINY.model_copy(update={"architecture": "llama"}), seed=3)
    a, b = (tmp_path / "a" / "model.safetensors"), (tmp_path / "b" / "model.safetensors")
    assert a.read_bytes() == b.read_bytes()
    model, tok = load_learner(tmp_path / "a", "cpu")
    assert num_parameters(tmp_path / "a") == sum(p.numel() for p in model.parameters())
    assert model.config.vocab_size == len(tok)
    assert type(load_learner(tmp_path / "llama", "cpu")[0]).__name__ == "LlamaForCausalLM"
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")


def test_batched_greedy_equals_one_prompt_at_a_time(tiny: Path) -> None:
    gen = EmbeddedGenerator(tiny, batch_size=4)
    prompts = ["1+2", "57+68|7+8=15;5+6+1=12", "9", "123+456|6;7;5", "0+0"]
    batched = [c[0].text for c in gen.generate(prompts, max_tokens=12)]
    alone = [gen.generate([p], max_tokens=12)[0][0].text for p in prompts]
    assert batched == alone


def test_generation_respects_n_max_tokens_stop_and_seed(tiny: Path) -> None:
    gen = EmbeddedGenerator(tiny)
    out = gen.generate(["1+2", "3+4"], n=3, temperature=1.0, max_tokens=5, seed=7)
    assert [len(row) for row in out] == [3, 3]
    for row in out:
        for c in row:
            assert c.num_tokens <= 5
            assert c.finish_reason == "stop" or (c.finish_reason == "length" and c.num_tokens == 5)
            assert c.latency_seconds > 0
    again = gen.generate(["1+2", "3+4"], n=3, temperature=1.0, max_tokens=5, seed=7)
    assert [[c.text for c in r] for r in out] == [[c.text for c in r] for r in again]
    greedy = gen.generate(["1+2"], max_tokens=8)[0][0].text
    if len(greedy) >= 2:
        stopped = gen.generate(["1+2"], max_tokens=8, stop=[greedy[1]])[0][0]
        assert stopped.finish_reason == "stop" and greedy[1] not in stopped.text
    gen.close()


def test_sft_lowers_loss_and_model_answers_a_memorised_prompt(tmp_path: Path) -> None:
    # hidden 32 plateaus on these four (it cannot tell the prompts apart 13 template tokens later).
    create_learner(tmp_path / "small", TINY.model_copy(update={"hidden_size": 64, "intermediate_size": 128}),
                   0)
    EPOCHS = 80  # noqa: N806  (40 left "2+3" unlearnt with the llama default, one batch a step)
    examples = [SFTExample("2+3", "5"), SFTExample("4+4", "8"), SFTExample("7+1", "8"),
                SFTExample("6+3", "9")]
    steps: list[tuple[int, int, float, int]] = []
    result = train_sft(tmp_path / "small", examples, tmp_path / "out", epochs=EPOCHS, batch_size=4,
                       learning_rate=1e-2,
                       seed=0, on_step=lambda *a: steps.append(a))
    assert result.num_steps == EPOCHS == len(steps) == len(result.loss_history)
    assert result.loss < 0.1 * result.loss_history[0]
    assert steps[-1][0] == steps[-1][1] == EPOCHS and steps[-1][3] == result.num_tokens
    # 4 examples x EPOCHS epochs, each the chat prompt around "d+d" plus 1 answer token and the eos.
    tok = build_char_tokenizer()
    prompt_tokens = len(tok(user_prompt_text(tok, "2+3"), add_special_tokens=False)["input_ids"])
    assert result.num_tokens == 4 * EPOCHS * (prompt_tokens + 2)
    answers = EmbeddedGenerator(tmp_path / "out").generate([e.prompt for e in examples], max_tokens=4)
    assert [a[0].text for a in answers] == [e.response for e in examples]
    assert all(a[0].finish_reason == "stop" for a in answers)


def test_grpo_runs_and_writes_a_loadable_model(tiny: Path, tmp_path: Path) -> None:
    prompts = ["1+1", "2+2", "3+3"]
    rewards: list[float] = []
    result = train_grpo(tiny, prompts, lambda i, text: float(text.startswith(str(2 * (i + 1)))),
                        tmp_path / "grpo", num_samples=4, steps=3, prompts_per_step=2, learning_rate=1e-3,
                        max_tokens=4, temperature=1.0, seed=0,
                        on_step=lambda step, total, loss, tokens: rewards.append(loss))
    assert result.num_steps == 3 and len(result.loss_history) == 3 == len(rewards)
    assert all(0.0 <= r <= 1.0 for r in result.loss_history)
    model, _ = load_learner(tmp_path / "grpo", "cpu")
    assert all(torch.isfinite(p).all() for p in model.parameters())


_MODEL_NAMES = {"AutoModelForCausalLM", "PreTrainedModel", "DynamicCache", "AutoConfig"}


def test_model_loading_processes_import_transformers_without_sklearn(tiny: Path) -> None:
    """transformers would import scikit-learn (with pandas and scipy.stats: 1.6 s of each model-loading
    process's start) for a generation feature zpd never uses; ``trainer/hf.py`` hides it for that import.
    The modules take the model names from there (a direct import elsewhere would run first and undo it),
    a fresh process that loads, generates, and serves has no sklearn, and ``import sklearn`` still works."""
    import ast
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    direct = []
    for path in sorted([*(root / "trainer").rglob("*.py"), *(root / "loop").rglob("*.py")]):
        if path.name == "hf.py":
            continue
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.ImportFrom) and node.module == "transformers"
                    and id(node) not in typing_only and _MODEL_NAMES & {a.name for a in node.names}):
                direct.append(f"{path.relative_to(root)}:{node.lineno}")
    assert direct == [], f"import the model names from zpd.trainer.hf instead: {direct}"
    pytest.importorskip("sklearn")
    probe = (
        "import json, sys\n"
        "from zpd.trainer.generate import EmbeddedGenerator\n"
        "import zpd.trainer.openai_server, zpd.trainer.worker, zpd.trainer.job\n"
        f"out = EmbeddedGenerator({str(tiny)!r}).generate(['1+2'], n=1, temperature=0.0, max_tokens=4)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn')\n"
        "from sklearn.metrics import roc_curve\n"
        "print(json.dumps([loaded, len(out[0]), callable(roc_curve)]))\n"
    )
    out = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[], 1, True]
