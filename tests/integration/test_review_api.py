"""Reviewing drafts over the dashboard's API, on the full app (real invoicing code, the
demo's in-memory Stripe): a draft's lines, adjusting and deferring lines, approving,
the history and the audit log (JSON and CSV), and the dashboard's auth on all of it."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from connectors.simulated import SimulatedBoard, demo_scripts
from connectors.stripe.memory import InMemoryStripe
from sync.composition import Services
from sync.demo import DEMO_START, demo_services, demo_settings
from sync.invoicing import NotAnApprover
from sync.review import Review
from sync.web.app import create_app
from sync.web.dashboard import CSRF_HEADER

CSRF = {CSRF_HEADER: "1"}


@pytest.fixture
def world(ledger_url: str) -> Iterator[tuple[Services, InMemoryStripe]]:
    demo = demo_services(demo_settings(ledger_url))
    services = demo.services
    boards = [SimulatedBoard(s, DEMO_START, timedelta(hours=4)) for s in demo_scripts()]
    for step in range(max(b.script.last_step for b in boards) + 1):
        services.engine.ingest([s for b in boards for s in b.snapshots_at(step)])
    yield services, demo.stripe
    services.close()


async def _drain(services: Services) -> None:
    report = await services.invoicing.drain()
    assert report.errors == []


def stripe_lines(stripe: InMemoryStripe, invoice: dict[str, Any]) -> dict[int, int]:
    """entry id -> amount of the Stripe invoice's lines."""
    return {
        int(item["metadata"]["kanvoice_entry_id"]): int(item["amount"])
        for item in stripe.items.values()
        if item.get("invoice") == invoice["id"]
    }


def test_review_adjust_defer_approve_history(world: tuple[Services, InMemoryStripe]) -> None:
    services, stripe = world
    app = create_app(services)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            created = await http.post("/api/clients/acme/draft", headers=CSRF)
            assert created.status_code == 200, created.text
            invoice_id = created.json()["invoice_id"]
            await _drain(services)

            # The draft's lines: item, link, board, sprint, people, hours, rate, amount.
            detail = (await http.get(f"/api/invoices/{invoice_id}")).json()
            assert detail["client_name"] == "Acme GmbH"
            assert detail["total"] == "4000.00" and detail["currency"] == "EUR"
            assert detail["stripe_url"].startswith("https://dashboard.stripe.com/")
            assert "/invoices/in_" in detail["stripe_url"]
            assert sum(Decimal(x["amount"]) for x in detail["lines"]) == Decimal("4000.00")
            first = detail["lines"][0]
            assert first["url"].startswith("https://") and first["board"] == "acme-web"
            assert first["state"] == "drafted" and first["editable"] is True
            assert {"title", "sprint", "people", "hours", "rate", "flags"} <= set(first)

            # Adjust: lower one line's hours and reword it; a stale version is refused.
            line = next(x for x in detail["lines"] if x["kind"] == "time")
            lower = str(Decimal(line["hours"]) - 1)
            change = {"entry_id": line["entry_id"], "hours": lower, "description": "Reworded"}
            stale = await http.post(
                f"/api/invoices/{invoice_id}/adjust",
                json={"version": detail["version"] - 1, "changes": [change]},
                headers=CSRF,
            )
            assert stale.status_code == 409 and "changed" in stale.json()["detail"]
            raised = await http.post(
                f"/api/invoices/{invoice_id}/adjust",
                json={
                    "version": detail["version"],
                    "changes": [{"entry_id": line["entry_id"], "hours": "999"}],
                },
                headers=CSRF,
            )
            assert raised.status_code == 422 and "lowered" in raised.json()["detail"]
            adjusted = await http.post(
                f"/api/invoices/{invoice_id}/adjust",
                json={"version": detail["version"], "changes": [change]},
                headers=CSRF,
            )
            assert adjusted.status_code == 200, adjusted.text
            after = adjusted.json()
            assert after["version"] > detail["version"]
            new_line = next(x for x in after["lines"] if x["entry_id"] == line["entry_id"])
            assert new_line["hours"] == lower and new_line["description"] == "Reworded"
            expected = Decimal(detail["total"]) - Decimal(line["rate"])
            assert Decimal(after["total"]) == expected

            # Defer another line: it leaves the draft; a refresh does not pull it back.
            other = next(x for x in after["lines"] if x["entry_id"] != line["entry_id"])
            deferred = await http.post(
                f"/api/invoices/{invoice_id}/lines/{other['entry_id']}/defer",
                json={"version": after["version"]},
                headers=CSRF,
            )
            assert deferred.status_code == 200, deferred.text
            after = deferred.json()
            assert other["entry_id"] not in {x["entry_id"] for x in after["lines"]}
            again = await http.post("/api/clients/acme/draft", headers=CSRF)
            assert again.json()["added"] == 0
            await _drain(services)

            # Stripe and the ledger agree, line by line.
            (remote,) = stripe.invoices.values()
            on_stripe = stripe_lines(stripe, remote)
            ledger = {x["entry_id"]: int(Decimal(x["amount"]) * 100) for x in after["lines"]}
            assert on_stripe == ledger
            assert remote["total"] == int(Decimal(after["total"]) * 100)

            # Approve, then the history shows it with the approver and the time.
            approved = await http.post(f"/api/invoices/{invoice_id}/approve", headers=CSRF)
            assert approved.status_code == 200, approved.text
            await _drain(services)
            history = (await http.get("/api/history", params={"q": "acme"})).json()["invoices"]
            row = next(r for r in history if r["id"] == invoice_id)
            assert row["status"] == "finalized" and row["number"]
            assert row["approved_by"] == "dashboard" and row["approved_at"]
            assert row["total"] == after["total"]
            actions = [e["action"] for e in row["events"]]
            assert actions[:1] == ["drafted"] and {"adjusted", "deferred", "approved"} <= set(
                actions
            )
            assert "finalized" in actions
            assert (await http.get("/api/history", params={"q": "nobody-matches"})).json()[
                "invoices"
            ] == []

            # The deferred line goes on the next draft.
            nxt = (await http.post("/api/clients/acme/draft", headers=CSRF)).json()
            assert nxt["invoice_id"] != invoice_id and nxt["added"] >= 1
            nxt_detail = (await http.get(f"/api/invoices/{nxt['invoice_id']}")).json()
            assert other["entry_id"] in {x["entry_id"] for x in nxt_detail["lines"]}

            # The audit log: JSON and CSV give the same rows; by client and since.
            rows = (await http.get("/api/audit", params={"client": "acme"})).json()["rows"]
            assert {"drafted", "adjusted", "deferred", "approved", "finalized"} <= {
                r["action"] for r in rows
            }
            assert all(r["client"] == "acme" for r in rows)
            assert all("." not in r["at"] for r in rows)  # no microseconds
            exported = await http.get("/api/audit", params={"client": "acme", "format": "csv"})
            assert exported.headers["content-type"].startswith("text/csv")
            parsed = list(csv.DictReader(io.StringIO(exported.text)))
            assert [int(r["id"]) for r in parsed] == [r["id"] for r in rows]
            assert (await http.get("/api/audit", params={"client": "globex"})).json()["rows"] == []
            future = (await http.get("/api/audit", params={"since": "2999-01-01"})).json()
            assert future["rows"] == []
            bad = await http.get("/api/audit", params={"since": "yesterday"})
            assert bad.status_code == 422
            nul = await http.get("/api/history", params={"client": "ac\u0000me"})
            assert nul.status_code == 422

            # A decided invoice cannot be adjusted or deferred.
            late = await http.post(
                f"/api/invoices/{invoice_id}/adjust",
                json={"version": after["version"], "changes": [change]},
                headers=CSRF,
            )
            assert late.status_code == 409
            assert (await http.get("/api/invoices/999")).status_code == 404
            assert (await http.get("/api/invoices/abc")).status_code == 404

    asyncio.run(scenario())


