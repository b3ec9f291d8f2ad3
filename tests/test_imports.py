"""The import checks of .ci/imports on small packages made here: the contracts in pyproject.toml
(DESIGN's import table) name a forbidden import, allow the permitted ones, and the cycle finder counts
an import inside a function. (The real package's state is .ci/imports' job, not a test's: other work
removes today's violations.)"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def _cycles_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_cycles", REPO / ".ci" / "import_cycles.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _fake_repo(root: Path, files: dict[str, str]) -> Path:
    """A repository laid out as zpd's (zpd/__init__.py, loop/, trainer/, store/, configs/)."""
    for package in ("zpd", "loop", "loop/domains", "trainer", "store", "configs"):
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def _lint(repo: Path, tree: Path) -> subprocess.CompletedProcess[str]:
    _cycles_module().link_tree(repo, tree)
    argv = ["lint-imports", "--config", str(REPO / "pyproject.toml"), "--no-cache", "--no-logo"]
    env = {"PYTHONPATH": str(tree), "PATH": str(Path(sys.executable).parent)}  # the venv's lint-imports
    return subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def test_contracts_name_a_forbidden_import_and_keep_the_allowed_ones(tmp_path: Path) -> None:
    repo = _fake_repo(tmp_path / "repo", {
        "configs/schema.py": "X = 1\n",
        "store/atomic.py": "from zpd.configs import schema\n",
        "store/db.py": "import zpd.store.atomic\n",
        "loop/daemon.py": "import zpd.trainer.job\n",
        "loop/domains/base.py": "from zpd.configs.schema import X\n",
        # allowed: configs, loop.domains, store.atomic; forbidden: loop.daemon, even inside a function
        "trainer/job.py": ("from zpd.configs import schema\nfrom zpd.loop.domains import base\n"
                           "from zpd.store.atomic import *\n\n\ndef run():\n    import zpd.loop.daemon\n"),
    })
    out = _lint(repo, tmp_path / "tree")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "trainer imports only configs, loop.domains and store.atomic BROKEN" in out.stdout
    assert "zpd.trainer.job -> zpd.loop.daemon (l.7)" in out.stdout
    for kept in ("configs imports nothing of zpd KEPT", "store imports only configs KEPT",
                 "loop.domains is pure logic: only configs and itself KEPT"):
        assert kept in out.stdout
    assert "zpd.store.atomic" not in out.stdout.split("Broken contracts")[1]


def test_contracts_keep_a_package_that_follows_the_table(tmp_path: Path) -> None:
    repo = _fake_repo(tmp_path / "repo", {
        "configs/schema.py": "X = 1\n",
        "store/atomic.py": "from zpd.configs import schema\n",
        "loop/domains/base.py": "from zpd.configs.schema import X\nfrom . import base\n",
        "trainer/job.py": "from zpd.loop.domains import base\nfrom zpd.store import atomic\n",
        "loop/daemon.py": "import zpd.trainer.job\nimport zpd.store.atomic\n",
    })
    out = _lint(repo, tmp_path / "tree")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 4 kept, 0 broken." in out.stdout


def test_cycle_finder_counts_an_import_inside_a_function(tmp_path: Path) -> None:
    cycles = _cycles_module()
    repo = _fake_repo(tmp_path / "repo", {
        "loop/train.py": "from . import bootstrap\n",
        "loop/bootstrap.py": "X = 1\n\n\ndef later():\n    from . import train\n    return train\n",
        "loop/daemon.py": "from . import train\n",  # imports into the cycle, is not part of it
        "store/a.py": "from . import b\n",
        "store/b.py": "from . import c\n",
        "store/c.py": "import zpd.store.a\n",
    })
    tree = cycles.link_tree(repo, tmp_path / "tree")
    graph = cycles.build_graph(tree)
    found = cycles.strongly_connected(graph)
    assert found == [["zpd.store.a", "zpd.store.b", "zpd.store.c"], ["zpd.loop.bootstrap", "zpd.loop.train"]]
    edges = cycles.cycle_edges(graph, found[1], tree)
    assert [(e.importer, e.imported, e.line, e.in_function) for e in edges] == [
        ("zpd.loop.bootstrap", "zpd.loop.train", 5, True), ("zpd.loop.train", "zpd.loop.bootstrap", 1, False)]
