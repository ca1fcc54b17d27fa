"""The layer's modules import each other without cycles: read from the source (every import, at the top or
inside a function, except those only for the type checker under ``if TYPE_CHECKING:``), so a cycle is found
before it bites at import time or forces an import into a function."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

PACKAGE = ROOT / "layers" / "common" / "jastipin"


def imports_of(source: str, modules: set[str]) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # for the type checker only: never imported at run time
            if (
                isinstance(child, ast.ImportFrom)
                and child.module
                and child.module.split(".")[0] == "jastipin"
            ):
                if "." in child.module:
                    found.add(child.module.split(".")[1])
                else:
                    found.update(a.name for a in child.names)
            elif isinstance(child, ast.Import):
                found.update(a.name.split(".")[1] for a in child.names if a.name.startswith("jastipin."))
            visit(child)

    visit(ast.parse(source))
    return found & modules


def import_graph() -> dict[str, set[str]]:
    files = {p.stem: p for p in PACKAGE.glob("*.py")}
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


def test_the_layer_has_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 20  # the package was found
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph) or [])
