"""Benchmark 4: peak RSS of a process that syncs 100,000 GitHub project items into SQLite.

GitHub caps a project at 50,000 items (the connector stops at 600 pages), so the
100,000 items are two projects of 50,000, two boards synced one after the other by
`sync_all`, as `kanvoice sync --once` does. The fake GitHub servers run in this
(parent) process; the sync runs in a child process started for it, and the figure is
that child's own peak resident set size (``ru_maxrss`` from ``os.wait4``), with the
interpreter and imports alone measured in the same child before syncing.

``--trace`` (also run automatically when the peak is over the limit) repeats the sync
under tracemalloc and prints what holds the memory at the largest point: just after
a board's poll returned all its snapshots, before they are ingested.

    .venv/bin/python bench/memory.py [--quick] [--items 100000] [--boards 2] [--trace]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Row, maxrss_mb, print_machine, print_table, quiet_logs, write_json

LIMIT_MB = 200.0
TOKEN = "ghp_benchbenchbenchbenchbench"  # noqa: S105 (the fake accepts any)


def _settings(urls: list[str], ledger: str) -> Any:
    from sync.settings import Settings

    return Settings(
        ledger={"url": f"sqlite:///{ledger}"},
        clients=[
            {
                "key": "acme",
                "name": "Acme",
                "stripe_customer_id": "cus_AcmeBench01",
                "currency": "EUR",
                "rate": "100",
            }
        ],
        boards=[
            {
                "key": f"board{n}",
                "source": "github",
                "client": "acme",
                "done_columns": ["Done"],
                "github": {"owner": "acme", "project_number": n + 1, "api_url": url},
            }
            for n, url in enumerate(urls)
        ],
        github={"token": TOKEN},
    )


# -- the measured child ---------------------------------------------------------------------


def vm_hwm_mb() -> float:
    """Peak RSS of this process image since exec (Linux VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def role_sync(urls: list[str], ledger: str, trace: bool, top: int) -> None:
    import tracemalloc

    if trace:
        tracemalloc.start(1)
    quiet_logs()
    from sync.boards import LazyBoardConnector, sync_all
    from sync.composition import build_services

    services = build_services(_settings(urls, ledger))
    baseline = maxrss_mb()
    baseline_hwm = vm_hwm_mb()
    snapshots: list[tuple[int, Any]] = []
    if trace:
        original = LazyBoardConnector.poll

        async def poll_and_snapshot(self: LazyBoardConnector, cursor: str | None) -> Any:
            result = await original(self, cursor)
            current, _ = tracemalloc.get_traced_memory()
            if not snapshots or current > snapshots[0][0]:
                snapshots[:] = [(current, tracemalloc.take_snapshot())]
            return result

        LazyBoardConnector.poll = poll_and_snapshot  # type: ignore[method-assign]

    async def run() -> dict[str, Any]:
        from sync.boards import close_connectors

        try:
            results = await sync_all(services)
        finally:
            await close_connectors(services.connectors)
        seen = sum(getattr(r, "seen", 0) for r in results.values())
        errors = [str(r) for r in results.values() if isinstance(r, Exception)]
        return {"seen": seen, "errors": errors}

    started = time.perf_counter()
    outcome = asyncio.run(run())
    seconds = time.perf_counter() - started
    services.close()
    report: dict[str, Any] = {
        "baseline_mb": baseline,
        "baseline_hwm_mb": baseline_hwm,
        "peak_mb_self": maxrss_mb(),
        "peak_hwm_mb": vm_hwm_mb(),
        "seconds": seconds,
        **outcome,
    }
    if trace:
        _, peak = tracemalloc.get_traced_memory()
        report["traced_peak_mb"] = peak / 1024 / 1024
        if snapshots:
            current, snap = snapshots[0]
            report["traced_at_poll_mb"] = current / 1024 / 1024
            lines = []
            for stat in snap.statistics("lineno")[:top]:
                frame = stat.traceback[0]
                where = "/".join(Path(frame.filename).parts[-2:])
                lines.append(
                    f"{stat.size / 1024 / 1024:8.1f} MiB {stat.count:9d} blocks  "
                    f"{where}:{frame.lineno}"
                )
            report["top_lines"] = lines
            grouped = []
            for stat in snap.statistics("filename")[:12]:
                where = "/".join(Path(stat.traceback[0].filename).parts[-3:])
                grouped.append(f"{stat.size / 1024 / 1024:8.1f} MiB  {where}")
            report["top_files"] = grouped
    print(json.dumps(report))


# -- the parent -----------------------------------------------------------------------------


def _projects(items: int, boards: int) -> list[Any]:
    from tests.fakes.github_server import FakeGitHubProject

    per_board = items // boards
    projects = []
    for n in range(boards):
        project = FakeGitHubProject(owner="acme", number=n + 1)
        for i in range(per_board):
            bucket = i % 10
            if bucket < 3:
                project.add_issue(
                    f"Task {i}",
                    status="Done",
                    hours=1 + i % 7,
                    labels=["backend"],
                    assignees=["dev1"],
                    iteration="Sprint 3",
                )
            elif bucket < 9:
                project.add_issue(
                    f"Task {i}",
                    status="In Progress",
                    hours=0.5 + i % 5,
                    assignees=["dev2"],
                    iteration="Sprint 4",
                )
            else:
                project.add_issue(f"Task {i}", status="Todo")
        projects.append(project)
    return projects


def role_github(items: int, boards: int) -> None:
    """Serve the fake projects until stdin closes; print their URLs as one JSON line."""
    from tests.fakes.github_server import serve_fake_github

    quiet_logs()
    projects = _projects(items, boards)
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(serve_fake_github(p)) for p in projects]
        print(json.dumps(urls), flush=True)
        sys.stdin.read()


