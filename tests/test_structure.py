"""The package's import graph has no cycles (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "kdlite"


def import_graph() -> dict[str, set[str]]:
    modules = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_kdlite_has_no_import_cycles():
    graph = import_graph()
    assert "kdlite.training" in graph and graph["kdlite.training"]
    assert cycles(graph) == []


def test_library_code_never_imports_a_program():
    """kdlite/ is the library, kdlite/cli/ its programs: nothing outside kdlite/cli imports them
    (so a program can change its arguments without touching the library)."""
    graph = import_graph()
    assert any(m.startswith("kdlite.cli.") for m in graph), "kdlite/cli/ not found"
    bad = {
        module: sorted(t for t in targets if t == "kdlite.cli" or t.startswith("kdlite.cli."))
        for module, targets in graph.items()
        if module != "kdlite.cli" and not module.startswith("kdlite.cli.")
    }
    assert {m: t for m, t in bad.items() if t} == {}


def test_every_python_m_program_lives_in_kdlite_cli():
    """A module with `if __name__ == "__main__":` is a program: it belongs in kdlite/cli/."""
    programs = sorted(
        str(path.relative_to(PKG.parent))
        for path in PKG.rglob("*.py")
        if 'if __name__ == "__main__":' in path.read_text()
    )
    assert programs and all(p.startswith("kdlite/cli/") for p in programs), programs
