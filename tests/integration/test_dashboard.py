"""The dashboard router over a real ledger: figures, breakdowns, auth, actions and SSE."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from mapping.domain import BoardItem, BoardPolicy
from sync.engine import Engine
from sync.ledger import schema as t
from sync.ledger.store import Ledger
from sync.pipeline import client_pipelines
from sync.web.breakdown import NO_SPRINT, ledger_payload_source, pipeline_payload
from sync.web.dashboard import (
    COOKIE_NAME,
    CSRF_HEADER,
    DashboardAuth,
    dashboard_router,
    format_money,
    is_loopback,
)
from sync.web.events import ChangeBroker, Tick
from tests.builders import client, policy, snap
from tests.conftest import FixedClock
from tests.net import serve_app as serve

CLIENTS = {"acme": ("Acme", "EUR"), "kaiju": ("Kaiju K.K.", "JPY")}
LOCAL = "http://127.0.0.1"
CSRF = {CSRF_HEADER: "1"}


# --- a ledger with a known story ------------------------------------------------------


def policies() -> dict[str, BoardPolicy]:
    web = policy()
    api = dataclasses.replace(web, key="api")
    kaiju = dataclasses.replace(client(currency="JPY", rate="15000"), key="kaiju", name="Kaiju")
    app = dataclasses.replace(web, key="app", client=kaiju)
    return {"web": web, "api": api, "app": app}


def sprint(item: BoardItem, name: str | None) -> BoardItem:
    return dataclasses.replace(item, iteration=name)


def story() -> list[BoardItem]:
    """acme (EUR 100/h) on boards web and api, kaiju (JPY 15000/h) on board app."""
    return [
        sprint(snap("Done", "3", 1, item_id="1"), "Sprint 1"),
        sprint(snap("In progress", "2", 1, item_id="2"), "Sprint 2"),
        sprint(snap("Done", "4", 1, item_id="4", labels=("internal",)), "Sprint 1"),
        sprint(
            snap("Done", "10", 1, item_id="5", labels=("fixed-price",), milestone="1000"),
            "Sprint 2",
        ),
        snap("Done", "1.5", 1, item_id="3", board="api"),
        snap("Done", "2", 1, item_id="6", board="api"),
        snap("Done", "1", 1, item_id="7", board="api"),
        sprint(snap("Done", "1.25", 1, item_id="K1", board="app"), "Sprint 10"),
    ]


def set_state(ledger: Ledger, clock: FixedClock, external_id: str, state: str) -> None:
    """Move an item's entries on as the invoicing code would (drafted, voided, ...)."""
    items = select(t.items.c.id).where(t.items.c.external_id == external_id)
    with ledger.unit_of_work(clock()) as uow:
        uow.conn.execute(
            update(t.entries).where(t.entries.c.item_id.in_(items)).values(state=state)
        )


def make_ledger(url: str, clock: FixedClock) -> tuple[Ledger, Engine]:
    ledger = Ledger(url)
    ledger.upgrade()
    engine = Engine(ledger, policies(), clock)
    engine.ingest(story())
    set_state(ledger, clock, "6", "drafted")
    set_state(ledger, clock, "7", "voided")
    return ledger, engine


@pytest.fixture
def ledger(sqlite_url: str, clock: FixedClock) -> Iterator[tuple[Ledger, Engine]]:
    pair = make_ledger(sqlite_url, clock)
    yield pair
    pair[0].dispose()


def figures(stages: dict[str, Any], state: str) -> tuple[str, str, int]:
    f = stages[state]
    return f["hours"], f["amount"], f["entries"]


def by_key(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in rows}


# --- fake actions ------------------------------------------------------------------------


