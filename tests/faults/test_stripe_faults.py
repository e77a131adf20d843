"""Fault matrix, Stripe rows: time-outs (after the work and before it), a key Stripe no
longer remembers (over 24 h) at the invoice and at the line step, 500s and 429s with
Retry-After. Three entries (1 h, 2 h, 3 h at 120 EUR) go through draft, approval and
finalize; each test ends with the four invariants.

The SIGKILL rows (before / after each Stripe call, during finalize) are
tests/integration/test_stripe_crashes.py. The database does not matter to these rows:
they run on SQLite.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from sync.composition import Services
from sync.ledger import schema as t
from tests.builders import snap
from tests.conftest import FixedClock
from tests.fakes.stripe_server import RecordedRequest
from tests.faults.invariants import check_invariants
from tests.faults.world import settle_now, tune_gateway
from tests.stripe_support import APPROVER, StripeWorld, drain, services_for, world_settings

TOTAL = (1 + 2 + 3) * 12000  # minor units (EUR cents)
# (method, path prefix) of each Stripe step; "/v1/invoices/" only matches calls on an
# existing invoice (finalize), "/v1/invoices" also the create.
STEP = {
    "create_invoice": ("POST", "/v1/invoices"),
    "create_invoice_item": ("POST", "/v1/invoiceitems"),
    "finalize_invoice": ("POST", "/v1/invoices/"),
}


@pytest.fixture
def services(stripe_world: StripeWorld, sqlite_url: str, clock: FixedClock) -> Iterator[Services]:
    s = services_for(world_settings(stripe_world, sqlite_url), clock)
    s.engine.ingest(
        [snap("Done", h, 1, item_id=f"A{h}", board="acme-board") for h in ("1", "2", "3")]
    )
    yield s
    s.close()


def draft(services: Services) -> int:
    return services.invoicing.create_or_refresh_draft("acme").invoice_id


def approve(services: Services, clock: FixedClock, invoice_id: int) -> None:
    services.invoicing.approve(invoice_id, APPROVER, "cli")
    assert settle_now(services, clock).parked == 0


def calls(world: StripeWorld, method: str, path: str) -> list[RecordedRequest]:
    return [r for r in world.fake.requests if r.method == method and r.path.startswith(path)]


def executed(requests: list[RecordedRequest]) -> list[RecordedRequest]:
    """Requests Stripe did the work for (not refused by a fault, not replayed)."""
    return [r for r in requests if r.outcome_status == 200 and not r.replayed]


def wait_for_answers(world: StripeWorld, timeout: float = 5.0) -> None:
    """Requests the fake still sleeps on (a delay fault) finish before we look."""
    deadline = time.monotonic() + timeout
    while any(r.outcome_status is None and r.fault == "delay" for r in world.fake.requests):
        assert time.monotonic() < deadline, "the fake Stripe never answered"
        time.sleep(0.02)


def assert_billed_once(world: StripeWorld) -> None:
    assert world.fake.created["invoice"] == 1
    assert world.fake.created["invoiceitem"] == 3
    (invoice,) = world.fake.list_objects("invoice")
    assert invoice["total"] == TOTAL
    assert len(executed(calls(world, "POST", "/v1/invoices/"))) <= 1  # one finalize at most


# -- time-outs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "lost"),
    [
        ("create_invoice", "every attempt"),
        ("create_invoice_item", "every attempt"),
        ("create_invoice_item", "once"),
        ("finalize_invoice", "every attempt"),
    ],
)
def test_stripe_times_out_after_the_work_and_the_retry_replays_the_same_key(
    step: str, lost: str, services: Services, stripe_world: StripeWorld, clock: FixedClock
) -> None:
    """The work happened, the answer never came (time-out): retried with the same key,
    by the gateway ("once") or by the next drain ("every attempt"), Stripe replays."""
    tune_gateway(services, timeout=0.25, max_attempts=2)
    method, path = STEP[step]
    faults = {"once": 1, "every attempt": 2}[lost]
    invoice_id = draft(services)
    if step != "finalize_invoice":
        stripe_world.fake.delay_next(method, path, seconds=0.6, count=faults, after_work=True)
    first = drain(services)
    if step == "finalize_invoice":
        services.invoicing.approve(invoice_id, APPROVER, "cli")
        stripe_world.fake.delay_next(method, path, seconds=0.6, count=faults, after_work=True)
        first = drain(services)
    assert first.retried == (1 if lost == "every attempt" else 0), first.errors
    wait_for_answers(stripe_world)

    clock.now += timedelta(minutes=10)
    settle_now(services, clock)
    if step != "finalize_invoice":
        approve(services, clock, invoice_id)
    wait_for_answers(stripe_world)

    timed_out = [r for r in stripe_world.fake.requests if r.fault == "delay"]
    assert len(timed_out) == faults
    assert len({r.idempotency_key for r in timed_out}) == 1
    same_key = [
        r for r in stripe_world.fake.requests if r.idempotency_key == timed_out[0].idempotency_key
    ]
    assert len(executed(same_key)) == 1
    if step != "finalize_invoice":
        # Every later try with that key was answered from Stripe's saved response.
        assert all(r.replayed for r in same_key[1:])
    assert_billed_once(stripe_world)
    check_invariants(services, stripe_world.fake)


def test_stripe_times_out_before_the_work_and_the_retry_creates_once(
    services: Services, stripe_world: StripeWorld, clock: FixedClock
) -> None:
    """The first try is still queued at Stripe when the gateway gives up and retries:
    the retry does the work, the late first try replays it."""
    tune_gateway(services, timeout=0.25, max_attempts=4)
    stripe_world.fake.delay_next("POST", "/v1/invoiceitems", seconds=0.6)
    invoice_id = draft(services)
    assert drain(services).errors == []
    wait_for_answers(stripe_world)
    (slow,) = [r for r in stripe_world.fake.requests if r.fault == "delay"]
    assert slow.replayed, "the late first try must be a replay of the retry's work"
    same_key = [r for r in stripe_world.fake.requests if r.idempotency_key == slow.idempotency_key]
    assert len(same_key) == 2 and len(executed(same_key)) == 1
    approve(services, clock, invoice_id)
    assert_billed_once(stripe_world)
    check_invariants(services, stripe_world.fake)


# -- a key Stripe forgot ------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["create_invoice", "create_invoice_item"])
def test_stripe_lost_the_key_after_a_day_and_the_retry_adopts_by_metadata(
    step: str, services: Services, stripe_world: StripeWorld, clock: FixedClock
) -> None:
    """The connection drops after the work, on every try; a day passes and Stripe prunes
    its keys. Reusing the key would create a second object: the writer looks first."""
    tune_gateway(services, max_attempts=2)
    method, path = STEP[step]
    stripe_world.fake.drop_next(method, path, count=2, mode="close")
    invoice_id = draft(services)
    first = drain(services)
    assert first.retried == 1, first.errors
    made = "invoice" if step == "create_invoice" else "invoiceitem"
    assert stripe_world.fake.created[made] >= 1  # the work was done, the answer lost

    assert stripe_world.fake.forget_idempotency_keys() > 0
    clock.now += timedelta(hours=25)
    seen = len(stripe_world.fake.requests)
    settle_now(services, clock)
    later = stripe_world.fake.requests[seen:]
    lookups = [r for r in later if r.method == "GET" and r.path == path]
    assert lookups, f"the retry did not look for the existing {made} first"
    approve(services, clock, invoice_id)
    assert_billed_once(stripe_world)
    check_invariants(services, stripe_world.fake)


# -- 500 and 429 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", ["500 then success", "500 on every attempt", "429 once", "429 on every attempt"]
)
def test_stripe_500_and_429_are_retried_without_billing_twice(
    fault: str, services: Services, stripe_world: StripeWorld, clock: FixedClock
) -> None:
    waits = tune_gateway(services, max_attempts=2)
    fake = stripe_world.fake
    every = fault.endswith("every attempt")
    if fault.startswith("500"):
        fake.fail_next("POST", "/v1/invoiceitems", status=500, count=2 if every else 1)
    else:
        fake.rate_limit_next("POST", "/v1/invoiceitems", retry_after=30, count=2 if every else 1)
    invoice_id = draft(services)
    first = drain(services)
    assert first.retried == (1 if every else 0), first.errors
    refused = [r for r in fake.requests if r.fault is not None]
    key = refused[0].idempotency_key
    assert key and all(r.idempotency_key == key for r in refused)  # the gateway kept the key
    if fault.startswith("429"):
        assert 30.0 in waits, f"Retry-After ignored: waited {waits}"

    if fault == "429 on every attempt":
        # The drain honours Retry-After too: the line waits 30 s of ledger time.
        with services.ledger.engine.connect() as conn:
            (op,) = conn.execute(select(t.outbox).where(t.outbox.c.idempotency_key == key)).all()
        not_before = (
            op.not_before
            if op.not_before.tzinfo
            else op.not_before.replace(tzinfo=clock.now.tzinfo)
        )
        assert not_before == clock.now + timedelta(seconds=30)
        assert drain(services).done == 0
        clock.now += timedelta(seconds=30)
    else:
        clock.now += timedelta(minutes=10)
    settle_now(services, clock)

    line_posts = calls(stripe_world, "POST", "/v1/invoiceitems")
    retried = [r for r in line_posts if r.idempotency_key and r.idempotency_key.startswith(key)]
    assert len(executed(retried)) == 1
    if fault == "500 on every attempt":
        # Stripe saves a 5xx under its key: the next try has a new key, after a lookup.
        assert executed(retried)[0].idempotency_key == f"{key}-g1"
    else:
        assert executed(retried)[0].idempotency_key == key
    approve(services, clock, invoice_id)
    assert_billed_once(stripe_world)
    check_invariants(services, stripe_world.fake)
