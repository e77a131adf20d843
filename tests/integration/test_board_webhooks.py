"""Board webhooks through the ASGI app: verify, store in the inbox, answer; then the
worker (`drain_inbox`, run here synchronously) re-fetches from the fakes and ingests.

GitHub `projects_v2_item` deliveries are genuinely signed (HMAC-SHA256 of the raw
body) and re-fetched from the fake GraphQL server; Azure DevOps service hooks carry
basic auth and are re-fetched from the fake REST organization. Every refused or
repeated request is shown to leave the ledger exactly as it was (`dump`).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import OperationalError

from connectors.github.webhook import sign_body
from sync.boards import close_connectors, sync_board
from sync.composition import Services, build_services
from sync.intake import DrainReport, drain_inbox
from sync.ledger import schema as t
from sync.settings import Settings
from sync.web.app import create_app
from tests.conftest import FixedClock
from tests.fakes.azure_server import FakeAzureDevOps, serve_fake_azure
from tests.fakes.github_server import FakeGitHubProject, serve_fake_github
from tests.ledger_support import dump

TOKEN = "ghp_fake_webhook_token"
SECRET = "It's a Secret to Everybody"
PAT = "fake-pat-hooks"
HOOK_USER, HOOK_PASSWORD = "kanvoice", "hook-pw-123"
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
CLIENT = {
    "key": "acme",
    "name": "Acme GmbH",
    "stripe_customer_id": "cus_AcmeTest01",
    "currency": "EUR",
    "rate": "100",
    "rounding": {"increment_minutes": 15, "mode": "up"},
}


def entry_rows(url: str) -> list[tuple[str, str, Decimal]]:
    """(item external id, entry state, hours) of every entry, in creation order."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(t.items.c.external_id, t.entries.c.state, t.entries.c.hours)
                .join(t.items, t.items.c.id == t.entries.c.item_id)
                .order_by(t.entries.c.id)
            ).all()
            return [(r.external_id, r.state, r.hours) for r in rows]
    finally:
        engine.dispose()


def count(url: str, table: Any) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
async def closing() -> AsyncIterator[list[Services]]:
    """Services registered here are closed (connectors, then ledger) after the test."""
    made: list[Services] = []
    yield made
    for services in made:
        await close_connectors(services.connectors)
        services.close()


def billing_state(url: str) -> dict[str, list[Any]]:
    """Every table but the inbox (which records every accepted delivery)."""
    return {name: rows for name, rows in dump(url).items() if name != "inbox"}


async def drain(services: Services) -> DrainReport:
    """What the leader's worker does, now (the coalescing window is not waited for)."""
    return await drain_inbox(services, everything=True)


def asgi_client(services: Services) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(services)), base_url="http://kanvoice.test"
    )


# == GitHub ===================================================================================


@pytest.fixture
def project() -> FakeGitHubProject:
    return FakeGitHubProject(owner="acme", number=3, require_token=TOKEN)


@pytest.fixture
def api_url(project: FakeGitHubProject) -> Iterator[str]:
    with serve_fake_github(project) as url:
        yield url


def github_services(ledger_url: str, api_url: str, token: str = TOKEN) -> Services:
    settings = Settings(
        ledger={"url": ledger_url},
        clients=[CLIENT],
        boards=[
            {
                "key": "acme-web",
                "source": "github",
                "client": "acme",
                "done_columns": ["Done"],
                "github": {"owner": "acme", "project_number": 3, "api_url": api_url},
            }
        ],
        github={"token": token, "webhook_secret": SECRET},
    )
    return build_services(settings, FixedClock())


@pytest.fixture
async def gh(
    ledger_url: str, api_url: str, closing: list[Services]
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    services = github_services(ledger_url, api_url)
    closing.append(services)
    async with asgi_client(services) as http:
        yield services, http


def github_headers(
    body: bytes,
    delivery: str | None = None,
    *,
    event: str = "projects_v2_item",
    secret: str = SECRET,
    content_type: str = "application/json",
) -> dict[str, str]:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "491234",
        "X-Hub-Signature-256": sign_body(secret.encode(), body),
        "Content-Type": content_type,
        "User-Agent": "GitHub-Hookshot/6f3a1c2",
    }


