"""The import graph of src/: no cycles, the library never reaches for the CLI, and the
lowest layer (bytes, limits, errors, checks) imports nothing above it.

Imports are read from the source (ast), deferred ones inside functions included: a cycle
hidden behind a function-level import is still a cycle. Imports under ``if TYPE_CHECKING:``
never run, so they are left out of the cycle check (they still may not name the CLI).
"""

from __future__ import annotations

import ast

from conftest import ROOT
from srcgraph import SRC, import_target, module_name

#: Layer 1 of docs/architecture.md: may import only each other.
FOUNDATION = {
    "dstack_mr._binary",
    "dstack_mr.errors",
    "dstack_mr.digest",
    "dstack_mr.registry",
    "dstack_mr.validate",
}


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports(name: str) -> tuple[set[str], set[str]]:
    """(modules imported at run time, modules imported only for type checking)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    runtime: set[str] = set()
    typing_only: set[str] = set()

    def add(targets: set[str], node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
            return
        module = import_target(node, package)
        subs = {f"{module}.{a.name}" for a in node.names}
        # "from . import x" depends on the module x, not on the package's __init__.
        targets.update(subs & MODULES.keys())
        if not subs <= MODULES.keys():
            targets.add(module)

    def visit(node: ast.AST, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for stmt in child.body:
                    visit_one(stmt, True)
                for stmt in child.orelse:
                    visit_one(stmt, type_only)
            else:
                visit_one(child, type_only)

    def visit_one(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            add(typing_only if type_only else runtime, node)
        visit(node, type_only)

    visit(ast.parse(path.read_text()), False)
    return runtime, typing_only


GRAPH = {name: imports(name) for name in MODULES}


def internal(targets: set[str], own: str) -> set[str]:
    found = set()
    for t in targets:
        while t and t not in MODULES:
            t = t.rpartition(".")[0]
        if t and t != own:
            found.add(t)
    return found


def test_the_graph_sees_deferred_and_type_only_imports() -> None:
    runtime, _ = GRAPH["dstack_mr.events"]
    assert "dstack_mr.render" in runtime  # imported inside _repr_html_
    assert "dstack_mr.uefi" in internal(runtime, "dstack_mr.events")
    render_runtime, render_types = GRAPH["dstack_mr.render"]
    assert "dstack_mr.events" in render_types and "dstack_mr.events" not in render_runtime


def test_no_import_cycles() -> None:
    edges = {n: internal(GRAPH[n][0], n) for n in MODULES}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []
    cycles: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = 2

    for name in sorted(MODULES):
        if name not in state:
            walk(name)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_library_never_imports_the_cli_or_its_stack() -> None:
    offenders = []
    for name, (runtime, typing_only) in GRAPH.items():
        if not name.startswith("dstack_mr.") and name != "dstack_mr":
            continue
        for target in runtime | typing_only:
            if target.split(".")[0] in ("dstack_mr_cli", "typer", "click", "rich"):
                offenders.append(f"{name} imports {target}")
    assert not offenders, offenders


def test_foundation_imports_nothing_above_it() -> None:
    assert MODULES.keys() >= FOUNDATION
    for name in FOUNDATION:
        above = internal(GRAPH[name][0] | GRAPH[name][1], name) - FOUNDATION
        assert not above, f"{name} imports {sorted(above)}"


def named_modules() -> list[str]:
    """Every module and subpackage of both packages, as a reader of the map names it:
    ``machine``, ``acpi_model/``, ``dstack_mr_cli.base`` (a subpackage's own modules are
    covered by the subpackage)."""
    names = []
    for package in ("dstack_mr", "dstack_mr_cli"):
        for path in sorted((SRC / package).iterdir()):
            if path.name.startswith("__"):
                continue
            if path.is_dir() and (path / "__init__.py").exists():
                names.append(f"{path.name}/")
            elif path.suffix == ".py":
                names.append(path.stem)
    return names


def test_every_module_is_in_the_module_maps() -> None:
    """docs/architecture.md's module map and README's Layout name every module."""
    import re

    arch = (ROOT / "docs" / "architecture.md").read_text()
    table = arch[arch.index("## Module map") : arch.index("\n## ", arch.index("## Module map"))]
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    layout = layout[: layout.find("\n## ", 1)] if "\n## " in layout[1:] else layout
    names = named_modules()
    assert {"machine", "acpi_model/", "base", "entry"} <= set(names)
    for where, text in (("docs/architecture.md's module map", table), ("README's Layout", layout)):
        missing = [
            n
            for n in names
            if not re.search(rf"`(dstack_mr_cli\.)?{re.escape(n.rstrip('/'))}[`./ ]", text)
        ]
        assert missing == [], f"{where} does not name {missing}"
