"""Config loading: overrides, relative paths, one-line errors naming the key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from zpd.configs.load import ConfigError, immutable_changes, load_config, parse_override
from zpd.configs.schema import ZpdConfig

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_configs_load() -> None:
    for name in ("default.toml", "smoke.toml"):
        cfg = load_config(ROOT / "configs" / name)
        assert cfg.domains.enabled_names() == ["arithmetic"]
    assert load_config(ROOT / "configs" / "smoke.toml").storage.keep_all is True


def test_set_overrides_take_toml_literals_and_bare_strings(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "smoke.toml",
                      ["calibration.num_solo=7", "curriculum.beyond_fate=review",
                                                        'metrics.host="127.0.0.2"'])
    assert cfg.calibration.num_solo == 7
    assert cfg.curriculum.beyond_fate == "review"
    assert cfg.metrics.host == "127.0.0.2"
    assert parse_override("domains.arithmetic.operations=['+', '-']") == (
        ["domains", "arithmetic", "operations"], ["+", "-"])


@pytest.mark.parametrize(
    "text, key",
    [
        ("[calibration]\nnum_solo = 0\n", "calibration.num_solo"),
        ("[calibration]\nnum_sollo = 3\n", "calibration.num_sollo"),
        ("[train]\nlearning_rate = 'fast'\n", "train.learning_rate"),
        ("[learner]\nhidden_size = 30\nnum_heads = 4\n", "learner"),
        ("[storage]\nkeep_last = 1\n", "storage.keep_last"),
        ("[domains.arithmetic]\nmin_difficulty = 5\nmax_difficulty = 2\n", "domains.arithmetic"),
        ("[learner]\npath = 'no/such/model'\n", "learner.path"),
        ("nonsense = [\n", "invalid TOML"),
    ],
)
def test_bad_config_is_one_line_naming_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg
    assert key in msg


def test_bad_override_names_the_override() -> None:
    with pytest.raises(ConfigError, match="calibration.num_guided"):
        load_config(ROOT / "configs" / "smoke.toml", ["calibration.num_guided=-1"])
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(ROOT / "configs" / "smoke.toml", ["nokey"])


def test_relative_learner_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    model = tmp_path / "models" / "m"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "c.toml"
    path.write_text("[learner]\npath = '../models/m'\n")
    assert load_config(path).learner.path == model.resolve()


def test_immutable_changes_are_named() -> None:
    old = ZpdConfig().model_dump(mode="json")
    new = ZpdConfig.model_validate({"learner": {"hidden_size": 64}}).model_dump(mode="json")
    assert immutable_changes(old, new) == ["learner.hidden_size"]
    new = ZpdConfig.model_validate({"train": {"epochs": 9}}).model_dump(mode="json")
    assert immutable_changes(old, new) == []
