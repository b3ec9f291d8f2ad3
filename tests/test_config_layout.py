"""The config package's layout (issue 16): sections in modules named for their owner, on one small base,
with no import cycle; ``zpd.configs.schema`` still offers every section class; the judge is gone."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from zpd.configs import schema
from zpd.configs.base import Strict
from zpd.configs.load import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SECTIONS = ["run", "learner", "domains", "knowledge", "curriculum", "measure", "train", "generation", "verl",
            "served", "runtime", "reasoning_gym"]


def _relative_imports(path: Path) -> set[str]:
    """Sibling modules a configs module imports, at any depth (function-level imports count)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out.update([node.module] if node.module else [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zpd"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("zpd"))
    return out


def test_no_section_module_imports_schema_or_anything_of_zpd() -> None:
    # The old cycle was schema -> verl/served/runtime -> schema (for Strict); now only schema, load and
    # the package's lazy __init__ may name schema, and nothing imports zpd by absolute name.
    for path in sorted(CONFIGS.glob("*.py")):
        imports = _relative_imports(path)
        assert not any(name.startswith("zpd") for name in imports), (path.name, imports)
        if path.stem not in ("__init__", "load"):
            assert "schema" not in imports, path.name


def test_every_configs_module_is_under_the_size_limit() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in CONFIGS.glob("*.py")}
    assert sizes and max(sizes.values()) < 400, sizes


def test_schema_re_exports_every_section_class() -> None:
    exported = set(schema.__all__)
    for name in SECTIONS:
        module = importlib.import_module(f"zpd.configs.{name}")
        for attr, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, Strict) and value.__module__ == module.__name__:
                assert attr in exported and getattr(schema, attr) is value, (name, attr)
    for section in schema.ZpdConfig.model_fields.values():
        kind = section.annotation
        classes = [kind] if isinstance(kind, type) else list(getattr(kind, "__args__", ()))
        for cls in classes:
            if isinstance(cls, type) and cls is not type(None):
                assert cls.__name__ in exported, cls


def test_importing_the_vocabulary_loads_no_pydantic() -> None:
    # ``zpd status`` imports the vocabulary (through store/readmodel.py) and must stay light.
    code = ("import sys, zpd.configs.vocabulary, zpd.configs\n"
            "print('pydantic' in sys.modules, zpd.configs.ZpdConfig.__name__, 'pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "ZpdConfig", "True"]


def test_package_names_stay_available() -> None:
    import zpd.configs as configs

    assert configs.ConfigError is ConfigError and configs.load_config is load_config
    assert configs.ZpdConfig is schema.ZpdConfig
    with pytest.raises(AttributeError, match="no_such_name"):
        configs.no_such_name  # noqa: B018


@pytest.mark.parametrize("text", ["[judge]\nmodel = 'gpt-4o-2024-08-06'\n", "[judge]\n"])
def test_the_removed_judge_section_is_an_unknown_key(tmp_path: Path, text: str) -> None:
    path = tmp_path / "judge.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: judge: unknown key"


def test_the_llm_judge_grader_is_still_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "dataset.toml", ["domains.dataset.grader=llm-judge"])
    assert str(err.value).endswith(
        "domains.dataset.grader: 'llm-judge' is not available for the dataset domain yet; "
        "use 'exact', 'numeric' or 'math-verify'")