async def deliver(
    http: httpx.AsyncClient, payload: dict[str, Any], delivery: str | None = None, **kw: Any
) -> httpx.Response:
    body = json.dumps(payload).encode()
    return await http.post(
        "/webhooks/github", content=body, headers=github_headers(body, delivery, **kw)
    )


# -- Done when: all seven actions, both `changes` forms, signed, through the app ---------------


async def test_projects_v2_item_all_seven_actions_leave_the_ledger_right(
    project: FakeGitHubProject, gh: tuple[Services, httpx.AsyncClient], ledger_url: str
) -> None:
    services, http = gh
    draft = project.add_draft("Spike: payment provider", status="In Progress", hours=1)

    created = await deliver(http, project.webhook_payload(draft.node_id, "created"))
    assert created.status_code == 202, created.text
    assert created.json()["status"] == "queued"
    assert entry_rows(ledger_url) == []  # answered before anything was fetched
    assert (await drain(services)).changed == 1
    assert entry_rows(ledger_url) == [(draft.node_id, "in_progress", Decimal(1))]

    # edited, the current form: field_name, from and to.
    project.set_hours(draft.node_id, 2)
    project.move(draft.node_id, "Done")
    edited = await deliver(
        http,
        project.webhook_payload(
            draft.node_id, "edited", changes=project.status_change("In Progress", "Done")
        ),
    )
    assert edited.status_code == 202, edited.text
    assert (await drain(services)).changed == 1
    assert entry_rows(ledger_url) == [(draft.node_id, "ready", Decimal(2))]

    # converted: the draft becomes an issue; billing unchanged, the item's url is the issue.
    project.convert(draft.node_id, repository="acme/web")
    converted = await deliver(http, project.webhook_payload(draft.node_id, "converted"))
    assert converted.status_code == 202, converted.text
    await drain(services)
    assert entry_rows(ledger_url) == [(draft.node_id, "ready", Decimal(2))]

    # edited, the older form (field_node_id and field_type only) for a second item.
    bug = project.add_issue("Login crash", status="In Progress", hours=0.5)
    assert (await deliver(http, project.webhook_payload(bug.node_id, "created"))).status_code == 202
    await drain(services)
    project.move(bug.node_id, "Done")
    older = project.status_change(None, None, detailed=False)
    assert "field_name" not in older["field_value"]
    edited_old = await deliver(http, project.webhook_payload(bug.node_id, "edited", changes=older))
    assert edited_old.status_code == 202, edited_old.text
    await drain(services)
    billed = [(draft.node_id, "ready", Decimal(2)), (bug.node_id, "ready", Decimal("0.5"))]
    assert entry_rows(ledger_url) == billed

    # archived and restored: GitHub's auto-archive of Done items must not undo billing.
    project.archive(bug.node_id)
    assert (
        await deliver(http, project.webhook_payload(bug.node_id, "archived"))
    ).status_code == 202
    await drain(services)
    project.restore(bug.node_id)
    assert (
        await deliver(http, project.webhook_payload(bug.node_id, "restored"))
    ).status_code == 202
    await drain(services)
    assert entry_rows(ledger_url) == billed

    # reordered: nothing billing reads changed; only the delivery is recorded.
    project.reorder(bug.node_id, 0)
    reordered = await deliver(http, project.webhook_payload(bug.node_id, "reordered"))
    assert reordered.status_code == 202, reordered.text
    report = await drain(services)
    assert (report.seen, report.changed) == (1, 0)
    assert entry_rows(ledger_url) == billed

    # deleted: the re-fetch finds nothing, nothing is recorded, billed entries stay.
    deleted_payload = project.webhook_payload(bug.node_id, "deleted")
    project.delete(bug.node_id)
    before = billing_state(ledger_url)
    deleted = await deliver(http, deleted_payload)
    assert deleted.status_code == 202, deleted.text
    report = await drain(services)
    assert (report.deliveries, report.seen) == (1, 0)  # fetched, found nothing
    assert billing_state(ledger_url) == before
    assert entry_rows(ledger_url) == billed
    assert count(ledger_url, t.items) == 2
    assert count(ledger_url, t.inbox) == 9
    # Each re-fetch was one node(id:) query; one page of one item told the project's
    # node id (once), no other page was read.
    assert project.requests["node"] == 9 and project.requests["items_page"] == 1


