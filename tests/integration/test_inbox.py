"""The inbox worker: a sprint-end bulk move (many deliveries per card) becomes one
batched re-fetch per board, the coalescing window follows the injected clock, and the
ledger equals the board afterwards."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from connectors.github.webhook import sign_body
from sync.boards import close_connectors, sync_board
from sync.composition import Services, build_services
from sync.intake import drain_inbox
from sync.ledger import schema as t
from sync.settings import Settings
from sync.web.app import create_app
from tests.conftest import FixedClock
from tests.fakes.azure_server import FakeAzureDevOps, serve_fake_azure
from tests.fakes.github_server import FakeGitHubProject, serve_fake_github
from tests.integration.test_board_webhooks import HOOK_PASSWORD, HOOK_USER, hook_headers

TOKEN = "ghp_inbox_burst_token"
SECRET = "inbox burst secret"
PAT = "inbox-pat"
CLIENT = {
    "key": "acme",
    "stripe_customer_id": "cus_AcmeBurst01",
    "currency": "EUR",
    "rate": "100",
}


def billed_hours(url: str) -> dict[str, Decimal]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(t.items.c.external_id, t.entries.c.hours, t.entries.c.state).join(
                    t.entries, t.entries.c.item_id == t.items.c.id
                )
            ).all()
    finally:
        engine.dispose()
    out: dict[str, Decimal] = {}
    for external, hours, state in rows:
        if state == "ready":
            out[external] = out.get(external, Decimal(0)) + hours
    return out


@pytest.fixture
def project() -> Iterator[tuple[FakeGitHubProject, str]]:
    fake = FakeGitHubProject(owner="acme", number=5, require_token=TOKEN)
    with serve_fake_github(fake) as url:
        yield fake, url


@pytest.fixture
async def github(
    project: tuple[FakeGitHubProject, str], ledger_url: str
) -> AsyncIterator[tuple[Services, httpx.AsyncClient, FixedClock]]:
    clock = FixedClock()
    settings = Settings(
        ledger={"url": ledger_url},
        clients=[CLIENT],
        boards=[
            {
                "key": "gh",
                "source": "github",
                "client": "acme",
                "done_columns": ["Done"],
                "github": {"owner": "acme", "project_number": 5, "api_url": project[1]},
            }
        ],
        github={"token": TOKEN, "webhook_secret": SECRET},
    )
    services = build_services(settings, clock)
    transport = httpx.ASGITransport(app=create_app(services))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://k.test") as http:
            yield services, http, clock
    finally:
        await close_connectors(services.connectors)
        services.close()


async def post_all(http: httpx.AsyncClient, requests: list[tuple[str, bytes, Any]]) -> list[int]:
    """Send concurrently (as GitHub does during a bulk move), 50 at a time."""
    gate = asyncio.Semaphore(50)

    async def one(path: str, body: bytes, headers: Any) -> int:
        async with gate:
            return (await http.post(path, content=body, headers=headers)).status_code

    return list(await asyncio.gather(*(one(*r) for r in requests)))


async def test_a_bulk_move_of_200_cards_is_two_nodes_requests(
    project: tuple[FakeGitHubProject, str],
    github: tuple[Services, httpx.AsyncClient, FixedClock],
    ledger_url: str,
) -> None:
    fake, _ = project
    services, http, clock = github
    cards = [fake.add_issue(f"Card {n}", status="In Progress", hours=1 + n % 4) for n in range(200)]
    await sync_board(services, "gh")
    for card in cards:
        fake.move(card.node_id, "Done")
    requests = []
    for round_ in range(10):  # 10 deliveries per card (status, reorder, field edits…)
        for card in cards:
            action = "reordered" if round_ % 3 == 2 else "edited"
            body = json.dumps(fake.webhook_payload(card.node_id, action)).encode()
            headers = {
                "X-GitHub-Event": "projects_v2_item",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": sign_body(SECRET.encode(), body),
                "Content-Type": "application/json",
            }
            requests.append(("/webhooks/github", body, headers))
    before = fake.requests["total"]
    statuses = await post_all(http, requests)
    assert statuses == [202] * 2000
    assert fake.requests["total"] == before  # answered without a single GitHub call

    # Within the coalescing window nothing is fetched yet.
    early = await drain_inbox(services)
    assert (early.deliveries, early.deferred) == (0, 2000)
    clock.now += timedelta(seconds=2)
    report = await drain_inbox(services)
    assert report.deliveries == 2000 and report.items_fetched == 200
    assert fake.requests["total"] - before == 2  # nodes(ids:) of 100, twice
    assert fake.requests["nodes"] == 2 and fake.requests["node"] == 0
    assert billed_hours(ledger_url) == {
        c.node_id: Decimal(1 + n % 4) for n, c in enumerate(cards)
    }  # the ledger equals the board
    assert (await drain_inbox(services)).deliveries == 0


async def test_a_busy_item_is_fetched_after_max_wait_even_if_deliveries_keep_coming(
    project: tuple[FakeGitHubProject, str],
    github: tuple[Services, httpx.AsyncClient, FixedClock],
    ledger_url: str,
) -> None:
    fake, _ = project
    services, http, clock = github
    card = fake.add_issue("Busy", status="Done", hours=2)
    for _ in range(12):  # one delivery a second, for 12 seconds
        body = json.dumps(fake.webhook_payload(card.node_id, "edited")).encode()
        headers = {
            "X-GitHub-Event": "projects_v2_item",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign_body(SECRET.encode(), body),
            "Content-Type": "application/json",
        }
        assert (
            await http.post("/webhooks/github", content=body, headers=headers)
        ).status_code == 202
        report = await drain_inbox(services)
        clock.now += timedelta(seconds=1)
        if report.deliveries:
            break
    assert report.deliveries == 11  # the oldest waited 10 s: fetched, all 11 done at once
    assert billed_hours(ledger_url) == {card.node_id: Decimal(2)}


async def test_azure_bulk_close_of_250_items_is_two_workitemsbatch_calls(
    ledger_url: str,
) -> None:
    org = FakeAzureDevOps(pat=PAT, organization="fabrikam")
    shop = org.add_project("Web Shop", "Agile")
    clock = FixedClock()
    with serve_fake_azure(org) as url:
        settings = Settings(
            ledger={"url": ledger_url},
            clients=[CLIENT],
            boards=[
                {
                    "key": "shop",
                    "source": "azure_devops",
                    "client": "acme",
                    "azure_devops": {"organization_url": url, "project": "Web Shop"},
                }
            ],
            azure_devops={"pat": PAT, "hook_username": HOOK_USER, "hook_password": HOOK_PASSWORD},
        )
        services = build_services(settings, clock)
        try:
            stories = [shop.add_item(f"Story {n}", state="Active", hours=2) for n in range(250)]
            requests = []
            for story in stories:
                for hours in (3, 4):  # two updates each: two notifications
                    shop.set_state(story, "Closed" if hours == 4 else "Active", hours=hours)
                    body = json.dumps(shop.service_hook_payload(story)).encode()
                    requests.append(("/webhooks/azure-devops", body, hook_headers()))
            transport = httpx.ASGITransport(app=create_app(services))
            async with httpx.AsyncClient(transport=transport, base_url="http://k.test") as http:
                assert await post_all(http, requests) == [202] * 500
            org.reset_counts()
            clock.now += timedelta(seconds=2)
            report = await drain_inbox(services)
            assert report.deliveries == 500
            assert org.request_counts["batch"] == 2
            assert billed_hours(ledger_url) == {str(s): Decimal(4) for s in stories}
        finally:
            await close_connectors(services.connectors)
            services.close()


async def test_backlog_in_readyz_and_metrics_and_old_processed_rows_are_pruned(
    project: tuple[FakeGitHubProject, str],
    github: tuple[Services, httpx.AsyncClient, FixedClock],
    ledger_url: str,
) -> None:
    from sync.intake import prune_inbox

    fake, _ = project
    services, http, clock = github
    card = fake.add_issue("Card", status="Done", hours=2)

    async def deliver() -> None:
        body = json.dumps(fake.webhook_payload(card.node_id, "edited")).encode()
        headers = {
            "X-GitHub-Event": "projects_v2_item",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign_body(SECRET.encode(), body),
            "Content-Type": "application/json",
        }
        answer = await http.post("/webhooks/github", content=body, headers=headers)
        assert answer.status_code == 202

    await deliver()
    await deliver()
    clock.now += timedelta(seconds=90)
    ready = (await http.get("/readyz")).json()
    assert ready["inbox"] == {"pending": 2, "oldest_pending_seconds": 90.0}
    metrics = (await http.get("/metrics")).text
    assert "kanvoice_inbox_pending 2.0" in metrics
    assert "kanvoice_inbox_oldest_pending_seconds 90.0" in metrics

    assert (await drain_inbox(services)).deliveries == 2
    assert (await http.get("/readyz")).json()["inbox"] == {
        "pending": 0,
        "oldest_pending_seconds": 0.0,
    }
    # Processed rows stay for the retention (late redeliveries dedupe), then go; a
    # delivery still pending is never pruned, however old.
    clock.now += timedelta(days=13)
    await deliver()
    assert await prune_inbox(services) == 0
    clock.now += timedelta(days=2)
    assert await prune_inbox(services) == 2
    engine = create_engine(ledger_url)
    try:
        with engine.connect() as conn:
            assert list(conn.execute(select(t.inbox.c.status)).scalars()) == ["pending"]
    finally:
        engine.dispose()
