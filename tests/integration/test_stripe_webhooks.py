"""`POST /webhooks/stripe` with genuinely signed events: paid, voided, replayed, forged,
stale, malformed; each bad one changes nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from sync.composition import Services
from sync.intake import drain_inbox
from sync.ledger import schema as t
from sync.web.app import create_app
from tests.builders import snap
from tests.conftest import FixedClock
from tests.fakes.stripe_server import sign_stripe_payload
from tests.integration.test_stripe_writer import ledger_rows, stripe_drafts
from tests.ledger_support import dump
from tests.stripe_support import (
    API_KEY,
    APPROVER,
    WEBHOOK_SECRET,
    StripeWorld,
    drain,
    fake_stripe,
    world_services,
)


@pytest.fixture
def world() -> Iterator[StripeWorld]:
    with fake_stripe({"acme": "eur"}) as w:
        yield w


@pytest.fixture
def finalized(
    world: StripeWorld, ledger_url: str, clock: FixedClock
) -> Iterator[tuple[Services, TestClient, dict[str, Any]]]:
    """An approved, finalized invoice for acme with two lines."""
    with world_services(world, ledger_url, clock) as services:
        services.engine.ingest(
            [
                snap("Done", "1", 1, item_id="A1", board="acme-board"),
                snap("Done", "2", 1, item_id="A2", board="acme-board"),
            ]
        )
        invoice_id = services.invoicing.create_or_refresh_draft("acme").invoice_id
        drain(services)
        services.invoicing.approve(invoice_id, APPROVER, "cli")
        drain(services)
        invoice = stripe_drafts(world)["acme"]
        assert invoice["status"] == "open"
        with TestClient(create_app(services)) as client:
            yield services, client, invoice


def post(client: TestClient, payload: bytes, headers: dict[str, str]) -> httpx.Response:
    return client.post("/webhooks/stripe", content=payload, headers=headers)


def apply_inbox(services: Services) -> int:
    """What the leader's inbox worker does with the stored events, now."""
    return asyncio.run(drain_inbox(services, everything=True)).deliveries


def entry_states(services: Services) -> set[str]:
    return {e.state for e in ledger_rows(services, t.entries)}


def test_paid_moves_entries_to_paid_and_a_replay_changes_nothing(
    finalized: tuple[Services, TestClient, dict[str, Any]], world: StripeWorld, ledger_url: str
) -> None:
    services, client, invoice = finalized
    event = world.fake.build_signed_event("invoice.paid", {**invoice, "status": "paid"})
    first = post(client, event.payload, event.headers)
    # Stored in the inbox and answered at once; the worker applies it.
    assert first.status_code == 200 and first.json() == {"status": "queued"}
    assert entry_states(services) != {"paid"}
    assert apply_inbox(services) == 1
    assert entry_states(services) == {"paid"}
    before = dump(ledger_url)
    again = post(client, event.payload, event.headers)
    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    assert apply_inbox(services) == 0
    assert dump(ledger_url) == before
    # A late `invoice.finalized` after `invoice.paid` does not move anything back.
    late = world.fake.build_signed_event("invoice.finalized", invoice)
    assert post(client, late.payload, late.headers).json() == {"status": "queued"}
    assert apply_inbox(services) == 1
    assert entry_states(services) == {"paid"}


def test_voided_invoice_returns_its_entries_to_ready(
    finalized: tuple[Services, TestClient, dict[str, Any]], world: StripeWorld
) -> None:
    services, client, invoice = finalized
    voided = httpx.post(
        f"{world.base_url}/v1/invoices/{invoice['id']}/void",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()
    event = world.fake.build_signed_event("invoice.voided", voided)
    assert post(client, event.payload, event.headers).json() == {"status": "queued"}
    assert apply_inbox(services) == 1
    entries = ledger_rows(services, t.entries)
    assert {e.state for e in entries} == {"ready"}
    assert all(e.invoice_id is None and e.stripe_invoice_item_id is None for e in entries)
    # They go on the next draft, as new lines on a new Stripe invoice.
    services.invoicing.create_or_refresh_draft("acme")
    drain(services)
    drafts = [i for i in world.fake.list_objects("invoice") if i["status"] == "draft"]
    assert len(drafts) == 1 and drafts[0]["total"] == 36000


@pytest.mark.parametrize(
    "case",
    [
        "forged",
        "stale",
        "missing signature",
        "other secret",
        "malformed json",
        "not an event",
        "tampered body",
    ],
)
def test_bad_requests_are_refused_and_change_nothing(
    case: str,
    finalized: tuple[Services, TestClient, dict[str, Any]],
    world: StripeWorld,
    ledger_url: str,
) -> None:
    _, client, invoice = finalized
    event = world.fake.build_signed_event("invoice.paid", {**invoice, "status": "paid"})
    payload, headers = event.payload, dict(event.headers)
    now = int(time.time())
    if case == "forged":
        headers["Stripe-Signature"] = f"t={now},v1={'0' * 64}"
    elif case == "stale":
        headers["Stripe-Signature"] = sign_stripe_payload(payload, WEBHOOK_SECRET, now - 400)
    elif case == "missing signature":
        del headers["Stripe-Signature"]
    elif case == "other secret":
        headers["Stripe-Signature"] = sign_stripe_payload(payload, "whsec_other", now)
    elif case == "malformed json":
        payload = b"{not json"
        headers["Stripe-Signature"] = sign_stripe_payload(payload, WEBHOOK_SECRET, now)
    elif case == "not an event":
        payload = b"[1, 2]"
        headers["Stripe-Signature"] = sign_stripe_payload(payload, WEBHOOK_SECRET, now)
    elif case == "tampered body":
        payload = payload.replace(b'"paid"', b'"void"')
    before = dump(ledger_url)
    response = post(client, payload, headers)
    expected = 400 if case in ("malformed json", "not an event") else 401
    assert response.status_code == expected, response.text
    assert dump(ledger_url) == before


def test_unrelated_events_are_accepted_and_ignored(
    finalized: tuple[Services, TestClient, dict[str, Any]], world: StripeWorld, ledger_url: str
) -> None:
    _, client, _ = finalized
    event = world.fake.build_signed_event("customer.created", {"id": "cus_x"})
    before = dump(ledger_url)
    assert post(client, event.payload, event.headers).status_code == 202
    assert dump(ledger_url) == before
