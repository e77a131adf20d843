"""Benchmark 1: board API requests per sync vs the minimum, against the local fakes.

GitHub Projects (N items, default 10,000; the fake board then stays quiet for three
days): a full sync (minimum ⌈N/100⌉ item pages), an incremental one after k items
changed (``items(query: "-last-updated:1days")``: minimum ⌈k/100⌉, at least 1), one
with nothing changed (1), and the daily full reconcile (⌈N/100⌉).

Azure DevOps: a full sync (1 WIQL + ⌈N/200⌉ batches), an incremental one after k
changed (1 + ⌈k/200⌉), one with nothing changed in a new process (1: the type states
come from the ledger, the Done times from the batches), and a full sync of a board
larger than one WIQL answer (--large, default 25,000 items: ⌈L/19,999⌉ WIQL windows +
⌈L/200⌉ batches). "Other calls" are the ones that are not item reads (type states).

Azure DevOps, a board that bills on a board column (``done_columns``): the same steps;
when items entered the Done column comes from the reporting revisions stream, read from
the kept watermark in batches of 200 (minimum ⌈R/200⌉ for R new revisions), instead
of one ``updates`` call per Done item.

    .venv/bin/python bench/api_calls.py [--quick] [--items N] [--changed M] [--large L]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from _common import Row, print_machine, print_table, quiet_logs, write_json

from sync.boards import close_connectors, sync_board
from sync.composition import Services, build_services
from sync.settings import Settings
from tests.fakes.azure_server import FakeAzureDevOps, serve_fake_azure
from tests.fakes.github_server import FakeGitHubProject, serve_fake_github

CLIENT = {
    "key": "acme",
    "name": "Acme",
    "stripe_customer_id": "cus_AcmeBench01",
    "currency": "EUR",
    "rate": "100",
}
PAT = "bench-pat"


@dataclass
class SyncFigures:
    name: str
    requests_by_kind: dict[str, int]
    requests_total: int
    minimum: int
    seconds: float
    seen: int
    changed: int
    extra: dict[str, Any] = field(default_factory=dict)


def _services(ledger: Path, board: dict[str, Any], **creds: Any) -> Services:
    settings = Settings(
        ledger={"url": f"sqlite:///{ledger}"},
        clients=[CLIENT],
        boards=[board],
        **creds,
    )
    return build_services(settings)


# -- GitHub -----------------------------------------------------------------------------


def _github_project(items: int) -> FakeGitHubProject:
    """N issues: 30 % Done, 60 % in progress with hours, 10 % Todo without hours."""
    project = FakeGitHubProject(owner="acme", number=7)
    for n in range(items):
        bucket = n % 10
        if bucket < 3:
            project.add_issue(f"Task {n}", status="Done", hours=1 + n % 7, labels=["backend"])
        elif bucket < 9:
            project.add_issue(f"Task {n}", status="In Progress", hours=0.5 + n % 5)
        else:
            project.add_issue(f"Task {n}", status="Todo")
    return project


def _change_github(project: FakeGitHubProject, changed: int) -> None:
    """`changed` items change: in-progress ones get more hours, every third moves to Done."""
    movable = [i for i in project.items if i.status == "In Progress"][:changed]
    for n, item in enumerate(movable):
        project.set_hours(item.node_id, float(item.numbers.get("Hours", 0)) + 1)
        if n % 3 == 0:
            project.move(item.node_id, "Done")


def _force_reconcile(services: Services) -> None:
    """Make the stored GitHub cursor's last full listing two days old."""
    with services.ledger.unit_of_work(services.clock()) as uow:
        cursor = json.loads(uow.cursor("github", "gh") or "{}")
        cursor["full"] = float(cursor["full"]) - 2 * 86_400
        uow.set_cursor("github", "gh", json.dumps(cursor))


