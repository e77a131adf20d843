"""The one outbox mechanism on SQLite and PostgreSQL: leased claims, attempts, backoff,
parking with its hook, and what a drainer that lost its lease may (not) write."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select

from connectors.base import FatalError, RetriableError
from sync.ledger import schema as t
from sync.ledger.outbox import (
    Operation,
    OutboxOp,
    OutboxStatus,
    claim,
    complete,
    enqueue,
    get_op,
    new_lease_token,
    park_entry_for_review,
)
from sync.ledger.store import Ledger
from sync.outbox import (
    BackoffPolicy,
    Done,
    Drainer,
    HandlerRegistry,
    Outcome,
    Park,
    Retry,
    Wait,
)

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
POLICY = BackoffPolicy(floor=2.0, cap=30.0)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    the_ledger = Ledger(ledger_url)
    the_ledger.upgrade()
    yield the_ledger
    the_ledger.dispose()


def add(ledger: Ledger, key: str = "k1", operation: Operation = Operation.SEND_INVOICE) -> int:
    with ledger.engine.begin() as conn:
        assert enqueue(conn, operation, key, NOW)
        assert not enqueue(conn, operation, key, NOW)  # one row per intent
        return int(
            conn.execute(
                select(t.outbox.c.id).where(t.outbox.c.idempotency_key == key)
            ).scalar_one()
        )


def row(ledger: Ledger, op_id: int) -> OutboxOp:
    with ledger.engine.connect() as conn:
        op = get_op(conn, op_id)
    assert op is not None
    return op


def drainer(
    ledger: Ledger, registry: HandlerRegistry, clock: Clock, owner: str = "test"
) -> Drainer:
    return Drainer(ledger, registry, clock, policy=POLICY, lease=LEASE, owner=owner)


def one(operation: Operation, handler: Any, **kw: Any) -> HandlerRegistry:
    registry = HandlerRegistry()
    registry.register(operation, handler, **kw)
    return registry


def test_compare_and_set_claim_gives_a_row_to_one_claimant(ledger: Ledger) -> None:
    op_id = add(ledger)
    with ledger.engine.begin() as conn:
        first = claim(conn, op_id, "a", NOW, LEASE)
        second = claim(conn, op_id, "b", NOW, LEASE)
    assert first is not None and first.status is OutboxStatus.CLAIMED and first.attempts == 1
    assert second is None
    # the lease lapses: another claimant takes over, the first can no longer close it
    later = NOW + LEASE + timedelta(seconds=1)
    with ledger.engine.begin() as conn:
        third = claim(conn, op_id, "c", later, LEASE)
        assert third is not None and third.attempts == 2
        assert not complete(conn, first, "a", OutboxStatus.DONE, later)
        assert complete(conn, third, "c", OutboxStatus.DONE, later)
    assert row(ledger, op_id).status is OutboxStatus.DONE


async def test_two_drainers_racing_one_row_call_the_handler_once(
    ledger: Ledger, ledger_url: str
) -> None:
    op_id = add(ledger)
    calls: list[int] = []

    async def handler(op: OutboxOp) -> Outcome:
        calls.append(op.id)
        await asyncio.sleep(0.05)  # the other drainer tries while this call is out
        return Done({"ok": True})

    clock = Clock()
    other = Ledger(ledger_url)
    try:
        reports = await asyncio.gather(
            *(
                drainer(lg, one(Operation.SEND_INVOICE, handler), clock, f"d{i}").drain()
                for i, lg in enumerate([ledger, other, ledger, other])
            )
        )
    finally:
        other.dispose()
    assert calls == [op_id]
    assert sum(r.done for r in reports) == 1
    assert row(ledger, op_id).status is OutboxStatus.DONE
    assert row(ledger, op_id).attempts == 1


async def test_an_expired_lease_lets_another_drainer_take_over(ledger: Ledger) -> None:
    op_id = add(ledger)
    clock = Clock()
    with ledger.engine.begin() as conn:  # a drainer claimed it, then its host died
        assert claim(conn, op_id, new_lease_token("dead"), clock(), LEASE) is not None
    calls: list[str] = []

    async def handler(op: OutboxOp) -> Outcome:
        calls.append(op.call_key)
        return Done()

    fresh = drainer(ledger, one(Operation.SEND_INVOICE, handler), clock)
    assert (await fresh.drain()).done == 0  # still leased
    clock.advance(LEASE.total_seconds() + 1)
    report = await fresh.drain()
    assert report.done == 1 and calls == ["k1"]
    assert row(ledger, op_id).attempts == 2  # the dead claim counted too


async def test_a_drainer_that_lost_its_lease_records_nothing(ledger: Ledger) -> None:
    op_id = add(ledger)
    clock = Clock()
    recorded: list[str] = []
    registry = HandlerRegistry()
    second = drainer(ledger, registry, clock, "second")

    def record(who: str) -> Any:
        def write(conn: Connection) -> None:
            recorded.append(who)

        return write

    async def handler(op: OutboxOp) -> Outcome:
        if op.attempts == 1:
            # this call outlives its lease: another drainer takes the row over
            clock.advance(LEASE.total_seconds() + 1)
            assert (await second.drain_one(op.id)).done == 1
            return Done(record=record("first"))
        return Done(record=record("second"))

    registry.register(Operation.SEND_INVOICE, handler)
    report = await drainer(ledger, registry, clock, "first").drain_one(op_id)
    assert report.lost == 1 and report.done == 0
    assert recorded == ["second"]
    assert row(ledger, op_id).status is OutboxStatus.DONE


async def test_attempts_are_counted_once_and_backoff_grows_to_its_cap(ledger: Ledger) -> None:
    op_id = add(ledger)
    clock = Clock()

    async def handler(op: OutboxOp) -> Outcome:
        return Retry("HTTP 503")

    d = drainer(ledger, one(Operation.SEND_INVOICE, handler), clock)
    delays = []
    for attempt in range(1, 7):
        report = await d.drain()
        assert report.retried == 1
        op = row(ledger, op_id)
        assert op.attempts == attempt and op.status is OutboxStatus.PENDING
        assert op.not_before is not None and op.last_error == "HTTP 503"
        delays.append((op.not_before - clock()).total_seconds())
        assert (await d.drain()).retried == 0  # not due before its time
        clock.now = op.not_before
    assert delays == [2, 4, 8, 16, 30, 30]


async def test_retry_after_hint_new_key_and_exceptions(ledger: Ledger) -> None:
    op_id = add(ledger)
    clock = Clock()
    script: list[Any] = [
        Retry("HTTP 500", new_key=True),
        RetriableError("429", retry_after=7.0),
        ValueError("a bug"),
        Done(),
    ]
    keys: list[str] = []

    async def handler(op: OutboxOp) -> Outcome:
        keys.append(op.call_key)
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step  # type: ignore[no-any-return]

    d = drainer(ledger, one(Operation.SEND_INVOICE, handler), clock)
    waits = []
    while script:
        await d.drain()
        op = row(ledger, op_id)
        if op.status is OutboxStatus.DONE:
            break
        assert op.not_before is not None
        waits.append((op.not_before - clock()).total_seconds())
        clock.now = op.not_before
    assert keys == ["k1", "k1-g1", "k1-g1", "k1-g1"]
    assert waits == [2, 7, 8]  # backoff, the server's hint, backoff (third attempt)
    assert row(ledger, op_id).attempts == 4


async def test_wait_is_not_an_attempt_and_retries_in_the_next_round(ledger: Ledger) -> None:
    item = add(ledger, "item", Operation.CREATE_INVOICE_ITEM)  # older: drained first
    invoice = add(ledger, "create", Operation.CREATE_INVOICE)
    done: list[int] = []
    order: list[str] = []

    async def create_item(op: OutboxOp) -> Outcome:
        order.append("item")
        if invoice not in done:
            return Wait(reason="draft not created yet")
        done.append(op.id)
        return Done()

    async def create_invoice(op: OutboxOp) -> Outcome:
        order.append("invoice")
        done.append(op.id)
        return Done()

    registry = HandlerRegistry()
    registry.register(Operation.CREATE_INVOICE_ITEM, create_item)
    registry.register(Operation.CREATE_INVOICE, create_invoice)
    report = await drainer(ledger, registry, Clock()).drain()
    assert order == ["item", "invoice", "item"]
    assert report.done == 2
    assert row(ledger, item).attempts == 1  # the wait gave its attempt back
    assert row(ledger, invoice).attempts == 1


async def test_fatal_error_aborts_the_drain_and_keeps_the_rows(ledger: Ledger) -> None:
    a = add(ledger, "a")
    b = add(ledger, "b")
    calls: list[int] = []

    async def handler(op: OutboxOp) -> Outcome:
        calls.append(op.id)
        raise FatalError("Stripe refused the API key")

    report = await drainer(ledger, one(Operation.SEND_INVOICE, handler), Clock()).drain()
    assert report.aborted is not None and "API key" in report.aborted
    assert calls == [a] and report.retried == 0 and len(report.errors) == 1
    assert row(ledger, a).status is OutboxStatus.PENDING
    assert row(ledger, a).last_error == "Stripe refused the API key"
    assert row(ledger, b).status is OutboxStatus.PENDING and row(ledger, b).attempts == 0


def _entry(ledger: Ledger) -> int:
    with ledger.engine.begin() as conn:
        item_id = conn.execute(
            insert(t.items).values(
                item_key="github:web:1",
                source="github",
                board="web",
                external_id="1",
                client="acme",
                title="Login",
                url="",
                column_name="Done",
                state_category="done",
                is_done=True,
                billing_type="time_and_materials",
                labels=[],
                assignees=[],
                revision=1,
                fingerprint="x",
                updated_at=NOW,
                first_seen_at=NOW,
                last_seen_at=NOW,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        invoice_id = conn.execute(
            insert(t.invoices).values(
                client="acme",
                period_key="2026-12",
                currency="EUR",
                state="draft",
                version=1,
                created_at=NOW,
                updated_at=NOW,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        return int(
            conn.execute(
                insert(t.entries).values(
                    entry_key="github:web:1#time-1",
                    item_id=item_id,
                    client="acme",
                    kind="time",
                    seq=1,
                    state="drafted",
                    hours=2,
                    rate=100,
                    amount=200,
                    currency="EUR",
                    description="Login",
                    invoice_id=invoice_id,
                    created_at=NOW,
                    updated_at=NOW,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        )


async def test_park_runs_the_operations_hook_in_the_same_transaction(ledger: Ledger) -> None:
    entry_id = _entry(ledger)
    with ledger.engine.begin() as conn:
        enqueue(conn, Operation.CREATE_INVOICE_ITEM, "item", NOW, entry_id=entry_id)
        op_id = int(conn.execute(select(t.outbox.c.id)).scalar_one())

    async def handler(op: OutboxOp) -> Outcome:
        return Park("Stripe refused create_invoice_item: amount too large")

    registry = one(Operation.CREATE_INVOICE_ITEM, handler, on_park=park_entry_for_review)
    report = await drainer(ledger, registry, Clock()).drain()
    assert report.parked == 1
    op = row(ledger, op_id)
    assert op.status is OutboxStatus.PARKED and op.attempts == 1
    assert op.last_error is not None and "amount too large" in op.last_error
    with ledger.engine.connect() as conn:
        entry = conn.execute(select(t.entries).where(t.entries.c.id == entry_id)).one()
        audit = conn.execute(select(t.audit_log.c.action, t.audit_log.c.actor)).all()
    assert entry.state == "needs_review" and entry.invoice_id is None
    assert "amount too large" in entry.review_reason
    assert ("outbox_parked", "stripe") in [tuple(a) for a in audit]
    assert (await drainer(ledger, registry, Clock()).drain()).parked == 0  # never retried


async def test_park_after_gives_up_and_unregistered_operations_are_left_alone(
    ledger: Ledger,
) -> None:
    op_id = add(ledger)
    slack_id = add(ledger, "post", Operation.SLACK_POST_DRAFT)
    clock = Clock()

    async def handler(op: OutboxOp) -> Outcome:
        return Retry("still down")

    d = Drainer(
        ledger,
        one(Operation.SEND_INVOICE, handler),
        clock,
        policy=BackoffPolicy(floor=1.0, cap=1.0, park_after=3),
    )
    for _ in range(3):
        await d.drain()
        clock.advance(1)
    assert row(ledger, op_id).status is OutboxStatus.PARKED
    assert row(ledger, op_id).attempts == 3
    assert row(ledger, slack_id).attempts == 0


def test_backoff_policy_table() -> None:
    policy = BackoffPolicy(floor=1.0, cap=60.0, max_hint=120.0)
    cases = [(1, None, 1), (2, None, 2), (7, None, 60), (100, None, 60), (1, 0.2, 1), (1, 90, 90)]
    cases.append((1, 500, 120))
    assert [policy.delay(a, h) for a, h, _ in cases] == [float(w) for *_, w in cases]
    with pytest.raises(ValueError):
        BackoffPolicy(floor=0)
    with pytest.raises(ValueError):
        BackoffPolicy(floor=10, cap=5)


async def test_rows_queued_by_the_existing_writers_drain_here(ledger: Ledger) -> None:
    from sync.ledger.ops import enqueue as legacy_enqueue

    with ledger.engine.begin() as conn:
        legacy_enqueue(conn, "slack_post_draft", "kv-x-inv1-v1-slack-post", NOW, payload={"v": 1})
    seen: list[OutboxOp] = []

    async def handler(op: OutboxOp) -> Outcome:
        seen.append(op)
        return Done({"ts": "1.2"})

    report = await drainer(ledger, one(Operation.SLACK_POST_DRAFT, handler), Clock()).drain()
    assert report.done == 1
    assert seen[0].operation is Operation.SLACK_POST_DRAFT and seen[0].payload == {"v": 1}
    done = row(ledger, seen[0].id)
    assert done.result == {"ts": "1.2"} and done.lease_owner is None and done.completed_at == NOW
