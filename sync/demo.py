"""`kanvoice demo`: the whole flow offline, on an embedded SQLite ledger.

A simulated board moves tickets and logs hours over about a minute; the real invoicing
and approval code writes drafts to an in-memory Stripe (`connectors.stripe.memory`,
whose events reach the ledger as Stripe's webhooks would) and asks for approval in an
in-memory Slack (`connectors.slack.memory`); approvals come from the dashboard; a
simulated client pays finalized invoices a little later. Globex is on a retainer
(10 h a period for 1,200.00 USD, overage at 150.00 USD/h) and Kaiju has a budget
(10 h or 150,000 JPY a period: its 8 h reach the 80 % alert). `--fast` plays the whole
story at once, prints the pipeline, the retainers and budgets and one finance digest
(also posted to the in-memory Slack), and exits (no server).
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from connectors.simulated import SimulatedBoard, demo_scripts
from connectors.slack.memory import InMemorySlack
from connectors.slack.messages import digest_plain
from connectors.stripe.memory import InMemoryStripe
from sync.cli_common import render_status
from sync.cli_finance import budgets_table, retainers_table
from sync.composition import Services, build_services
from sync.finance import compose_digest, queue_digest
from sync.pipeline import client_pipelines
from sync.plans import client_plans
from sync.settings import Settings

DEMO_START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
STEP_SECONDS = 5.0
DEMO_APPROVER = "dashboard"
DEMO_CHANNEL = "#finance"
CURRENCIES = {"acme": "EUR", "globex": "USD", "kaiju": "JPY"}


def demo_settings(
    ledger_url: str,
    *,
    port: int = 8765,
) -> Settings:
    """Three clients in EUR, USD and JPY, each with one simulated board.

    No Stripe or Slack credentials: `demo_services` wires the in-memory adapters.
    """
    customers = {key: demo_customer_id(key) for key in CURRENCIES}
    data: dict[str, Any] = {
        "ledger": {"url": ledger_url},
        "server": {"host": "127.0.0.1", "port": port},
        "defaults": {"rate": "100", "rounding": {"increment_minutes": 15, "mode": "up"}},
        "slack": {"approvers": [DEMO_APPROVER], "channel": DEMO_CHANNEL},
        "clients": [
            {
                "key": "acme",
                "name": "Acme GmbH",
                "stripe_customer_id": customers["acme"],
                "currency": "EUR",
                "rate": "120.00",
                "cadence": "on_demand",
                "rate_rules": [{"label": "senior", "rate": "150.00"}],
            },
            {
                "key": "globex",
                "name": "Globex Corporation",
                "stripe_customer_id": customers["globex"],
                "currency": "USD",
                "rate": "140.00",
                "cadence": "monthly",  # a retainer is per billing period
                "rounding": {"increment_minutes": 6, "mode": "nearest"},
                # Prepaid hours: 10 h per period, overage billed at 150.00 USD/h.
                "retainer": {
                    "hours": 10,
                    "amount": "1200.00",
                    "overage_rate": "150.00",
                    "rollover": True,
                    "rollover_cap_hours": 5,
                },
            },
            {
                "key": "kaiju",
                "name": "Kaiju K.K.",
                "stripe_customer_id": customers["kaiju"],
                "currency": "JPY",
                "rate": "15000",
                "cadence": "on_demand",
                "rounding": {"increment_minutes": 30, "mode": "up"},
                # A cap per period: Slack alerts at 80 % and 100 %.
                "budget": {"hours": 10, "amount": "150000", "alert_thresholds": [80, 100]},
            },
        ],
        "boards": [
            {"key": "acme-web", "source": "simulated", "client": "acme"},
            {"key": "globex-platform", "source": "simulated", "client": "globex"},
            {"key": "kaiju-app", "source": "simulated", "client": "kaiju"},
        ],
    }
    return Settings(**data)


def demo_customer_id(client: str) -> str:
    return f"cus_Demo{client.title()}"


@dataclass
class DemoWorld:
    """The demo's services and the in-memory Stripe and Slack they are wired to."""

    services: Services
    stripe: InMemoryStripe
    slack: InMemorySlack


def demo_services(settings: Settings) -> DemoWorld:
    """The composition root's services on the in-memory Stripe (one customer per demo
    client, its events applied to the ledger like Stripe's webhooks) and Slack."""
    stripe = InMemoryStripe()
    for client in settings.clients:
        stripe.add_customer(client.name or client.key, client.currency, client.stripe_customer_id)
    slack = InMemorySlack(channels={DEMO_CHANNEL.lstrip("#"): "C0FINANCE"})
    services = build_services(settings, stripe=lambda: stripe, slack=lambda: slack)
    stripe.subscribe(services.invoicing.apply_event)
    return DemoWorld(services, stripe, slack)


def _boards() -> list[SimulatedBoard]:
    return [SimulatedBoard(s, DEMO_START, timedelta(hours=4)) for s in demo_scripts()]


def pay_open_invoices(stripe: InMemoryStripe) -> int:
    """The simulated clients pay every finalized invoice (Stripe then reports
    invoice.paid, which `deliver_events` applies to the ledger)."""
    paid = 0
    for invoice_id in stripe.open_invoice_ids():
        stripe.pay_invoice(invoice_id)
        paid += 1
    stripe.deliver_events()
    return paid


def _slack_lines(slack: InMemorySlack, seen: dict[tuple[str, str], str]) -> list[str]:
    """What changed in the demo's Slack channel since last asked (for the console)."""
    lines = []
    for key, message in slack.messages.items():
        if seen.get(key) != message.text:
            seen[key] = message.text
            lines.append(f"  slack {DEMO_CHANNEL}: {message.text}")
    return lines


