"""Import cycles among the package's modules (issue 16), counting imports inside functions.

grimp (import-linter's graph library) records every import statement of a module, function-level and
``TYPE_CHECKING`` ones included, so a cycle dodged with a function-level import is still one. A cycle is
a strongly connected component of more than one module of that graph (a module importing itself does
not occur). The source folders become ``zpd.loop``, ``zpd.trainer``... only through pyproject's
package-dir mapping, which grimp cannot read, so the graph is built from a tree of links named as the
installed package (grimp follows the links).

    python .ci/import_cycles.py [REPO]     # prints each cycle with its imports; exit 1 if any
"""

from __future__ import annotations

import ast
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grimp

PACKAGE = "zpd"
SOURCE_DIRS = ("loop", "trainer", "store", "configs")
"""The repository folders that are ``zpd.<name>`` once installed (pyproject's package-dir)."""


@dataclass(frozen=True, slots=True)
class Edge:
    """One import inside a cycle."""

    importer: str
    imported: str
    line: int
    """The importing statement's line in the importer's file."""
    in_function: bool
    """The statement is inside a function (so the import happens at call time, not at import time)."""


def link_tree(repo: Path, into: Path) -> Path:
    """Lay out ``into/zpd`` as the installed package, of links into ``repo``; returns ``into``."""
    pkg = into / PACKAGE
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").symlink_to(repo / PACKAGE / "__init__.py")
    for name in SOURCE_DIRS:
        if (repo / name).is_dir():
            (pkg / name).symlink_to(repo / name)
    return into


def build_graph(tree: Path) -> grimp.ImportGraph:
    """The package's import graph, built from ``tree`` (a ``link_tree``), internal modules only."""
    # grimp finds the package through sys.modules first: another tree's zpd, imported in this process,
    # is set aside while the graph is built and put back after
    ours = {m: sys.modules.pop(m) for m in list(sys.modules) if m == PACKAGE or m.startswith(PACKAGE + ".")}
    sys.path.insert(0, str(tree))
    try:
        return grimp.build_graph(PACKAGE, include_external_packages=False, cache_dir=None)
    finally:
        sys.path.remove(str(tree))
        for m in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[m]
        sys.modules.update(ours)


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """The components of more than one module, each sorted, largest first (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found, key=lambda c: (-len(c), c))


def _function_lines(path: Path) -> list[tuple[int, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(n.lineno, n.end_lineno or n.lineno) for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def cycle_edges(graph: grimp.ImportGraph, component: list[str], tree: Path) -> list[Edge]:
    """The imports between members of ``component``, with where they are."""
    members = set(component)
    edges: list[Edge] = []
    for importer in component:
        path = _module_file(tree, importer)
        spans = _function_lines(path) if path is not None else []
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
            for detail in graph.get_import_details(importer=importer, imported=imported):
                line = int(detail["line_number"])
                edges.append(Edge(importer, imported, line, any(a <= line <= b for a, b in spans)))
    return edges


def _module_file(tree: Path, module: str) -> Path | None:
    base = tree.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def report(repo: Path) -> list[list[str]]:
    """Print each cycle of ``repo``'s package with its imports; returns the cycles."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = link_tree(repo.resolve(), Path(tmp))
        graph = build_graph(tree)
        cycles = strongly_connected(graph)
        for n, component in enumerate(cycles, 1):
            print(f"cycle {n} ({len(component)} modules): {', '.join(component)}")
            for e in cycle_edges(graph, component, tree):
                where = "  (inside a function)" if e.in_function else ""
                print(f"    {e.importer} -> {e.imported}  line {e.line}{where}")
    print(f"import cycles among the package's modules: {len(cycles)}")
    return cycles


if __name__ == "__main__":
    sys.exit(1 if report(Path(sys.argv[1] if len(sys.argv) > 1 else ".")) else 0)
