"""Fault matrix, webhook rows: duplicate, out-of-order and delayed deliveries from both
boards (GitHub `projects_v2_item`, Azure DevOps `workitem.updated`) and from Stripe
(`invoice.paid` before `invoice.finalized`, `invoice.paid` twice), all through the ASGI
app, with billing carried on to finalized invoices; and a poll racing a webhook for the
same item. On SQLite and PostgreSQL; each test ends with the four invariants.

Already covered elsewhere, one step each, without the billing that follows:
tests/integration/test_board_webhooks.py (replayed delivery ids, an older Azure revision
after a newer one, webhook and poll one after the other) and
tests/integration/test_stripe_webhooks.py (a replayed `invoice.paid`, a late
`invoice.finalized`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from sync.boards import sync_board
from sync.engine import Engine
from sync.intake import drain_inbox
from sync.ledger import schema as t
from sync.ledger.store import HeldRow, UnitOfWork
from tests.builders import snap
from tests.fakes.stripe_server import SignedEvent
from tests.faults.invariants import assert_invariants
from tests.faults.world import (
    AZURE_BOARD,
    GITHUB_BOARD,
    World,
    drain,
    entry_rows,
    invoice_states,
    post_azure,
    post_github,
    post_stripe,
    settle,
    taken,
)
from tests.stripe_support import API_KEY, APPROVER


async def bill_and_approve(world: World) -> int:
    """Put every ready entry on a draft, push it to Stripe, approve it, finalize it."""
    invoicing = world.services.invoicing
    invoice_id = invoicing.create_or_refresh_draft("acme").invoice_id
    await settle(world.services, world.clock)
    invoicing.approve(invoice_id, APPROVER, "cli")
    await settle(world.services, world.clock)
    return invoice_id


async def draft(world: World) -> int:
    invoice_id = world.services.invoicing.create_or_refresh_draft("acme").invoice_id
    await settle(world.services, world.clock)
    return invoice_id


def status(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


# -- boards: duplicate, out of order, delayed ---------------------------------------------------


async def test_github_deliveries_duplicated_out_of_order_and_delayed_bill_once(
    world: World,
) -> None:
    services, project, http = world.services, world.project, world.http
    item = project.add_issue("Checkout", status="In Progress", hours=1)
    node = item.node_id
    created = project.webhook_payload(node, "created")
    assert (await taken(services, await post_github(http, created, "gh-1"))).changed == 1

    project.set_hours(node, 3)
    project.move(node, "Done")
    done = project.webhook_payload(
        node, "edited", changes=project.status_change("In Progress", "Done")
    )
    assert (await taken(services, await post_github(http, done, "gh-2"))).changed == 1
    assert status(await post_github(http, done, "gh-2")) == "duplicate"
    first_invoice = await bill_and_approve(world)

    # Re-opened, more hours, Done again: the deliveries arrive late and out of order.
    project.move(node, "In Progress")
    reopened = project.webhook_payload(
        node, "edited", changes=project.status_change("Done", "In Progress")
    )
    project.set_hours(node, 5)
    project.move(node, "Done")
    done_again = project.webhook_payload(
        node, "edited", changes=project.status_change("In Progress", "Done")
    )
    assert (await taken(services, await post_github(http, done_again, "gh-4"))).changed == 1
    late = await post_github(http, reopened, "gh-3")  # re-fetched: the item as it is now
    report = await taken(services, late)
    assert (report.seen, report.changed) == (1, 0)
    for delivery, payload in (("gh-4", done_again), ("gh-2", done), ("gh-1", created)):
        assert status(await post_github(http, payload, delivery)) == "duplicate"
    # A delayed copy under a new delivery id changes nothing either.
    report = await taken(services, await post_github(http, done, "gh-2-redelivered"))
    assert (report.seen, report.changed) == (1, 0)

    second_invoice = await draft(world)
    assert second_invoice != first_invoice
    assert entry_rows(world.services) == [
        (node, "time-1", "invoiced", Decimal(3)),
        (node, "time-2", "drafted", Decimal(2)),
    ]
    assert invoice_states(world.services) == ["finalized", "draft"]
    await assert_invariants(world.services, world.stripe.fake)


async def test_azure_hooks_duplicated_out_of_order_and_delayed_bill_once(world: World) -> None:
    services, shop, http = world.services, world.shop, world.http
    story = shop.add_item("Checkout", state="Active", hours=1)
    rev1 = shop.service_hook_payload(story)
    assert (await taken(services, await post_azure(http, rev1))).changed == 1
    shop.set_state(story, "Closed", hours=3)
    rev2 = shop.service_hook_payload(story)
    assert (await taken(services, await post_azure(http, rev2))).changed == 1
    assert status(await post_azure(http, rev2)) == "duplicate"
    first_invoice = await bill_and_approve(world)

    shop.set_state(story, "Active")
    rev3 = shop.service_hook_payload(story)  # delayed: arrives after rev 4
    shop.set_state(story, "Closed", hours=5)
    rev4 = shop.service_hook_payload(story)
    assert (await taken(services, await post_azure(http, rev4))).changed == 1
    assert (await taken(services, await post_azure(http, rev3))).stale == 1
    assert status(await post_azure(http, rev4)) == "duplicate"
    assert status(await post_azure(http, rev2)) == "duplicate"
    assert status(await post_azure(http, rev1)) == "duplicate"

    second_invoice = await draft(world)
    assert second_invoice != first_invoice
    assert entry_rows(world.services) == [
        (str(story), "time-1", "invoiced", Decimal(3)),
        (str(story), "time-2", "drafted", Decimal(2)),
    ]
    await assert_invariants(world.services, world.stripe.fake)


# -- Stripe: paid before finalized, paid twice ---------------------------------------------------


def stored_event(world: World, kind: str, invoice_id: str) -> SignedEvent:
    """The event the fake Stripe recorded for that invoice, signed as Stripe sends it."""
    (event,) = [
        e
        for e in world.stripe.fake.events
        if e["type"] == kind and e["data"]["object"]["id"] == invoice_id
    ]
    return world.stripe.fake.sign_event(event["id"])


async def test_stripe_paid_before_finalized_and_paid_twice(world: World) -> None:
    """Finalize's answer is lost on every try (the invoice is open at Stripe, the ledger
    still waits), the client pays, and `invoice.paid` arrives before `invoice.finalized`,
    then again. The ledger ends paid, with one finalize and no drift."""
    services, fake, http = world.services, world.stripe.fake, world.http
    services.engine.ingest(
        [
            snap("Done", "1", 1, item_id="A1", board="acme-board"),
            snap("Done", "2.1", 1, item_id="A2", board="acme-board"),
        ]
    )
    invoice_id = await draft(world)
    services.invoicing.approve(invoice_id, APPROVER, "cli")
    fake.drop_next("POST", "/v1/invoices/", count=4, mode="close")
    report = await services.invoicing.drain()
    assert report.retried == 1, report.errors
    (remote,) = fake.list_objects("invoice")
    assert remote["status"] == "open" and invoice_states(services) == ["draft"]

    async with httpx.AsyncClient(base_url=world.stripe.base_url) as stripe_api:
        paid = await stripe_api.post(
            f"/v1/invoices/{remote['id']}/pay", headers={"Authorization": f"Bearer {API_KEY}"}
        )
    paid.raise_for_status()
    paid_event = stored_event(world, "invoice.paid", remote["id"])
    finalized_event = stored_event(world, "invoice.finalized", remote["id"])

    assert status(await post_stripe(http, paid_event)) == "queued"
    assert (await drain_inbox(services, everything=True)).deliveries == 1
    assert {state for _, _, state, _ in entry_rows(services)} == {"paid"}
    assert status(await post_stripe(http, paid_event)) == "duplicate"
    assert status(await post_stripe(http, finalized_event)) == "queued"
    assert (await drain_inbox(services, everything=True)).deliveries == 1  # stale: no move
    assert {state for _, _, state, _ in entry_rows(services)} == {"paid"}
    world.clock.now += timedelta(minutes=10)
    await settle(services, world.clock)  # the waiting finalize sees it done
    assert status(await post_stripe(http, finalized_event)) == "duplicate"

    assert invoice_states(services) == ["paid"]
    assert {state for _, _, state, _ in entry_rows(services)} == {"paid"}
    finalizes = [
        r
        for r in fake.requests
        if r.path.endswith("/finalize") and r.outcome_status == 200 and not r.replayed
    ]
    assert len(finalizes) == 1
    await assert_invariants(services, fake)


# -- a poll racing a webhook ----------------------------------------------------------------------


class Rendezvous:
    """Holds the first two ingests of a race right after they read the ledger, so both
    plan from the same state before either writes (PostgreSQL). On SQLite the second
    waits for the first's write lock instead; the first gives up waiting after
    `timeout` and goes on alone."""

    def __init__(self, timeout: float = 0.5) -> None:
        self.barrier = threading.Barrier(2, timeout=timeout)
        self.lock = threading.Lock()
        self.arrivals = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = Engine._ingest_batch
        rendezvous = self

        def ingest_batch(engine: Engine, uow: UnitOfWork, batch: list[Any], *rest: Any) -> Any:
            read = uow.held_items

            def held_then_wait(item_keys: Sequence[str]) -> dict[str, HeldRow]:
                held = read(item_keys)
                rendezvous.wait()
                return held

            uow.held_items = held_then_wait  # type: ignore[method-assign]
            return original(engine, uow, batch, *rest)

        monkeypatch.setattr(Engine, "_ingest_batch", ingest_batch)

    def wait(self) -> None:
        with self.lock:
            self.arrivals += 1
            if self.arrivals > 2:
                return  # a re-plan after a conflict goes straight on
        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait()

    def reset(self) -> None:
        with self.lock:
            self.arrivals = 0
            self.barrier.reset()


def audit_duplicates(world: World) -> dict[str, list[Any]]:
    """Transition and entry-event rows recorded twice for one change."""
    with world.services.ledger.engine.connect() as conn:
        transitions = Counter(
            tuple(r)
            for r in conn.execute(
                select(
                    t.transitions.c.item_id,
                    t.transitions.c.to_column,
                    t.transitions.c.revision,
                )
            ).all()
        )
        events = Counter(
            tuple(r)
            for r in conn.execute(
                select(
                    t.entry_events.c.entry_id,
                    t.entry_events.c.from_state,
                    t.entry_events.c.to_state,
                    t.entry_events.c.hours,
                )
            ).all()
        )
    return {
        "transitions": [k for k, n in transitions.items() if n > 1],
        "entry_events": [k for k, n in events.items() if n > 1],
    }


@pytest.mark.parametrize("board", ["github", "azure"])
async def test_a_poll_racing_a_webhook_for_the_same_item_bills_once(
    board: str, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    services, http = world.services, world.http
    project, shop = world.project, world.shop
    key = GITHUB_BOARD if board == "github" else AZURE_BOARD
    rendezvous = Rendezvous()
    if board == "github":
        node = project.add_issue("Checkout", status="In Progress", hours=1).node_id
        external = node
        deliveries = iter(f"race-{n}" for n in range(10))

        def change(hours: int) -> Callable[[], Awaitable[httpx.Response]]:
            project.move(node, "In Progress")
            project.set_hours(node, hours)
            project.move(node, "Done")
            payload = project.webhook_payload(
                node, "edited", changes=project.status_change("In Progress", "Done")
            )
            return lambda: post_github(http, payload, next(deliveries))
    else:
        story = shop.add_item("Checkout", state="Active", hours=1)
        external = str(story)

        def change(hours: int) -> Callable[[], Awaitable[httpx.Response]]:
            shop.set_state(story, "Active")
            shop.set_state(story, "Closed", hours=hours)
            payload = shop.service_hook_payload(story)
            return lambda: post_azure(http, payload)

    await sync_board(services, key)
    rendezvous.install(monkeypatch)
    for hours in (3, 5):
        deliver = change(hours)
        hook = await deliver()
        assert hook.status_code == 202, hook.text
        rendezvous.reset()
        drained, poll = await asyncio.gather(drain(services), sync_board(services, key))
        assert drained.deliveries == 1
        assert poll.seen == 1
        if hours == 3:
            await draft(world)
        else:  # one of the two recorded the new hours, the other found them recorded
            assert len(entry_rows(services)) == 2
    monkeypatch.undo()

    assert entry_rows(services) == [
        (external, "time-1", "drafted", Decimal(3)),
        (external, "time-2", "ready", Decimal(2)),
    ]
    await bill_and_approve(world)
    await assert_invariants(services, world.stripe.fake)


# The same race at the engine, where both paths end: two ingests of the board item in
# threads, the second starting its transaction while the first holds the item.


async def race(world: World, monkeypatch: pytest.MonkeyPatch, *snapshots: Any) -> None:
    """Ingest each snapshot in its own thread, in the order given: each starts its
    transaction while the one before is inside its own (it has read the ledger, so it
    holds the item: SQLite's write lock, PostgreSQL's row lock) and must wait for it.
    Events, not sleeps, set the order, so a busy machine cannot swap the writers."""
    engine = world.services.engine
    ledger = world.services.ledger
    holding = [threading.Event() for _ in snapshots]  # has read the ledger, lock held
    starting = [threading.Event() for _ in snapshots]  # about to begin its transaction
    index_of: dict[int, int] = {}
    original_batch = Engine._ingest_batch
    original_unit_of_work = ledger.unit_of_work

    def ingest_batch(
        self: Engine, uow: UnitOfWork, batch: list[Any], reread: bool = False
    ) -> Any:
        index = index_of.get(threading.get_ident())
        if index is None or holding[index].is_set():
            return original_batch(self, uow, batch, reread)  # a re-plan after a conflict
        read = uow.held_items

        def held_then_wait(item_keys: Sequence[str]) -> dict[str, HeldRow]:
            held = read(item_keys)
            holding[index].set()
            if index + 1 < len(snapshots):
                # The next ingest is on its way to the lock this transaction holds.
                starting[index + 1].wait(timeout=10)
            return held

        uow.held_items = held_then_wait  # type: ignore[method-assign]
        return original_batch(self, uow, batch, reread)

    @contextlib.contextmanager
    def unit_of_work(now: Any) -> Iterator[UnitOfWork]:
        index = index_of.get(threading.get_ident())
        if index is not None:
            starting[index].set()
        with original_unit_of_work(now) as uow:
            yield uow

    monkeypatch.setattr(Engine, "_ingest_batch", ingest_batch)
    monkeypatch.setattr(ledger, "unit_of_work", unit_of_work)

    def ingest(index: int, snapshot: Any) -> None:
        index_of[threading.get_ident()] = index
        if index and not holding[index - 1].wait(timeout=30):
            raise AssertionError(f"ingest {index - 1} never reached the ledger")
        engine.ingest([snapshot])

    try:
        await asyncio.gather(
            *(asyncio.to_thread(ingest, i, snapshot) for i, snapshot in enumerate(snapshots))
        )
    finally:
        monkeypatch.undo()


async def test_racing_ingests_of_one_change_record_it_once(
    world: World, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    engine = world.services.engine
    engine.ingest([snap("In progress", "1", 1, item_id="R1", board="acme-board")])
    done = snap("Done", "3", 2, item_id="R1", board="acme-board")
    await race(world, monkeypatch, done, done)
    assert entry_rows(world.services) == [("R1", "time-1", "ready", Decimal(3))]
    assert audit_duplicates(world) == {"transitions": [], "entry_events": []}
    await bill_and_approve(world)
    await assert_invariants(world.services, world.stripe.fake)


async def test_racing_ingests_of_two_revisions_keep_the_newest(
    world: World, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """A poll holding revision 2 (3 h) and a webhook re-fetch holding revision 3 (5 h)
    ingest at once; the older one waits for the newer one and commits last. The ledger
    must keep revision 3."""
    engine = world.services.engine
    engine.ingest([snap("In progress", "1", 1, item_id="R1", board="acme-board")])
    newer = snap("Done", "5", 3, item_id="R1", board="acme-board")
    older = snap("Done", "3", 2, item_id="R1", board="acme-board")
    await race(world, monkeypatch, newer, older)
    with world.services.ledger.engine.connect() as conn:
        revision = conn.execute(select(t.items.c.revision)).scalar_one()
    assert revision == 3
    assert entry_rows(world.services) == [("R1", "time-1", "ready", Decimal(5))]
    await bill_and_approve(world)
    await assert_invariants(world.services, world.stripe.fake)