async def test_ping_and_unknown_events_and_actions_are_202_and_change_nothing(
    project: FakeGitHubProject, gh: tuple[Services, httpx.AsyncClient], ledger_url: str
) -> None:
    _, http = gh
    before = dump(ledger_url)
    ping = await deliver(http, {"zen": "Keep it logically awesome.", "hook_id": 1}, event="ping")
    assert (ping.status_code, ping.json()["status"]) == (202, "ignored")
    issues = await deliver(http, {"action": "opened"}, event="issues")
    assert issues.status_code == 202
    item = project.add_issue("X", status="Done", hours=1)
    unknown = await deliver(http, project.webhook_payload(item.node_id, "transmogrified"))
    assert unknown.status_code == 202
    assert dump(ledger_url) == before
    assert project.requests["total"] == 0


async def test_a_delivery_for_another_project_is_ignored(
    project: FakeGitHubProject, gh: tuple[Services, httpx.AsyncClient], ledger_url: str
) -> None:
    services, http = gh
    item = project.add_issue("Ours", status="Done", hours=1)
    await sync_board(services, "acme-web")  # the board now knows its project node id
    before = dump(ledger_url)
    payload = project.webhook_payload(item.node_id, "edited")
    payload["projects_v2_item"]["project_node_id"] = "PVT_kwDOSomebodyElse"
    requests = project.requests["total"]
    response = await deliver(http, payload)
    assert response.status_code == 202
    assert response.json()["status"] == "ignored"
    assert "no configured github board" in response.json()["reason"]
    assert dump(ledger_url) == before  # not even in the inbox
    assert project.requests["total"] == requests


async def test_a_delivery_of_another_project_of_the_org_is_never_fetched(
    project: FakeGitHubProject, gh: tuple[Services, httpx.AsyncClient], ledger_url: str
) -> None:
    """Before kanvoice knows its project's node id (no poll yet), a delivery naming
    another project is stored; the worker asks for the project's id once (one page of
    one item) and then drops it without re-fetching the item."""
    services, http = gh
    item = project.add_issue("Someone else's", status="Done", hours=1)
    payload = project.webhook_payload(item.node_id, "edited")
    payload["projects_v2_item"]["project_node_id"] = "PVT_kwDOOtherProject"
    assert (await deliver(http, payload)).json()["status"] == "queued"
    before = billing_state(ledger_url)
    report = await drain(services)
    assert report.deliveries == 1 and report.items_fetched == 0
    assert project.requests["items_page"] == 1 and project.requests["total"] == 1
    assert billing_state(ledger_url) == before
    # From now on the intake itself tells: not even stored.
    again = await deliver(http, payload)
    assert (again.status_code, again.json()["status"]) == (202, "ignored")
    assert project.requests["total"] == 1


async def test_an_org_wide_delivery_of_another_organization_is_ignored_without_a_call(
    project: FakeGitHubProject, gh: tuple[Services, httpx.AsyncClient], ledger_url: str
) -> None:
    """An organization webhook of another org (a GitHub App installed on several): the
    `organization.login` names no configured board, so nothing is fetched or stored,
    even before kanvoice learnt its project's node id."""
    _, http = gh
    item = project.add_issue("Theirs", status="Done", hours=1)
    payload = project.webhook_payload(item.node_id, "edited")
    payload["organization"] = {"login": "globex", "id": 99}
    payload["projects_v2_item"]["project_node_id"] = "PVT_kwDOGlobex"
    before = dump(ledger_url)
    response = await deliver(http, payload)
    assert (response.status_code, response.json()["status"]) == (202, "ignored")
    assert dump(ledger_url) == before
    assert project.requests["total"] == 0