def test_write_off_a_whole_line_and_refusals(world: tuple[Services, InMemoryStripe]) -> None:
    services, _ = world
    app = create_app(services)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            invoice_id = (await http.post("/api/clients/acme/draft", headers=CSRF)).json()[
                "invoice_id"
            ]
            detail = (await http.get(f"/api/invoices/{invoice_id}")).json()
            line = detail["lines"][0]
            url = f"/api/invoices/{invoice_id}/adjust"
            body = {"version": detail["version"], "changes": [{"entry_id": line["entry_id"]}]}
            # No CSRF header: refused; nothing to change: 422.
            assert (await http.post(url, json=body)).status_code == 403
            assert (await http.post(url, json=body, headers=CSRF)).status_code == 422
            body["changes"][0]["write_off"] = True
            done = await http.post(url, json=body, headers=CSRF)
            assert done.status_code == 200, done.text
            assert line["entry_id"] not in {x["entry_id"] for x in done.json()["lines"]}
            # Written off, never billed again: a refresh leaves it out.
            assert (await http.post("/api/clients/acme/draft", headers=CSRF)).json()["added"] == 0

    asyncio.run(scenario())

    # Someone not on the approver list changes nothing, and the refusal is audited.
    review = Review(services.desk)
    detail = review.detail(1)
    line = detail["lines"][0]
    with pytest.raises(NotAnApprover):
        review.adjust(
            1,
            "mallory",
            detail["version"],
            [{"entry_id": line["entry_id"], "write_off": True}],
            "dashboard",
        )
    with pytest.raises(NotAnApprover):
        review.defer(1, "mallory", detail["version"], line["entry_id"], "dashboard")
    assert review.detail(1) == detail
    refused = [r["action"] for r in review.audit_log("acme") if r["actor"] == "mallory"]
    assert refused == ["adjust_refused", "defer_refused"]


def test_review_endpoints_need_the_dashboard_credentials(
    world: tuple[Services, InMemoryStripe],
) -> None:
    services, _ = world
    settings = services.settings.model_copy(
        update={
            "server": services.settings.server.model_copy(
                update={"host": "0.0.0.0", "dashboard_token": SecretStr("s3cret-token")}
            )
        }
    )
    services.settings = settings
    app = create_app(services)
    paths = ["/api/invoices/1", "/api/history", "/api/audit", "/api/audit?format=csv"]

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kv.example") as http:
            for path in paths:
                assert (await http.get(path)).status_code == 401, path
            for path in ("/api/invoices/1/adjust", "/api/invoices/1/lines/1/defer"):
                response = await http.post(path, json={"version": 0, "changes": []}, headers=CSRF)
                assert response.status_code == 401, path
            bearer = {"Authorization": "Bearer s3cret-token"}
            assert (await http.get("/api/history", headers=bearer)).status_code == 200
            assert (await http.get("/api/audit", headers=bearer)).status_code == 200
            assert (await http.get("/api/invoices/1", headers=bearer)).status_code == 404

    asyncio.run(scenario())
