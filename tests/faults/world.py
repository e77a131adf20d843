"""The world of the fault matrix: kanvoice services wired to the fake Stripe, a fake
GitHub project and a fake Azure DevOps organization on loopback, plus the helpers the
tests share (signed deliveries, a tunable Stripe gateway, draining until settled)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import select

from connectors.github.webhook import sign_body
from connectors.stripe.gateway import StripeGateway
from sync.boards import close_connectors
from sync.composition import Services
from sync.intake import DrainReport as InboxReport
from sync.intake import drain_inbox
from sync.invoicing import DrainReport
from sync.ledger import schema as t
from sync.web.app import create_app
from tests.conftest import FixedClock
from tests.fakes.azure_server import FakeAzureDevOps, FakeProject
from tests.fakes.github_server import FakeGitHubProject
from tests.fakes.stripe_server import SignedEvent
from tests.faults.invariants import STRIPE_OPERATIONS
from tests.stripe_support import APPROVER, StripeWorld, world_settings

TOKEN = "ghp_fault_matrix_token"
GITHUB_SECRET = "fault matrix github secret"
PAT = "fault-matrix-pat"
HOOK_USER, HOOK_PASSWORD = "kanvoice", "fault-hook-pw"
SLACK_SECRET = "fault-matrix-slack-signing-secret"
AZURE_PROJECT = "Web Shop"
FILE_BOARD, GITHUB_BOARD, AZURE_BOARD = "acme-board", "acme-gh", "acme-az"
GITHUB_OWNER, GITHUB_NUMBER = "acme", 3


def board_settings(
    stripe: StripeWorld, ledger_url: str, github_api: str, azure_url: str
) -> dict[str, Any]:
    """Client acme (EUR, 120/h, 15-minute rounding up) billed from three boards: a file
    board (for direct ingests), a GitHub project and an Azure DevOps project."""
    data = world_settings(stripe, ledger_url)
    data["boards"] = [
        *data["boards"],
        {
            "key": GITHUB_BOARD,
            "source": "github",
            "client": "acme",
            "done_columns": ["Done"],
            "github": {
                "owner": GITHUB_OWNER,
                "project_number": GITHUB_NUMBER,
                "api_url": github_api,
            },
        },
        {
            "key": AZURE_BOARD,
            "source": "azure_devops",
            "client": "acme",
            "azure_devops": {"organization_url": azure_url, "project": AZURE_PROJECT},
        },
    ]
    data["github"] = {"token": TOKEN, "webhook_secret": GITHUB_SECRET}
    data["azure_devops"] = {
        "pat": PAT,
        "hook_username": HOOK_USER,
        "hook_password": HOOK_PASSWORD,
    }
    data["slack"] = {"approvers": [APPROVER, "dashboard"], "signing_secret": SLACK_SECRET}
    return data


def billed_world(
    stripe: StripeWorld,
    ledger_url: str,
    github_api: str,
    azure_url: str,
    clock: FixedClock,
    server: dict[str, Any] | None = None,
) -> Services:
    """`board_settings` (with these `server` settings) and a ledger holding acme's
    finalized invoice (1) and a draft awaiting approval (2): what the probes of the
    HTTP endpoints (security, fuzz) run against."""
    from tests.builders import snap
    from tests.stripe_support import services_for

    data = board_settings(stripe, ledger_url, github_api, azure_url)
    if server is not None:
        data["server"] = server
    s = services_for(data, clock)
    tune_gateway(s)
    s.engine.ingest([snap("Done", "2", 1, item_id="A1", board="acme-board")])
    first = s.invoicing.create_or_refresh_draft("acme").invoice_id
    assert first is not None
    settle_now(s, clock)
    s.invoicing.approve(first, APPROVER, "cli")
    settle_now(s, clock)
    s.engine.ingest([snap("Done", "1", 1, item_id="A2", board="acme-board")])
    s.invoicing.create_or_refresh_draft("acme")
    settle_now(s, clock)
    return s


def tune_gateway(services: Services, *, timeout: float = 5.0, max_attempts: int = 4) -> list[float]:
    """Give the writer a gateway with this time-out and number of attempts whose waits
    are recorded (and shortened): the returned list shows what it meant to wait."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(min(seconds, 0.005))

    settings = services.settings

    def make() -> StripeGateway:
        assert settings.stripe.api_key is not None
        return StripeGateway(
            settings.stripe.api_key.get_secret_value(),
            api_base=settings.stripe.api_base,
            requests_per_second=1000,
            max_attempts=max_attempts,
            backoff_initial=0.001,
            backoff_max=0.01,
            timeout=timeout,
            sleep=sleep,
        )

    services.invoicing.gateway_factory = make
    return waits