async def test_the_app_closes_connector_clients_when_it_stops(
    project: FakeGitHubProject, api_url: str, sqlite_url: str
) -> None:
    services = github_services(sqlite_url, api_url)
    item = project.add_issue("Checkout", status="Done", hours=1)
    connector = services.connectors["acme-web"]
    app = create_app(services)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://k.test") as http:
                response = await deliver(http, project.webhook_payload(item.node_id, "created"))
            assert response.status_code == 202, response.text
            await drain(services)
            assert connector.built is not None  # type: ignore[attr-defined]
        assert connector.built is None  # type: ignore[attr-defined]
    finally:
        services.close()


# -- Done when: forged, replayed, wrong content type, 5 MB, malformed: each changes nothing ---


@pytest.fixture
async def billed_once(
    project: FakeGitHubProject, gh: tuple[Services, httpx.AsyncClient]
) -> tuple[str, str]:
    """One item already billed through a webhook: (node id, its delivery id)."""
    services, http = gh
    item = project.add_issue("Checkout", status="Done", hours=3)
    delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    response = await deliver(http, project.webhook_payload(item.node_id, "created"), delivery)
    assert response.status_code == 202, response.text
    await drain(services)
    return item.node_id, delivery


@pytest.mark.parametrize("case", ["forged", "missing"])
async def test_forged_or_missing_signature_is_401_and_changes_nothing(
    case: str,
    project: FakeGitHubProject,
    gh: tuple[Services, httpx.AsyncClient],
    billed_once: tuple[str, str],
    ledger_url: str,
) -> None:
    _, http = gh
    node_id, _ = billed_once
    project.set_hours(node_id, 8)
    before = dump(ledger_url)
    body = json.dumps(project.webhook_payload(node_id, "edited")).encode()
    headers = github_headers(body, secret="not the secret")
    if case == "missing":
        del headers["X-Hub-Signature-256"]
    response = await http.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 401
    assert "X-Hub-Signature-256" in response.json()["error"]
    assert dump(ledger_url) == before
    assert project.requests["node"] == 1  # only the first delivery's re-fetch


async def test_replayed_delivery_id_is_200_duplicate_and_changes_nothing(
    project: FakeGitHubProject,
    gh: tuple[Services, httpx.AsyncClient],
    billed_once: tuple[str, str],
    ledger_url: str,
) -> None:
    services, http = gh
    node_id, delivery = billed_once
    project.set_hours(node_id, 8)  # even though the item changed since
    before = dump(ledger_url)
    replay = await deliver(http, project.webhook_payload(node_id, "created"), delivery)
    assert replay.status_code == 200
    assert replay.json()["status"] == "duplicate"
    assert (await drain(services)).deliveries == 0
    assert dump(ledger_url) == before
    assert project.requests["node"] == 1


async def test_wrong_content_type_is_415_and_changes_nothing(
    project: FakeGitHubProject,
    gh: tuple[Services, httpx.AsyncClient],
    billed_once: tuple[str, str],
    ledger_url: str,
) -> None:
    _, http = gh
    node_id, _ = billed_once
    project.set_hours(node_id, 8)
    before = dump(ledger_url)
    form = b"payload=" + json.dumps(project.webhook_payload(node_id, "edited")).encode()
    headers = github_headers(form, content_type="application/x-www-form-urlencoded")
    response = await http.post("/webhooks/github", content=form, headers=headers)
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]
    assert dump(ledger_url) == before


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_5mb_body_is_413_and_changes_nothing(
    streamed: bool,
    project: FakeGitHubProject,
    gh: tuple[Services, httpx.AsyncClient],
    billed_once: tuple[str, str],
    ledger_url: str,
) -> None:
    _, http = gh
    node_id, _ = billed_once
    project.set_hours(node_id, 8)
    before = dump(ledger_url)
    payload = project.webhook_payload(node_id, "edited")
    payload["padding"] = "x" * (5 * 1024 * 1024)
    body = json.dumps(payload).encode()
    headers = github_headers(body)
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for start in range(0, len(body), 64 * 1024):
            sent += 1
            yield body[start : start + 64 * 1024]

    content: Any = chunks() if streamed else body
    response = await http.post("/webhooks/github", content=content, headers=headers)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
    assert dump(ledger_url) == before
    if streamed:
        assert sent < len(body) // (64 * 1024)  # refused before the whole body was read


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b'{"action": "edited"}', "no projects_v2_item"),
        (b'{"action": "edited", "projects_v2_item": {"id": 1}}', "projects_v2_item.node_id"),
        (b'{"projects_v2_item": {"node_id": "PVTI_x"}}', "no action"),
    ],
    ids=["not-json", "not-object", "no-item", "no-node-id", "no-action"],
)
async def test_malformed_json_is_400_and_changes_nothing(
    body: bytes,
    message: str,
    project: FakeGitHubProject,
    gh: tuple[Services, httpx.AsyncClient],
    billed_once: tuple[str, str],
    ledger_url: str,
) -> None:
    _, http = gh
    before = dump(ledger_url)
    response = await http.post("/webhooks/github", content=body, headers=github_headers(body))
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert dump(ledger_url) == before
    assert project.requests["node"] == 1


