"""Fault matrix, the ledger database unavailable for a while (SQLite: its directory moved
away, so the file cannot be opened; PostgreSQL: the database stops accepting
connections and its sessions are ended). Webhooks from GitHub, Azure DevOps and Stripe
answer 503 (the sender retries), /readyz says so, nothing is half-written, and after
recovery each redelivery is processed once. Also the outage striking in the middle of a
webhook: during the re-fetch, and between the ingest and the claim of the delivery.

tests/integration/test_board_webhooks.py::test_ledger_unavailable_is_503 covers the 503
of one GitHub delivery with the ledger replaced by a stub.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from sync.engine import IngestReport
from sync.web.app import create_app
from tests.faults.invariants import assert_invariants
from tests.faults.world import (
    GITHUB_BOARD,
    MakeWorld,
    World,
    drain,
    entry_rows,
    post_azure,
    post_github,
    post_stripe,
    settle,
    taken,
)
from tests.ledger_support import dump
from tests.stripe_support import API_KEY, APPROVER


@dataclass
class Outage:
    url: str
    down: Callable[[], None]
    up: Callable[[], None]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outage]:
    """A ledger URL and two switches: `down()` makes it unreachable, `up()` brings it back."""
    if request.param == "sqlite":
        home, away = tmp_path / "ledger", tmp_path / "ledger-away"
        home.mkdir()

        def down() -> None:
            home.rename(away)

        def up() -> None:
            away.rename(home)

        yield Outage(f"sqlite:///{home / 'ledger.db'}", down, up)
        if away.exists():
            up()
        return
    url = str(request.getfixturevalue("postgres_url"))
    base, name = url.rsplit("/", 1)
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")

    def pg_down() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )

    def pg_up() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))

    try:
        yield Outage(url, pg_down, pg_up)
    finally:
        pg_up()
        admin.dispose()


def unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert "ledger" in response.json()["error"]
    assert int(response.headers.get("retry-after", "30")) > 0


def queued(response: httpx.Response) -> dict[str, Any]:
    """Stored in the inbox and answered (the worker applies it)."""
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "queued", body
    return body


def duplicate(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "duplicate"


async def test_ledger_unavailable_webhooks_503_nothing_half_written_then_processed_once(
    outage: Outage, make_world: MakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world: World = await make_world(outage.url)
    services, http, project, shop = world.services, world.http, world.project, world.shop
    fake = world.stripe.fake

    # A finalized invoice the client pays while the ledger is down.
    first = project.add_issue("Checkout", status="Done", hours=2).node_id
    await taken(
        services, await post_github(http, project.webhook_payload(first, "created"), "gh-a")
    )
    invoice_id = services.invoicing.create_or_refresh_draft("acme").invoice_id
    await settle(services, world.clock)
    services.invoicing.approve(invoice_id, APPROVER, "cli")
    await settle(services, world.clock)
    (remote,) = fake.list_objects("invoice")
    async with httpx.AsyncClient(base_url=world.stripe.base_url) as stripe_api:
        paid = await stripe_api.post(
            f"/v1/invoices/{remote['id']}/pay", headers={"Authorization": f"Bearer {API_KEY}"}
        )
    paid.raise_for_status()
    (paid_event,) = [e for e in fake.events if e["type"] == "invoice.paid"]
    stripe_paid = fake.sign_event(paid_event["id"])

    second = project.add_issue("Search", status="Done", hours=3).node_id
    github_b = project.webhook_payload(second, "created")
    story = shop.add_item("Export", state="Closed", hours=4)
    azure_hook = shop.service_hook_payload(story)

    before = dump(outage.url)
    outage.down()
    # Pooled connections still reach a moved SQLite file: drop them, as a lost disk
    # or a restart would.
    services.ledger.dispose()
    try:
        unavailable(await post_github(http, github_b, "gh-b"))
        unavailable(await post_azure(http, azure_hook))
        unavailable(await post_stripe(http, stripe_paid))
        ready = await http.get("/readyz")
        assert ready.status_code == 503, ready.text
    finally:
        outage.up()
    assert dump(outage.url) == before  # nothing half-written
    assert (await http.get("/readyz")).status_code == 200

    # The senders retry: each delivery is processed once.
    queued_b = await post_github(http, github_b, "gh-b")
    assert (await taken(services, await post_azure(http, azure_hook))).deliveries == 2
    assert queued_b.status_code == 202
    queued(await post_stripe(http, stripe_paid))
    assert (await drain(services)).deliveries == 1  # the worker applies the payment
    duplicate(await post_github(http, github_b, "gh-b"))
    duplicate(await post_azure(http, azure_hook))
    duplicate(await post_stripe(http, stripe_paid))

    # The ledger goes away while the item is being re-fetched.
    third = project.add_issue("Cart", status="Done", hours=1).node_id
    github_c = project.webhook_payload(third, "created")
    connector = services.connectors[GITHUB_BOARD]
    fetch = connector.fetch

    async def fetch_during_outage(item_ids: tuple[str, ...]) -> Any:
        outage.down()
        # Pooled connections still reach a moved SQLite file: drop them, as a lost disk
        # or a restart would.
        services.ledger.dispose()
        return await fetch(item_ids)

    queued_c = await post_github(http, github_c, "gh-c")
    assert queued_c.status_code == 202  # answered before the re-fetch, as GitHub wants
    monkeypatch.setattr(connector, "fetch", fetch_during_outage)
    before = dump(outage.url)
    try:
        with pytest.raises(OperationalError):
            await drain(services)
    finally:
        monkeypatch.undo()
        outage.up()
    assert dump(outage.url) == before  # still pending in the inbox, nothing half-written
    assert (await drain(services)).deliveries == 1
    duplicate(await post_github(http, github_c, "gh-c"))

    # The ledger goes away right after an ingest committed, before the inbox row was
    # marked done: the next drain re-fetches and finds the item recorded (billed once).
    fourth = project.add_issue("Login", status="Done", hours=1.5).node_id
    github_d = project.webhook_payload(fourth, "created")
    assert (await post_github(http, github_d, "gh-d")).status_code == 202
    armed = [True]

    def fail_after_commit(_report: IngestReport) -> None:
        if armed and armed.pop():
            outage.down()
            # Pooled connections still reach a moved SQLite file: drop them, as a lost disk
            # or a restart would.
            services.ledger.dispose()

    services.engine.on_change(fail_after_commit)
    try:
        with pytest.raises(OperationalError):
            await drain(services)
    finally:
        if not armed:
            outage.up()
    assert not armed, "the ingest never committed"
    rows = entry_rows(services)
    assert [r for r in rows if r[0] == fourth] == [(fourth, "time-1", "ready", Decimal("1.5"))]
    again = await drain(services)
    assert (again.deliveries, again.changed) == (1, 0)
    duplicate(await post_github(http, github_d, "gh-d"))
    assert entry_rows(services) == rows

    # Everything taken in once bills once.
    invoice_id = services.invoicing.create_or_refresh_draft("acme").invoice_id
    await settle(services, world.clock)
    services.invoicing.approve(invoice_id, APPROVER, "cli")
    await settle(services, world.clock)
    states = {external: state for external, _, state, _ in entry_rows(services)}
    assert states == {
        first: "paid",
        second: "invoiced",
        str(story): "invoiced",
        third: "invoiced",
        fourth: "invoiced",
    }
    await assert_invariants(services, fake)


async def test_ledger_unavailable_dashboard_answers_503(
    make_world: MakeWorld, tmp_path: Path
) -> None:
    home = tmp_path / "ledger"
    home.mkdir()
    world = await make_world(f"sqlite:///{home / 'ledger.db'}")
    transport = httpx.ASGITransport(app=create_app(world.services), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        home.rename(tmp_path / "away")
        world.services.ledger.dispose()  # pooled connections: see above
        try:
            answers = {
                "GET /api/pipeline": (await http.get("/api/pipeline")).status_code,
                "GET /": (await http.get("/")).status_code,
                "POST draft": (
                    await http.post(
                        "/api/clients/acme/draft", headers={"X-Kanvoice-Dashboard": "1"}
                    )
                ).status_code,
            }
        finally:
            (tmp_path / "away").rename(home)
    assert answers == {"GET /api/pipeline": 503, "GET /": 503, "POST draft": 503}
    await assert_invariants(world.services, world.stripe.fake)
