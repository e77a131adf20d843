"""The dashboard's numbers: the per-client pipeline plus per-board and per-sprint splits.

The stage rules (voided entries skipped, a milestone's hours kept apart as
`fixed_price_hours`, amounts quantized to the currency) live in `sync.pipeline`; this
module only groups the ledger's entries finer (by the item's board and iteration) and
runs every group through `client_pipelines`, so the splits add up to the client totals
by construction.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from mapping.domain import EntryState
from mapping.money import currency_exponent
from sync.finance import aging_json, finance_json, finance_view
from sync.ledger.records import BreakdownRow
from sync.ledger.reports import breakdown_rows
from sync.ledger.store import Ledger, UnitOfWork
from sync.pipeline import STAGES, client_pipelines, pipelines_from_rows

NO_SPRINT = "(no sprint)"

STAGE_LABELS: dict[str, str] = {
    EntryState.IN_PROGRESS.value: "In progress",
    EntryState.READY.value: "Ready to bill",
    EntryState.DRAFTED.value: "Drafted",
    EntryState.APPROVED.value: "Approved",
    EntryState.INVOICED.value: "Invoiced",
    EntryState.PAID.value: "Paid",
    EntryState.NEEDS_REVIEW.value: "Needs review",
    EntryState.NON_BILLABLE.value: "Non-billable (cost)",
}


def _natural_key(text: str) -> tuple[bool, tuple[tuple[int, int, str], ...]]:
    """'Sprint 2' before 'Sprint 10'; the no-sprint group last."""
    parts = re.split(r"(\d+)", text.casefold())
    return (
        text == NO_SPRINT,
        tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts),
    )


def _group_figures(
    rows: list[BreakdownRow], client: str, name: str, currency: str
) -> dict[str, Any]:
    """The stages of one group of rows, computed by the same code as the client totals."""
    (pipeline,) = pipelines_from_rows(rows, {client: (name, currency)})
    figures = pipeline.as_dict()
    return {
        "stages": figures["stages"],
        "unbilled_gap": figures["unbilled_gap"],
        "fixed_price_hours": figures["fixed_price_hours"],
    }


def pipeline_payload(
    uow: UnitOfWork, clients: dict[str, tuple[str, str]], now: datetime, zone: str = "UTC"
) -> dict[str, Any]:
    """Everything the dashboard shows, as JSON-ready data.

    `{"generated_at": ISO time, "stage_order": [{"state", "label"}, ...],
    "clients": [ClientPipeline.as_dict() + "decimals", "boards": [{"board", "stages",
    ...}], "sprints": [{"iteration", "stages", ...}], "aging": {...}], "totals": [per
    currency], "aging_buckets": [...], "overdue": [...]}` (see `sync.finance`). Hours
    and amounts are strings (amounts quantized to the currency's decimals), exactly as
    `kanvoice status --json`.
    """
    pipelines = client_pipelines(uow, clients)
    finance = finance_view(uow.conn, pipelines, now, zone)
    rows = breakdown_rows(uow.conn)
    by_board: dict[tuple[str, str], list[BreakdownRow]] = {}
    by_sprint: dict[tuple[str, str], list[BreakdownRow]] = {}
    for row in rows:
        by_board.setdefault((row.client, row.board), []).append(row)
        sprint = row.iteration or NO_SPRINT
        by_sprint.setdefault((row.client, sprint), []).append(row)

    result: list[dict[str, Any]] = []
    for pipeline in pipelines:
        data = pipeline.as_dict()
        key, name, currency = pipeline.client, pipeline.name, pipeline.currency
        data["decimals"] = currency_exponent(currency)
        data["aging"] = aging_json(finance.aging_of(pipeline))
        data["boards"] = [
            {"board": board, **_group_figures(group, key, name, currency)}
            for (client, board), group in sorted(by_board.items())
            if client == key
        ]
        data["sprints"] = [
            {"iteration": sprint, **_group_figures(group, key, name, currency)}
            for (client, sprint), group in sorted(
                by_sprint.items(), key=lambda kv: _natural_key(kv[0][1])
            )
            if client == key
        ]
        result.append(data)
    return {
        "generated_at": now.isoformat(),
        "stage_order": [
            {"state": state.value, "label": STAGE_LABELS[state.value]} for state in STAGES
        ],
        "clients": result,
        **finance_json(finance),
    }


def ledger_payload_source(
    ledger: Ledger,
    clients: dict[str, tuple[str, str]],
    clock: Callable[[], datetime],
    zone: str = "UTC",
) -> Callable[[], dict[str, Any]]:
    """A `get_payload` for `dashboard_router`: reads the ledger afresh on every call
    (ready work's age counted in days of the finance time zone `zone`)."""

    def get_payload() -> dict[str, Any]:
        now = clock()
        with ledger.read(now) as uow:
            return pipeline_payload(uow, clients, now, zone)

    return get_payload
