"""The architecture figures of issue 16 for one tree, before and after its refactoring.

    python bench/architecture.py [TREE] [--mypy] [--row LABEL]

TREE (default: this repository) is a checkout of zpd, e.g. ``git worktree add /tmp/before REV``. It
prints each figure with what it counts; ``--row LABEL`` prints instead one markdown row for the table
in ``bench/results/architecture.md``. The rules are this checkout's, applied to TREE:

- SQL under loop/: the rule of issue 16's AST test: each call of ``.execute``, ``.executemany``,
  ``.executescript``, ``.query`` or ``.insert_all``; each import of ``sqlite3`` or ``sqlite_utils``;
  each string subscript of a database (``db["rounds"]``, ``ctx.db[...]``) that is not the receiver of
  a call already counted (``ctx.db["t"].insert_all(...)`` is one statement);
- import cycles: strongly connected components of grimp's graph of the package, counting imports
  inside functions (``.ci/import_cycles.py``);
- files over 400 lines and functions over 80 lines (``tests/test_limits.py``'s rules, exceptions
  and declarative tables counted too);
- ``type: ignore`` comments in the package, and its lines over 110 characters (ruff's E501 length);
- mypy errors (``--mypy``: this checkout's [tool.mypy] on TREE; a cold run, a minute or two);
- duplicate-code pairs: pairs of places in the package sharing 6 or more lines, from the
  ``duplicates`` command (not measured where it is not on PATH).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
SQL_METHODS = frozenset({"execute", "executemany", "executescript", "query", "insert_all"})
SQL_MODULES = frozenset({"sqlite3", "sqlite_utils"})
PACKAGE_DIRS = ("loop", "trainer", "store", "configs", "zpd")
MAX_LINE = 110
_DB_NAME = re.compile(r"(^|_)(db|database)$", re.IGNORECASE)


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


cycles_lib = _load(ROOT / ".ci" / "import_cycles.py", "import_cycles")
limits_lib = _load(ROOT / "tests" / "test_limits.py", "test_limits")


@dataclass
class Figures:
    """What one tree measures."""

    sql: dict[str, int] = field(default_factory=dict)
    """Module path under loop/ -> SQL statements in it."""
    cycles: list[list[str]] = field(default_factory=list)
    """Each import cycle's modules."""
    long_files: dict[str, int] = field(default_factory=dict)
    long_functions: dict[str, int] = field(default_factory=dict)
    type_ignores: int = 0
    long_lines: int = 0
    """Lines over 110 characters in the package's ``.py`` files."""
    mypy_errors: int | None = None
    """None: not measured (no --mypy)."""
    duplicate_pairs: int | None = None
    """None: not measured (``duplicates`` not on PATH)."""
    duplicate_rows: list[str] = field(default_factory=list)


def sql_statements(source: str) -> int:
    """SQL statements in one module's source, by the rule in this module's docstring."""
    tree = ast.parse(source)
    receivers: set[int] = set()
    count = 0
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in SQL_METHODS):
            count += 1
            receivers.add(id(node.func.value))
        elif isinstance(node, ast.Import):
            count += sum(a.name.split(".")[0] in SQL_MODULES for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in SQL_MODULES:
            count += 1
    for node in ast.walk(tree):
        if (isinstance(node, ast.Subscript) and id(node) not in receivers and _is_db(node.value)
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
            count += 1
    return count


def _is_db(node: ast.expr) -> bool:
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return bool(_DB_NAME.search(name))


def measure(tree: Path, *, mypy: bool) -> Figures:
    """Every figure of ``tree`` (mypy only when asked)."""
    figures = Figures()
    for path in sorted((tree / "loop").rglob("*.py")):
        if n := sql_statements(path.read_text(encoding="utf-8")):
            figures.sql[path.relative_to(tree).as_posix()] = n
    with tempfile.TemporaryDirectory() as tmp:
        graph = cycles_lib.build_graph(cycles_lib.link_tree(tree, Path(tmp)))
        figures.cycles = cycles_lib.strongly_connected(graph)
    figures.long_files, figures.long_functions = limits_lib.over_limits(tree)
    texts = [(tree / p).read_text(encoding="utf-8") for p in limits_lib.source_files(tree)]
    figures.type_ignores = sum(len(re.findall(r"type:\s*ignore", text)) for text in texts)
    figures.long_lines = sum(len(line) > MAX_LINE for text in texts for line in text.splitlines())
    if mypy:
        figures.mypy_errors = mypy_errors(tree)
    figures.duplicate_pairs, figures.duplicate_rows = duplicate_pairs(tree)
    return figures


def mypy_errors(tree: Path) -> int:
    """mypy's error count on ``tree``'s package with this checkout's configuration."""
    with tempfile.TemporaryDirectory() as tmp:
        links = cycles_lib.link_tree(tree, Path(tmp) / "tree")
        out = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                              "--cache-dir", str(Path(tmp) / "cache"), "-p", "zpd"],
                             cwd=links, capture_output=True, text=True, timeout=600)
    found = re.search(r"Found (\d+) errors?", out.stdout)
    if found:
        return int(found.group(1))
    if "Success" in out.stdout:
        return 0
    raise RuntimeError(f"mypy did not report a count: {out.stdout[-500:]}{out.stderr[-500:]}")


