"""Benchmark: what totals per currency, aging and overdue add to a dashboard read.

A ledger of N items over C clients in three currencies (60 % Done, so ready to bill,
with Done dates spread over 90 days; 25 % in progress; the rest Todo) on an SQLite
file. Measured, best of ``--repeat`` runs each, in one process:

- ``client_pipelines``: the per-client sums the dashboard always read (the same-run
  baseline);
- ``finance_view``: aging of every ready entry, totals per currency, overdue invoices
  (what issue 19 adds to each dashboard read and `kanvoice status`);
- ``pipeline_payload``: the whole dashboard payload (pipeline, boards, sprints,
  finance), what every live update computes once;
- ``compose_digest``: the digest's content.

    .venv/bin/python bench/finance.py [--quick] [--items N] [--clients C] [--repeat N]

Figures only (no limit): the lead compares them on a quiet machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from _common import Row, print_machine, print_table, quiet_logs, write_json

from mapping.domain import BoardItem, Source, StateCategory
from sync.composition import Services, build_services
from sync.finance import compose_digest, finance_view
from sync.pipeline import client_pipelines
from sync.settings import Settings
from sync.web.breakdown import pipeline_payload

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
CURRENCIES = ("EUR", "USD", "JPY")


def build(path: Path, items: int, clients: int) -> Services:
    settings = Settings(
        ledger={"url": f"sqlite:///{path}"},
        clients=[
            {
                "key": f"c{i:03d}",
                "stripe_customer_id": f"cus_bench{i:03d}",
                "currency": CURRENCIES[i % 3],
                "rate": "10000" if CURRENCIES[i % 3] == "JPY" else "100",
            }
            for i in range(clients)
        ],
        boards=[
            {"key": f"b{i:03d}", "source": "file", "client": f"c{i:03d}"} for i in range(clients)
        ],
    )
    services = build_services(settings, lambda: NOW)
    snaps = []
    for n in range(items):
        kind = n % 20
        column, category = (
            ("Done", StateCategory.DONE)
            if kind < 12
            else ("In progress", StateCategory.IN_PROGRESS)
            if kind < 17
            else ("Todo", StateCategory.PROPOSED)
        )
        at = NOW - timedelta(days=n % 90, hours=n % 24)
        snaps.append(
            BoardItem(
                source=Source.FILE,
                board=f"b{n % clients:03d}",
                item_id=f"I{n}",
                title=f"Item {n}",
                url=f"https://example.test/{n}",
                column=column,
                state_category=category,
                updated_at=at,
                revision=1,
                hours=Decimal(1 + n % 8),
                iteration=f"Sprint {n % 6}",
                done_at=at if category is StateCategory.DONE else None,
            )
        )
    services.engine.ingest(snaps)
    return services


def best_ms(work: Callable[[], Any], repeat: int) -> tuple[float, list[float]]:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        runs.append((time.perf_counter() - start) * 1000)
    return min(runs), runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2,000 items, 3 runs")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    if args.quick:
        args.items, args.repeat = 2_000, 3
    quiet_logs()
    print_machine()
    with tempfile.TemporaryDirectory() as tmp:
        services = build(Path(tmp) / "ledger.db", args.items, args.clients)
        clients = services.client_names()
        try:

            def pipelines() -> Any:
                with services.ledger.read(NOW) as uow:
                    return client_pipelines(uow, clients)

            def finance() -> Any:
                with services.ledger.read(NOW) as uow:
                    return finance_view(uow.conn, client_pipelines(uow, clients), NOW)

            def payload() -> Any:
                with services.ledger.read(NOW) as uow:
                    return pipeline_payload(uow, clients, NOW)

            def digest() -> Any:
                return compose_digest(services.ledger, services.settings, NOW)

            figures: dict[str, tuple[float, list[float]]] = {
                "client_pipelines (baseline)": best_ms(pipelines, args.repeat),
                "client_pipelines + finance_view": best_ms(finance, args.repeat),
                "pipeline_payload (dashboard read)": best_ms(payload, args.repeat),
                "compose_digest": best_ms(digest, args.repeat),
            }
            entries = sum(a.entries for a in finance().aging.values())
        finally:
            services.close()
    base = figures["client_pipelines (baseline)"][0]
    rows = [
        Row(
            f"{name}, ms (best of {args.repeat})",
            f"{best:.1f} ({best / base:.1f}x baseline); runs "
            + ", ".join(f"{r:.0f}" for r in runs),
        )
        for name, (best, runs) in figures.items()
    ]
    counts = f"{args.items} / {args.clients} / {entries}"
    rows.append(Row("items / clients / ready entries aged", counts))
    print_table(f"Finance views over {args.items:,} items", rows)
    write_json(args.json, {"figures": {k: v[1] for k, v in figures.items()}})


if __name__ == "__main__":
    main()
