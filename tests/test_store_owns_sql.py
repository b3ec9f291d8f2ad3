"""The store owns its queries (issue 16): no module under ``loop/`` runs SQL or opens the database itself.

Checked on the source's syntax tree: importing ``sqlite3`` or ``sqlite_utils``; calling ``.execute``,
``.executemany``, ``.executescript``, ``.query`` or ``.insert_all``; subscripting a store (``db["tasks"]``,
``ctx.db[...]``). Every statement lives in ``store/`` (``store/ledger_*.py``, ``store/run_record.py``, ...).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LOOP = Path(__file__).resolve().parents[1] / "loop"

FORBIDDEN_MODULES = {"sqlite3", "sqlite_utils"}
FORBIDDEN_CALLS = {"execute", "executemany", "executescript", "query", "insert_all"}
DB_NAMES = {"db", "conn", "database", "store"}
"""A subscript of a name (or attribute) called so is taken for a subscript of a Database."""



def violations(source: str, name: str = "<string>") -> list[str]:
    """Each SQL use in ``source``, as ``name:line: what``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, ast.Import):
            found += [f"{name}:{node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom):
            if node.module and node.module.split(".")[0] in FORBIDDEN_MODULES and not node.level:
                found.append(f"{name}:{node.lineno}: from {node.module} import")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in FORBIDDEN_CALLS:
                found.append(f"{name}:{node.lineno}: .{node.func.attr}(...)")
        elif isinstance(node, ast.Subscript):
            target = node.value
            label = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
            if label in DB_NAMES:
                found.append(f"{name}:{node.lineno}: {label}[...]")
    return found


def _checked_files() -> list[Path]:
    """Every module under loop/, domains included: no exceptions."""
    return sorted(LOOP.rglob("*.py"))


def test_no_module_under_loop_runs_sql() -> None:
    files = _checked_files()
    assert len(files) > 20  # the walk found the package
    found = [v for path in files for v in violations(path.read_text(), str(path.relative_to(LOOP.parent)))]
    assert found == [], "SQL outside store/ (move it into a store/ledger_*.py function):\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import sqlite3\n", "import sqlite3"),
        ("import sqlite_utils.db as s\n", "import sqlite_utils.db"),
        ("from sqlite_utils import Database\n", "from sqlite_utils import"),
        ("ctx.db.execute('SELECT 1')\n", ".execute(...)"),
        ("conn.executemany('INSERT', rows)\n", ".executemany(...)"),
        ("db.executescript('x')\n", ".executescript(...)"),
        ("rows = list(db.query('SELECT * FROM tasks'))\n", ".query(...)"),
        ("ctx.db['measurements'].insert_all(rows)\n", ".insert_all(...)"),
        ("t = db['tasks']\n", "db[...]"),
        ("t = ctx.db['tasks']\n", "db[...]"),
    ],
)
def test_the_checker_flags_each_kind_of_sql(source: str, expected: str) -> None:
    found = violations(source, "m.py")
    assert any(expected in v for v in found), found
    assert found[0].startswith("m.py:1: ")


def test_the_checker_passes_store_calls_and_other_subscripts() -> None:
    source = ("from zpd.store import ledger_rounds\n"
              "row = ledger_rounds.read_round(ctx.db, 3)\n"
              "x = rows['id']\nfrom . import sqlite_helpers\n")
    assert violations(source) == []
