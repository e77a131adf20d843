"""The demo's wiring in process: the composition root's services on the in-memory Stripe
and Slack, with the real invoicing and approval code between board and payment."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from connectors.simulated import SimulatedBoard, demo_scripts
from connectors.slack.model import Decision
from sync.demo import DEMO_APPROVER, DEMO_START, demo_services, demo_settings, pay_open_invoices
from sync.ledger import schema as t


async def test_a_slack_approval_reaches_stripe_and_the_payment_the_ledger(
    sqlite_url: str,
) -> None:
    world = demo_services(demo_settings(sqlite_url))
    services, desk = world.services, world.services.desk
    try:
        boards = [SimulatedBoard(s, DEMO_START, timedelta(hours=4)) for s in demo_scripts()]
        for step in range(max(b.script.last_step for b in boards) + 1):
            services.engine.ingest([s for b in boards for s in b.snapshots_at(step)])

        draft = services.invoicing.create_or_refresh_draft("acme")
        assert desk.request_approval(draft.invoice_id)
        assert (await services.invoicing.drain()).errors == []
        assert (await desk.drain_slack()).done == 1
        (message,) = world.slack.in_channel("#finance")
        (invoice,) = world.stripe.invoices.values()
        assert invoice["status"] == "draft" and invoice["total"] == 400000

        approve = Decision(
            "approve", draft.invoice_id, desk.summary(draft.invoice_id).version,
            DEMO_APPROVER, DEMO_APPROVER, None, message.channel, message.ts, None, None, None,
            (),
        )  # fmt: skip
        await desk.handle(approve)
        assert message.outcome == "approved" and message.decided_by == DEMO_APPROVER
        assert (await services.invoicing.drain()).errors == []
        assert world.stripe.invoices[invoice["id"]]["status"] == "open"

        assert pay_open_invoices(world.stripe) == 1  # invoice.finalized, invoice.paid applied
        with services.ledger.engine.connect() as conn:
            states = conn.execute(select(t.invoices.c.state)).scalars().all()
            entries = set(
                conn.execute(
                    select(t.entries.c.state).where(t.entries.c.invoice_id == draft.invoice_id)
                ).scalars()
            )
        assert states == ["paid"] and entries == {"paid"}
        assert [e["type"] for e in world.stripe.events] == ["invoice.finalized", "invoice.paid"]
        assert await services.invoicing.reconcile() == []
    finally:
        await services.invoicing.close()
        services.close()