class FakeActions:
    """Records calls; `fail` maps a method name to the exception it raises."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail: dict[str, Exception] = {}
        self.drafts: dict[str, list[dict[str, Any]]] = {}

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail:
            raise self.fail[name]

    def draft_all(self) -> dict[str, Any]:
        self.calls.append(("draft_all",))
        self._maybe_fail("draft_all")
        return {"drafted": [], "unchanged": [], "skipped": [], "failed": [], "clients": []}

    def create_draft(self, client: str) -> dict[str, Any]:
        self.calls.append(("create_draft", client))
        self._maybe_fail("create_draft")
        draft = {
            "id": "in_1",
            "client": client,
            "period": "2026-11",
            "total": "1450.00",
            "currency": "EUR",
            "state": "draft",
            "version": 1,
        }
        self.drafts.setdefault(client, []).append(draft)
        return draft

    def approve(self, invoice_id: str, approver: str, force: bool = False) -> dict[str, Any]:
        self.calls.append(("approve", invoice_id, approver, *(["force"] if force else [])))
        self._maybe_fail("approve")
        return {"id": invoice_id, "state": "approved"}

    def reject(self, invoice_id: str, approver: str, reason: str) -> dict[str, Any]:
        self.calls.append(("reject", invoice_id, approver, reason))
        self._maybe_fail("reject")
        return {"id": invoice_id, "state": "rejected"}

    def list_drafts(self, client: str) -> list[dict[str, Any]]:
        return list(self.drafts.get(client, []))


def make_app(
    ledger: Ledger, clock: FixedClock, auth: DashboardAuth, broker: ChangeBroker | None = None
) -> tuple[FastAPI, FakeActions, ChangeBroker]:
    actions = FakeActions()
    broker = broker or ChangeBroker()
    app = FastAPI()
    app.include_router(
        dashboard_router(ledger_payload_source(ledger, CLIENTS, clock), broker, actions, auth)
    )
    return app, actions, broker


def asgi_client(app: FastAPI, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LOCAL, **kwargs)


# --- the figures ---------------------------------------------------------------------------


def test_payload_figures_and_breakdowns(ledger_url: str, clock: FixedClock) -> None:
    ledger, _ = make_ledger(ledger_url, clock)
    try:
        with ledger.unit_of_work(clock()) as uow:
            payload = pipeline_payload(uow, CLIENTS, clock())
            reference = {p.client: p.as_dict() for p in client_pipelines(uow, CLIENTS)}
    finally:
        ledger.dispose()

    assert payload["generated_at"] == clock().isoformat()
    assert [s["state"] for s in payload["stage_order"]][:3] == ["in_progress", "ready", "drafted"]
    clients = by_key(payload["clients"], "client")
    assert list(clients) == ["acme", "kaiju"]

    acme = clients["acme"]
    # The client figures are exactly what `kanvoice status --json` shows.
    for key in ("stages", "unbilled_gap", "fixed_price_hours", "currency", "name"):
        assert acme[key] == reference["acme"][key]
    assert figures(acme["stages"], "in_progress") == ("2", "200.00", 1)
    # Ready: 3 h + 1.5 h of time, plus the 1000.00 milestone (its 10 h kept apart).
    assert figures(acme["stages"], "ready") == ("4.5", "1450.00", 3)
    assert figures(acme["stages"], "drafted") == ("2", "200.00", 1)
    assert figures(acme["stages"], "non_billable") == ("4", "0.00", 1)
    assert figures(acme["stages"], "invoiced") == ("0", "0.00", 0)
    assert acme["fixed_price_hours"] == "10"
    assert acme["unbilled_gap"] == "1650.00"  # voided item 7 counts nowhere
    assert acme["decimals"] == 2

    boards = by_key(acme["boards"], "board")
    assert list(boards) == ["api", "web"]
    assert figures(boards["web"]["stages"], "ready") == ("3", "1300.00", 2)
    assert figures(boards["web"]["stages"], "in_progress") == ("2", "200.00", 1)
    assert figures(boards["web"]["stages"], "non_billable") == ("4", "0.00", 1)
    assert boards["web"]["fixed_price_hours"] == "10"
    assert figures(boards["api"]["stages"], "ready") == ("1.5", "150.00", 1)
    assert figures(boards["api"]["stages"], "drafted") == ("2", "200.00", 1)
    assert boards["api"]["unbilled_gap"] == "350.00"

    sprints = by_key(acme["sprints"], "iteration")
    assert list(sprints) == ["Sprint 1", "Sprint 2", NO_SPRINT]
    assert figures(sprints["Sprint 1"]["stages"], "ready") == ("3", "300.00", 1)
    assert figures(sprints["Sprint 1"]["stages"], "non_billable") == ("4", "0.00", 1)
    assert figures(sprints["Sprint 2"]["stages"], "ready") == ("0", "1000.00", 1)
    assert sprints["Sprint 2"]["fixed_price_hours"] == "10"
    assert figures(sprints[NO_SPRINT]["stages"], "drafted") == ("2", "200.00", 1)

    # The splits add up to the client's totals, stage by stage.
    for split in ("boards", "sprints"):
        for state, total in acme["stages"].items():
            rows = acme[split]
            assert sum(Decimal(r["stages"][state]["amount"]) for r in rows) == Decimal(
                total["amount"]
            )
            assert sum(Decimal(r["stages"][state]["hours"]) for r in rows) == Decimal(
                total["hours"]
            )

    kaiju = clients["kaiju"]
    assert figures(kaiju["stages"], "ready") == ("1.25", "18750", 1)
    assert kaiju["unbilled_gap"] == "18750"
    assert kaiju["decimals"] == 0
    assert [s["iteration"] for s in kaiju["sprints"]] == ["Sprint 10"]


async def test_api_pipeline_and_page_show_the_same_figures(
    ledger: tuple[Ledger, Engine], clock: FixedClock
) -> None:
    app, actions, _ = make_app(ledger[0], clock, DashboardAuth(required=False))
    actions.create_draft("acme")
    async with asgi_client(app) as http:
        api = await http.get("/api/pipeline")
        page = await http.get("/")
    assert api.status_code == 200
    assert api.headers["content-type"].startswith("application/json")
    acme = by_key(api.json()["clients"], "client")["acme"]
    assert acme["stages"]["ready"]["amount"] == "1450.00"
    assert acme["drafts"][0]["id"] == "in_1"

    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    html = page.text

    def cell(testid: str) -> str:
        match = re.search(rf'data-testid="{re.escape(testid)}">([^<]*)<', html)
        assert match, testid
        return match.group(1).strip()

    assert cell("cell-acme-ready-amount") == "1,450.00 EUR"
    assert cell("cell-acme-ready-hours") == "4.5 h"
    assert cell("cell-acme-non_billable-amount") == "cost"
    assert cell("gap-acme") == "1,650.00 EUR"
    assert cell("gap-kaiju") == "18,750 JPY"
    assert cell("board-acme-web-ready-amount") == "1,300.00 EUR"
    assert cell("iteration-acme-Sprint 2-ready-amount") == "1,000.00 EUR"
    assert cell("draft-state-in_1") == "draft"
    assert 'data-testid="create-draft-acme"' in html
    assert 'data-testid="approve-in_1"' in html
    # The first paint carries the payload for the script, safely embedded.
    embedded = re.search(r'id="initial-payload">(.*?)</script>', html, re.S)
    assert embedded and json.loads(embedded.group(1))["clients"][0]["client"] == "acme"


async def test_static_assets_are_served(ledger: tuple[Ledger, Engine], clock: FixedClock) -> None:
    app, _, _ = make_app(ledger[0], clock, DashboardAuth(token="s3cret"))
    async with asgi_client(app) as http:
        js = await http.get("/static/dashboard/dashboard.js")
        css = await http.get("/static/dashboard/dashboard.css")
        other = await http.get("/static/dashboard/..%2F..%2Fdashboard.py")
    assert js.status_code == 200 and "EventSource" in js.text
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert other.status_code == 404


def test_money_format_keeps_the_currency_decimals() -> None:
    assert format_money("4000.00", "EUR") == "4,000.00 EUR"
    assert format_money("18750", "JPY") == "18,750 JPY"
    assert format_money("-1234.567", "KWD") == "-1,234.567 KWD"
    assert format_money("0.00", "USD") == "0.00 USD"


# --- auth --------------------------------------------------------------------------------


async def test_token_auth(ledger: tuple[Ledger, Engine], clock: FixedClock) -> None:
    app, _, _ = make_app(ledger[0], clock, DashboardAuth(token="s3cret-token"))
    async with asgi_client(app) as http:
        missing = await http.get("/api/pipeline")
        wrong = await http.get("/api/pipeline", headers={"Authorization": "Bearer nope"})
        right = await http.get("/api/pipeline", headers={"Authorization": "Bearer s3cret-token"})
        page_without = await http.get("/")
        events_without = await http.get("/api/events")
        # The browser: ?token= once sets a cookie and redirects to the clean URL.
        login = await http.get("/?token=s3cret-token&x=1")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert page_without.status_code == 401
    assert events_without.status_code == 401
    assert login.status_code == 303
    assert login.headers["location"] == "/?x=1"
    set_cookie = login.headers["set-cookie"]
    assert COOKIE_NAME in set_cookie and "HttpOnly" in set_cookie
    assert "samesite=strict" in set_cookie.lower()
    assert "s3cret-token" not in set_cookie
    cookie = set_cookie.split(";")[0].split("=", 1)[1]
    async with asgi_client(app, cookies={COOKIE_NAME: cookie}) as browser:
        assert (await browser.get("/api/pipeline")).status_code == 200
        assert (await browser.get("/")).status_code == 200
    async with asgi_client(app, cookies={COOKIE_NAME: "forged"}) as forged:
        assert (await forged.get("/api/pipeline")).status_code == 401


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def test_basic_auth_and_approver_identity(
    ledger: tuple[Ledger, Engine], clock: FixedClock
) -> None:
    auth = DashboardAuth(username="finance", password="correct horse")
    app, actions, _ = make_app(ledger[0], clock, auth)
    async with asgi_client(app) as http:
        right = await http.get("/api/pipeline", headers=basic("finance", "correct horse"))
        wrong = await http.get("/api/pipeline", headers=basic("finance", "battery"))
        other = await http.get("/api/pipeline", headers=basic("mallory", "correct horse"))
        garbage = await http.get("/api/pipeline", headers={"Authorization": "Basic %%%"})
        approve = await http.post(
            "/api/invoices/in_9/approve", headers={**basic("finance", "correct horse"), **CSRF}
        )
    assert right.status_code == 200
    for response in (wrong, other, garbage):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith('Basic realm="kanvoice"')
    assert approve.status_code == 200
    assert actions.calls == [("approve", "in_9", "finance")]


async def test_required_auth_without_credentials_refuses_everyone(
    ledger: tuple[Ledger, Engine], clock: FixedClock
) -> None:
    auth = DashboardAuth(required=True)
    assert auth.problem() is not None
    app, _, _ = make_app(ledger[0], clock, auth)
    async with asgi_client(app) as http:
        assert (await http.get("/api/pipeline")).status_code == 401
        assert (await http.get("/api/pipeline?token=")).status_code == 401


async def test_no_auth_on_loopback_only_answers_loopback_host_names(
    ledger: tuple[Ledger, Engine], clock: FixedClock
) -> None:
    app, _, _ = make_app(ledger[0], clock, DashboardAuth(required=False))
    async with asgi_client(app) as http:
        assert (await http.get("/api/pipeline")).status_code == 200
        localhost = await http.get("http://localhost:8765/api/pipeline")
        rebound = await http.get("http://attacker.example/api/pipeline")
    assert localhost.status_code == 200
    assert rebound.status_code == 403


def test_for_bind_decides_from_the_address() -> None:
    assert DashboardAuth.for_bind("127.0.0.1").required is False
    assert DashboardAuth.for_bind("::1").required is False
    assert DashboardAuth.for_bind("localhost").required is False
    assert DashboardAuth.for_bind("0.0.0.0").required is True
    assert DashboardAuth.for_bind("0.0.0.0", token="x").configured
    assert is_loopback("[::1]") and not is_loopback("10.0.0.1")
    assert "s3cret" not in repr(DashboardAuth(token="s3cret", password="s3cret"))


# --- actions -----------------------------------------------------------------------------


async def test_actions_call_through_and_map_errors(
    ledger: tuple[Ledger, Engine], clock: FixedClock
) -> None:
    app, actions, broker = make_app(ledger[0], clock, DashboardAuth(required=False))
    async with asgi_client(app, headers=CSRF) as http:
        created = await http.post("/api/clients/acme/draft")
        assert created.status_code == 200 and created.json()["id"] == "in_1"
        assert broker.version == 1  # every dashboard refreshes after an action
        approved = await http.post("/api/invoices/in_1/approve")
        assert approved.json() == {"id": "in_1", "state": "approved"}
        rejected = await http.post("/api/invoices/in_1/reject", json={"reason": " wrong rate "})
        assert rejected.status_code == 200

        actions.fail["approve"] = PermissionError("alice is not an approver")
        denied = await http.post("/api/invoices/in_1/approve")
        actions.fail["approve"] = LookupError("no invoice in_404")
        unknown = await http.post("/api/invoices/in_404/approve")
        actions.fail["reject"] = ValueError("invoice in_1 is already finalized")
        conflict = await http.post("/api/invoices/in_1/reject", json={"reason": "late"})
        # A reason is required, as on the CLI and in the Slack modal.
        no_reason = await http.post("/api/invoices/in_1/reject", json={"reason": "  "})
        assert no_reason.status_code == 422
        assert no_reason.json()["detail"] == "a reason is required to reject a draft"
        assert (await http.post("/api/invoices/in_1/reject")).status_code == 422
    async with asgi_client(app) as bare:
        forged = await bare.post("/api/clients/acme/draft")

    assert actions.calls[:3] == [
        ("create_draft", "acme"),
        ("approve", "in_1", "dashboard"),
        ("reject", "in_1", "dashboard", "wrong rate"),
    ]
    assert denied.status_code == 403 and denied.json()["detail"] == "alice is not an approver"
    assert unknown.status_code == 404 and unknown.json()["detail"] == "no invoice in_404"
    assert conflict.status_code == 409
    assert conflict.json()["detail"] == "invoice in_1 is already finalized"
    assert forged.status_code == 403
    assert ("create_draft", "acme") in actions.calls
    assert len([c for c in actions.calls if c[0] == "create_draft"]) == 1


# --- the broker --------------------------------------------------------------------------


async def test_broker_fans_out_coalesces_and_closes() -> None:
    broker = ChangeBroker(heartbeat_seconds=0.2)
    async with broker.subscribe() as one, broker.subscribe() as two:
        assert broker.subscriber_count == 2
        # A burst from another thread: each subscriber wakes once, promptly.
        started = time.monotonic()

        def burst_of_notifications() -> None:
            for _ in range(1000):
                broker.notify()

        burst = threading.Thread(target=burst_of_notifications)
        burst.start()
        burst.join()
        async with asyncio.timeout(1):
            assert await anext(one) is Tick.CHANGE
            assert await anext(two) is Tick.CHANGE
        assert time.monotonic() - started < 1
        # Coalesced: nothing else is pending, so the next tick is a heartbeat.
        async with asyncio.timeout(1):
            assert await anext(one) is Tick.HEARTBEAT
        broker.close()
        async with asyncio.timeout(1):
            assert [tick async for tick in two] == []
        broker.notify()  # ignored after close
    assert broker.subscriber_count == 0
    async with broker.subscribe() as late:
        assert [tick async for tick in late] == []


async def test_broker_forgets_subscribers_that_leave() -> None:
    broker = ChangeBroker()
    async with broker.subscribe():
        assert broker.subscriber_count == 1
    assert broker.subscriber_count == 0
    broker.notify()
    assert broker.version == 1


# --- server-sent events over a real server ---------------------------------------------


async def next_event(lines: Any) -> tuple[str, dict[str, Any]]:
    """The next `event:`/`data:` pair, skipping comments and `retry:`."""
    name = ""
    async for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            return name, json.loads(line.removeprefix("data: "))
    raise AssertionError("the stream ended")


async def test_events_stream_a_change_after_notify(
    ledger: tuple[Ledger, Engine], clock: FixedClock
) -> None:
    the_ledger, engine = ledger
    broker = ChangeBroker(heartbeat_seconds=0.3)
    engine.on_change(broker.notify)  # as `kanvoice run` wires it
    app, _, _ = make_app(the_ledger, clock, DashboardAuth(token="tok"), broker)
    with serve(app) as base:
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            headers = {"Authorization": "Bearer tok"}
            async with http.stream("GET", "/api/events", headers=headers) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                lines = response.aiter_lines()
                async with asyncio.timeout(3):
                    name, first = await next_event(lines)
                assert name == "pipeline"
                acme = by_key(first["clients"], "client")["acme"]
                assert acme["stages"]["ready"]["amount"] == "1450.00"

                # Item 2 reaches Done with 2.5 h: ingesting notifies through on_change.
                await asyncio.to_thread(
                    engine.ingest, [sprint(snap("Done", "2.5", 2, item_id="2"), "Sprint 2")]
                )
                started = time.monotonic()
                async with asyncio.timeout(1):
                    name, second = await next_event(lines)
                assert time.monotonic() - started < 1
                acme = by_key(second["clients"], "client")["acme"]
                assert acme["stages"]["ready"]["amount"] == "1700.00"
                assert acme["stages"]["in_progress"]["entries"] == 0

                # Heartbeats keep the connection open while nothing changes.
                async with asyncio.timeout(2):
                    async for line in lines:
                        if line.startswith(": heartbeat"):
                            break

                # Closing the broker ends the stream (what shutdown does).
                broker.close()
                async with asyncio.timeout(3):
                    rest = [line async for line in lines]
                assert not any(line.startswith("event:") for line in rest)
    assert broker.subscriber_count == 0


async def test_streams_share_one_ledger_read_per_change(
    ledger: tuple[Ledger, Engine], clock: FixedClock
) -> None:
    reads: list[int] = []
    source = ledger_payload_source(ledger[0], CLIENTS, clock)

    def counting_payload() -> dict[str, Any]:
        reads.append(1)
        return source()

    broker = ChangeBroker()
    app = FastAPI()
    app.include_router(
        dashboard_router(counting_payload, broker, FakeActions(), DashboardAuth(required=False))
    )
    with serve(app) as base:
        async with (
            httpx.AsyncClient(base_url=base, timeout=5) as http,
            http.stream("GET", "/api/events") as one,
            http.stream("GET", "/api/events") as two,
        ):
            first, second = one.aiter_lines(), two.aiter_lines()
            async with asyncio.timeout(3):
                await next_event(first)
                await next_event(second)
            assert len(reads) == 1
            broker.notify()
            async with asyncio.timeout(2):
                await next_event(first)
                await next_event(second)
            assert len(reads) == 2
            broker.close()


async def test_approve_under_the_minimum_charge_is_refused_then_forced(
    ledger: tuple[Ledger, Engine], clock: FixedClock
) -> None:
    app, actions, _ = make_app(ledger[0], clock, DashboardAuth(required=False))
    async with asgi_client(app, headers=CSRF) as http:
        actions.fail["approve"] = ValueError(
            "invoice in_1 not approved: total 0.25 USD is below Stripe's minimum charge of 0.50 USD"
        )
        held = await http.post("/api/invoices/in_1/approve", json={})
        assert held.status_code == 409 and "minimum charge" in held.json()["detail"]
        del actions.fail["approve"]
        forced = await http.post("/api/invoices/in_1/approve", json={"force": True})
        assert forced.status_code == 200
    assert actions.calls == [
        ("approve", "in_1", "dashboard"),
        ("approve", "in_1", "dashboard", "force"),
    ]


# --- board API quota ---------------------------------------------------------------------


async def test_board_quota_is_on_the_page_and_follows_the_polls_live(
    ledger: tuple[Ledger, Engine], clock: FixedClock
) -> None:
    """GitHub's GraphQL points and Azure's TSTU headers, as the connectors last saw
    them, per board with the calls of the last hour; a poll that changes them reaches
    an open page by the next heartbeat, without any ledger change."""
    from datetime import UTC, datetime

    from connectors.azure_devops.config import AzureBoardConfig
    from connectors.github.config import GitHubBoardConfig
    from mapping.review import human_time
    from sync.boards import LazyBoardConnector
    from sync.metrics import board_quota_rows
    from tests.fakes.azure_server import FakeAzureDevOps, serve_fake_azure
    from tests.fakes.github_server import FakeGitHubProject, serve_fake_github

    project = FakeGitHubProject(owner="acme", number=3)
    project.add_issue("One")
    project.set_rate_limit(4321, reset_at=datetime(2026, 11, 2, 10, 0, tzinfo=UTC))
    azure = FakeAzureDevOps(pat="quota-pat")
    azure.add_project("Shop", "Agile").add_item("Story")
    with serve_fake_github(project) as gh_url, serve_fake_azure(azure) as az_url:
        github = LazyBoardConnector(
            GitHubBoardConfig(
                board_key="gh", owner="acme", project_number=3, api_url=gh_url, token="ghp_quota"
            )
        )
        ado = LazyBoardConnector(
            AzureBoardConfig(
                board_key="ado", organization_url=az_url, project="Shop", pat="quota-pat"
            )
        )
        connectors = {"gh": github, "ado": ado}
        await github.poll(None)
        await ado.poll(None)  # Azure sent no rate-limit headers: not throttled
        broker = ChangeBroker(heartbeat_seconds=0.3)
        app = FastAPI()
        app.include_router(
            dashboard_router(
                ledger_payload_source(ledger[0], CLIENTS, clock),
                broker,
                FakeActions(),
                DashboardAuth(required=False),
                quota_source=lambda: board_quota_rows(connectors),
            )
        )
        async with asgi_client(app) as http:
            page = (await http.get("/")).text
            api = (await http.get("/api/pipeline")).json()

        def cell(testid: str) -> str:
            match = re.search(rf'data-testid="{re.escape(testid)}">(.*?)</td>', page, re.S)
            assert match, testid
            return re.sub(r"<[^>]+>", "", match.group(1)).strip()

        assert cell("quota-gh-remaining") == "4320 of 5000"
        assert cell("quota-gh-reset") == human_time(datetime(2026, 11, 2, 10, 0, tzinfo=UTC), "UTC")
        gh_calls = int(cell("quota-gh-calls"))
        assert gh_calls >= 1
        assert cell("quota-ado-remaining") == "not reported"
        assert cell("quota-ado-calls") == "3"  # WIQL, batch, the type's states
        rows = by_key(api["board_quota"], "board")
        assert rows["gh"]["remaining"] == 4320 and rows["gh"]["source"] == "github"
        assert rows["ado"]["reported"] is False

        with serve(app) as base:
            async with (
                httpx.AsyncClient(base_url=base, timeout=5) as http,
                http.stream("GET", "/api/events") as response,
            ):
                lines = response.aiter_lines()
                async with asyncio.timeout(3):
                    name, first = await next_event(lines)
                assert name == "pipeline"
                assert by_key(first["board_quota"], "board")["ado"]["reported"] is False
                # Azure starts to throttle: its headers arrive on a 200.
                azure.success_headers = {
                    "X-RateLimit-Resource": "ATCPU",
                    "X-RateLimit-Remaining": "35",
                    "X-RateLimit-Limit": "200",
                    "X-RateLimit-Reset": "1793613600",
                }
                azure.projects["shop"].add_item("Another story")
                await ado.poll(None)
                async with asyncio.timeout(3):
                    name, quota = await next_event(lines)
                assert name == "quota"
                live = by_key(quota, "board")  # type: ignore[arg-type]
                assert (live["ado"]["remaining"], live["ado"]["limit"]) == (35, 200)
                assert live["ado"]["resource"] == "ATCPU"
                assert live["ado"]["reset_at"] == "2026-11-02T10:00:00+00:00"
                assert live["ado"]["calls_last_hour"] == 5  # + WIQL and batch
                assert live["gh"]["calls_last_hour"] == gh_calls
                broker.close()
        await github.aclose()
        await ado.aclose()