async def bench_github(items: int, changed: int, workdir: Path) -> list[SyncFigures]:
    project = _github_project(items)
    project.advance(timedelta(days=3))  # the board was quiet for three days
    out: list[SyncFigures] = []
    with serve_fake_github(project) as url:
        services = _services(
            workdir / "github.db",
            {
                "key": "gh",
                "source": "github",
                "client": "acme",
                "done_columns": ["Done"],
                "github": {"owner": "acme", "project_number": 7, "api_url": url},
            },
            github={"token": "ghp_benchbenchbenchbenchbench"},
        )
        try:
            full = math.ceil(items / 100)
            steps: list[tuple[str, Callable[[], None] | None, int]] = [
                ("full", None, full),
                (
                    f"incremental ({changed} changed)",
                    lambda: _change_github(project, changed),
                    max(1, math.ceil(changed / 100)),
                ),
                (
                    f"re-poll minutes later ({changed} updated today)",
                    None,
                    max(1, math.ceil(changed / 100)),
                ),
                (
                    "incremental (nothing changed for a day)",
                    lambda: project.advance(timedelta(days=1, minutes=1)),
                    1,
                ),
                ("daily full reconcile", lambda: _force_reconcile(services), full),
            ]
            for name, prepare, minimum in steps:
                if prepare is not None:
                    prepare()
                before = dict(project.requests)
                started = time.perf_counter()
                report = await sync_board(services, "gh")
                seconds = time.perf_counter() - started
                kinds = {
                    k: project.requests[k] - before.get(k, 0)
                    for k in project.requests
                    if k not in ("total", "items_page_filtered")
                    and project.requests[k] - before.get(k, 0)
                }
                out.append(
                    SyncFigures(
                        f"GitHub {name}",
                        kinds,
                        report.requests_made,
                        minimum,
                        seconds,
                        report.seen,
                        report.items_new + report.items_updated,
                    )
                )
        finally:
            await close_connectors(services.connectors)
            services.close()
    return out


# -- Azure DevOps -----------------------------------------------------------------------


DONE_COLUMN = "Shipped"


def _azure_org(items: int, columns: bool = False) -> FakeAzureDevOps:
    """N work items of three types: 30 % Closed (Done), 60 % Active, 10 % New.

    `columns`: the board bills on its "Shipped" column; the 30 % are moved there (and
    stay Active by state)."""
    fake = FakeAzureDevOps(pat=PAT, organization="fabrikam")
    project = fake.add_project("Fabrikam", "Agile")
    types = ("User Story", "Bug", "Task")
    for n in range(items):
        wit = types[n % 3]
        bucket = n % 10
        item_id = project.add_item(
            f"Work item {n}",
            work_item_type=wit,
            hours=None if bucket == 9 else 1 + n % 6,
            assigned_to="dev@fabrikam.example",
            tags=("backend",) if n % 4 == 0 else (),
        )
        if bucket < 3 and columns:
            project.change(item_id, {"System.State": "Active", "System.BoardColumn": DONE_COLUMN})
        elif bucket < 3:
            project.set_state(item_id, "Closed")
        elif bucket < 9:
            project.set_state(item_id, "Active")
    return fake


def _change_azure(fake: FakeAzureDevOps, changed: int, columns: bool = False) -> None:
    """`changed` Active items change: more hours, and every third is closed (or moved
    to the Done column)."""
    project = fake.projects["fabrikam"]
    active = [
        i
        for i in fake.items.values()
        if i.fields["System.State"] == "Active" and i.fields["System.BoardColumn"] != DONE_COLUMN
    ][:changed]
    for n, item in enumerate(active):
        hours = float(item.fields.get(project.hours_field, 0)) + 1
        if n % 3 == 0 and columns:
            project.change(
                item.id, {"System.BoardColumn": DONE_COLUMN, project.hours_field: hours}
            )
        elif n % 3 == 0:
            project.set_state(item.id, "Closed", hours=hours)
        else:
            project.set_hours(item.id, hours)


def _azure_board(url: str, columns: bool = False) -> dict[str, Any]:
    board: dict[str, Any] = {
        "key": "ado",
        "source": "azure_devops",
        "client": "acme",
        "azure_devops": {"organization_url": url, "project": "Fabrikam"},
    }
    if columns:
        board["done_columns"] = [DONE_COLUMN]
    return board


async def _azure_step(
    services: Services,
    fake: FakeAzureDevOps,
    name: str,
    minimum: int,
    truly: int,
    revisions_from: int | None = None,
) -> SyncFigures:
    """One sync; `revisions_from`: the revision log's length at the last stream read
    (column boards), to count the revisions there were to read."""
    fake.reset_counts()
    started = time.perf_counter()
    report = await sync_board(services, "ado")
    seconds = time.perf_counter() - started
    extra: dict[str, Any] = {"truly_changed": truly}
    if revisions_from is not None:
        extra["new_revisions"] = len(fake.revision_log) - revisions_from
    return SyncFigures(
        f"Azure DevOps {name}",
        dict(fake.request_counts),
        report.requests_made,
        minimum,
        seconds,
        report.seen,
        report.items_new + report.items_updated,
        extra,
    )


