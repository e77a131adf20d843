"""Finance views end to end: the digest posted through the Slack wire fake (Block Kit
shape, once per slot), overdue invoices from Stripe's `invoice.overdue` webhook and
its `due_date`, reminders through Stripe's `send` at most once per interval, and
`kanvoice status` / `/api/pipeline` totals per currency and aging."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from connectors.slack.messages import digest_blocks
from sync.approvals import desk_for
from sync.composition import Services
from sync.finance import compose_digest, finance_view, queue_digest, queue_scheduled_digest
from sync.intake import drain_inbox
from sync.ledger import schema as t
from sync.pipeline import client_pipelines
from sync.web.app import create_app
from tests.builders import snap
from tests.conftest import FixedClock
from tests.fakes.slack_server import FakeSlack, serve_fake_slack
from tests.slack_support import CHANNEL, FAST, slack_settings, with_slack_desk
from tests.stripe_support import (
    API_KEY,
    APPROVER,
    StripeWorld,
    drain,
    fake_stripe,
    open_services,
    world_services,
    world_settings,
)

ONE_RETRY = replace(FAST, max_retries=1)


def ingest(services: Services) -> None:
    services.engine.ingest(
        [
            snap("Done", "2", 1, item_id="A1", board="acme-board"),  # 240.00 EUR
            snap("Done", "3", 1, item_id="A2", board="acme-board"),  # 360.00 EUR
            snap("Done", "1.5", 1, item_id="G1", board="globex-board"),  # 149.99 USD (rounded)
        ]
    )


def finalize(services: Services, client: str) -> int:
    invoice_id = services.invoicing.create_or_refresh_draft(client).invoice_id
    assert drain(services).errors == []
    services.invoicing.approve(invoice_id, APPROVER, "cli")
    assert drain(services).errors == []
    return invoice_id


def invoice_row(services: Services, invoice_id: int) -> Any:
    with services.ledger.engine.connect() as conn:
        return conn.execute(select(t.invoices).where(t.invoices.c.id == invoice_id)).one()


def sends(world: StripeWorld) -> int:
    return sum(1 for e in world.fake.events if e["type"] == "invoice.sent")


@pytest.fixture
def world() -> Iterator[StripeWorld]:
    with fake_stripe({"acme": "eur", "globex": "usd"}) as w:
        yield w


def test_digest_block_kit_through_the_slack_wire_fake(
    world: StripeWorld, sqlite_url: str
) -> None:
    # Monday 30 Nov 2026, 09:30 in Berlin: the default slot (Monday 09:00) is due.
    clock = FixedClock(datetime(2026, 11, 30, 8, 30, tzinfo=UTC))
    fake = FakeSlack()
    with serve_fake_slack(fake) as url:
        data = world_settings(world, sqlite_url)
        data["finance"] = {"timezone": "Europe/Berlin"}
        data["server"] = {"public_url": "https://billing.example.com"}
        data["slack"] = slack_settings(url, signing_secret="s")
        with open_services(data, clock) as services:
            desk = with_slack_desk(services, ONE_RETRY)
            # Globex's ticket was Done 40 days ago (the board's time), Acme's today.
            old = snap("Done", "1.5", 1, item_id="G1", board="globex-board")
            new = snap("Done", "2", 1, item_id="A1", board="acme-board")
            services.engine.ingest(
                [
                    replace(old, updated_at=clock() - timedelta(days=40)),
                    replace(new, updated_at=clock() - timedelta(hours=1)),
                ]
            )
            draft = services.invoicing.create_or_refresh_draft("acme").invoice_id
            assert drain(services).errors == []

            assert queue_scheduled_digest(services.ledger, services.settings, clock())
            # A second instance (or a restart) in the same slot queues nothing more.
            assert not queue_scheduled_digest(services.ledger, services.settings, clock())
            report = asyncio.run(desk.drain_slack())
            assert report.done == 1 and report.errors == []
            posted = [m for m in fake.messages.values() if m.channel == CHANNEL]
            assert len(posted) == 1
            message = posted[0]
    assert message.text.startswith("Finance digest: unbilled ")
    assert "240.00 EUR" in message.text and "149.99 USD" in message.text
    blocks = message.blocks
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["text"] == "Finance digest · Mon 30 Nov 2026"
    by_id = {b.get("block_id"): b for b in blocks}
    gap = by_id["kv_digest_gap"]
    fields = [f["text"] for f in gap["fields"]]
    # One figure per currency, never a sum across currencies.
    assert fields == ["*Unbilled (EUR)*\n240.00 EUR", "*Unbilled (USD)*\n149.99 USD"]
    waiting = by_id["kv_digest_waiting"]["text"]["text"]
    assert "Globex" in waiting and "oldest 40 days" in waiting
    assert "Acme" not in waiting  # all its work is on the draft: listed with the drafts
    drafts = by_id["kv_digest_drafts"]["text"]["text"]
    assert f"#{draft}" in drafts and "240.00 EUR" in drafts
    assert by_id["kv_digest_overdue"]["text"]["text"] == "*Overdue invoices*: none."
    actions = by_id["kv_digest_actions"]
    assert message.action_values()["draft_all"] == "all"
    assert actions["elements"][1]["url"] == "https://billing.example.com/"
    assert blocks[-1]["type"] == "context"


def test_digest_on_demand_posts_once_per_minute_and_prints(
    world: StripeWorld, sqlite_url: str, clock: FixedClock
) -> None:
    with world_services(world, sqlite_url, clock, fast=False) as services:
        ingest(services)
        assert queue_digest(services.ledger, services.settings, clock())
        assert not queue_digest(services.ledger, services.settings, clock())
        clock.now += timedelta(minutes=1)
        assert queue_digest(services.ledger, services.settings, clock())


def test_overdue_webhook_shows_the_invoice_in_the_pipeline(
    world: StripeWorld, ledger_url: str, clock: FixedClock
) -> None:
    with world_services(world, ledger_url, clock) as services:
        ingest(services)
        invoice_id = finalize(services, "acme")
        row = invoice_row(services, invoice_id)
        assert row.due_date is not None  # Stripe's due_date, kept at finalize
        stripe_invoice = httpx.get(
            f"{world.base_url}/v1/invoices/{row.stripe_invoice_id}",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ).json()
        assert int(row.due_date.replace(tzinfo=UTC).timestamp()) == stripe_invoice["due_date"]
        with services.ledger.read(clock()) as uow:
            pipelines = client_pipelines(uow, services.client_names())
            assert finance_view(uow.conn, pipelines, clock()).overdue == []

        # Stripe's overdue automation fires: the fake's clock is past the due date.
        world.fake.clock = lambda: float(stripe_invoice["due_date"] + 3 * 86400)
        assert world.fake.run_overdue_check() == [row.stripe_invoice_id]
        assert world.fake.run_overdue_check() == []  # once per invoice
        event = world.fake.build_signed_event("invoice.overdue", stripe_invoice)
        with TestClient(create_app(services), base_url="http://127.0.0.1") as http:
            first = http.post("/webhooks/stripe", content=event.payload, headers=event.headers)
            again = http.post("/webhooks/stripe", content=event.payload, headers=event.headers)
            assert first.status_code == 200 and again.status_code == 200
            # Stored in the inbox and answered at once; the leader's worker applies it.
            assert asyncio.run(drain_inbox(services, everything=True)).deliveries == 1
            payload = http.get("/api/pipeline").json()
        overdue = payload["overdue"]
        assert [o["invoice_id"] for o in overdue] == [invoice_id]
        assert overdue[0]["amount"] == "600.00" and overdue[0]["currency"] == "EUR"
        assert overdue[0]["number"] == stripe_invoice["number"]
        # The digest lists it too, with globex's ready work and no draft waiting.
        services.invoicing.create_or_refresh_draft("globex")
        digest = compose_digest(services.ledger, services.settings, clock())
        assert [o.invoice_id for o in digest.overdue] == [invoice_id]
        assert [str(m) for m in digest.overdue_total] == ["600.00 EUR"]
        assert [d.client for d in digest.drafts] == ["globex"]
        blocks = {b.block_id: b.to_dict() for b in digest_blocks(digest)}
        assert stripe_invoice["number"] in blocks["kv_digest_overdue"]["text"]["text"]
        # A paid invoice is no longer overdue.
        paid = world.fake.build_signed_event("invoice.paid", {**stripe_invoice, "status": "paid"})
        services.invoicing.apply_event(json.loads(paid.payload))
        with services.ledger.read(clock()) as uow:
            pipelines = client_pipelines(uow, services.client_names())
            assert finance_view(uow.conn, pipelines, clock()).overdue == []


def test_reminder_is_sent_at_most_once_per_interval(
    world: StripeWorld, sqlite_url: str, clock: FixedClock
) -> None:
    data = world_settings(world, sqlite_url)
    data["overdue"] = {"remind": True, "remind_interval_days": 7}
    with open_services(data, clock) as services:
        ingest(services)
        invoice_id = finalize(services, "globex")
        due = invoice_row(services, invoice_id).due_date.replace(tzinfo=UTC)
        assert services.invoicing.queue_reminders() == 0  # not overdue yet
        clock.now = due + timedelta(hours=1)
        assert services.invoicing.queue_reminders() == 1
        assert services.invoicing.queue_reminders() == 0  # a second instance, same decision
        assert drain(services).errors == []
        assert sends(world) == 1
        row = invoice_row(services, invoice_id)
        assert row.reminders == 1
        clock.now += timedelta(days=6, hours=23)
        assert services.invoicing.queue_reminders() == 0  # within the interval
        clock.now += timedelta(hours=1)
        assert services.invoicing.queue_reminders() == 1
        assert drain(services).errors == []
        assert sends(world) == 2
        assert invoice_row(services, invoice_id).reminders == 2


def test_reminders_are_off_by_default(
    world: StripeWorld, sqlite_url: str, clock: FixedClock
) -> None:
    with world_services(world, sqlite_url, clock) as services:
        ingest(services)
        invoice_id = finalize(services, "acme")
        clock.now = invoice_row(services, invoice_id).due_date.replace(tzinfo=UTC) + timedelta(
            days=30
        )
        assert services.invoicing.queue_reminders() == 0
        assert sends(world) == 0


def test_status_shows_totals_per_currency_aging_and_sorts(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from sync.cli import app
    from tests.conftest import DATA_DIR

    config, mixed = DATA_DIR / "kanvoice.test.toml", DATA_DIR / "mixed_board.json"
    monkeypatch.setenv("KANVOICE_LEDGER__URL", sqlite_url)
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(mixed), "-c", str(config)]).exit_code == 0

    by_gap = runner.invoke(app, ["status", "-c", str(config), "--json", "--sort", "gap"])
    assert by_gap.exit_code == 0, by_gap.output
    data = json.loads(by_gap.output)
    # EUR first (currency order, no exchange rates), then USD; each with its own total.
    assert [c["client"] for c in data["clients"]] == ["acme", "globex"]
    totals = {t["currency"]: t for t in data["totals"]}
    assert totals["EUR"]["unbilled_gap"] == "2610.00"
    assert totals["USD"]["unbilled_gap"] == "130.00"
    assert totals["EUR"]["stages"]["ready"]["amount"] == "2610.00"
    aging = data["aging"]["acme"]
    assert aging["oldest_days"] is not None and aging["entries"] == 5
    assert sum(__import__("decimal").Decimal(v) for v in aging["buckets"].values()) == 2610
    assert data["overdue"] == []

    table = runner.invoke(app, ["status", "-c", str(config), "--sort", "age"])
    assert table.exit_code == 0, table.output
    assert "Totals per currency" in table.output and "Ready to bill by age" in table.output
    assert "No overdue invoices." in table.output

    bad = runner.invoke(app, ["status", "-c", str(config), "--sort", "amount"])
    assert bad.exit_code == 2 and "client, gap, age" in bad.output


def test_dashboard_api_sorts_by_gap_and_age_and_refuses_other_sorts(
    world: StripeWorld, sqlite_url: str, clock: FixedClock
) -> None:
    with world_services(world, sqlite_url, clock, fast=False) as services:
        globex = snap("Done", "1.5", 1, item_id="G1", board="globex-board")
        acme = snap("Done", "20", 1, item_id="A1", board="acme-board")
        services.engine.ingest(
            [
                replace(globex, updated_at=clock() - timedelta(days=61)),
                replace(acme, updated_at=clock() - timedelta(days=8)),
            ]
        )
        with TestClient(create_app(services), base_url="http://127.0.0.1") as http:
            by_age = http.get("/api/pipeline", params={"sort": "age"}).json()
            by_client = http.get("/api/pipeline").json()
            bad = http.get("/api/pipeline", params={"sort": "amount"})
            page = http.get("/", params={"sort": "gap"})
    assert [c["client"] for c in by_age["clients"]] == ["globex", "acme"]
    assert [c["client"] for c in by_client["clients"]] == ["acme", "globex"]
    ages = {c["client"]: c["aging"] for c in by_age["clients"]}
    assert ages["globex"]["oldest_days"] == 61 and ages["globex"]["oldest_bucket"] == ">60"
    assert ages["acme"]["buckets"]["8-30"] == "2400.00"
    assert ages["acme"]["buckets"]["0-7"] == "0.00"
    assert [t["currency"] for t in by_age["totals"]] == ["EUR", "USD"]
    assert bad.status_code == 400
    assert page.status_code == 200 and 'data-testid="totals-EUR"' in page.text


def test_database_buckets_match_the_pure_aging_at_the_edges(
    world: StripeWorld, ledger_url: str
) -> None:
    """The one aggregate query buckets exactly as `mapping.aging` does entry by entry,
    at the midnights of the finance time zone (7/8, 30/31, 60/61 days)."""
    from zoneinfo import ZoneInfo

    from mapping.aging import aging_from_sums, client_aging
    from sync.ledger.finance import ready_bucket_sums, ready_work

    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    today = now.astimezone(berlin).date()
    with world_services(world, ledger_url, FixedClock(now), fast=False) as services:
        items = []
        for n, days in enumerate((0, 7, 8, 30, 31, 60, 61, 200)):
            midnight = datetime.combine(
                today - timedelta(days=days), datetime.min.time(), tzinfo=berlin
            )
            for m, at in enumerate((midnight, midnight - timedelta(seconds=1))):
                item = snap("Done", str(1 + n), 1, item_id=f"E{n}-{m}", board="acme-board")
                items.append(replace(item, updated_at=at.astimezone(UTC)))
        services.engine.ingest(items)
        with services.ledger.read(now) as uow:
            by_sql = aging_from_sums(ready_bucket_sums(uow.conn, today, "Europe/Berlin"), today)
            by_entry = client_aging(ready_work(uow.conn, "Europe/Berlin"), today)
    assert by_sql == by_entry
    assert by_sql["acme"].oldest_days == 201
    assert by_sql["acme"].entries == 16


def test_kanvoice_digest_prints_without_posting_and_needs_slack_to_post(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from sync.cli import app
    from tests.conftest import DATA_DIR

    config, mixed = DATA_DIR / "kanvoice.test.toml", DATA_DIR / "mixed_board.json"
    monkeypatch.setenv("KANVOICE_LEDGER__URL", sqlite_url)
    monkeypatch.delenv("KANVOICE_SLACK__BOT_TOKEN", raising=False)
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(mixed), "-c", str(config)]).exit_code == 0
    printed = runner.invoke(app, ["digest", "--print", "-c", str(config)])
    assert printed.exit_code == 0, printed.output
    assert "Finance digest" in printed.output
    assert "Unbilled gap: 2,610.00 EUR · 130.00 USD across 2 clients" in printed.output
    assert "Drafts waiting for approval: 0" in printed.output
    posted = runner.invoke(app, ["digest", "-c", str(config)])
    assert posted.exit_code == 2
    assert "slack.bot_token and slack.channel must be set" in posted.output


def test_the_daemon_posts_the_scheduled_digest_once_per_slot(
    world: StripeWorld, sqlite_url: str
) -> None:
    from connectors.slack.memory import InMemorySlack
    from sync.daemon import Daemon

    clock = FixedClock(datetime(2026, 11, 30, 9, 5, tzinfo=UTC))  # Monday 09:05 UTC
    data = world_settings(world, sqlite_url)
    data["slack"] = {"channel": CHANNEL, "approvers": [APPROVER]}
    data["overdue"] = {"remind": True}
    slack = InMemorySlack(channels={"finance": CHANNEL})
    with open_services(data, clock, fast=False) as services:
        ingest(services)
        desk = desk_for(services, lambda: slack)
        daemon = Daemon(services, app=None)
        daemon.schedule()
        jobs = {job.id for job in daemon.scheduler.get_jobs()}
        assert {"digest", "reminders"} <= jobs
        for _ in range(3):  # the job runs every minute; restarts run it again
            asyncio.run(daemon._digest())
        asyncio.run(desk.drain_slack())
        clock.now += timedelta(days=1)  # Tuesday: no slot due (Monday only)
        asyncio.run(daemon._digest())
        asyncio.run(desk.drain_slack())
    posted = slack.in_channel(CHANNEL)
    assert len(posted) == 1
    assert posted[0].text.startswith("Finance digest: unbilled 600.00 EUR + 149.99 USD")


def test_reconcile_learns_the_due_date_of_an_invoice_finalized_before_0008(
    world: StripeWorld, sqlite_url: str, clock: FixedClock
) -> None:
    from sqlalchemy import update

    with world_services(world, sqlite_url, clock) as services:
        ingest(services)
        invoice_id = finalize(services, "acme")
        due = invoice_row(services, invoice_id).due_date
        with services.ledger.engine.begin() as conn:
            conn.execute(
                update(t.invoices).where(t.invoices.c.id == invoice_id).values(due_date=None)
            )

        async def reconcile() -> Any:
            try:
                return await services.invoicing.reconcile()
            finally:
                await services.invoicing.close()

        assert asyncio.run(reconcile()) == []  # not a drift: nothing to report
        assert invoice_row(services, invoice_id).due_date == due
