"""The Stripe writer end to end against the fake Stripe: drafts exactly once, approval
before finalize, edits while draft, retries, and following Stripe's state."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mapping.domain import BillingType
from sync.composition import Services
from sync.invoicing import InvoicingError, NotAnApprover
from sync.ledger import schema as t
from sync.ledger.ops import enqueue
from tests.builders import snap
from tests.conftest import FixedClock
from tests.stripe_support import (
    API_KEY,
    APPROVER,
    StripeWorld,
    drain,
    fake_stripe,
    world_services,
)


@pytest.fixture
def world() -> Iterator[StripeWorld]:
    with fake_stripe() as w:
        yield w


@pytest.fixture
def services(world: StripeWorld, ledger_url: str, clock: FixedClock) -> Iterator[Services]:
    with world_services(world, ledger_url, clock) as s:
        yield s


def ingest_three_clients(services: Services) -> None:
    services.engine.ingest(
        [
            # acme, EUR, 15-minute rounding up: 2.1 h -> 2.25 h x 120 = 270.00; milestone 1500
            snap("Done", "2.1", 1, item_id="A1", board="acme-board"),
            snap(
                "Done",
                "9",
                1,
                item_id="A2",
                board="acme-board",
                labels=("fixed-price",),
                milestone="1500",
            ),
            # globex, USD 99.99/h: 1.5 h = 149.985 -> 149.99; 0.25 h = 24.9975 -> 25.00
            snap("Done", "1.5", 1, item_id="G1", board="globex-board"),
            snap("Done", "0.25", 1, item_id="G2", board="globex-board"),
            # kaiju, JPY 12345/h: 1.5 h = 18517.5 -> 18518; 2 h = 24690
            snap("Done", "1.5", 1, item_id="K1", board="kaiju-board"),
            snap("Done", "2", 1, item_id="K2", board="kaiju-board"),
            # not done: never on a draft
            snap("In progress", "4", 1, item_id="K3", board="kaiju-board"),
        ]
    )


EXPECTED_TOTALS = {"acme": 177000, "globex": 17499, "kaiju": 43208}


def stripe_drafts(world: StripeWorld) -> dict[str, dict[str, Any]]:
    by_customer = {v: k for k, v in world.customers.items()}
    return {by_customer[i["customer"]]: i for i in world.fake.list_objects("invoice")}


def ledger_rows(services: Services, table: Any) -> list[Any]:
    with services.ledger.engine.connect() as conn:
        return list(conn.execute(select(table).order_by(table.c.id)).all())


def draft_all(services: Services) -> dict[str, int]:
    ids = {c: services.invoicing.create_or_refresh_draft(c).invoice_id for c in EXPECTED_TOTALS}
    report = drain(services)
    assert report.errors == []
    return ids


def reconcile(services: Services, repair: bool = True) -> Any:
    async def run() -> Any:
        try:
            return await services.invoicing.reconcile(None, repair)
        finally:
            await services.invoicing.close()

    return asyncio.run(run())


def test_three_clients_three_drafts_with_exact_totals(
    services: Services, world: StripeWorld
) -> None:
    ingest_three_clients(services)
    draft_all(services)
    drafts = stripe_drafts(world)
    assert {c: d["total"] for c, d in drafts.items()} == EXPECTED_TOTALS
    for client, invoice in drafts.items():
        assert invoice["status"] == "draft"
        assert invoice["auto_advance"] is False
        assert invoice["collection_method"] == "send_invoice"
        assert invoice["currency"] == {"acme": "eur", "globex": "usd", "kaiju": "jpy"}[client]
    items = world.fake.list_objects("invoiceitem")
    assert len(items) == 6
    assert {i["metadata"]["item"].split(":")[-1] for i in items} == {
        "A1",
        "A2",
        "G1",
        "G2",
        "K1",
        "K2",
    }
    assert all(i["metadata"]["kanvoice_entry"] and i["metadata"]["board"] for i in items)
    a1 = next(i for i in items if i["metadata"]["item"].endswith(":A1"))
    assert "2.25 h × 120.00 EUR" in a1["description"]
    assert a1["period"]["end"] >= a1["period"]["start"]
    # Every POST carried a key the ledger derived, never the SDK's random one.
    posts = [
        r for r in world.fake.requests if r.method == "POST" and r.path.startswith("/v1/invoice")
    ]
    assert posts and all(r.idempotency_key and r.idempotency_key.startswith("kv-") for r in posts)

    # Re-running changes nothing: no new Stripe object, no new ledger row.
    created = dict(world.fake.created)
    outbox = len(ledger_rows(services, t.outbox))
    draft_all(services)
    assert dict(world.fake.created) == created
    assert len(ledger_rows(services, t.outbox)) == outbox
    drafted = [e for e in ledger_rows(services, t.entries) if e.state == "drafted"]
    assert len(drafted) == 6 and all(e.stripe_invoice_item_id for e in drafted)


def test_nothing_is_finalized_without_an_approval(services: Services, world: StripeWorld) -> None:
    ingest_three_clients(services)
    ids = draft_all(services)
    # A finalize intent forged straight into the outbox is refused by the writer itself.
    with services.ledger.engine.begin() as conn:
        enqueue(
            conn, "finalize_invoice", "forged-finalize", services.clock(), invoice_id=ids["acme"]
        )
    report = drain(services)
    assert report.parked == 1 and "no approval" in report.errors[0]
    assert all(i["status"] == "draft" for i in world.fake.list_objects("invoice"))
    assert not [r for r in world.fake.requests if r.path.endswith("/finalize")]


def test_approval_finalizes_exactly_once(services: Services, world: StripeWorld) -> None:
    ingest_three_clients(services)
    ids = draft_all(services)
    with pytest.raises(NotAnApprover):
        services.invoicing.approve(ids["acme"], "U0SOMEONE", "cli")
    services.invoicing.approve(ids["acme"], APPROVER, "cli")
    with pytest.raises(InvoicingError, match="already approved by U0FINANCE"):
        services.invoicing.approve(ids["acme"], APPROVER, "cli")
    drain(services)
    drain(services)
    assert len([r for r in world.fake.requests if r.path.endswith("/finalize")]) == 1
    drafts = stripe_drafts(world)
    assert drafts["acme"]["status"] == "open" and drafts["globex"]["status"] == "draft"
    assert {e.state for e in ledger_rows(services, t.entries) if e.client == "acme"} == {"invoiced"}
    audit = [a.action for a in ledger_rows(services, t.audit_log)]
    assert "approve_refused" in audit and "approved" in audit


def test_a_changed_draft_cannot_be_approved_from_an_old_message(services: Services) -> None:
    ingest_three_clients(services)
    ids = draft_all(services)
    with pytest.raises(InvoicingError, match="changed since"):
        services.invoicing.approve(ids["acme"], APPROVER, "slack", version=0)


def test_edits_while_draft_follow_the_board_and_after_finalize_go_to_review(
    services: Services, world: StripeWorld
) -> None:
    ingest_three_clients(services)
    ids = draft_all(services)
    # Re-opened and done again with fewer hours: the drafted line follows (1.5 h).
    services.engine.ingest(
        [
            snap("In progress", "2.1", 2, item_id="A1", board="acme-board"),
            snap("Done", "1.4", 3, item_id="A1", board="acme-board"),
        ]
    )
    drain(services)
    a1 = next(
        i for i in world.fake.list_objects("invoiceitem") if i["metadata"]["item"].endswith(":A1")
    )
    assert a1["amount"] == 18000  # 1.5 h x 120
    assert stripe_drafts(world)["acme"]["total"] == 168000
    # A line whose hours are gone before invoicing leaves the draft.
    services.engine.ingest(
        [
            snap("In progress", "0.25", 2, item_id="G2", board="globex-board"),
            snap("Done", "0", 3, item_id="G2", board="globex-board"),
        ]
    )
    drain(services)
    assert stripe_drafts(world)["globex"]["total"] == 14999
    # After approval and finalization nothing is edited: a review adjustment instead.
    services.invoicing.approve(ids["kaiju"], APPROVER, "cli")
    drain(services)
    services.engine.ingest(
        [
            snap("In progress", "1.5", 2, item_id="K1", board="kaiju-board"),
            snap("Done", "1", 3, item_id="K1", board="kaiju-board"),
        ]
    )
    drain(services)
    kaiju = stripe_drafts(world)["kaiju"]
    assert kaiju["status"] == "open" and kaiju["total"] == 43208
    review = [e for e in ledger_rows(services, t.entries) if e.state == "needs_review"]
    assert [(e.kind, str(e.hours)) for e in review] == [("adjustment", "-0.5")]


def test_429_and_5xx_retry_with_the_same_key_and_rejections_park(
    services: Services, world: StripeWorld, clock: FixedClock
) -> None:
    ingest_three_clients(services)
    world.fake.rate_limit_next(method="POST", path="/v1/invoiceitems", retry_after=0.01)
    world.fake.fail_next(method="POST", path="/v1/invoices", status=503)
    services.invoicing.create_or_refresh_draft("acme")
    assert drain(services).errors == []
    keys = [
        r.idempotency_key
        for r in world.fake.requests
        if r.method == "POST" and r.path == "/v1/invoiceitems"
    ]
    assert len(keys) == 3 and len(set(keys)) == 2  # the limited line retried with its key
    invoice_keys = [
        r.idempotency_key
        for r in world.fake.requests
        if r.method == "POST" and r.path == "/v1/invoices"
    ]
    assert len(invoice_keys) == 2 and len(set(invoice_keys)) == 1
    assert stripe_drafts(world)["acme"]["total"] == EXPECTED_TOTALS["acme"]
    assert world.fake.created["invoiceitem"] == 2

    # A validation error is never retried: the line waits for a person.
    world.fake.inject_fault("error", method="POST", path="/v1/invoiceitems", status=400)
    services.engine.ingest([snap("Done", "1", 1, item_id="A9", board="acme-board")])
    services.invoicing.create_or_refresh_draft("acme")
    report = drain(services)
    assert report.parked == 1
    parked = [e for e in ledger_rows(services, t.entries) if e.state == "needs_review"]
    assert len(parked) == 1 and parked[0].review_reason
    clock.now += timedelta(minutes=10)
    assert drain(services).done == 0  # parked stays parked, no loop


def test_a_lost_answer_and_a_pruned_key_find_the_line_by_metadata(
    services: Services, world: StripeWorld, clock: FixedClock
) -> None:
    ingest_three_clients(services)
    services.invoicing.create_or_refresh_draft("globex")
    # The first line is created but its answer is lost, then Stripe keeps failing.
    world.fake.drop_next(method="POST", path="/v1/invoiceitems")
    world.fake.fail_next(method="POST", path="/v1/invoiceitems", status=500, count=3)
    report = drain(services)
    assert report.retried == 1
    assert world.fake.created["invoiceitem"] == 2  # one by the lost call, one normal
    # A day passes; Stripe has pruned the key. The retry looks before it creates.
    world.fake.forget_idempotency_keys()
    clock.now += timedelta(days=2)
    assert drain(services).errors == []
    assert world.fake.created["invoiceitem"] == 2
    assert stripe_drafts(world)["globex"]["total"] == EXPECTED_TOTALS["globex"]
    assert reconcile(services) == []


def test_reject_returns_lines_to_ready_and_they_can_be_drafted_again(
    services: Services, world: StripeWorld
) -> None:
    ingest_three_clients(services)
    ids = draft_all(services)
    services.invoicing.reject(ids["globex"], APPROVER, "cli", "wrong rate")
    drain(services)
    assert stripe_drafts(world)["globex"]["total"] == 0
    assert {e.state for e in ledger_rows(services, t.entries) if e.client == "globex"} == {"ready"}
    assert any("wrong rate" in e.reason for e in ledger_rows(services, t.entry_events))
    again = services.invoicing.create_or_refresh_draft("globex")
    assert again.invoice_id == ids["globex"]
    drain(services)
    assert stripe_drafts(world)["globex"]["total"] == EXPECTED_TOTALS["globex"]


def test_reconcile_repairs_a_missed_payment(services: Services, world: StripeWorld) -> None:
    ingest_three_clients(services)
    ids = draft_all(services)
    assert reconcile(services) == []
    services.invoicing.approve(ids["acme"], APPROVER, "cli")
    drain(services)
    # The invoice is paid while our webhook endpoint was down.
    invoice = stripe_drafts(world)["acme"]
    httpx.post(
        f"{world.base_url}/v1/invoices/{invoice['id']}/pay",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).raise_for_status()
    report_only = reconcile(services, repair=False)
    assert [d.problem for d in report_only] == ["ledger says finalized, Stripe says paid"]
    assert {e.state for e in ledger_rows(services, t.entries) if e.client == "acme"} == {"invoiced"}
    assert [d.repair for d in reconcile(services)] == ["ledger moved on"]
    assert {e.state for e in ledger_rows(services, t.entries) if e.client == "acme"} == {"paid"}
    assert reconcile(services) == []


def test_non_billable_work_never_reaches_stripe(services: Services, world: StripeWorld) -> None:
    services.engine.ingest(
        [
            snap(
                "Done",
                "3",
                1,
                item_id="X",
                board="acme-board",
                billing_type=BillingType.NON_BILLABLE,
            )
        ]
    )
    services.invoicing.create_or_refresh_draft("acme")
    drain(services)
    assert world.fake.created["invoiceitem"] == 0


def test_client_tax_rates_go_on_every_line(
    world: StripeWorld, sqlite_url: str, clock: FixedClock
) -> None:
    tax = httpx.post(
        f"{world.base_url}/v1/tax_rates",
        data={"display_name": "VAT", "percentage": "19", "inclusive": "false"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()
    with world_services(world, sqlite_url, clock, acme={"tax_rate_ids": [tax["id"]]}) as services:
        services.engine.ingest([snap("Done", "1", 1, item_id="T1", board="acme-board")])
        services.invoicing.create_or_refresh_draft("acme")
        assert drain(services).errors == []
        (item,) = world.fake.list_objects("invoiceitem")
        assert [t["id"] if isinstance(t, dict) else t for t in item["tax_rates"]] == [tax["id"]]
        assert stripe_drafts(world)["acme"]["total"] == 14280  # 120.00 + 19 % VAT
