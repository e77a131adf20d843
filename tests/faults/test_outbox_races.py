"""Fault matrix, outbox rows: two drains racing the same rows, and a decision taken while
a Stripe call for the draft is in flight.

Three entries (1 h, 2 h, 3 h at 120 EUR) on one draft; the fake Stripe answers one
request slowly so the race is certain, not timed. Each test ends with the invariants.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from connectors.slack import LineAdjustment
from sync.composition import Services
from sync.ledger import schema as t
from tests.builders import snap
from tests.conftest import FixedClock
from tests.fakes.stripe_server import RecordedRequest
from tests.faults.invariants import assert_invariants
from tests.faults.world import settle
from tests.stripe_support import APPROVER, StripeWorld, services_for, world_settings


@pytest.fixture
def two(
    stripe_world: StripeWorld, ledger_url: str, clock: FixedClock
) -> Iterator[tuple[Services, Services]]:
    """Two instances on one ledger: the daemon's and a `kanvoice outbox drain`'s."""
    daemon = services_for(world_settings(stripe_world, ledger_url), clock)
    cli = services_for(world_settings(stripe_world, ledger_url), clock)
    daemon.engine.ingest(
        [snap("Done", h, 1, item_id=f"R{h}", board="acme-board") for h in ("1", "2", "3")]
    )
    yield daemon, cli
    cli.close()
    daemon.close()


def posts(world: StripeWorld, path: str) -> list[RecordedRequest]:
    return [r for r in world.fake.requests if r.method == "POST" and r.path == path]


async def in_flight(world: StripeWorld, path: str, within: float = 10.0) -> None:
    """Until the fake holds a (delayed) POST to `path`."""
    deadline = time.monotonic() + within
    while not any(r.outcome_status is None for r in posts(world, path)):
        assert time.monotonic() < deadline, f"no call to {path} in flight"
        await asyncio.sleep(0.01)


async def test_two_drains_racing_one_outbox_row_make_one_stripe_call(
    two: tuple[Services, Services], stripe_world: StripeWorld, clock: FixedClock
) -> None:
    daemon, cli = two
    assert daemon.invoicing.create_or_refresh_draft("acme").invoice_id is not None
    # The draft's creation is slow: both drains reach its row while the first call runs.
    stripe_world.fake.delay_next("POST", "/v1/invoices", seconds=0.5)
    try:
        await asyncio.gather(daemon.invoicing.drain(), cli.invoicing.drain())
        await settle(daemon, clock)
    finally:
        await cli.invoicing.close()
    assert len(posts(stripe_world, "/v1/invoices")) == 1  # one call, not a replay
    assert len(posts(stripe_world, "/v1/invoiceitems")) == 3
    assert stripe_world.fake.created["invoice"] == 1
    assert stripe_world.fake.created["invoiceitem"] == 3
    await assert_invariants(daemon, stripe_world.fake)


async def test_reject_while_a_line_is_on_its_way_to_stripe_leaves_no_stray_line(
    two: tuple[Services, Services], stripe_world: StripeWorld, clock: FixedClock
) -> None:
    services, _ = two
    invoice_id = services.invoicing.create_or_refresh_draft("acme").invoice_id
    assert invoice_id is not None
    # The first line is slow: finance rejects the draft while Stripe is creating it.
    stripe_world.fake.delay_next("POST", "/v1/invoiceitems", seconds=1.0)
    drain = asyncio.create_task(services.invoicing.drain())
    await in_flight(stripe_world, "/v1/invoiceitems")
    rejected = await asyncio.to_thread(
        services.invoicing.reject, invoice_id, APPROVER, "cli", "wrong client"
    )
    assert rejected["entries_returned"] == 3
    await drain
    await settle(services, clock)
    live = [i for i in stripe_world.fake.list_objects("invoiceitem") if not i.get("deleted")]
    assert live == []  # the line created after the reject was deleted, not linked
    # Drafted again, every line reaches Stripe once: none lost.
    services.invoicing.create_or_refresh_draft("acme")
    await settle(services, clock)
    await assert_invariants(services, stripe_world.fake)


async def test_a_refresh_between_approval_and_finalize_goes_to_the_next_draft(
    two: tuple[Services, Services], stripe_world: StripeWorld, clock: FixedClock
) -> None:
    services, _ = two
    first = services.invoicing.create_or_refresh_draft("acme").invoice_id
    assert first is not None
    await settle(services, clock)
    approved = services.invoicing.approve(first, APPROVER, "cli")
    # Before the finalize runs, a ticket reaches Done and the client's draft is refreshed.
    services.engine.ingest([snap("Done", "4", 1, item_id="R4", board="acme-board")])
    refreshed = services.invoicing.create_or_refresh_draft("acme")
    assert refreshed.invoice_id not in (None, first)
    assert (refreshed.added, refreshed.lines) == (1, 1)
    await settle(services, clock)
    invoices = {
        i["metadata"]["kanvoice_invoice"].split(":")[1]: i
        for i in stripe_world.fake.list_objects("invoice")
    }
    assert invoices[str(first)]["status"] == "open"  # finalized as approved
    assert invoices[str(first)]["total"] == approved["total_minor"] == (1 + 2 + 3) * 12000
    assert invoices[str(refreshed.invoice_id)]["status"] == "draft"
    assert invoices[str(refreshed.invoice_id)]["total"] == 4 * 12000
    await assert_invariants(services, stripe_world.fake)


async def test_reconcile_deletes_a_stray_line_and_unlinks_its_entry(
    two: tuple[Services, Services], stripe_world: StripeWorld, clock: FixedClock
) -> None:
    services, _ = two
    assert services.invoicing.create_or_refresh_draft("acme").invoice_id is not None
    await settle(services, clock)
    # What the old drain left after a reject raced a create: the entry is back to ready
    # but still linked to the line Stripe created for it.
    with services.ledger.engine.begin() as conn:
        entry_id, item_id = conn.execute(
            select(t.entries.c.id, t.entries.c.stripe_invoice_item_id).order_by(t.entries.c.id)
        ).first()
        conn.execute(
            update(t.entries)
            .where(t.entries.c.id == entry_id)
            .values(state="ready", invoice_id=None)
        )
    drifts = await services.invoicing.reconcile()
    assert [d.repair for d in drifts] == ["deleted from the draft", "unlinked"]
    with services.ledger.engine.connect() as conn:
        link = conn.execute(
            select(t.entries.c.stripe_invoice_item_id).where(t.entries.c.id == entry_id)
        ).scalar_one()
    assert link is None
    assert item_id not in {i["id"] for i in stripe_world.fake.list_objects("invoiceitem")}
    # Drafted again, it gets a line of its own (not the deleted one).
    services.invoicing.create_or_refresh_draft("acme")
    await settle(services, clock)
    assert await services.invoicing.reconcile(repair=False) == []
    await assert_invariants(services, stripe_world.fake)


@pytest.mark.parametrize("second_drain", [False, True], ids=["one drain", "two drains"])
async def test_adjust_while_a_line_is_on_its_way_to_stripe_puts_the_new_hours_on_stripe(
    two: tuple[Services, Services], stripe_world: StripeWorld, clock: FixedClock, second_drain: bool
) -> None:
    services, cli = two
    invoice_id = services.invoicing.create_or_refresh_draft("acme").invoice_id
    assert invoice_id is not None
    with services.ledger.engine.connect() as conn:
        first = (
            conn.execute(
                select(t.entries.c.id)
                .where(t.entries.c.invoice_id == invoice_id)
                .order_by(t.entries.c.id)
            )
            .scalars()
            .first()
        )
        version = conn.execute(
            select(t.invoices.c.version).where(t.invoices.c.id == invoice_id)
        ).scalar_one()
    assert first is not None
    # The first line (1 h) is slow: finance lowers it to 0.5 h while Stripe creates it
    # with the old amount.
    stripe_world.fake.delay_next("POST", "/v1/invoiceitems", seconds=1.0)
    drain = asyncio.create_task(services.invoicing.drain())
    await in_flight(stripe_world, "/v1/invoiceitems")
    reply = await asyncio.to_thread(
        services.desk.adjust_lines,
        invoice_id,
        APPROVER,
        int(version),
        (LineAdjustment(first, Decimal("0.5"), None, None, False),),
        "dashboard",
    )
    assert reply.outcome == "adjusted"
    if second_drain:
        # Another drain reaches the line's update while its create is still in flight:
        # it waits for the create's link instead of dropping the update.
        try:
            report = await cli.invoicing.drain()
        finally:
            await cli.invoicing.close()
        assert report.errors == [] and report.parked == 0
    await drain
    await settle(services, clock)
    live = [i for i in stripe_world.fake.list_objects("invoiceitem") if not i.get("deleted")]
    assert sorted(int(i["amount"]) for i in live) == [6000, 24000, 36000]  # none lost
    # Approved at the adjusted total, the draft is finalized as approved.
    approved = services.invoicing.approve(invoice_id, APPROVER, "cli")
    assert approved["total_minor"] == (Decimal("0.5") + 2 + 3) * 12000
    await settle(services, clock)
    invoices = stripe_world.fake.list_objects("invoice")
    assert [(i["status"], i["total"]) for i in invoices] == [("open", 66000)]
    await assert_invariants(services, stripe_world.fake)


async def test_reconcile_deletes_a_second_stripe_line_for_one_entry(
    two: tuple[Services, Services], stripe_world: StripeWorld, clock: FixedClock
) -> None:
    services, _ = two
    assert services.invoicing.create_or_refresh_draft("acme").invoice_id is not None
    await settle(services, clock)
    # A second line naming an entry already on the draft (a create replayed under a new
    # key, a copy made by hand): the client would be billed twice.
    (first, *_) = sorted(stripe_world.fake.list_objects("invoiceitem"), key=lambda i: i["id"])
    copy = await services.invoicing.gateway.create_invoice_item(
        {
            "customer": first["customer"],
            "invoice": first["invoice"],
            "amount": first["amount"],
            "currency": first["currency"],
            "description": first["description"],
            "metadata": first["metadata"],
        },
        "test-duplicate-line",
    )
    drifts = await services.invoicing.reconcile()
    assert [d.repair for d in drifts] == ["deleted from the draft"]
    assert "repeats entry" in drifts[0].problem
    live = {i["id"] for i in stripe_world.fake.list_objects("invoiceitem") if not i.get("deleted")}
    assert first["id"] in live and copy["id"] not in live
    await assert_invariants(services, stripe_world.fake)
