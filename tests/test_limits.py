"""The size limits of issue 16 on the package's source (``.py`` under loop/, trainer/, store/, configs/,
zpd/): no file over 400 lines, no function over 80 lines outside declarative tables.

A function's length is its ``def`` line to its last line (decorators not counted); a nested function
counts on its own and inside its parent. The exception lists name each file or function with why; a
stale entry (one now within the limits) fails too, so the lists only shrink.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("loop", "trainer", "store", "configs", "zpd")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80

DECLARATIVE_TABLES = {
    # a table of declarations, one statement per entry: longer is not harder to read
    "loop/metrics.py:DaemonMetrics.__init__": "the Prometheus metric declarations, one per metric",
    "store/scale_schema.py:create": "the schema's DDL statements (tables and indexes), a migration",
}
"""Functions that are declarative tables (issue 16: exempt from the function limit for good)."""

FILE_EXCEPTIONS: dict[str, str] = {}
"""Files allowed over ``MAX_FILE_LINES``, with why, until the work named removes them."""

FUNCTION_EXCEPTIONS: dict[str, str] = {}
"""Functions allowed over ``MAX_FUNCTION_LINES``, with why, until the work named removes them."""


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """``{qualified name: lines}`` of the functions of ``source`` longer than ``limit`` lines."""
    found: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                if lines > limit:
                    found[name] = lines
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def source_files(repo: Path = REPO) -> list[Path]:
    """The package's ``.py`` files, as paths relative to ``repo``."""
    return sorted(p.relative_to(repo) for d in SOURCE_DIRS for p in (repo / d).rglob("*.py"))


def over_limits(repo: Path = REPO) -> tuple[dict[str, int], dict[str, int]]:
    """(files over ``MAX_FILE_LINES``, functions over ``MAX_FUNCTION_LINES``) as ``{name: lines}``."""
    files: dict[str, int] = {}
    functions: dict[str, int] = {}
    for path in source_files(repo):
        text = (repo / path).read_text(encoding="utf-8")
        if (n := len(text.splitlines())) > MAX_FILE_LINES:
            files[path.as_posix()] = n
        for name, n in long_functions(text).items():
            functions[f"{path.as_posix()}:{name}"] = n
    return files, functions


def test_no_file_over_the_limit() -> None:
    files, _ = over_limits()
    over = {f: n for f, n in files.items() if f not in FILE_EXCEPTIONS}
    assert not over, f"files over {MAX_FILE_LINES} lines (split them by domain): {over}"


def test_no_function_over_the_limit() -> None:
    _, functions = over_limits()
    allowed = DECLARATIVE_TABLES.keys() | FUNCTION_EXCEPTIONS.keys()
    over = {f: n for f, n in functions.items() if f not in allowed}
    assert not over, f"functions over {MAX_FUNCTION_LINES} lines: {over}"


def test_the_exception_lists_name_only_what_is_still_over() -> None:
    files, functions = over_limits()
    stale = sorted(FILE_EXCEPTIONS.keys() - files.keys())
    stale += sorted((DECLARATIVE_TABLES.keys() | FUNCTION_EXCEPTIONS.keys()) - functions.keys())
    assert not stale, f"within the limits now: remove from the exception lists: {stale}"


def test_the_checker_finds_a_long_function_in_a_small_source() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(80))
    source = (
        "def short():\n    return 1\n\n\n"
        f"def long():\n{body}\n\n"  # def + 80 statements: 81 lines
        f"class C:\n    async def method(self):\n{body.replace('    ', '        ')}"
        "        def inner():\n            return 2\n"
        f"\n\ndef exactly():\n{''.join(f'    y{i} = {i}' + chr(10) for i in range(79))}"  # 80 lines
    )
    assert long_functions(source) == {"long": 81, "C.method": 83}
    assert long_functions(source, limit=82) == {"C.method": 83}
    assert long_functions("def f():\n    pass\n") == {}