def _run_child(
    urls: list[str], ledger: Path, trace: bool, top: int
) -> tuple[dict[str, Any], float]:
    argv = [
        sys.executable,
        __file__,
        "--role",
        "sync",
        "--urls",
        ",".join(urls),
        "--ledger",
        str(ledger),
        "--top",
        str(top),
        *(["--trace"] if trace else []),
    ]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
        err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"sync child failed ({proc.returncode}): {err[-3000:]}")
    return json.loads(text.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 items instead of 100,000")
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--boards", type=int, default=2)
    parser.add_argument("--trace", action="store_true", help="tracemalloc run as well")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--json", default=None)
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--urls", default="", help=argparse.SUPPRESS)
    parser.add_argument("--ledger", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "sync":
        role_sync(args.urls.split(","), args.ledger, args.trace, args.top)
        return

    if args.role == "github":
        role_github(args.items, args.boards)
        return

    items = args.items or (10_000 if args.quick else 100_000)
    print_machine()
    print(f"mode: {'quick' if args.quick else 'full'}; {items} items on {args.boards} boards")
    started = time.perf_counter()
    # The fakes live in their own process: on Linux a child's ru_maxrss includes the
    # image it was forked from, so the parent that forks the measured child stays small.
    github = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--role",
            "github",
            "--items",
            str(items),
            "--boards",
            str(args.boards),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    payload: dict[str, Any] = {"benchmark": "memory", "items": items}
    try:
        assert github.stdout is not None
        urls = json.loads(github.stdout.readline())
        print(
            f"(built and served the fake projects in {time.perf_counter() - started:.1f} s; "
            f"parent RSS {maxrss_mb():.0f} MiB)"
        )
        with tempfile.TemporaryDirectory(prefix="kanvoice-bench-") as tmp:
            report, peak = _run_child(urls, Path(tmp) / "ledger.db", False, args.top)
            payload["run"] = {**report, "peak_mb": peak}
            traced: dict[str, Any] | None = None
            if args.trace or peak >= LIMIT_MB:
                traced, _ = _run_child(urls, Path(tmp) / "traced.db", True, args.top)
                payload["trace"] = traced
    finally:
        if github.stdin:
            github.stdin.close()
        github.wait(timeout=30)
    # Snapshots are held one board at a time: the growth follows the largest board.
    per_k = (peak - report["baseline_hwm_mb"]) / (items / args.boards / 1000)
    rows = [
        Row(
            f"peak RSS, full sync of {report['seen']} items ({args.boards} boards)",
            f"{peak:.0f} MiB",
            f"< {LIMIT_MB:.0f} MiB",
            peak < LIMIT_MB,
        ),
        Row(
            "same process: VmHWM at exit (cross-check)",
            f"{report['peak_hwm_mb']:.0f} MiB",
        ),
        Row(
            "same process after imports and build_services",
            f"{report['baseline_hwm_mb']:.0f} MiB; sync adds {per_k:.2f} MiB per 1,000 items "
            "of the largest board (one board's snapshots are held at a time)",
        ),
        Row(
            "sync wall time",
            f"{report['seconds']:.1f} s ({report['seen'] / report['seconds']:,.0f} "
            f"items/s incl. the fake's paging); errors {report['errors'] or 'none'}",
        ),
    ]
    if traced is not None:
        rows.append(
            Row(
                "tracemalloc: traced peak / held right after the largest poll",
                f"{traced['traced_peak_mb']:.0f} MiB / "
                f"{traced.get('traced_at_poll_mb', float('nan')):.0f} MiB",
            )
        )
    print_table("memory: peak RSS of a full GitHub sync into SQLite", rows)
    if traced is not None:
        print("-- tracemalloc, by file, right after the largest poll returned")
        print("\n".join(traced.get("top_files", [])))
        print("-- tracemalloc, by line, right after the largest poll returned")
        print("\n".join(traced.get("top_lines", [])))
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
