"""No private access across modules in the library or the CLI (read from the source with ast).

The rule (docs/architecture.md, "Private names"):

- A name with one leading underscore (``_x``; dunders such as ``__init__`` are not private)
  belongs to the module that defines it. No other module imports it (``from m import _x``)
  or reaches it as an attribute (``m._x``, ``obj._x``, ``getattr(obj, "_x")``); that holds
  for other libraries' private names too (``Enum._value2member_map_``).
- Inside a module, ``self._x`` and ``cls._x`` and any ``_x`` the module itself defines
  (a function, class, assignment, attrs field, ``__slots__`` entry or import alias) are its
  own business.
- A module whose own name is private (``dstack_mr._binary``, the one bounds-checked reader;
  ``dstack_mr._lru``) is private to its package: every module of that package may import it
  and use its public names, nothing outside the package may.
"""

from __future__ import annotations

import ast

from srcgraph import SRC, import_target, module_name

#: The packages checked: the library, and the CLI (which may use none of the library's
#: private names or modules).
PACKAGES = ("dstack_mr", "dstack_mr_cli")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_module(dotted: str) -> bool:
    path = SRC.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _own_names(tree: ast.AST) -> set[str]:
    """The private names a module defines itself."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            own.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.alias) and node.asname:
            own.add(node.asname)
        elif isinstance(node, ast.arg):
            own.add(node.arg)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
        ):
            own.update(
                c.value
                for c in ast.walk(node.value)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            )
    return {n for n in own if _private(n)}


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every private access in ``source`` (the module ``module``) that the rule forbids."""
    tree = ast.parse(source)
    own = _own_names(tree)
    top = module.split(".")[0]
    package = module if is_package else module.rpartition(".")[0]
    found: list[str] = []

    def foreign_private_module(target: str) -> bool:
        # A private module is open to its own top-level package only.
        return any(_private(p) for p in target.split(".")) and target.split(".")[0] != top

    for node in ast.walk(tree):
        where = f"{module}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom):
            target = import_target(node, package)
            if foreign_private_module(target):
                found.append(f"{where}: imports the private module {target}")
            for alias in node.names:
                if not _private(alias.name):
                    continue
                sub = f"{target}.{alias.name}"
                if _is_module(sub) and sub.split(".")[0] == top:
                    continue  # "from . import _binary": a private module of its own package
                found.append(f"{where}: imports {alias.name} from {target}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if foreign_private_module(alias.name):
                    found.append(f"{where}: imports the private module {alias.name}")
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            value = node.value
            if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue
            if node.attr in own:
                continue
            found.append(f"{where}: reaches {ast.unparse(value)}.{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
            and node.args[1].value not in own
        ):
            found.append(f"{where}: {node.func.id}(..., {node.args[1].value!r})")
    return found


def test_the_checker_sees_each_form() -> None:
    source = """
from dstack_mr.diagnose import _replay_checks
from .snp_document import _short
from dstack_mr._binary import take
import other._hidden
x = img._kernel_digest(1)
y = SectionType._value2member_map_
z = getattr(obj, "_cache")
"""
    found = violations(source, "dstack_mr_cli.thing")
    assert len(found) == 7, found
    assert any("reaches img._kernel_digest" in f for f in found)
    assert any("imports the private module dstack_mr._binary" in f for f in found)
    assert any("imports _short from dstack_mr_cli.snp_document" in f for f in found)


def test_the_checker_allows_what_the_rule_allows() -> None:
    source = """
from . import _binary
from ._binary import take, u32
from ._lru import LruCache
import attrs

_LIMIT = 3

class Box:
    __slots__ = ("_data",)
    _size: int = 0

    def _grow(self) -> None: ...

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box) and self._data == other._data and cls_size(other._size)

    @classmethod
    def make(cls) -> "Box":
        return cls._grow

def use(b: Box) -> int:
    b._grow()
    return _binary.u32(b"", 0, "x", Exception) + _LIMIT + b.__class__.__name__.count("")
"""
    assert violations(source, "dstack_mr.box") == []
    # The same private module is foreign to another package.
    assert violations("from dstack_mr._binary import take\n", "dstack_mr_cli.x")


def test_no_private_access_across_modules() -> None:
    found: list[str] = []
    for package in PACKAGES:
        for path in sorted((SRC / package).rglob("*.py")):
            found += violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not found, "\n".join(found)
