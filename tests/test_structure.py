"""The package's shape, read from its source with `ast` (nothing is imported): the import graph of `zhcoder/` has
no cycles, and no module uses another zhcoder module's `_private` name.

Imports at module level and inside functions both count; relative imports are resolved; an import under
`if TYPE_CHECKING:` is ignored (it never runs). A private name is one with a single leading underscore that a
zhcoder module defines (`from zhcoder.engine import _bucket`, `engine._bucket`, `Engine._step` with `Engine`
imported from zhcoder); an attribute of a third-party object (`request._body`) is not one.

    pytest -q -n 0 tests/test_structure.py
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "zhcoder"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """The zhcoder imports of one module, and its uses of other zhcoder modules' private names."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.edges: list[tuple[str, int]] = []        # (imported zhcoder module, line)
        self.private: list[tuple[int, str]] = []      # (line, what)
        self.bound: dict[str, str] = {}               # local name -> the zhcoder module, or "module:Name"

    def _resolve(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = self.module.split(".")
        base = base[:len(base) - node.level + (1 if self.is_package else 0)]
        return ".".join(base + ([node.module] if node.module else []))

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name in SOURCES:
                self.edges.append((alias.name, node.lineno))
                if alias.asname:
                    self.bound[alias.asname] = alias.name
                else:
                    self.bound[alias.name.split(".")[0]] = alias.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        source = self._resolve(node)
        if source not in SOURCES:
            return
        for alias in node.names:
            local = alias.asname or alias.name
            submodule = f"{source}.{alias.name}"
            if submodule in SOURCES:
                self.edges.append((submodule, node.lineno))
                self.bound[local] = submodule
                continue
            self.edges.append((source, node.lineno))
            self.bound[local] = f"{source}:{alias.name}"
            if _is_private(alias.name) and source != self.module:
                self.private.append((node.lineno, f"from {source} import {alias.name}"))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain, value = [node.attr], node.value
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if isinstance(value, ast.Name) and value.id in self.bound:
            target, names = self.bound[value.id], chain[::-1]
            while ":" not in target and names and f"{target}.{names[0]}" in SOURCES:  # zhcoder.eval.sandbox
                target = f"{target}.{names.pop(0)}"
            owner = target.split(":")[0]
            if names and _is_private(names[0]) and owner != self.module:
                self.private.append((node.lineno, f"{value.id}.{'.'.join(chain[::-1])} ({owner})"))
                return
        self.generic_visit(node)


def _scan() -> dict[str, _Imports]:
    scans = {}
    for module, path in SOURCES.items():
        scan = _Imports(module, path.name == "__init__.py")
        scan.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        scans[module] = scan
    return scans


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a module importing itself): Tarjan."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _relative(module: str) -> str:
    return str(SOURCES[module].relative_to(PACKAGE.parent))


def test_the_import_graph_has_no_cycles():
    scans = _scan()
    graph = {module: {target for target, _ in scan.edges if target != module} for module, scan in scans.items()}
    report = []
    for component in _cycles(graph):
        members = set(component)
        report.append("cycle among " + ", ".join(component) + ":")
        for module in component:
            for target, line in sorted(set(scans[module].edges), key=lambda edge: edge[1]):
                if target in members and target != module:
                    report.append(f"  {_relative(module)}:{line} imports {target}")
    assert not report, "import cycles in zhcoder/ (cut one import of each):\n" + "\n".join(report)


def test_no_module_uses_another_modules_private_names():
    offenders = [f"{_relative(module)}:{line}: {what}" for module, scan in _scan().items()
                 for line, what in scan.private]
    assert not offenders, ("private names of other zhcoder modules in use (make them public or move them):\n"
                           + "\n".join(offenders))


def test_the_checks_see_what_they_look_for():
    """The scanner on a small made-up package, so that a green run means "none found", not "none looked for"."""
    global SOURCES
    saved = SOURCES
    SOURCES = {name: PACKAGE / "x.py" for name in ("zhcoder", "zhcoder.a", "zhcoder.b", "zhcoder.sub", "zhcoder.sub.c")}
    try:
        scan = _Imports("zhcoder.sub.c", False)
        scan.visit(ast.parse(
            "from typing import TYPE_CHECKING\n"
            "from .. import a\n"
            "from ..b import _hidden, visible\n"
            "if TYPE_CHECKING:\n    from zhcoder.sub import c\n"
            "def f(request):\n"
            "    import zhcoder.b\n"
            "    from zhcoder.a import Thing\n"
            "    return a._secret, zhcoder.b._other, Thing._method, request._body, a.__name__, visible._x\n"))
        assert sorted(set(scan.edges)) == [("zhcoder.a", 2), ("zhcoder.a", 8), ("zhcoder.b", 3), ("zhcoder.b", 7)]
        assert [what for _, what in scan.private] == [
            "from zhcoder.b import _hidden", "a._secret (zhcoder.a)", "zhcoder.b._other (zhcoder.b)",
            "Thing._method (zhcoder.a)", "visible._x (zhcoder.b)"]
    finally:
        SOURCES = saved
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}) == [["a", "b", "c"], ["e"]]
