"""`kanvoice demo`: the whole flow offline, on an embedded SQLite ledger.

A simulated board moves tickets and logs hours over about a minute; the real Stripe code
path writes drafts to a local fake Stripe (which sends its signed webhooks back);
approvals come from the dashboard in place of Slack; a simulated client pays finalized
invoices a little later. `--fast` plays the whole story at once, prints the pipeline and
exits (no server).
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from connectors.fakes.stripe_server import FakeStripe, run_fake_stripe_in_thread
from connectors.simulated import SimulatedBoard, demo_scripts
from sync.composition import Services, build_services
from sync.pipeline import client_pipelines
from sync.settings import Settings

DEMO_START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
STEP_SECONDS = 5.0
DEMO_API_KEY = "sk_test_kanvoice_demo"
DEMO_WEBHOOK_SECRET = "whsec_kanvoice_demo"  # noqa: S105 - the local fake's secret
DEMO_APPROVER = "dashboard"
CURRENCIES = {"acme": "EUR", "globex": "USD", "kaiju": "JPY"}


def demo_settings(
    ledger_url: str,
    *,
    stripe_base: str | None = None,
    customers: dict[str, str] | None = None,
    port: int = 8765,
) -> Settings:
    """Three clients in EUR, USD and JPY, each with one simulated board."""
    customers = customers or {key: f"cus_Demo{key.title()}" for key in CURRENCIES}
    data: dict[str, Any] = {
        "ledger": {"url": ledger_url},
        "server": {"host": "127.0.0.1", "port": port},
        "defaults": {"rate": "100", "rounding": {"increment_minutes": 15, "mode": "up"}},
        "slack": {"approvers": [DEMO_APPROVER]},
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
                "cadence": "on_demand",
                "rounding": {"increment_minutes": 6, "mode": "nearest"},
            },
            {
                "key": "kaiju",
                "name": "Kaiju K.K.",
                "stripe_customer_id": customers["kaiju"],
                "currency": "JPY",
                "rate": "15000",
                "cadence": "on_demand",
                "rounding": {"increment_minutes": 30, "mode": "up"},
            },
        ],
        "boards": [
            {"key": "acme-web", "source": "simulated", "client": "acme"},
            {"key": "globex-platform", "source": "simulated", "client": "globex"},
            {"key": "kaiju-app", "source": "simulated", "client": "kaiju"},
        ],
    }
    if stripe_base is not None:
        data["stripe"] = {
            "api_key": DEMO_API_KEY,
            "webhook_secret": DEMO_WEBHOOK_SECRET,
            "api_base": stripe_base,
            "requests_per_second": 50,
        }
    return Settings(**data)


def _customers(base_url: str) -> dict[str, str]:
    ids = {}
    for key, currency in CURRENCIES.items():
        response = httpx.post(
            f"{base_url}/v1/customers",
            data={"name": key, "currency": currency.lower()},
            headers={"Authorization": f"Bearer {DEMO_API_KEY}"},
        )
        response.raise_for_status()
        ids[key] = response.json()["id"]
    return ids


def _boards() -> list[SimulatedBoard]:
    return [SimulatedBoard(s, DEMO_START, timedelta(hours=4)) for s in demo_scripts()]


def _pay_open_invoices(fake: FakeStripe, base_url: str) -> int:
    """The simulated clients pay every finalized invoice (Stripe then sends invoice.paid)."""
    paid = 0
    for invoice in fake.list_objects("invoice"):
        if invoice["status"] == "open":
            httpx.post(
                f"{base_url}/v1/invoices/{invoice['id']}/pay",
                headers={"Authorization": f"Bearer {DEMO_API_KEY}"},
            ).raise_for_status()
            paid += 1
    return paid


def run_demo(console: Console, *, fast: bool, port: int = 8765) -> None:
    with tempfile.TemporaryDirectory(prefix="kanvoice-demo-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'demo.db'}"
        fake = FakeStripe(api_key=DEMO_API_KEY, webhook_secret=DEMO_WEBHOOK_SECRET)
        try:
            with run_fake_stripe_in_thread(fake) as stripe_base:
                settings = demo_settings(
                    url, stripe_base=stripe_base, customers=_customers(stripe_base), port=port
                )
                services = build_services(settings)
                try:
                    if fast:
                        _fast_story(console, services, fake, stripe_base)
                    else:
                        fake.webhook_url = f"http://127.0.0.1:{port}/webhooks/stripe"
                        asyncio.run(_live_story(console, services, fake, stripe_base))
                finally:
                    services.close()
        finally:
            fake.close()


def _print_status(console: Console, services: Services) -> None:
    from sync.cli import render_status

    with services.ledger.unit_of_work(services.clock()) as uow:
        table = render_status(client_pipelines(uow, services.client_names()))
    Console(soft_wrap=True, width=max(console.width, 160)).print(table)


def _fast_story(console: Console, services: Services, fake: FakeStripe, base: str) -> None:
    """The whole story at once: board, drafts, approval, finalize, payment."""
    boards = _boards()
    last = max(b.script.last_step for b in boards)
    console.print(f"[bold]kanvoice demo --fast[/]: {len(boards)} simulated boards", highlight=False)
    for step in range(last + 1):
        report = services.engine.ingest([s for b in boards for s in b.snapshots_at(step)])
        for line in report.changes:
            console.print(f"  step {step:>2}: {line}", highlight=False)

    async def invoicing() -> None:
        desk = services.invoicing
        try:
            for client in CURRENCIES:
                result = desk.create_or_refresh_draft(client, actor="demo")
                if result.invoice_id is None:
                    continue
                console.print(
                    f"  draft {result.invoice_id} for {client}: {result.total}", highlight=False
                )
            await desk.drain()
            # Finance approves Acme's draft from the dashboard; Stripe finalizes it.
            approved = desk.approve(1, DEMO_APPROVER, "dashboard")
            console.print(
                f"  approved invoice 1 ({approved['total_minor']} minor units)", highlight=False
            )
            await desk.drain()
            console.print(
                f"  the client paid {_pay_open_invoices(fake, base)} invoice(s)", highlight=False
            )
            await desk.reconcile()
        finally:
            await desk.close()

    asyncio.run(invoicing())
    _print_status(console, services)


async def _live_story(console: Console, services: Services, fake: FakeStripe, base: str) -> None:
    from sync.daemon import Daemon
    from sync.web.app import create_app

    web = create_app(services)
    daemon = Daemon(
        services, web, notify=web.state.notify, on_stop=[web.state.broker.close], drain_seconds=2
    )
    boards = _boards()
    last = max(b.script.last_step for b in boards)

    async def play() -> None:
        await asyncio.sleep(1)
        for step in range(last + 1):
            snapshots = [s for b in boards for s in b.snapshots_at(step)]
            report = await asyncio.to_thread(services.engine.ingest, snapshots)
            for line in report.changes:
                console.print(f"  step {step:>2}: {line}", highlight=False)
            await asyncio.sleep(STEP_SECONDS)
        console.print(
            "The board is done. Press [bold]Create draft now[/] and [bold]Approve[/] "
            "on the dashboard; Ctrl-C to stop.",
            highlight=False,
        )
        while True:  # the simulated clients pay finalized invoices after a while
            await asyncio.sleep(STEP_SECONDS)
            await asyncio.to_thread(_pay_open_invoices, fake, base)

    port = services.settings.server.port
    console.print(
        f"[bold]kanvoice demo[/]: dashboard on http://127.0.0.1:{port}\n"
        f"  simulated boards, fake Stripe at {base}, ledger {services.settings.ledger.url}",
        highlight=False,
    )
    player = asyncio.create_task(play())
    try:
        await daemon.run()
    finally:
        player.cancel()
