"""The `StripePort` contract, run against both adapters: the in-memory Stripe of the
demo, and the real gateway over HTTP against the wire fake. Whatever the demo relies
on must hold for Stripe too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from connectors.stripe.gateway import StripeGateway
from connectors.stripe.memory import InMemoryStripe
from connectors.stripe.port import StripePort, StripeRejected
from tests.stripe_support import API_KEY, StripeWorld, fake_stripe


@pytest.fixture(scope="module")
def wire() -> Iterator[StripeWorld]:
    with fake_stripe({"acme": "eur"}) as world:
        yield world


@pytest.fixture(params=["memory", "gateway"])
async def port(request: pytest.FixtureRequest, wire: StripeWorld) -> AsyncIterator[StripePort]:
    adapter: StripePort
    if request.param == "memory":
        memory = InMemoryStripe()
        memory.add_customer("acme", "eur", wire.customers["acme"])
        adapter = memory
    else:
        adapter = StripeGateway(API_KEY, api_base=wire.base_url, requests_per_second=1000)
    try:
        yield adapter
    finally:
        await adapter.close()


_keys = iter(range(1_000_000))


def key(name: str) -> str:
    """A fresh idempotency key (the wire fake outlives a test)."""
    return f"kv-test-{name}-{next(_keys)}"


async def draft(port: StripePort, customer: str, marker: str = "m") -> dict[str, Any]:
    return await port.create_invoice(
        {
            "customer": customer,
            "auto_advance": False,
            "collection_method": "send_invoice",
            "days_until_due": 14,
            "currency": "eur",
            "pending_invoice_items_behavior": "exclude",
            "metadata": {"kanvoice_invoice": marker},
        },
        key("create"),
    )


def item(invoice: dict[str, Any], customer: str, amount: int, entry: str) -> dict[str, Any]:
    return {
        "customer": customer,
        "invoice": invoice["id"],
        "amount": amount,
        "currency": "eur",
        "description": f"line {entry}",
        "metadata": {"kanvoice_entry": entry, "hours": "1"},
    }


async def test_a_draft_totals_its_items_in_minor_units(port: StripePort, wire: StripeWorld) -> None:
    customer = wire.customers["acme"]
    invoice = await draft(port, customer)
    assert invoice["status"] == "draft" and invoice["total"] == 0
    first = await port.create_invoice_item(item(invoice, customer, 24000, "e1"), key("i"))
    second = await port.create_invoice_item(item(invoice, customer, 1050, "e2"), key("i"))
    assert (await port.retrieve_invoice(invoice["id"]))["total"] == 25050

    await port.update_invoice_item(
        first["id"], {"amount": 30000, "metadata": {"hours": "2"}}, key("u")
    )
    await port.delete_invoice_item(second["id"])
    await port.delete_invoice_item(second["id"])  # already gone: still deleted
    assert (await port.retrieve_invoice(invoice["id"]))["total"] == 30000
    (line,) = await port.list_invoice_items(invoice["id"])
    assert line["amount"] == 30000
    assert line["metadata"] == {"kanvoice_entry": "e1", "hours": "2"}  # merged by key
    drafts = await port.list_draft_invoices(customer)
    assert invoice["id"] in {d["id"] for d in drafts}


async def test_an_idempotency_key_replays_the_first_answer(
    port: StripePort, wire: StripeWorld
) -> None:
    customer = wire.customers["acme"]
    invoice = await draft(port, customer)
    same = key("item")
    params = item(invoice, customer, 5000, "e1")
    first = await port.create_invoice_item(params, same)
    again = await port.create_invoice_item(params, same)
    assert again["id"] == first["id"]
    assert len(await port.list_invoice_items(invoice["id"])) == 1
    with pytest.raises(StripeRejected):
        await port.create_invoice_item({**params, "amount": 6000}, same)
    assert (await port.retrieve_invoice(invoice["id"]))["total"] == 5000


async def test_finalize_freezes_the_draft(port: StripePort, wire: StripeWorld) -> None:
    customer = wire.customers["acme"]
    invoice = await draft(port, customer)
    line = await port.create_invoice_item(item(invoice, customer, 12000, "e1"), key("i"))
    finalize = key("finalize")
    done = await port.finalize_invoice(invoice["id"], finalize)
    assert done["status"] == "open" and done["number"] and done["total"] == 12000
    replay = await port.finalize_invoice(invoice["id"], finalize)
    assert replay["id"] == done["id"] and replay["number"] == done["number"]
    assert invoice["id"] not in {d["id"] for d in await port.list_draft_invoices(customer)}
    with pytest.raises(StripeRejected):
        await port.create_invoice_item(item(invoice, customer, 100, "e2"), key("late"))
    with pytest.raises(StripeRejected):
        await port.update_invoice_item(line["id"], {"amount": 1}, key("late"))
    with pytest.raises(StripeRejected):
        await port.finalize_invoice(invoice["id"], key("twice"))
    sent = await port.send_invoice(invoice["id"], key("send"))
    assert sent["status"] == "open"


async def test_sending_a_draft_finalizes_it_and_unknown_objects_are_refused(
    port: StripePort, wire: StripeWorld
) -> None:
    customer = wire.customers["acme"]
    invoice = await draft(port, customer)
    await port.create_invoice_item(item(invoice, customer, 700, "e1"), key("i"))
    sent = await port.send_invoice(invoice["id"], key("send"))
    assert sent["status"] == "open" and sent["number"] and sent["total"] == 700
    empty = await draft(port, customer)
    nothing = await port.finalize_invoice(empty["id"], key("f"))
    assert nothing["status"] == "paid"  # Stripe: a zero total is paid at finalization
    with pytest.raises(StripeRejected) as missing:
        await port.retrieve_invoice("in_doesnotexist")
    assert missing.value.status == 404
    with pytest.raises(StripeRejected) as no_customer:
        await port.retrieve_customer("cus_doesnotexist")
    assert no_customer.value.status == 404
    assert (await port.retrieve_customer(wire.customers["acme"]))["currency"] == "eur"


# --- what only the in-memory Stripe does: the simulated customer and its events --------


async def test_payments_and_voids_become_events_delivered_later() -> None:
    stripe = InMemoryStripe()
    customer = stripe.add_customer("acme", "eur")
    seen: list[str] = []
    stripe.subscribe(lambda event: seen.append(event["type"]))
    invoice = await draft(stripe, customer)
    await stripe.create_invoice_item(item(invoice, customer, 100, "e1"), key("i"))
    await stripe.finalize_invoice(invoice["id"], key("f"))
    assert seen == []  # webhooks arrive after the call, not during it
    assert stripe.open_invoice_ids() == [invoice["id"]]
    paid = stripe.pay_invoice(invoice["id"])
    assert paid["status"] == "paid" and paid["amount_paid"] == 100
    assert stripe.deliver_events() == 2
    assert seen == ["invoice.finalized", "invoice.paid"]
    with pytest.raises(StripeRejected):
        stripe.void_invoice(invoice["id"])  # paid: no longer open


async def test_an_event_whose_listener_fails_stays_queued() -> None:
    stripe = InMemoryStripe()
    customer = stripe.add_customer("acme", "eur")
    failures = [RuntimeError("ledger down")]
    applied: list[str] = []

    def listener(event: dict[str, Any]) -> None:
        if failures:
            raise failures.pop()
        applied.append(event["type"])

    stripe.subscribe(listener)
    invoice = await draft(stripe, customer)
    await stripe.create_invoice_item(item(invoice, customer, 100, "e1"), key("i"))
    await stripe.finalize_invoice(invoice["id"], key("f"))
    stripe.void_invoice(invoice["id"])
    with pytest.raises(RuntimeError):
        stripe.deliver_events()
    assert stripe.deliver_events() == 2
    assert applied == ["invoice.finalized", "invoice.voided"]


async def test_objects_handed_out_are_copies() -> None:
    stripe = InMemoryStripe()
    customer = stripe.add_customer("acme", "eur")
    invoice = await draft(stripe, customer)
    invoice["status"] = "paid"
    invoice["metadata"]["kanvoice_invoice"] = "changed"
    held = await stripe.retrieve_invoice(invoice["id"])
    assert held["status"] == "draft" and held["metadata"] == {"kanvoice_invoice": "m"}


async def test_an_open_invoice_has_its_due_date_and_can_be_sent_again(
    port: StripePort, wire: StripeWorld
) -> None:
    """What overdue invoices and reminders rely on: Stripe's ``due_date`` (creation +
    ``days_until_due``) and ``send`` again on an open invoice, one reminder per key."""
    customer = wire.customers["acme"]
    invoice = await draft(port, customer)
    await port.create_invoice_item(item(invoice, customer, 5000, "e1"), key("i"))
    done = await port.finalize_invoice(invoice["id"], key("finalize"))
    assert done["due_date"] == invoice["created"] + 14 * 86400
    first = await port.send_invoice(invoice["id"], key("remind"))
    again = await port.send_invoice(invoice["id"], key("remind"))
    assert first["status"] == again["status"] == "open"
    assert (await port.retrieve_invoice(invoice["id"]))["due_date"] == done["due_date"]


async def test_the_in_memory_stripe_reports_an_overdue_open_invoice() -> None:
    stripe = InMemoryStripe()
    customer = stripe.add_customer("acme", "eur")
    seen: list[str] = []
    stripe.subscribe(lambda event: seen.append(event["type"]))
    invoice = await draft(stripe, customer)
    with pytest.raises(StripeRejected):
        stripe.mark_overdue(invoice["id"])  # a draft is never overdue
    await stripe.create_invoice_item(item(invoice, customer, 100, "e1"), key("i"))
    await stripe.finalize_invoice(invoice["id"], key("f"))
    stripe.mark_overdue(invoice["id"])
    stripe.deliver_events()
    assert seen == ["invoice.finalized", "invoice.overdue"]
