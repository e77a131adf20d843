"""Retainers end to end against the fake Stripe: one fixed retainer line per period,
covered hours at no charge of their own, overage at the overage rate, rollover into the
next period; totals exact to the minor unit."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from sync.composition import Services
from sync.ledger import schema as t
from sync.retainers import retainer_usage
from sync.web.app import create_app
from tests.builders import snap
from tests.conftest import FixedClock
from tests.stripe_support import StripeWorld, drain, fake_stripe, fast_retries, services_for
from tests.stripe_support import world_settings as base_settings

RETAINERS = {
    "acme": {
        "retainer": {
            "hours": 10,
            "amount": "1500.00",
            "overage_rate": "175",
            "rollover": True,
            "rollover_cap_hours": 3,
        }
    },
    # JPY: 10 h for 500000, overage at the client's own rate (12345/h)
    "kaiju": {"retainer": {"hours": 10, "amount": "500000"}},
}


@pytest.fixture
def world() -> Iterator[StripeWorld]:
    with fake_stripe({"acme": "eur", "kaiju": "jpy"}) as w:
        yield w


@pytest.fixture
def services(world: StripeWorld, ledger_url: str, clock: FixedClock) -> Iterator[Services]:
    s = services_for(base_settings(world, ledger_url, **RETAINERS), clock)
    fast_retries(s)
    yield s
    s.close()


def lines_of(world: StripeWorld, client: str) -> list[dict[str, Any]]:
    invoices = [
        i["id"]
        for i in world.fake.list_objects("invoice")
        if i["customer"] == world.customers[client]
    ]
    return [i for i in world.fake.list_objects("invoiceitem") if i["invoice"] in invoices]


def invoice_totals(world: StripeWorld, client: str) -> list[int]:
    return [
        int(i["total"])
        for i in world.fake.list_objects("invoice")
        if i["customer"] == world.customers[client]
    ]


def draft(services: Services, client: str) -> int | None:
    invoice_id = services.invoicing.create_or_refresh_draft(client).invoice_id
    assert drain(services).errors == []
    return invoice_id


def test_retainer_line_covered_hours_and_overage_on_the_stripe_draft(
    services: Services, world: StripeWorld
) -> None:
    services.engine.ingest(
        [
            snap("Done", "6", 1, item_id="A1", board="acme-board"),
            snap("Done", "6", 1, item_id="A2", board="acme-board"),
            snap(
                "Done",
                "3",
                1,
                item_id="A3",
                board="acme-board",
                labels=("fixed-price",),
                milestone="500",
            ),
        ]
    )
    draft(services, "acme")
    lines = lines_of(world, "acme")
    by_text = sorted((i["amount"], i["description"]) for i in lines)
    # 1500.00 retainer (10 h) + A1 6 h covered + A2 4 h covered / 2 h × 175 + milestone 500
    assert [amount for amount, _ in by_text] == [0, 0, 35000, 50000, 150000]
    retainer = [i for i in lines if i["description"].startswith("Retainer")]
    assert len(retainer) == 1
    assert retainer[0]["description"].startswith("Retainer, November 2026: 10 h included")
    overage = next(i for i in lines if i["amount"] == 35000)
    assert "overage beyond retainer" in overage["description"]
    assert "2 h × 175.00 EUR" in overage["description"]
    assert invoice_totals(world, "acme") == [235000]
    # Drafting again in the period adds no second retainer line and re-prices nothing.
    draft(services, "acme")
    assert len(lines_of(world, "acme")) == 5
    assert invoice_totals(world, "acme") == [235000]
    # Every hour is still accounted for: 6 + 4 + 2 + the milestone's 3.
    with services.ledger.engine.connect() as conn:
        hours = conn.execute(select(t.entries.c.hours)).scalars().all()
        seen = retainer_usage(conn, services.settings, "acme", "2026-11")
    assert sum(hours) == 15
    assert seen is not None and (seen.used_hours, seen.available_hours) == (10, 10)
    assert seen.overage_hours == 2


def test_hours_lowered_after_the_retainer_covered_them_are_given_back(
    services: Services, world: StripeWorld
) -> None:
    services.engine.ingest(
        [
            snap("Done", "6", 1, item_id="A1", board="acme-board"),
            snap("Done", "6", 1, item_id="A2", board="acme-board"),
        ]
    )
    draft(services, "acme")  # A1 6 h + A2 4 h covered, A2's 2 h overage
    assert invoice_totals(world, "acme") == [185000]
    # A2 is corrected on the board to 3 h while its lines are still on the draft: its
    # overage line goes, its covered line keeps 3 h; the period has 1 h free again.
    services.engine.ingest([snap("Done", "3", 2, item_id="A2", board="acme-board")])
    draft(services, "acme")
    assert invoice_totals(world, "acme") == [150000]
    with services.ledger.engine.connect() as conn:
        seen = retainer_usage(conn, services.settings, "acme", "2026-11")
    assert seen is not None
    assert (seen.used_hours, seen.available_hours, seen.overage_hours) == (9, 10, 0)
    # The next 2 h: 1 h covered by the freed hour, 1 h overage at 175.
    services.engine.ingest([snap("Done", "2", 3, item_id="A3", board="acme-board")])
    draft(services, "acme")
    assert invoice_totals(world, "acme") == [167500]
    with services.ledger.engine.connect() as conn:
        seen = retainer_usage(conn, services.settings, "acme", "2026-11")
    assert seen is not None
    assert (seen.used_hours, seen.overage_hours) == (10, 1)


def test_rollover_carries_unused_hours_to_the_next_period_capped(
    services: Services, world: StripeWorld, clock: FixedClock
) -> None:
    services.engine.ingest([snap("Done", "6", 1, item_id="A1", board="acme-board")])
    draft(services, "acme")
    assert invoice_totals(world, "acme") == [150000]  # 6 h covered: only the retainer line
    # December: 4 h unused in November, 3 h roll over (the cap); 14 h = 13 covered + 1
    clock.now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    services.engine.ingest([snap("Done", "14", 30, item_id="A2", board="acme-board")])
    draft(services, "acme")
    assert sorted(invoice_totals(world, "acme")) == [150000, 167500]
    december = [i for i in lines_of(world, "acme") if "December" in i["description"]]
    assert len(december) == 1
    assert "(+3 h rolled over)" in december[0]["description"]
    with services.ledger.engine.connect() as conn:
        seen = retainer_usage(conn, services.settings, "acme", "2026-12")
    assert seen is not None
    assert (seen.used_hours, seen.available_hours, seen.rollover_in) == (13, 13, 3)


def test_zero_decimal_currency_overage_at_the_entry_rate(
    services: Services, world: StripeWorld
) -> None:
    # 11.5 h: 10 covered, 1.5 h × 12345 = 18517.5 -> 18518 JPY
    services.engine.ingest([snap("Done", "11.5", 1, item_id="K1", board="kaiju-board")])
    draft(services, "kaiju")
    assert sorted(i["amount"] for i in lines_of(world, "kaiju")) == [0, 18518, 500000]
    assert invoice_totals(world, "kaiju") == [518518]


def test_a_client_on_a_retainer_gets_its_line_even_without_work(
    services: Services, world: StripeWorld
) -> None:
    assert draft(services, "acme") is not None
    assert invoice_totals(world, "acme") == [150000]


async def test_the_dashboard_shows_retainer_used_of_included(
    services: Services, world: StripeWorld
) -> None:
    services.engine.ingest([snap("Done", "12", 1, item_id="A1", board="acme-board")])
    services.invoicing.create_or_refresh_draft("acme")
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        response = await http.get("/api/pipeline")
    assert response.status_code == 200, response.text
    clients = {c["client"]: c for c in response.json()["clients"]}
    assert clients["acme"]["retainer"] == {
        "period": "November 2026",
        "period_key": "2026-11",
        "used_hours": "10",
        "available_hours": "10",
        "included_hours": "10",
        "rollover_hours": "0",
        "overage_hours": "2",
        "percent": "100",
        "amount": "1500.00",
        "value_used": "1500.00",
    }
    # kaiju has a retainer too, nothing drafted yet: 0 of 10 h
    assert clients["kaiju"]["retainer"]["used_hours"] == "0"
    assert clients["kaiju"]["retainer"]["amount"] == "500000"