async def run_demo(console: Console, *, fast: bool, port: int = 8765) -> None:
    """The demo, inside the command's one event loop; its services are closed in it."""
    with tempfile.TemporaryDirectory(prefix="kanvoice-demo-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'demo.db'}"
        world = demo_services(demo_settings(url, port=port))
        try:
            if fast:
                await _fast_story(console, world)
            else:
                await _live_story(console, world)
        finally:
            await world.services.aclose()


def _print_status(console: Console, services: Services) -> None:
    with services.ledger.unit_of_work(services.clock()) as uow:
        pipelines = client_pipelines(uow, services.client_names())
        keys = [p.client for p in pipelines]
        plans = client_plans(uow.conn, services.settings, keys, services.clock())
    wide = Console(soft_wrap=True, width=max(console.width, 160))
    wide.print(render_status(pipelines))
    wide.print(retainers_table(pipelines, plans))
    wide.print(budgets_table(pipelines, plans))


async def _post_digest(
    console: Console, world: DemoWorld, seen: dict[tuple[str, str], str]
) -> None:
    """One finance digest, as `kanvoice digest` posts it: to the in-memory Slack, and
    printed here (the channel echo shows only Slack's fallback text)."""
    services = world.services
    now = services.clock()
    queue_digest(services.ledger, services.settings, now)
    await services.desk.drain_slack()
    for line in _slack_lines(world.slack, seen):
        console.print(line, highlight=False)
    content = compose_digest(services.ledger, services.settings, now)
    console.print(digest_plain(content), highlight=False, markup=False)


async def _fast_story(console: Console, world: DemoWorld) -> None:
    """The whole story at once: board, drafts, approval, finalize, payment."""
    services = world.services
    boards = _boards()
    last = max(b.script.last_step for b in boards)
    console.print(f"[bold]kanvoice demo --fast[/]: {len(boards)} simulated boards", highlight=False)
    for step in range(last + 1):
        report = services.engine.ingest([s for b in boards for s in b.snapshots_at(step)])
        for line in report.changes:
            console.print(f"  step {step:>2}: {line}", highlight=False)

    desk = services.invoicing
    seen: dict[tuple[str, str], str] = {}
    for client in CURRENCIES:
        result = desk.create_or_refresh_draft(client, actor="demo")
        if result.invoice_id is None:
            continue
        services.desk.request_approval(result.invoice_id, actor="demo")
        console.print(f"  draft {result.invoice_id} for {client}: {result.total}", highlight=False)
    await desk.drain()
    await services.desk.drain_slack()
    for line in _slack_lines(world.slack, seen):
        console.print(line, highlight=False)
    # Finance approves Acme's draft from the dashboard; Stripe finalizes it.
    summary = services.desk.summary(1)
    approved = desk.approve(1, DEMO_APPROVER, "dashboard")
    services.desk.announce_decision(summary, "approved", DEMO_APPROVER)
    console.print(f"  approved invoice 1 ({approved['total_minor']} minor units)", highlight=False)
    await desk.drain()
    await services.desk.drain_slack()
    for line in _slack_lines(world.slack, seen):
        console.print(line, highlight=False)
    world.stripe.deliver_events()
    console.print(
        f"  the client paid {pay_open_invoices(world.stripe)} invoice(s)",
        highlight=False,
    )
    await desk.reconcile()
    _print_status(console, services)
    await _post_digest(console, world, seen)


async def _live_story(console: Console, world: DemoWorld) -> None:
    # The daemon's stack (uvicorn, the web app) only for the live demo.
    from sync.daemon import Daemon
    from sync.web.app import create_app

    services = world.services
    web = create_app(services)
    daemon = Daemon(
        services,
        web,
        notify=web.state.notify,
        request_approval=services.desk.post_for_approval,
        on_stop=[web.state.broker.close],
        drain_seconds=2,
        extra_jobs=[("slack", services.desk.drain_slack, 2)],
    )
    boards = _boards()
    last = max(b.script.last_step for b in boards)
    seen: dict[tuple[str, str], str] = {}

    def echo_slack() -> None:
        for line in _slack_lines(world.slack, seen):
            console.print(line, highlight=False)

    async def play() -> None:
        await asyncio.sleep(1)
        for step in range(last + 1):
            snapshots = [s for b in boards for s in b.snapshots_at(step)]
            report = await asyncio.to_thread(services.engine.ingest, snapshots)
            for line in report.changes:
                console.print(f"  step {step:>2}: {line}", highlight=False)
            echo_slack()
            await asyncio.sleep(STEP_SECONDS)
        console.print(
            "The board is done. Press [bold]Create draft now[/] and [bold]Approve[/] "
            "on the dashboard; Ctrl-C to stop.",
            highlight=False,
        )
        while True:  # the simulated clients pay finalized invoices after a while
            await asyncio.sleep(STEP_SECONDS)
            echo_slack()
            await asyncio.to_thread(world.stripe.deliver_events)
            await asyncio.to_thread(pay_open_invoices, world.stripe)

    port = services.settings.server.port
    console.print(
        f"[bold]kanvoice demo[/]: dashboard on http://127.0.0.1:{port}\n"
        f"  simulated boards, in-memory Stripe and Slack ({DEMO_CHANNEL}), "
        f"ledger {services.settings.ledger.url}",
        highlight=False,
    )
    player = asyncio.create_task(play())
    try:
        await daemon.run()
    finally:
        player.cancel()
