"""The profitability view: `GET /profitability` (a page) and `GET /api/profitability`
(the same figures as JSON): revenue, cost, margin and effective hourly rate per
client, board, sprint and person, fixed-price milestones that made or lost money, and
the people without a rate. Read-only; behind the dashboard's authentication.

No `from __future__ import annotations` here: FastAPI must see the route functions'
annotations (which use a dependency defined inside the router) as objects.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from mapping.domain import Staff
from mapping.profitability import (
    Dimension,
    MilestoneResult,
    Profit,
    ProfitEntry,
    ProfitFilter,
    milestones,
    profit_json,
    profitability,
)
from mapping.rules import people_without_rate
from sync.ledger.reports import assignees_seen, profit_entries
from sync.ledger.store import Ledger
from sync.web.dashboard import _PAGE_HEADERS, _SECURITY_HEADERS, TEMPLATES, DashboardAuth


@dataclass(frozen=True)
class ProfitData:
    entries: list[ProfitEntry]
    seen: dict[str, set[str]]
    today: date


def ledger_profit_source(ledger: Ledger, clock: Callable[[], datetime]) -> Callable[[], ProfitData]:
    """Reads the ledger afresh on every call."""

    def read() -> ProfitData:
        now = clock()
        with ledger.read(now) as uow:
            return ProfitData(profit_entries(uow.conn), assignees_seen(uow.conn), now.date())

    return read


def _profit(p: Profit) -> dict[str, Any]:
    return {**profit_json(p), "made_money": p.made_money}


def _milestone(m: MilestoneResult) -> dict[str, Any]:
    return {"item": m.item_key, "title": m.title, "board": m.board, **_profit(m.profit)}


def profit_payload(data: ProfitData, staff: Staff, where: ProfitFilter) -> dict[str, Any]:
    """Everything the view shows, as plain JSON data (money as decimal strings)."""
    return {
        "filter": {
            "client": where.client,
            "board": where.board,
            "sprint": where.sprint,
            "from": where.start.isoformat() if where.start else None,
            "to": where.end.isoformat() if where.end else None,
        },
        "by": {
            d.value: [_profit(p) for p in profitability(data.entries, d, where)] for d in Dimension
        },
        "milestones": [_milestone(m) for m in milestones(data.entries, where)],
        "people_without_rate": [
            {"who": who, "why": why}
            for who, why in (people_without_rate(staff, data.seen, data.today) if staff else [])
        ],
    }


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise HTTPException(
            status_code=422, detail=f"{name}: expected a date such as 2026-11-30"
        ) from None


def profitability_router(
    read: Callable[[], ProfitData], staff: Staff, auth: DashboardAuth
) -> APIRouter:
    router = APIRouter()
    User = Annotated[str, Depends(auth.require_user())]
    Text = Annotated[str | None, Query(max_length=400)]

    def where(
        client: Text = None,
        board: Text = None,
        sprint: Text = None,
        start: Annotated[str | None, Query(alias="from", max_length=10)] = None,
        end: Annotated[str | None, Query(alias="to", max_length=10)] = None,
    ) -> ProfitFilter:
        return ProfitFilter(
            client or None, board or None, sprint or None, _day(start, "from"), _day(end, "to")
        )

    Where = Annotated[ProfitFilter, Depends(where)]

    async def payload(chosen: ProfitFilter) -> dict[str, Any]:
        data = await run_in_threadpool(read)
        return profit_payload(data, staff, chosen)

    @router.get("/api/profitability", name="profitability_api")
    async def api(identity: User, chosen: Where) -> Response:
        return JSONResponse(await payload(chosen), headers=_SECURITY_HEADERS)

    @router.get("/profitability", response_class=HTMLResponse, name="profitability_page")
    async def page(request: Request, identity: User, chosen: Where) -> Response:
        return TEMPLATES.TemplateResponse(
            request,
            "profitability.html",
            {
                "data": await payload(chosen),
                "user": identity,
                "dimensions": [d.value for d in Dimension],
                "css_url": request.url_for("dashboard_static", name="dashboard.css").path,
                "home_url": request.url_for("dashboard_page").path,
            },
            headers=_PAGE_HEADERS,
        )

    return router
