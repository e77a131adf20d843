"""Budgets end to end: Slack alerts once per threshold per period (however often the
drafts are refreshed and the outbox drained), and the over-budget flag finance sees in
the review API and the Slack approval message before approving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from slack_sdk.models.blocks import Block

from connectors.slack.memory import InMemorySlack
from sync.approvals import ApprovalDesk, desk_for
from sync.composition import Services
from sync.review import Review
from sync.web.app import create_app
from tests.builders import snap
from tests.conftest import FixedClock
from tests.stripe_support import APPROVER, fake_stripe, fast_retries, services_for, world_settings

CHANNELS = {"finance": "C0FINANCE"}


@pytest.fixture
def services(ledger_url: str, clock: FixedClock) -> Iterator[Services]:
    with fake_stripe({"acme": "eur"}) as world:
        data = world_settings(
            world, ledger_url, acme={"budget": {"hours": 10, "alert_thresholds": [80, 100]}}
        )
        data["slack"] = {"channel": "finance", "approvers": [APPROVER], "signing_secret": "s"}
        s = services_for(data, clock)
        fast_retries(s)
        yield s
        s.close()


def alerts(slack: InMemorySlack) -> list[str]:
    return [m.text for m in slack.in_channel("finance") if m.invoice_id == 0]


def blocks_text(blocks: list[Block]) -> str:
    return json.dumps([b.to_dict() for b in blocks])


async def refresh(services: Services, desk: ApprovalDesk) -> int:
    invoice_id = services.invoicing.create_or_refresh_draft("acme").invoice_id
    assert invoice_id is not None
    assert (await services.invoicing.drain()).errors == []
    await desk.drain_slack()
    return invoice_id


async def test_alerts_once_per_threshold_and_the_over_budget_flag(
    services: Services, clock: FixedClock
) -> None:
    slack = InMemorySlack(channels=CHANNELS)
    desk = desk_for(services, lambda: slack)
    try:
        services.engine.ingest([snap("Done", "5", 1, item_id="A1", board="acme-board")])
        await refresh(services, desk)
        assert alerts(slack) == []  # 5 h of 10: 50 %
        services.engine.ingest([snap("Done", "3.5", 2, item_id="A2", board="acme-board")])
        await refresh(services, desk)
        await refresh(services, desk)  # refreshing and draining again: no second alert
        assert alerts(slack) == [
            ":warning: Budget 80 % reached: client:acme: 8.5 h of 10 h (85.0 %)"
        ]
        services.engine.ingest([snap("Done", "3", 3, item_id="A3", board="acme-board")])
        invoice_id = await refresh(services, desk)
        await refresh(services, desk)
        assert len(alerts(slack)) == 2
        assert alerts(slack)[1] == (
            ":rotating_light: Budget 100 % reached: client:acme: 11.5 h of 10 h (115.0 %)"
        )

        # The review API: the draft and the line that took it over the cap are flagged.
        detail = Review(desk).detail(invoice_id)
        assert detail["over_budget"] is True
        assert detail["budget_flags"] == ["over budget: client:acme: 11.5 h of 10 h (115.0 %)"]
        flagged = {line["title"]: line["flags"] for line in detail["lines"]}
        assert flagged == {
            "Ticket A1": [],
            "Ticket A2": [],
            "Ticket A3": ["over budget (client:acme)"],
        }
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            response = await http.get(f"/api/invoices/{invoice_id}")
        assert response.status_code == 200, response.text
        assert response.json()["over_budget"] is True

        # The Slack approval message says it before the buttons.
        assert desk.request_approval(invoice_id)
        await desk.drain_slack()
        (approval,) = [m for m in slack.in_channel("finance") if m.invoice_id == invoice_id]
        assert "Over budget" in approval.text
        text = blocks_text(approval.blocks)
        assert "Check before approving" in text and "11.5 h of 10 h" in text
        assert "over budget (client:acme)" in text
        # Over-budget work still queued: all three lines are on the draft.
        assert len(detail["lines"]) == 3

        # A new period re-arms the thresholds (a per-period budget).
        clock.now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
        services.engine.ingest([snap("Done", "9", 40, item_id="A4", board="acme-board")])
        await refresh(services, desk)
        assert len(alerts(slack)) == 3 and "9 h of 10 h" in alerts(slack)[2]
    finally:
        await services.invoicing.close()


async def test_dashboard_shows_budget_spend(services: Services) -> None:
    """Spent / cap, percent and thresholds reached per client, before any draft (ready
    work counts) and in the server-rendered page as in `GET /api/pipeline`."""
    services.engine.ingest([snap("Done", "8.5", 1, item_id="A1", board="acme-board")])
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        pipeline = (await http.get("/api/pipeline")).json()
        page = await http.get("/")
    (acme,) = [c for c in pipeline["clients"] if c["client"] == "acme"]
    (budget,) = acme["budgets"]
    assert budget["scope"] == "client:acme"
    assert (budget["spent_hours"], budget["hours"], budget["percent"]) == ("8.5", "10", "85.0")
    assert budget["reached"] == [80] and budget["over"] is False
    assert page.status_code == 200
    assert 'data-testid="budget-acme-client-acme"' in page.text
    assert "8.5 h of 10 h (85.0 %)" in page.text and "80 % reached" in page.text
    assert 'data-testid="budget-meter-acme-client-acme"' in page.text
