"""The layer's structure, read from its source (every import, at the top or inside a function, except those
only for the type checker under ``if TYPE_CHECKING:``):

- its modules import each other without cycles, so a cycle is found before it bites at import time or
  forces an import into a function;
- only the data layer (``jastipin/data/``) talks to DynamoDB's libraries: domain code calls its named
  operations and never sees PynamoDB or botocore."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "layers" / "common" / "jastipin"

# Domain modules that still reach a table themselves, each with its reason (docs/architecture.md).
DATA_ACCESS_OUTSIDE_DATA = {
    # The kept audience counts are one attribute per member in the audience table, read and written as
    # such (low-level client, conditional on a sequence number): the counting and its storage are one design.
    "audience_counts",
    # The limiter's schedule is one item in the rate-limit table, moved by one conditional write per block.
    "outbound.rate_limit",
}


def module_name(path: Path) -> str:
    """``data/contacts.py`` → ``data.contacts``; a package's ``__init__.py`` → the package."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, modules: set[str]) -> set[str]:
    """The package's modules this source imports (by ``module_name``), with the packages a dotted import
    runs on the way (``jastipin.data.contacts`` runs ``jastipin/data/__init__.py`` first)."""
    found: set[str] = set()

    def add(dotted: str) -> None:
        parts = dotted.split(".")
        for end in range(1, len(parts) + 1):
            found.add(".".join(parts[:end]))

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # for the type checker only: never imported at run time
            if (
                isinstance(child, ast.ImportFrom)
                and child.module
                and child.module.split(".")[0] == "jastipin"
            ):
                base = (child.module or "").partition(".")[2]
                for alias in child.names:
                    name = f"{base}.{alias.name}" if base else alias.name
                    add(name if name in modules else base)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("jastipin."):
                        add(alias.name.partition(".")[2])
            visit(child)

    visit(ast.parse(source))
    return found & modules


def third_party_imports(source: str) -> set[str]:
    """The top-level names of every library this source imports (at run time)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.add(child.module.split(".")[0])
            elif isinstance(child, ast.Import):
                found.update(a.name.split(".")[0] for a in child.names)
            visit(child)

    visit(ast.parse(source))
    return found


def layer_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if module_name(p)}


def import_graph() -> dict[str, set[str]]:
    files = layer_modules()
    return {name: imports_of(path.read_text(), set(files)) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    lines = ["from jastipin import b", "if TYPE_CHECKING:", "    from jastipin.c import X"]
    source = "\n".join([*lines, "def f():", "    import jastipin.d"])
    assert imports_of(source, {"b", "c", "d"}) == {"b", "d"}
    # a module of a subpackage, and the package it runs first
    source = "from jastipin.data import contacts\nfrom jastipin.data.models import Trip"
    assert imports_of(source, {"data", "data.contacts", "data.models"}) == {
        "data",
        "data.contacts",
        "data.models",
    }


def test_the_layer_has_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 20 and "data.contacts" in graph  # the package and its subpackages were found
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph) or [])


def test_only_the_data_layer_imports_dynamodb_libraries() -> None:
    assert {"pynamodb", "botocore"} <= third_party_imports(
        "from pynamodb.models import Model\nimport botocore"
    )
    reaching = {
        name
        for name, path in layer_modules().items()
        if not name.startswith("data") and third_party_imports(path.read_text()) & {"pynamodb", "botocore"}
    }
    assert reaching == DATA_ACCESS_OUTSIDE_DATA, "import PynamoDB or botocore only under jastipin/data/"
