"""The package's layers, read from its source with ``ast``: every import points down, no two modules
import each other (directly or round a longer cycle), and no module is over :data:`MAX_LINES` lines.

Layers, bottom to top (a module imports from its own layer and the ones below only; imports inside
functions and under ``if TYPE_CHECKING:`` count too)::

    base < core < store < data < features < work < figures < {plans, search} < cli

plans and search are one level and never import each other. A cycle is looked for among all
imports, type-only ones included (a reader follows those too). Each test is one per module, so a
failure names the module, and the imports with their file:line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cifarlin"
MAX_LINES = 450

#: Rank of each layer, bottom (0) to top. Equal ranks of different layers may not import each other.
LAYERS = {
    "base": 0,  # cifarlin/__init__.py (version), cifarlin/errors.py
    "core": 1,
    "store": 2,
    "data": 3,
    "features": 4,
    "work": 5,
    "figures": 6,
    "plans": 7,
    "search": 7,
    "report": 8,
    "cli": 9,  # with cifarlin/__main__.py, the command line's entry point
}
BASE = {"cifarlin", "cifarlin.errors"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module of the package (a submodule when ``from pkg import sub``)
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``

    def where(self) -> str:
        return f"{path_of(self.source).relative_to(PACKAGE.parent)}:{self.line}"


@cache
def modules() -> dict[str, Path]:
    """{dotted name: file} of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def path_of(module: str) -> Path:
    return modules()[module]


def layer(module: str) -> str:
    if module in BASE:
        return "base"
    top = module.split(".")[1]
    return "cli" if top == "__main__" else top


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(source: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names, relative imports included."""
    if not node.level:
        return node.module or ""
    package = source if path_of(source).name == "__init__.py" else source.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def _targets(source: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The package's modules an import statement loads (its own names: no implicit parents)."""
    known = modules()
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = _resolve(source, node)
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    return sorted({n for n in names if n in known})


@cache
def imports(source: str) -> tuple[Import, ...]:
    """Every import of the package's modules in the module ``source``."""
    return imports_in(source, path_of(source).read_text())


def imports_in(source: str, text: str) -> tuple[Import, ...]:
    """Every import of the package's modules in ``text``, the code of ``source``: at module level,
    inside functions and classes, and under ``if TYPE_CHECKING:``."""
    tree = ast.parse(text, str(path_of(source)))
    found: list[Import] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.extend(Import(source, t, node.lineno, type_only) for t in _targets(source, node))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            visit(node.test, type_only)
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(tree, False)
    return tuple(found)


def upward(imp: Import) -> bool:
    a, b = layer(imp.source), layer(imp.target)
    return LAYERS[b] > LAYERS[a] or (LAYERS[a] == LAYERS[b] and a != b)


@cache
def cycles() -> dict[str, list[Import]]:
    """{module: one import cycle through it} for every module in a cycle of the imports, type-only
    ones included: a reader meets those circles too (Tarjan's strongly connected components; then
    a shortest cycle through each member)."""
    graph = {m: sorted({i.target for i in imports(m)}) for m in modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:  # recursion depth: at most the number of modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            components.append(component)

    for v in graph:
        if v not in index:
            strongconnect(v)
    found: dict[str, list[Import]] = {}
    for component in components:
        if len(component) < 2:
            continue
        members = set(component)
        for start in sorted(component):
            found[start] = _shortest_cycle(start, members)
    return found


def _shortest_cycle(start: str, members: set[str]) -> list[Import]:
    """The imports of a shortest cycle from ``start`` back to it, within one component."""
    previous: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for imp in imports(v):
                if imp.target not in members:
                    continue
                if imp.target == start:
                    path = [imp]
                    while path[0].source != start:
                        path.insert(0, previous[path[0].source])
                    return path
                if imp.target not in previous:
                    previous[imp.target] = imp
                    following.append(imp.target)
        frontier = following
    raise AssertionError(f"{start} is in a component but on no cycle")


@pytest.mark.parametrize("module", modules())
def test_imports_point_down(module):
    bad = [i for i in imports(module) if upward(i)]
    if bad:
        pytest.fail(
            "upward imports:\n"
            + "\n".join(
                f"  {i.where()}: {i.source} ({layer(i.source)}) -> {i.target} ({layer(i.target)})"
                + (" [type only]" if i.type_only else "")
                for i in bad
            ),
            pytrace=False,
        )


@pytest.mark.parametrize("module", modules())
def test_in_no_import_cycle(module):
    cycle = cycles().get(module)
    if cycle is not None:
        lines = [f"  {i.where()}: {i.source} -> {i.target}" for i in cycle]
        pytest.fail("import cycle:\n" + "\n".join(lines), pytrace=False)


@pytest.mark.parametrize("module", modules())
def test_module_is_short(module):
    n = len(path_of(module).read_text().splitlines())
    assert n <= MAX_LINES, f"{path_of(module).relative_to(PACKAGE.parent)}: {n} lines, more than {MAX_LINES}"


def test_the_layers_are_those_of_the_package():
    """Every folder of the package is a layer of :data:`LAYERS` (a new one must be placed)."""
    assert {layer(m) for m in modules()} == set(LAYERS)


def test_the_reader_sees_every_kind_of_import():
    """The checks above see module-level, lazy, type-only, relative and ``from pkg import sub``
    imports, and only the package's own modules."""
    code = """
import os, cifarlin.core.model
from typing import TYPE_CHECKING
from cifarlin.core import augment, config
from cifarlin import __version__
from . import cifar
from ..store.files import atomic_path
if TYPE_CHECKING:
    from cifarlin.work.runs import Outcome
else:
    import cifarlin.errors
def f():
    class C:
        def g(self):
            from cifarlin.features import cache
"""
    got = {(i.target, i.line, i.type_only) for i in imports_in("cifarlin.data.archive", code)}
    assert got == {
        ("cifarlin.core.model", 2, False),
        ("cifarlin.core.augment", 4, False),
        ("cifarlin.core.config", 4, False),
        ("cifarlin", 5, False),
        ("cifarlin.data.cifar", 6, False),
        ("cifarlin.store.files", 7, False),
        ("cifarlin.work.runs", 9, True),
        ("cifarlin.errors", 11, False),
        ("cifarlin.features.cache", 15, False),
    }


def test_the_reader_on_the_package():
    """The same on the package's own modules: a change of the reader or of them shows here."""
    edges = {(i.source, i.target, i.type_only) for m in modules() for i in imports(m)}
    assert ("cifarlin.store.checkpoint", "cifarlin.core.normalize", False) in edges  # module level
    assert ("cifarlin.store.checkpoint", "cifarlin.store.featuremap", False) in edges  # in a function
    assert ("cifarlin.store.checkpoint", "cifarlin.core.kmeans", True) in edges  # TYPE_CHECKING
    assert ("cifarlin.features.prepare", "cifarlin.core.augment", False) in edges  # from cifarlin.core import
    assert ("cifarlin.features.prepare", "cifarlin.core.ridge", False) in edges  # the same, in a function
    assert ("cifarlin.__main__", "cifarlin.cli", False) in edges
