"""No blocking ledger call on the event loop (issue 15): every SQL statement that the
Stripe drain, reconcile and the approval desk run from a coroutine runs on a worker
thread, never on the thread of the running loop (a slow ledger must not freeze the
webhooks and the dashboard served by the same loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, select

from connectors.slack import Decision, LineAdjustment
from sync.composition import Services
from sync.ledger import schema as t
from tests.builders import snap
from tests.conftest import FixedClock
from tests.faults.invariants import assert_invariants
from tests.stripe_support import APPROVER, StripeWorld, services_for, world_settings


@pytest.fixture
def services(stripe_world: StripeWorld, ledger_url: str, clock: FixedClock) -> Iterator[Services]:
    services = services_for(world_settings(stripe_world, ledger_url), clock)
    services.engine.ingest(
        [snap("Done", h, 1, item_id=f"R{h}", board="acme-board") for h in ("1", "2")]
    )
    yield services
    services.close()


class LoopWatch:
    """Records each statement executed on a thread that is running an event loop."""

    def __init__(self, services: Services) -> None:
        self.engine = services.ledger.engine
        self.on_loop: list[str] = []

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self.on_loop.append(statement.split("\n")[0][:80])

    def __enter__(self) -> LoopWatch:
        event.listen(self.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self)


def decision(kind: str, invoice_id: int, version: int, *adjust: LineAdjustment) -> Decision:
    return Decision(
        kind=kind,  # type: ignore[arg-type]
        invoice_id=invoice_id,
        version=version,
        user_id=APPROVER,
        user_name="finance",
        team_id=None,
        channel_id=None,
        message_ts=None,
        response_url=None,
        trigger_id=None,
        reason=None,
        adjustments=adjust,
    )


def version_and_first_line(services: Services, invoice_id: int) -> tuple[int, int]:
    with services.ledger.engine.connect() as conn:
        version = conn.execute(
            select(t.invoices.c.version).where(t.invoices.c.id == invoice_id)
        ).scalar_one()
        first = conn.execute(
            select(t.entries.c.id)
            .where(t.entries.c.invoice_id == invoice_id)
            .order_by(t.entries.c.id)
        ).scalar()
    assert first is not None
    return int(version), int(first)


async def test_drain_reconcile_and_desk_decisions_keep_the_ledger_off_the_event_loop(
    services: Services, stripe_world: StripeWorld
) -> None:
    drafted = await asyncio.to_thread(services.invoicing.create_or_refresh_draft, "acme")
    assert drafted.invoice_id is not None
    draft = drafted.invoice_id
    with LoopWatch(services) as watch:
        await services.invoicing.drain()
        version, first = await asyncio.to_thread(version_and_first_line, services, draft)
        adjust = LineAdjustment(first, Decimal("0.5"), None, None, False)
        reply = await services.desk.decide(decision("adjust_submit", draft, version, adjust))
        assert reply.outcome == "adjusted"
        await services.invoicing.drain()
        assert await services.invoicing.reconcile(repair=False) == []
        version, _ = await asyncio.to_thread(version_and_first_line, services, draft)
        reply = await services.desk.decide(decision("approve", draft, version))
        assert reply.outcome == "approved"
        await services.invoicing.drain()
        assert await services.invoicing.reconcile() == []
    assert watch.on_loop == []
    assert [i["status"] for i in stripe_world.fake.list_objects("invoice")] == ["open"]
    await assert_invariants(services, stripe_world.fake)