# -- webhook and poll see the same change, in either order: one billing outcome -------------


@pytest.mark.parametrize("order", ["webhook-then-poll", "poll-then-webhook"])
async def test_webhook_and_poll_in_either_order_bill_once(
    order: str,
    project: FakeGitHubProject,
    gh: tuple[Services, httpx.AsyncClient],
    ledger_url: str,
) -> None:
    services, http = gh
    item = project.add_issue("Checkout", status="In Progress", hours=1)
    await sync_board(services, "acme-web")
    project.set_hours(item.node_id, 4)
    project.move(item.node_id, "Done")
    payload = project.webhook_payload(
        item.node_id, "edited", changes=project.status_change("In Progress", "Done")
    )

    if order == "webhook-then-poll":
        hook = await deliver(http, payload)
        assert (await drain(services)).changed == 1
        poll = await sync_board(services, "acme-web")
        assert poll.skipped == 1
    else:
        poll = await sync_board(services, "acme-web")
        hook = await deliver(http, payload)
        report = await drain(services)
        assert poll.items_updated == 1 and (report.seen, report.changed) == (1, 0)
    assert hook.status_code == 202
    assert entry_rows(ledger_url) == [(item.node_id, "ready", Decimal(4))]

    before = dump(ledger_url)
    await sync_board(services, "acme-web")
    assert dump(ledger_url) == before


# -- failures: the sender retries, nothing half-written --------------------------------------


async def test_a_failed_refetch_keeps_the_delivery_pending_until_it_succeeds(
    project: FakeGitHubProject,
    gh: tuple[Services, httpx.AsyncClient],
    ledger_url: str,
) -> None:
    services, http = gh
    clock = services.clock
    assert isinstance(clock, FixedClock)
    await sync_board(services, "acme-web")  # the board knows its project's node id
    item = project.add_issue("Checkout", status="Done", hours=2)
    payload = project.webhook_payload(item.node_id, "created")
    project.secondary_limit_next(retry_after=900)  # longer than the connector waits
    accepted = await deliver(http, payload, "d-1")
    assert accepted.status_code == 202  # GitHub is answered at once, whatever comes next
    failed = await drain(services)
    assert "acme-web" in failed.failed_boards and failed.deliveries == 0
    assert entry_rows(ledger_url) == []
    assert (await drain(services)).deliveries == 0  # backing off for Retry-After

    clock.now += timedelta(seconds=901)
    assert (await drain(services)).deliveries == 1
    assert entry_rows(ledger_url) == [(item.node_id, "ready", Decimal(2))]
    redelivered = await deliver(http, payload, "d-1")  # someone pressed Redeliver
    assert redelivered.json()["status"] == "duplicate"


