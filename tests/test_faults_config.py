"""A corpus of malformed configs: every ``zpd start`` exits 2 with ONE stderr line naming the key (or the
TOML line, or the file), and creates nothing: the state directory never appears.

The corpus is the smoke config with one thing broken per case (a replaced or added TOML line, a
``--set``, a raw file); ``CASES`` lists (id, change, the text the error line must contain).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import run_zpd

# A frozen, valid base (not smoke.toml, which others tune): each case breaks one thing in it.
BASE = """[run]
seed = 0

[learner]
hidden_size = 32
num_layers = 2
num_heads = 2

[bootstrap]
num_examples = 300
epochs = 1.0
learning_rate = 3e-3

[domains.arithmetic]
min_difficulty = 1
max_difficulty = 4

[synthesis]
num_candidates = 24

[calibration]
num_solo = 2
batch_size = 8

[train]
epochs = 1.0
batch_size = 16

[storage]
keep_all = true

[metrics]
port = 0

[logging]
progress = false
"""
MISSING = "/nonexistent/zpd-test"

# (id, {"toml": extra TOML appended} | {"replace": (old, new)} | {"raw": bytes} | {"set": [...]}, expected)
CASES: list[tuple[str, dict, str]] = [
    ("unknown-section", {"toml": "[foo]\nbar = 1\n"}, "foo: unknown key"),
    ("unknown-key", {"replace": ("num_solo = 2", "num_sol = 2")}, "calibration.num_sol: unknown key"),
    ("wrong-type-str-for-int", {"replace": ("num_solo = 2", 'num_solo = "two"')}, "calibration.num_solo"),
    ("wrong-type-float-for-int", {"replace": ("num_candidates = 24", "num_candidates = 2.5")},
     "synthesis.num_candidates"),
    ("wrong-type-list", {"replace": ("batch_size = 8", "batch_size = [8]")}, "calibration.batch_size"),
    ("out-of-range-zero", {"replace": ("num_solo = 2", "num_solo = 0")}, "calibration.num_solo"),
    ("out-of-range-ratio", {"toml": "[curriculum]\nsolo_max_ratio = 1.5\n"}, "curriculum.solo_max_ratio"),
    ("out-of-range-negative", {"replace": ("epochs = 1.0\nbatch_size = 16",
                                           "epochs = -1.0\nbatch_size = 16")}, "train.epochs"),
    ("keep-last-one", {"replace": ("keep_all = true", "keep_last = 1")}, "storage.keep_last"),
    ("port-too-high", {"replace": ("port = 0", "port = 70000")}, "metrics.port"),
    ("guided-fraction", {"replace": ("epochs = 1.0\nlearning_rate",
                                     "guided_fraction = 2.0\nepochs = 1.0\nlearning_rate")},
                                     "bootstrap.guided_fraction"),
    ("heads-do-not-divide", {"replace": ("num_heads = 2", "num_heads = 3")}, "learner.hidden_size"),
    ("min-above-max", {"replace": ("min_difficulty = 1", "min_difficulty = 6")},
     "domains.arithmetic.min_difficulty"),
    ("no-domain-enabled", {"replace": ("[domains.arithmetic]", "[domains.arithmetic]\nenabled = false")},
     "domains"),
    ("learner-path-missing", {"replace": ("[learner]", f'[learner]\npath = "{MISSING}"')}, "learner.path"),
    ("learner-path-not-model", {"replace": ("[learner]", '[learner]\npath = "/tmp"')}, "learner.path"),
    ("toml-unclosed-table", {"raw": b"[run\nseed = 0\n"}, "line 1"),
    ("toml-duplicate-key", {"replace": ("seed = 0", "seed = 0\nseed = 1")}, "line"),
    ("toml-bad-value", {"replace": ("seed = 0", "seed = 0x")}, "line"),
    ("toml-unterminated-string", {"replace": ("seed = 0", 'seed = "0')}, "line"),
    ("toml-not-utf8", {"raw": b"[run]\nseed = 0\n# \xff\xfe\n"}, "cannot read config"),
    ("toml-table-array", {"toml": "[[calibration]]\nnum_solo = 3\n"}, "line"),
    ("section-is-scalar", {"raw": b"run = 5\n"}, "run"),
    ("measure-backend-contradiction", {"toml": '[generation]\nbackend = "openai"\n'},
     "generation.measure_backend"),
    ("unknown-policy", {"toml": '[curriculum]\npolicy = "random"\n'}, "curriculum.policy"),
    ("unknown-backend", {"replace": ("[train]", '[train]\nbackend = "magic"')}, "train.backend"),
    ("unknown-log-level", {"replace": ("[logging]", '[logging]\nlevel = "verbose"')}, "logging.level"),
    ("teacher-without-model", {"toml": '[teacher]\nbase_url = "http://127.0.0.1:1/v1"\n'}, "teacher.model"),
    ("dataset-no-path", {"toml": "[domains.dataset]\nenabled = true\n"}, "domains.dataset.path"),
    ("dataset-missing-file", {"toml": f'[domains.dataset]\nenabled = true\npath = "{MISSING}.jsonl"\n'},
     "domains.dataset.path"),
    ("dataset-llm-judge",
     {"toml": '[domains.dataset]\nenabled = true\npath = "data/../smoke.toml"\nformat = "jsonl"\ngrader = '
      '"llm-judge"\n'}, "domains.dataset.grader"),
    ("dataset-unknown-grader",
     {"toml": '[domains.dataset]\nenabled = true\npath = "smoke.toml"\ngrader = "fuzzy"\n'},
     "domains.dataset.grader"),
    ("dataset-hf-on-file",
     {"toml": '[domains.dataset]\nenabled = true\npath = "smoke.toml"\nformat = "hf"\n'},
     "domains.dataset.path"),
    ("dataset-same-fields",
     {"toml": '[domains.dataset]\nenabled = true\npath = "smoke.toml"\nanswer_field = "question"\n'},
     "domains.dataset"),
    ("dataset-bad-on-bad-row",
     {"toml": '[domains.dataset]\nenabled = true\npath = "smoke.toml"\non_bad_row = "ignore"\n'},
     "domains.dataset.on_bad_row"),
    ("dataset-eval-size-zero",
     {"toml": '[domains.dataset]\nenabled = true\npath = "smoke.toml"\neval_size = 0\n'},
     "domains.dataset.eval_size"),
    ("set-no-equals", {"set": ["calibration"]}, "--set"),
    ("set-unknown-key", {"set": ["calibration.nope=1"]}, "calibration.nope: unknown key"),
    ("set-wrong-type", {"set": ['exam.max_items="many"']}, "exam.max_items"),
    ("set-through-scalar", {"set": ["run.seed.x=1"]}, "run.seed"),
    ("set-empty-part", {"set": ["run..seed=1"]}, "--set"),
    ("config-file-missing", {"path": f"{MISSING}.toml"}, f"{MISSING}.toml"),
]


def _write(case: dict, tmp_path: Path) -> Path:
    if "path" in case:
        return Path(case["path"])
    cfg = tmp_path / "configs" / "bad.toml"  # beside a copy of smoke.toml, for relative dataset paths
    cfg.parent.mkdir(parents=True, exist_ok=True)
    (cfg.parent / "smoke.toml").write_text(BASE)
    if "raw" in case:
        cfg.write_bytes(case["raw"])
        return cfg
    text = BASE
    if "replace" in case:
        old, new = case["replace"]
        assert old in text, old
        text = text.replace(old, new, 1)
    cfg.write_text(text + "\n" + case.get("toml", ""))
    return cfg


@pytest.mark.parametrize("case_id,case,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_config_exits_2_with_one_line_and_writes_nothing(case_id: str, case: dict, expected: str,
                                                             tmp_path: Path) -> None:
    cfg = _write(case, tmp_path)
    state = tmp_path / "state"
    args = ["start", "--config", str(cfg), "--state-dir", str(state), "--rounds", "1"]
    for s in case.get("set", []):
        args += ["--set", s]
    out = run_zpd(*args, timeout=60)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert len(lines) == 1, out.stderr
    assert expected in lines[0], lines[0]
    assert not state.exists(), "a bad config must create nothing"
    print(f"{case_id}: {lines[0]}")


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