def duplicate_pairs(tree: Path) -> tuple[int | None, list[str]]:
    """Pairs of places, both in the package, that share 6 or more lines (``duplicates``' rows)."""
    if shutil.which("duplicates") is None:
        return None, []
    out = subprocess.run(["duplicates", "--repo", str(tree), "--most", "200", "--seconds", "120"],
                         capture_output=True, text=True, timeout=300).stdout
    if "(+" in out and "more pairs)" in out:
        raise RuntimeError("duplicates listed more than 200 pairs: the package count would be short")
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and re.fullmatch(r"D\d+", parts[0]) and parts[2] == "~":
            if all(p.split("/")[0] in PACKAGE_DIRS for p in (parts[1], parts[3])):
                rows.append(line)
    return len(rows), rows


def _count(n: int | None) -> str:
    return "not measured" if n is None else str(n)


def markdown_row(label: str, f: Figures) -> str:
    """One row of the results table (columns as in ``bench/results/architecture.md``)."""
    cells = [label, f"{sum(f.sql.values())} in {len(f.sql)} modules",
             f"{len(f.cycles)} ({sum(map(len, f.cycles))} modules)", str(len(f.long_files)),
             str(len(f.long_functions)), str(f.long_lines), str(f.type_ignores), _count(f.mypy_errors),
             _count(f.duplicate_pairs)]
    return "| " + " | ".join(cells) + " |"


def show(tree: Path, f: Figures) -> None:
    print(f"tree: {tree}")
    print(f"SQL statements under loop/: {sum(f.sql.values())} in {len(f.sql)} modules")
    for path, n in sorted(f.sql.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"    {n:3d}  {path}")
    print(f"import cycles (counting imports inside functions): {len(f.cycles)}")
    for component in f.cycles:
        print(f"    {len(component)} modules: {', '.join(component)}")
    print(f"files over {limits_lib.MAX_FILE_LINES} lines: {len(f.long_files)}")
    for path, n in sorted(f.long_files.items()):
        print(f"    {n:4d}  {path}")
    print(f"functions over {limits_lib.MAX_FUNCTION_LINES} lines: {len(f.long_functions)}")
    for name, n in sorted(f.long_functions.items()):
        print(f"    {n:4d}  {name}")
    print(f"lines over {MAX_LINE} characters: {f.long_lines}")
    print(f"type: ignore comments: {f.type_ignores}")
    print(f"mypy errors: {_count(f.mypy_errors)}")
    print(f"duplicate-code pairs in the package: {_count(f.duplicate_pairs)}")
    for row in f.duplicate_rows:
        print(f"    {row}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree", nargs="?", type=Path, default=ROOT,
                        help="a checkout of zpd (default: this one)")
    parser.add_argument("--mypy", action="store_true", help="also count mypy's errors (a minute or two)")
    parser.add_argument("--row", metavar="LABEL",
                        help="print one markdown row of the results table instead")
    args = parser.parse_args(argv)
    tree = args.tree.resolve()
    if not (tree / "loop").is_dir() or not (tree / "zpd" / "__init__.py").is_file():
        print(f"zpd architecture: {tree} is not a zpd checkout (no loop/ or zpd/__init__.py)",
              file=sys.stderr)
        return 2
    figures = measure(tree, mypy=args.mypy)
    if args.row:
        print(markdown_row(args.row, figures))
    else:
        show(tree, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