async def test_ledger_unavailable_is_503(
    project: FakeGitHubProject,
    gh: tuple[Services, httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services, http = gh
    item = project.add_issue("Checkout", status="Done", hours=2)

    def down(deliveries: Any, now: datetime) -> Any:
        raise OperationalError("BEGIN", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(services.ledger, "accept_deliveries", down)
    response = await deliver(http, project.webhook_payload(item.node_id, "created"))
    assert response.status_code == 503
    assert "ledger is unavailable" in response.json()["error"]
    assert response.headers["retry-after"]


async def test_rejected_board_credentials_keep_the_delivery_with_a_clear_reason(
    project: FakeGitHubProject, api_url: str, ledger_url: str, closing: list[Services]
) -> None:
    services = github_services(ledger_url, api_url, token="ghp_revoked")
    closing.append(services)
    item = project.add_issue("Checkout", status="Done", hours=2)
    before = billing_state(ledger_url)
    async with asgi_client(services) as http:
        response = await deliver(http, project.webhook_payload(item.node_id, "created"))
    assert response.status_code == 202
    report = await drain(services)
    assert "credentials" in report.failed_boards["acme-web"]
    assert TOKEN not in str(report) and "ghp_revoked" not in str(report)
    assert billing_state(ledger_url) == before
    assert count(ledger_url, t.inbox) == 1  # still pending: fixed credentials process it


# == Azure DevOps =============================================================================


@pytest.fixture(scope="module")
def azure_served() -> Iterator[tuple[FakeAzureDevOps, str]]:
    shared = FakeAzureDevOps(pat=PAT, organization="fabrikam")
    with serve_fake_azure(shared) as url:
        yield shared, url


@pytest.fixture
def org(azure_served: tuple[FakeAzureDevOps, str]) -> FakeAzureDevOps:
    azure_served[0].reset()
    return azure_served[0]


@pytest.fixture
async def az(
    org: FakeAzureDevOps,
    azure_served: tuple[FakeAzureDevOps, str],
    ledger_url: str,
    closing: list[Services],
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    org.add_project("Web Shop", "Agile")
    settings = Settings(
        ledger={"url": ledger_url},
        clients=[CLIENT],
        boards=[
            {
                "key": "shop",
                "source": "azure_devops",
                "client": "acme",
                "azure_devops": {"organization_url": azure_served[1], "project": "Web Shop"},
            }
        ],
        azure_devops={"pat": PAT, "hook_username": HOOK_USER, "hook_password": HOOK_PASSWORD},
    )
    services = build_services(settings, FixedClock())
    closing.append(services)
    async with asgi_client(services) as http:
        yield services, http


def hook_headers(user: str = HOOK_USER, password: str = HOOK_PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {
        "Authorization": f"Basic {token}",
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "VSServices/16.255.35106.1",
    }


async def hook(
    http: httpx.AsyncClient, payload: dict[str, Any] | bytes, **kw: Any
) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return await http.post("/webhooks/azure-devops", content=body, headers=hook_headers(**kw))


@pytest.fixture
async def closed_story(org: FakeAzureDevOps, az: tuple[Services, httpx.AsyncClient]) -> int:
    """A story closed with 3 h, taken in through its service hook."""
    services, http = az
    shop = org.projects["web shop"]
    story = shop.add_item("Checkout", state="Active", hours=3, at=T0)
    shop.set_state(story, "Closed", at=T0 + timedelta(hours=2))
    response = await hook(http, shop.service_hook_payload(story))
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    assert (await drain(services)).changed == 1
    return story


async def test_service_hook_refetches_and_bills(
    org: FakeAzureDevOps, closed_story: int, ledger_url: str
) -> None:
    assert entry_rows(ledger_url) == [(str(closed_story), "ready", Decimal(3))]
    # the Done time comes with the batch (StateChangeDate): no updates call
    assert org.request_counts["batch"] == 1 and org.request_counts["updates"] == 0


async def test_hook_replay_is_200_duplicate_and_changes_nothing(
    org: FakeAzureDevOps,
    az: tuple[Services, httpx.AsyncClient],
    closed_story: int,
    ledger_url: str,
) -> None:
    services, http = az
    payload = org.projects["web shop"].service_hook_payload(closed_story)
    org.reset_counts()
    before = dump(ledger_url)
    replay = await hook(http, payload)
    assert replay.status_code == 200
    assert replay.json()["status"] == "duplicate"
    await drain(services)
    assert dump(ledger_url) == before
    assert sum(org.request_counts.values()) == 0


async def test_older_revision_after_a_newer_one_changes_nothing(
    org: FakeAzureDevOps, az: tuple[Services, httpx.AsyncClient], ledger_url: str
) -> None:
    services, http = az
    shop = org.projects["web shop"]
    story = shop.add_item("Checkout", state="Active", hours=3, at=T0)
    older = shop.service_hook_payload(story)  # rev 1
    shop.set_state(story, "Closed", hours=5, at=T0 + timedelta(hours=2))
    newer = await hook(http, shop.service_hook_payload(story))  # rev 2
    assert newer.json()["status"] == "queued"
    await drain(services)
    assert entry_rows(ledger_url) == [(str(story), "ready", Decimal(5))]

    org.reset_counts()
    before = billing_state(ledger_url)
    late = await hook(http, older)
    assert late.status_code == 202
    report = await drain(services)
    assert (report.stale, report.deliveries) == (1, 1)
    assert billing_state(ledger_url) == before
    assert sum(org.request_counts.values()) == 0  # not even re-fetched


@pytest.mark.parametrize(
    "credentials",
    [
        {"password": "wrong"},
        {"user": "mallory"},
        {"user": "", "password": ""},
    ],
    ids=["wrong-password", "wrong-user", "empty"],
)
async def test_wrong_hook_credentials_are_401_and_change_nothing(
    credentials: dict[str, str],
    org: FakeAzureDevOps,
    az: tuple[Services, httpx.AsyncClient],
    closed_story: int,
    ledger_url: str,
) -> None:
    _, http = az
    shop = org.projects["web shop"]
    shop.set_hours(closed_story, 9)
    before = dump(ledger_url)
    response = await hook(http, shop.service_hook_payload(closed_story), **credentials)
    assert response.status_code == 401
    assert dump(ledger_url) == before
    without = await http.post(
        "/webhooks/azure-devops",
        content=json.dumps(shop.service_hook_payload(closed_story)).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert without.status_code == 401
    assert dump(ledger_url) == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'["workitem.updated"]', "not a JSON object"),
        (b'{"resource": {"workItemId": 1, "rev": 2}}', "eventType"),
        (b'{"eventType": "workitem.updated"}', "resource"),
        (b'{"eventType": "workitem.updated", "resource": {"rev": 2}}', "workItemId"),
        (
            b'{"eventType": "workitem.updated", "resource": {"workItemId": 0, "rev": 2}}',
            "revision.id",
        ),
        (b'{"eventType": "workitem.updated", "resource": {"workItemId": 1}}', "rev"),
        (b'{"eventType": "workitem.created", "resource": {"id": "x", "rev": 1}}', "id"),
    ],
    ids=[
        "not-json",
        "not-object",
        "no-event",
        "no-resource",
        "no-id",
        "zero-id",
        "no-rev",
        "bad-id",
    ],
)
async def test_malformed_hook_bodies_are_400_and_change_nothing(
    body: bytes,
    message: str,
    az: tuple[Services, httpx.AsyncClient],
    closed_story: int,
    ledger_url: str,
) -> None:
    _, http = az
    before = dump(ledger_url)
    response = await hook(http, body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert dump(ledger_url) == before


async def test_deleted_work_item_hook_records_nothing(
    org: FakeAzureDevOps,
    az: tuple[Services, httpx.AsyncClient],
    closed_story: int,
    ledger_url: str,
) -> None:
    services, http = az
    shop = org.projects["web shop"]
    shop.set_hours(closed_story, 7)  # a revision the ledger has not seen, then deleted
    payload = shop.service_hook_payload(closed_story, "workitem.deleted")
    shop.delete(closed_story)
    before = billing_state(ledger_url)
    response = await hook(http, payload)
    assert response.status_code == 202
    report = await drain(services)
    assert (report.deliveries, report.seen) == (1, 0)
    assert billing_state(ledger_url) == before
    assert entry_rows(ledger_url) == [(str(closed_story), "ready", Decimal(3))]

    # Restored at that same revision: its own notification, not a duplicate of "deleted".
    shop.restore(closed_story)
    restored = await hook(http, shop.service_hook_payload(closed_story, "workitem.restored"))
    assert (restored.status_code, restored.json()["status"]) == (202, "queued")
    assert (await drain(services)).changed == 1
    assert entry_rows(ledger_url) == [
        (str(closed_story), "ready", Decimal(3)),
        (str(closed_story), "ready", Decimal(4)),  # hours added while Done: a new line
    ]


async def test_hook_for_an_unconfigured_project_is_ignored(
    org: FakeAzureDevOps, az: tuple[Services, httpx.AsyncClient], ledger_url: str
) -> None:
    _, http = az
    other = org.add_project("Intranet", "Basic")
    item = other.add_item("Wiki", state="Done", hours=1)
    before = dump(ledger_url)
    response = await hook(http, other.service_hook_payload(item, "workitem.created"))
    assert response.status_code == 202
    assert response.json()["status"] == "ignored"
    assert "the hook works" in response.json()["reason"]
    assert dump(ledger_url) == before


async def test_the_subscription_dialogs_test_notification_is_accepted(
    az: tuple[Services, httpx.AsyncClient], ledger_url: str
) -> None:
    """Microsoft's documented `workitem.updated` sample (what **Test** sends): the work
    item id is in `resource.revision.id` (`workItemId` is 0), project FabrikamCloud."""
    _, http = az
    sample = json.loads(SAMPLE_UPDATED)
    before = dump(ledger_url)
    response = await hook(http, sample)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "ignored"
    assert "the hook works" in response.json()["reason"]
    assert "FabrikamCloud" in response.json()["reason"]
    assert dump(ledger_url) == before


@pytest.mark.parametrize("order", ["hook-then-poll", "poll-then-hook"])
async def test_hook_and_poll_in_either_order_bill_once(
    order: str,
    org: FakeAzureDevOps,
    az: tuple[Services, httpx.AsyncClient],
    ledger_url: str,
) -> None:
    services, http = az
    shop = org.projects["web shop"]
    story = shop.add_item("Checkout", state="Active", hours=2, at=T0)
    shop.set_state(story, "Closed", at=T0 + timedelta(hours=1))
    payload = shop.service_hook_payload(story)
    if order == "hook-then-poll":
        assert (await hook(http, payload)).json()["status"] == "queued"
        assert (await drain(services)).changed == 1
        assert (await sync_board(services, "shop")).skipped == 1
    else:
        await sync_board(services, "shop")
        assert (await hook(http, payload)).json()["status"] == "queued"
        assert (await drain(services)).stale == 1
    assert entry_rows(ledger_url) == [(str(story), "ready", Decimal(2))]


#: Microsoft's sample payload for `workitem.updated` (service hook events reference),
#: trimmed of its message texts and links; the shape is as documented.
SAMPLE_UPDATED = """
{
  "subscriptionId": "00000000-0000-0000-0000-000000000000",
  "notificationId": 3,
  "id": "27646e0e-b520-4d2b-9411-bba7524947cd",
  "eventType": "workitem.updated",
  "publisherId": "tfs",
  "message": {"text": "Bug #5 (Some great new idea!) updated by Jamal Hartnett."},
  "resource": {
    "id": 2,
    "workItemId": 0,
    "rev": 2,
    "revisedBy": null,
    "revisedDate": "0001-01-01T00:00:00",
    "fields": {
      "System.Rev": {"oldValue": "1", "newValue": "2"},
      "System.State": {"oldValue": "New", "newValue": "Approved"}
    },
    "url": "http://fabrikam-fiber-inc.visualstudio.com/DefaultCollection/_apis/wit/workItems/5/updates/2",
    "revision": {
      "id": 5,
      "rev": 2,
      "fields": {
        "System.AreaPath": "FabrikamCloud",
        "System.TeamProject": "FabrikamCloud",
        "System.IterationPath": "FabrikamCloud",
        "System.WorkItemType": "Bug",
        "System.State": "Approved",
        "System.Title": "Some great new idea!"
      },
      "url": "http://fabrikam-fiber-inc.visualstudio.com/DefaultCollection/_apis/wit/workItems/5/revisions/2"
    }
  },
  "resourceVersion": "1.0",
  "createdDate": "2014-07-01T21:10:18.6406117Z"
}
"""