async def bench_azure(
    items: int, changed: int, workdir: Path, columns: bool = False
) -> list[SyncFigures]:
    fake = _azure_org(items, columns)
    out: list[SyncFigures] = []
    kind = "column board " if columns else ""
    mark: int | None = 0 if columns else None
    with serve_fake_azure(fake) as url:
        db = workdir / ("azure-columns.db" if columns else "azure.db")
        services = _services(db, _azure_board(url, columns), azure_devops={"pat": PAT})
        try:
            out.append(
                await _azure_step(
                    services, fake, f"{kind}full", 1 + math.ceil(items / 200), items, mark
                )
            )
            mark = len(fake.revision_log) if columns else None
            _change_azure(fake, changed, columns)
            out.append(
                await _azure_step(
                    services,
                    fake,
                    f"{kind}incremental ({changed} changed)",
                    1 + math.ceil(changed / 200),
                    changed,
                    mark,
                )
            )
            mark = len(fake.revision_log) if columns else None
            # Quiet for 10 minutes; one poll reads the overlap window's last changes.
            fake.advance(timedelta(minutes=10))
            await sync_board(services, "ado")
        finally:
            await close_connectors(services.connectors)
            services.close()
        # `sync --once` again: a new process, nothing cached but what the ledger keeps.
        services = _services(db, _azure_board(url, columns), azure_devops={"pat": PAT})
        try:
            out.append(
                await _azure_step(
                    services, fake, f"{kind}incremental (nothing changed, new run)", 1, 0, mark
                )
            )
        finally:
            await close_connectors(services.connectors)
            services.close()
    return out


async def bench_azure_large(items: int, workdir: Path) -> list[SyncFigures]:
    fake = _azure_org(items)
    with serve_fake_azure(fake) as url:
        services = _services(workdir / "large.db", _azure_board(url), azure_devops={"pat": PAT})
        try:
            minimum = math.ceil(items / 19_999) + math.ceil(items / 200)
            figures = await _azure_step(
                services, fake, f"full, {items:,} items (> 20,000 WIQL cap)", minimum, items
            )
        finally:
            await close_connectors(services.connectors)
            services.close()
    return [figures]


# -- report -----------------------------------------------------------------------------


def _rows(figures: list[SyncFigures]) -> list[Row]:
    rows: list[Row] = []
    for f in figures:
        if f.name.startswith("GitHub"):
            item_reads = f.requests_by_kind.get("items_page", 0)
            fixed = f.requests_total - item_reads
            label = "item pages"
        else:
            item_reads = f.requests_by_kind.get("wiql", 0) + f.requests_by_kind.get("batch", 0)
            fixed = f.requests_total - item_reads
            label = "WIQL + batches"
        ratio = item_reads / f.minimum if f.minimum else float("inf")
        # Each WIQL window after the first re-reads its boundary item: up to one more
        # batch per extra window, a constant for a given board size.
        slack = max(f.requests_by_kind.get("wiql", 1) - 1, 0)
        rows.append(
            Row(
                f"{f.name}: {label} / minimum",
                f"{item_reads} / {f.minimum} = {ratio:.2f}",
                "1.00" if not slack else f"min + {slack}",
                item_reads <= f.minimum + slack,
            )
        )
        new_revisions = f.extra.get("new_revisions")
        if new_revisions is not None:
            batches = f.requests_by_kind.get("revisions", 0)
            least = math.ceil(new_revisions / 200)
            rows.append(
                Row(
                    f"{f.name}: revision batches / minimum ⌈{new_revisions} revisions/200⌉",
                    f"{batches} / {least}; updates calls {f.requests_by_kind.get('updates', 0)}",
                    "min + 1",
                    batches <= least + 1 and not f.requests_by_kind.get("updates", 0),
                )
            )
        detail = ", ".join(f"{k} {v}" for k, v in sorted(f.requests_by_kind.items()))
        truly = f.extra.get("truly_changed")
        read = f"{f.seen} items read" + (f" ({truly} changed)" if truly is not None else "")
        rows.append(
            Row(
                f"{f.name}: other calls (not item reads)",
                f"{fixed} [{detail}]; {read}, {f.changed} recorded, {f.seconds:.1f} s",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 items instead of 10,000")
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--changed", type=int, default=None)
    parser.add_argument("--large", type=int, default=None, help="the big Azure board's size")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    items = args.items or (2_000 if args.quick else 10_000)
    changed = args.changed or max(1, items // 20)
    quiet_logs()
    print_machine()
    print(f"mode: {'quick' if args.quick else 'full'}; {items} items; {changed} changed")
    with tempfile.TemporaryDirectory(prefix="kanvoice-bench-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        github = asyncio.run(bench_github(items, changed, work))
        azure = asyncio.run(bench_azure(items, changed, work))
        azure += asyncio.run(bench_azure(items, changed, work, columns=True))
        large = args.large or (5_000 if args.quick else 25_000)
        azure += asyncio.run(bench_azure_large(large, work))
        print(f"(built fakes and synced in {time.perf_counter() - started:.1f} s)")
    figures = github + azure
    print_table("board API requests per sync (one event loop per board)", _rows(figures))
    write_json(args.json, {"benchmark": "api_calls", "figures": [f.__dict__ for f in figures]})


if __name__ == "__main__":
    main()