def pending_stripe_work(services: Services) -> list[Any]:
    with services.ledger.engine.connect() as conn:
        return list(
            conn.execute(
                select(t.outbox).where(
                    t.outbox.c.status == "pending",
                    t.outbox.c.operation.in_(sorted(STRIPE_OPERATIONS)),
                )
            ).all()
        )


async def settle(services: Services, clock: FixedClock, rounds: int = 12) -> DrainReport:
    """Drain, letting ledger time pass between rounds, until no Stripe work is pending."""
    total = DrainReport()
    for _ in range(rounds):
        report = await services.invoicing.drain()
        total.done += report.done
        total.retried += report.retried
        total.parked += report.parked
        total.errors.extend(report.errors)
        if not pending_stripe_work(services):
            return total
        clock.now += timedelta(minutes=10)
    raise AssertionError(f"Stripe work still pending: {pending_stripe_work(services)}")


def settle_now(services: Services, clock: FixedClock) -> DrainReport:
    """`settle` for synchronous tests (closes the gateway it used)."""

    async def run() -> DrainReport:
        try:
            return await settle(services, clock)
        finally:
            await services.invoicing.close()

    return asyncio.run(run())


def entry_rows(services: Services) -> list[tuple[str, str, str, Decimal]]:
    """(item external id, kind-seq, state, hours) of every entry, oldest first."""
    with services.ledger.engine.connect() as conn:
        rows = conn.execute(
            select(
                t.items.c.external_id,
                t.entries.c.kind,
                t.entries.c.seq,
                t.entries.c.state,
                t.entries.c.hours,
            )
            .join(t.items, t.items.c.id == t.entries.c.item_id)
            .order_by(t.entries.c.id)
        ).all()
    return [(r.external_id, f"{r.kind}-{r.seq}", r.state, r.hours) for r in rows]


def invoice_states(services: Services) -> list[str]:
    with services.ledger.engine.connect() as conn:
        return list(conn.execute(select(t.invoices.c.state).order_by(t.invoices.c.id)).scalars())


# -- deliveries -----------------------------------------------------------------------------


def github_headers(
    body: bytes, delivery: str, *, event: str = "projects_v2_item"
) -> dict[str, str]:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Hook-ID": "491234",
        "X-Hub-Signature-256": sign_body(GITHUB_SECRET.encode(), body),
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/6f3a1c2",
    }


def azure_headers(user: str = HOOK_USER, password: str = HOOK_PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {
        "Authorization": f"Basic {token}",
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "VSServices/16.255.35106.1",
    }


async def post_github(
    http: httpx.AsyncClient, payload: dict[str, Any], delivery: str
) -> httpx.Response:
    body = json.dumps(payload).encode()
    return await http.post("/webhooks/github", content=body, headers=github_headers(body, delivery))


async def post_azure(http: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    body = json.dumps(payload).encode()
    return await http.post("/webhooks/azure-devops", content=body, headers=azure_headers())


async def drain(services: Services) -> InboxReport:
    """The leader's inbox worker, now (without waiting out the coalescing window)."""
    return await drain_inbox(services, everything=True)


async def taken(services: Services, response: httpx.Response) -> InboxReport:
    """Assert a board webhook was queued (202), then drain the inbox."""
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued", response.text
    return await drain(services)


async def post_stripe(http: httpx.AsyncClient, event: SignedEvent) -> httpx.Response:
    return await http.post("/webhooks/stripe", content=event.payload, headers=event.headers)


# -- the world ------------------------------------------------------------------------------


@dataclass
class World:
    """Everything one test talks to. `http` reaches the app as a loopback client."""

    services: Services
    clock: FixedClock
    stripe: StripeWorld
    project: FakeGitHubProject
    org: FakeAzureDevOps
    http: httpx.AsyncClient
    waits: list[float] = field(default_factory=list)

    @property
    def shop(self) -> FakeProject:
        return self.org.projects[AZURE_PROJECT.lower()]

    async def close(self) -> None:
        await self.http.aclose()
        await self.services.invoicing.close()
        await close_connectors(self.services.connectors)
        self.services.close()


MakeWorld = Callable[[str], Awaitable[World]]


def app_client(services: Services) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(services)), base_url="http://127.0.0.1"
    )


Instance = tuple[Services, str]
"""An instance's services and the base URL it is served on."""
Start = Callable[[str, dict[str, Any]], Instance]
"""Starts an instance on a ledger URL with these `server` settings (the `start` fixture)."""
