"""The import structure: no import cycles among our modules (top-level, function-level
and TYPE_CHECKING imports all count), the dependency direction of DESIGN.md
(`mapping` imports nothing of ours but itself, `connectors` never the shell), a
composition root nothing imports back, and one event loop per CLI command (the only
`asyncio.run` is `sync.cli_common.run_command`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mapping", "connectors", "sync")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, ast.Module]:
    return {
        _module(path): ast.parse(path.read_text(), str(path))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _imports() -> dict[str, set[str]]:
    """Every module of ours → the modules of ours it imports (at any depth of the code,
    lazy imports inside functions included). ``from pkg import name`` is an import of
    ``pkg.name`` when that is a module, else of ``pkg``."""
    sources = _sources()
    graph: dict[str, set[str]] = {}
    for module, tree in sources.items():
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    package = module.split(".")
                    is_package = (ROOT / Path(*package) / "__init__.py").exists()
                    anchor = package if is_package else package[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in sources else base)
        graph[module] = {i for i in found if i in sources and i != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    cycles = _cycles(_imports())
    graph = _imports()
    assert {" → ".join(c): {m: sorted(graph[m] & set(c)) for m in c} for c in cycles} == {}


def test_the_cli_modules_never_import_the_entry_point() -> None:
    graph = _imports()
    # `python -m sync` (how the web process spawns its worker) is an entry point too.
    importers = sorted(m for m, imports in graph.items() if "sync.cli" in imports)
    assert importers == ["sync.__main__"]
    assert {"sync.cli_boards", "sync.cli_invoicing", "sync.demo"} <= graph["sync.cli"]


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


def test_mapping_imports_nothing_of_ours_but_mapping() -> None:
    graph = _imports()
    wrong = {
        m: sorted(i for i in imports if not i.startswith("mapping"))
        for m, imports in graph.items()
        if m.startswith("mapping")
    }
    assert {m: i for m, i in wrong.items() if i} == {}


def _calls_to_asyncio_run(tree: ast.Module) -> list[str]:
    """The functions (dotted path) calling ``asyncio.run`` (or a bare imported ``run``)."""
    bare = any(
        isinstance(n, ast.ImportFrom)
        and n.module == "asyncio"
        and any(a.name == "run" for a in n.names)
        for n in ast.walk(tree)
    )
    found: list[str] = []

    def walk(node: ast.AST, where: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                walk(child, [*where, child.name])
                continue
            if isinstance(child, ast.Call):
                f = child.func
                if (
                    isinstance(f, ast.Attribute)
                    and f.attr == "run"
                    and isinstance(f.value, ast.Name)
                    and f.value.id == "asyncio"
                ) or (bare and isinstance(f, ast.Name) and f.id == "run"):
                    found.append(".".join(where) or "<module>")
            walk(child, where)

    walk(tree, [])
    return found


def test_the_only_event_loop_is_the_cli_commands_one() -> None:
    """No code of ours starts an event loop but `run_command` (one per CLI command): the
    daemon, the demo, the checks and every command run inside that loop."""
    calls = {
        module: where
        for module, tree in _sources().items()
        if (where := _calls_to_asyncio_run(tree))
    }
    assert calls == {"sync.cli_common": ["run_command"]}


# The shell modules whose SQL lives in `sync.ledger` (issue #15): they ask the ledger's
# functions, which return typed records, and never build a statement themselves.
SQL_FREE = (
    "sync.invoicing",
    "sync.approvals",
    "sync.metrics",
    "sync.conflicts",
    "sync.daemon",
    "sync.leader",
    "sync.web.health",
)
_STATEMENT_BUILDERS = frozenset({"select", "insert", "update", "delete", "func", "text"})


def _sql_imports(tree: ast.Module) -> list[str]:
    """What a module imports to build SQL: sqlalchemy's statement builders (or the
    whole package) and the ledger's tables (`sync.ledger.schema`)."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(
                a.name
                for a in node.names
                if a.name in ("sqlalchemy", "sqlalchemy.sql") or a.name == "sync.ledger.schema"
            )
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module in ("sqlalchemy", "sqlalchemy.sql", "sqlalchemy.sql.expression"):
                found.extend(
                    f"{module}.{a.name}" for a in node.names if a.name in _STATEMENT_BUILDERS
                )
            elif module == "sync.ledger.schema":
                found.append(module)
            elif module == "sync.ledger":
                found.extend(f"sync.ledger.{a.name}" for a in node.names if a.name == "schema")
    return found


def test_the_sql_finder_finds_sql() -> None:
    tree = ast.parse(
        "from sqlalchemy import Connection, select, func\n"
        "from sync.ledger import schema as t\n"
        "import sync.ledger.schema\n"
    )
    assert _sql_imports(tree) == [
        "sqlalchemy.select",
        "sqlalchemy.func",
        "sync.ledger.schema",
        "sync.ledger.schema",
    ]
    assert _sql_imports(ast.parse("from sqlalchemy import Connection\n")) == []


def test_sql_lives_only_in_the_ledger_for_the_cleaned_shell_modules() -> None:
    """`sync.invoicing` and `sync.approvals` keep their transactions but take rows from
    `sync.ledger` functions as typed records: no statement builder, no table."""
    sources = _sources()
    found = {module: _sql_imports(sources[module]) for module in SQL_FREE}
    assert {m: imports for m, imports in found.items() if imports} == {}


def _execute_calls(tree: ast.Module) -> list[int]:
    """The lines calling ``<something>.execute(…)`` (a statement run on a connection)."""
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "execute"
    ]


def test_the_cleaned_shell_modules_run_no_statement_themselves() -> None:
    sources = _sources()
    found = {module: _execute_calls(sources[module]) for module in SQL_FREE}
    assert {m: lines for m, lines in found.items() if lines} == {}


def _bare_any(tree: ast.Module) -> list[str]:
    """Parameters and returns annotated plain ``Any`` (``function.name``)."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            named = [(a.arg, a.annotation) for a in args] + [("return", node.returns)]
            found.extend(
                f"{node.name}.{name}"
                for name, annotation in named
                if isinstance(annotation, ast.Name) and annotation.id == "Any"
            )
    return found


def test_ledger_rows_reach_invoicing_and_approvals_typed() -> None:
    """No ledger row (invoice, entry, outbox op…) is passed or returned as `Any`."""
    sources = _sources()
    found = {m: _bare_any(sources[m]) for m in ("sync.invoicing", "sync.approvals")}
    assert {m: names for m, names in found.items() if names} == {}
