"""The composition root is a root: nothing it builds imports it back (no import cycle
through `sync.composition`), and connectors never reach into the shell."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module of ours → the modules of ours it imports (at any depth of the code,
    lazy imports inside functions included)."""
    graph: dict[str, set[str]] = {}
    for package in ("mapping", "connectors", "sync"):
        for path in (ROOT / package).rglob("*.py"):
            found: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module)
                    found.update(f"{node.module}.{a.name}" for a in node.names)
            graph[_module(path)] = found
    return {m: {i for i in imports if i in graph} for m, imports in graph.items()}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_nothing_the_composition_root_imports_imports_it_back() -> None:
    graph = _imports()
    below = _reachable(graph, "sync.composition")
    assert {"sync.boards", "sync.approvals", "sync.invoicing"} <= below
    assert sorted(m for m in below if "sync.composition" in graph[m]) == []
    assert "sync.composition" not in below


def test_connectors_and_mapping_never_import_the_shell() -> None:
    graph = _imports()
    wrong = {
        m: sorted(i for i in imports if i.startswith("sync"))
        for m, imports in graph.items()
        if m.startswith(("connectors", "mapping"))
    }
    assert {m: i for m, i in wrong.items() if i} == {}
