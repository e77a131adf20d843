"""Benchmark 1: board API requests per sync vs the minimum, against the local fakes.

GitHub Projects: a full and an incremental sync of an N-item project (default 10,000).
GitHub's GraphQL API has no "changed since" filter for project items, so both syncs
page through every item: the minimum is ⌈N/100⌉ item pages each.

Azure DevOps: a full sync (WIQL + ⌈N/200⌉ work item batches) and an incremental one
after `changed` items changed (WIQL + ⌈changed/200⌉ batches). Reported separately:
the per-sync calls that are not item reads (state definitions of each work item type,
read once per connector; the update history of each Done item whose revision the
connector has not seen, to learn when it reached Done).

    .venv/bin/python bench/api_calls.py [--quick] [--items N] [--changed M]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


async def bench_github(items: int, changed: int, workdir: Path) -> list[SyncFigures]:
    project = _github_project(items)
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
            minimum = math.ceil(items / 100)
            steps: list[tuple[str, Callable[[], None] | None]] = [
                ("full", None),
                (f"incremental ({changed} changed)", lambda: _change_github(project, changed)),
                ("incremental (nothing changed)", None),
            ]
            for name, prepare in steps:
                if prepare is not None:
                    prepare()
                before = dict(project.requests)
                started = time.perf_counter()
                report = await sync_board(services, "gh")
                seconds = time.perf_counter() - started
                kinds = {
                    k: project.requests[k] - before.get(k, 0)
                    for k in project.requests
                    if k != "total" and project.requests[k] - before.get(k, 0)
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


def _azure_org(items: int) -> FakeAzureDevOps:
    """N work items of three types: 30 % Closed (Done), 60 % Active, 10 % New."""
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
        if bucket < 3:
            project.set_state(item_id, "Closed")
        elif bucket < 9:
            project.set_state(item_id, "Active")
    return fake


def _change_azure(fake: FakeAzureDevOps, changed: int) -> None:
    """`changed` Active items change: more hours, and every third is closed."""
    project = fake.projects["fabrikam"]
    active = [i for i in fake.items.values() if i.fields["System.State"] == "Active"][:changed]
    for n, item in enumerate(active):
        hours = float(item.fields.get(project.hours_field, 0)) + 1
        if n % 3 == 0:
            project.set_state(item.id, "Closed", hours=hours)
        else:
            project.set_hours(item.id, hours)


async def bench_azure(items: int, changed: int, workdir: Path) -> list[SyncFigures]:
    fake = _azure_org(items)
    out: list[SyncFigures] = []
    with serve_fake_azure(fake) as url:
        services = _services(
            workdir / "azure.db",
            {
                "key": "ado",
                "source": "azure_devops",
                "client": "acme",
                "azure_devops": {"organization_url": url, "project": "Fabrikam"},
            },
            azure_devops={"pat": PAT},
        )
        try:
            steps: list[tuple[str, Callable[[], None] | None]] = [
                ("full", None),
                (f"incremental ({changed} changed)", lambda: _change_azure(fake, changed)),
                ("incremental (nothing changed)", None),
            ]
            for name, prepare in steps:
                if prepare is not None:
                    prepare()
                fake.reset_counts()
                started = time.perf_counter()
                report = await sync_board(services, "ado")
                seconds = time.perf_counter() - started
                kinds = dict(fake.request_counts)
                truly_changed = items if name == "full" else 0 if "nothing" in name else changed
                minimum = 1 + math.ceil(truly_changed / 200)
                out.append(
                    SyncFigures(
                        f"Azure DevOps {name}",
                        kinds,
                        report.requests_made,
                        minimum,
                        seconds,
                        report.seen,
                        report.items_new + report.items_updated,
                        {"truly_changed": truly_changed},
                    )
                )
        finally:
            await close_connectors(services.connectors)
            services.close()
    return out


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
        rows.append(
            Row(
                f"{f.name}: {label} / minimum",
                f"{item_reads} / {f.minimum} = {ratio:.2f}",
                "1.00",
                abs(ratio - 1.0) < 1e-9,
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
        print(f"(built fakes and synced in {time.perf_counter() - started:.1f} s)")
    figures = github + azure
    print_table("board API requests per sync (one event loop per board)", _rows(figures))
    write_json(args.json, {"benchmark": "api_calls", "figures": [f.__dict__ for f in figures]})


if __name__ == "__main__":
    main()
