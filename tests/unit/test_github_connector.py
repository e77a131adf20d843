"""GitHubProjectConnector against the fake GraphQL server over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from connectors.base import BoardConnector, FatalError, RetriableError, WebhookRejected
from connectors.github.config import GitHubBoardConfig
from connectors.github.connector import GitHubProjectConnector, parse_poll_cursor
from connectors.github.webhook import sign_body
from mapping.domain import BillingType, Source, StateCategory
from tests.fakes.github_server import FakeGitHubProject, serve_fake_github

DATA = Path(__file__).resolve().parents[1] / "data" / "github"
TOKEN = "ghp_fake_token"
RESET = datetime(2025, 1, 6, 10, 0, tzinfo=UTC).timestamp()  # the fake's resetAt


class Sleeper:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def project() -> FakeGitHubProject:
    return FakeGitHubProject(owner="acme", number=3, require_token=TOKEN)


@pytest.fixture
def url(project: FakeGitHubProject) -> Iterator[str]:
    with serve_fake_github(project) as served:
        yield served


def _config(url: str, **overrides: Any) -> GitHubBoardConfig:
    values: dict[str, Any] = {
        "board_key": "acme-web",
        "owner": "acme",
        "project_number": 3,
        "api_url": url,
        "token": TOKEN,
        "billing_type_field": "Billing",
        "rate_field": "Rate",
        "milestone_field": "Milestone price",
        "webhook_secret": "hook-secret",
    }
    values.update(overrides)
    return GitHubBoardConfig(**values)


def _connector(
    url: str, sleeper: Sleeper | None = None, **overrides: Any
) -> GitHubProjectConnector:
    return GitHubProjectConnector(
        _config(url, **overrides), sleep=sleeper or Sleeper(), clock=lambda: RESET - 3000
    )


def test_satisfies_the_protocol(url: str) -> None:
    connector: BoardConnector = _connector(url)
    assert connector.board_key == "acme-web"


async def test_250_items_take_exactly_three_page_requests(
    project: FakeGitHubProject, url: str
) -> None:
    project.add_issues(
        247,
        status="Done",
        hours=2.5,
        billing="T&M",
        labels=["bug", "client:acme"],
        assignees=["mara", "tom"],
        iteration="Sprint 4",
    )
    project.add_pull_request("PR", status="In Progress", hours=0.1, state="MERGED", rate=95)
    project.add_draft("Draft", status="Todo", billing="Fixed price", milestone=1500.5)
    project.add_issue("Archived", status="Done", hours=1, archived=True)
    async with _connector(url) as connector:
        result = await connector.poll(None)
    assert project.requests["items_page"] == 3
    assert project.requests["total"] == 3
    assert result.requests_made == 3
    assert result.complete  # no cursor: the whole listing
    assert parse_poll_cursor(result.cursor) is not None
    assert project.requests["items_page_filtered"] == 0
    assert len(result.items) == 250
    assert len({i.item_id for i in result.items}) == 250
    afters = [r["variables"].get("after") for r in project.received]
    assert afters[0] is None and all(isinstance(a, str) for a in afters[1:])
    assert [r["variables"]["first"] for r in project.received] == [100, 100, 100]

    first = result.items[0]
    assert first.source is Source.GITHUB
    assert first.board == "acme-web"
    assert first.item_id == project.items[0].node_id
    assert first.title == "Task 1"
    assert first.url == f"https://github.com/acme/web/issues/{project.items[0].number}"
    assert first.column == "Done"
    assert first.state_category is StateCategory.DONE
    assert first.hours == Decimal("2.5")
    assert first.billing_type is BillingType.TIME_AND_MATERIALS
    assert first.labels == ("bug", "client:acme")
    assert first.assignees == ("mara", "tom")
    assert first.iteration == "Sprint 4"
    assert first.updated_at.tzinfo is not None
    assert first.revision == int(first.updated_at.timestamp() * 1000)

    pr, draft, archived = result.items[247:]
    assert (pr.state_category, pr.hours, pr.rate) == (
        StateCategory.IN_PROGRESS,
        Decimal("0.1"),
        Decimal("95"),
    )
    assert draft.billing_type is BillingType.FIXED_PRICE
    assert draft.milestone_amount == Decimal("1500.5")
    assert draft.url == f"{project.url}?pane=issue&itemId={project.items[248].database_id}"
    assert archived.state_category is StateCategory.DONE
    assert connector.project_id == project.project_id


async def test_a_second_poll_returns_identical_snapshots(
    project: FakeGitHubProject, url: str
) -> None:
    project.add_issues(120, status="Done", hours=1.25)
    async with _connector(url) as connector:
        first = await connector.poll(None)
        second = await connector.poll(None)
    assert first.items == second.items
    assert second.requests_made == 2
    assert project.requests["items_page"] == 4


async def test_page_size_is_honoured(project: FakeGitHubProject, url: str) -> None:
    project.add_issues(250)
    async with _connector(url, page_size=50) as connector:
        result = await connector.poll(None)
    assert len(result.items) == 250
    assert project.requests["items_page"] == 5


async def test_empty_project_is_one_request(project: FakeGitHubProject, url: str) -> None:
    async with _connector(url) as connector:
        result = await connector.poll(None)
    assert result.items == ()
    assert result.requests_made == 1


async def test_user_owned_project() -> None:
    project = FakeGitHubProject(owner="mara-dev", owner_type="user", number=2)
    project.add_issue("Mine", status="Shipped", hours=4)
    with serve_fake_github(project) as url:
        async with _connector(
            url, owner="mara-dev", owner_type="user", project_number=2, done_options=("Shipped",)
        ) as connector:
            result = await connector.poll(None)
    assert [i.state_category for i in result.items] == [StateCategory.DONE]
    assert result.items[0].hours == Decimal("4")


async def test_redacted_and_invalid_items_are_skipped(project: FakeGitHubProject, url: str) -> None:
    keep = project.add_issue("ok", status="Done", hours=1)
    project.add_redacted()
    hidden = project.add_issue("soon hidden", status="Done", hours=2)
    project.redact(hidden.node_id)
    project.add_issue("negative", status="Done", hours=-3)
    async with _connector(url) as connector:
        result = await connector.poll(None)
        assert connector.skipped_items == 1
    assert [i.item_id for i in result.items] == [keep.node_id]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"owner": "acme-typo"}, "login"),
        ({"project_number": 9}, "ProjectV2"),
        ({"owner_type": "user"}, "User"),
        ({"token": "ghp_wrong"}, "401"),
    ],
)
async def test_configuration_mistakes_are_fatal(
    project: FakeGitHubProject, url: str, overrides: dict[str, Any], message: str
) -> None:
    async with _connector(url, **overrides) as connector:
        with pytest.raises(FatalError, match=message):
            await connector.poll(None)


async def test_done_in_progress_done_with_more_hours(project: FakeGitHubProject, url: str) -> None:
    item = project.add_issue("Feature", status="In Progress", hours=1)
    async with _connector(url) as connector:
        snapshots = []
        project.move(item.node_id, "Done")
        project.set_hours(item.node_id, 3)
        snapshots.append((await connector.poll(None)).items[0])
        project.move(item.node_id, "In Progress")
        snapshots.append((await connector.fetch((item.node_id,)))[0])
        project.set_hours(item.node_id, 5)
        project.move(item.node_id, "Done")
        snapshots.append((await connector.poll(None)).items[0])
    assert [(s.state_category, s.hours) for s in snapshots] == [
        (StateCategory.DONE, Decimal("3")),
        (StateCategory.IN_PROGRESS, Decimal("3")),
        (StateCategory.DONE, Decimal("5")),
    ]
    revisions = [s.revision for s in snapshots]
    assert revisions == sorted(revisions) and len(set(revisions)) == 3


async def test_label_change_moves_the_revision(project: FakeGitHubProject, url: str) -> None:
    item = project.add_issue("x", status="Done", hours=1, labels=["bug"])
    async with _connector(url) as connector:
        before = (await connector.fetch((item.node_id,)))[0]
        project.set_labels(item.node_id, ["bug", "non-billable"])
        after = (await connector.fetch((item.node_id,)))[0]
    assert after.labels == ("bug", "non-billable")
    assert after.revision > before.revision


# -- fetch -----------------------------------------------------------------------------


async def test_fetch_one_uses_node(project: FakeGitHubProject, url: str) -> None:
    item = project.add_issue("One", status="Done", hours=2)
    async with _connector(url) as connector:
        fetched = await connector.fetch((item.node_id,))
    assert [f.item_id for f in fetched] == [item.node_id]
    assert project.requests["node"] == 1
    assert project.requests["items_page"] == 0


async def test_fetch_several_uses_nodes_and_omits_deleted(
    project: FakeGitHubProject, url: str
) -> None:
    a, b, c = project.add_issues(3, status="Done", hours=1)
    redacted = project.add_redacted()
    project.delete(b.node_id)
    async with _connector(url) as connector:
        fetched = await connector.fetch(
            (a.node_id, b.node_id, c.node_id, redacted.node_id, a.node_id)
        )
    assert [f.item_id for f in fetched] == [a.node_id, c.node_id]
    assert project.requests["nodes"] == 1


async def test_fetch_deleted_single_item_returns_nothing(
    project: FakeGitHubProject, url: str
) -> None:
    item = project.add_issue("gone")
    project.delete(item.node_id)
    async with _connector(url) as connector:
        assert await connector.fetch((item.node_id,)) == ()
        assert await connector.fetch(()) == ()
    assert project.requests["node"] == 1


async def test_fetch_chunks_by_100(project: FakeGitHubProject, url: str) -> None:
    items = project.add_issues(150, status="Done")
    async with _connector(url) as connector:
        fetched = await connector.fetch(tuple(i.node_id for i in items))
    assert len(fetched) == 150
    assert project.requests["nodes"] == 2


@respx.mock
async def test_fetch_omits_other_projects_and_missing_nodes() -> None:
    body = json.loads((DATA / "graphql_nodes_partial.json").read_text())
    respx.post("https://api.github.com/graphql").mock(return_value=httpx.Response(200, json=body))
    config = GitHubBoardConfig(board_key="acme", owner="acme-agency", project_number=7, token="t")
    async with GitHubProjectConnector(config) as connector:
        fetched = await connector.fetch(
            (
                "PVTI_lADOBXAqR84AkX3Mzgaq1dA",
                "PVTI_lADOBXAqR84AkX3Mzgaq1zz",
                "PVTI_lADOBXAqR84AkX9Qzgbb001",
            )
        )
        assert connector.project_id == "PVT_kwDOBXAqR84AkX3M"
    assert [f.item_id for f in fetched] == ["PVTI_lADOBXAqR84AkX3Mzgaq1dA"]
    assert fetched[0].state_category is StateCategory.DONE
    assert (
        fetched[0].url
        == "https://github.com/orgs/acme-agency/projects/7?pane=issue&itemId=112591360"
    )


@respx.mock
async def test_org_not_found_fixture_is_fatal() -> None:
    body = json.loads((DATA / "graphql_error_org_not_found.json").read_text())
    respx.post("https://api.github.com/graphql").mock(return_value=httpx.Response(200, json=body))
    config = GitHubBoardConfig(board_key="a", owner="acme-agencyy", project_number=7, token="t")
    async with GitHubProjectConnector(config) as connector:
        with pytest.raises(FatalError, match="NOT_FOUND"):
            await connector.poll(None)


# -- retries and limits over HTTP ------------------------------------------------------


async def test_poll_survives_502s(project: FakeGitHubProject, url: str) -> None:
    project.add_issues(150, status="Done")
    sleeper = Sleeper()
    project.fail_next(502, count=2)
    async with _connector(url, sleeper) as connector:
        result = await connector.poll(None)
    assert len(result.items) == 150
    assert project.requests["failed"] == 2
    assert result.requests_made == 4  # 2 failed + 2 pages
    assert len(sleeper.calls) == 2


async def test_poll_gives_up_with_retriable_error(project: FakeGitHubProject, url: str) -> None:
    project.add_issues(10)
    project.fail_next(502, count=10)
    async with _connector(url, max_attempts=3) as connector:
        with pytest.raises(RetriableError):
            await connector.poll(None)
    assert project.requests["failed"] == 3


async def test_poll_honours_secondary_limit_retry_after(
    project: FakeGitHubProject, url: str
) -> None:
    project.add_issues(120)
    project.add_issues(1)
    sleeper = Sleeper()
    async with _connector(url, sleeper) as connector:
        project.secondary_limit_next(retry_after=30)
        result = await connector.poll(None)
    assert len(result.items) == 121
    assert sleeper.calls == [30.0]


async def test_poll_slows_down_when_points_run_low(project: FakeGitHubProject, url: str) -> None:
    project.add_issues(250)
    project.set_rate_limit(12)
    sleeper = Sleeper()
    async with _connector(url, sleeper) as connector:
        result = await connector.poll(None)
    assert len(result.items) == 250
    # clock is 3000 s before the reset: 11 points left -> wait 3000/12, then 10 -> 3000/11
    assert sleeper.calls == [pytest.approx(3000 / 12), pytest.approx(3000 / 11)]
    assert connector.client.rate_limit_wait_seconds == pytest.approx(sum(sleeper.calls))


async def test_poll_stops_when_points_are_gone(project: FakeGitHubProject, url: str) -> None:
    project.add_issues(150)
    project.set_rate_limit(1)
    async with _connector(url) as connector:
        with pytest.raises(RetriableError) as info:
            await connector.poll(None)
    assert info.value.retry_after == pytest.approx(3000)
    assert project.requests["items_page"] == 1


# -- webhooks through the connector ----------------------------------------------------


async def test_parse_webhook_uses_the_board_secret(project: FakeGitHubProject, url: str) -> None:
    item = project.add_issue("x", status="Done", hours=2)
    body = json.dumps(
        project.webhook_payload(
            item.node_id, "edited", changes=project.status_change("Todo", "Done")
        )
    ).encode()
    headers = {
        "content-type": "application/json",
        "x-github-event": "projects_v2_item",
        "x-github-delivery": "d-1",
        "x-hub-signature-256": sign_body(b"hook-secret", body),
    }
    async with _connector(url) as connector:
        trigger = connector.parse_webhook(headers, body)
        assert trigger.item_ids == (item.node_id,)
        await connector.poll(None)
        assert connector.matches_board_hint(trigger.board_hint) is True
        fetched = await connector.fetch(trigger.item_ids)
        assert fetched[0].hours == Decimal("2")
        headers["x-hub-signature-256"] = sign_body(b"wrong", body)
        with pytest.raises(WebhookRejected) as info:
            connector.parse_webhook(headers, body)
        assert info.value.status == 401


async def test_parse_webhook_without_a_secret_is_refused(url: str) -> None:
    body = b"{}"
    async with _connector(url, webhook_secret=None) as connector:
        with pytest.raises(WebhookRejected) as info:
            connector.parse_webhook({"x-hub-signature-256": sign_body(b"", body)}, body)
    assert info.value.status == 401


async def test_shared_http_client_is_not_closed(project: FakeGitHubProject, url: str) -> None:
    project.add_issues(2)
    async with httpx.AsyncClient() as http:
        connector = GitHubProjectConnector(_config(url), http)
        await connector.poll(None)
        await connector.aclose()
        assert not http.is_closed
