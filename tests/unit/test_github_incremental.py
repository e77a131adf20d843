"""Incremental GitHub polls (`items(query: "-last-updated:Ndays")`) and the full reconcile."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from connectors.github.config import GitHubBoardConfig
from connectors.github.connector import (
    GitHubProjectConnector,
    format_poll_cursor,
    incremental_filter,
    parse_poll_cursor,
)
from mapping.domain import StateCategory
from tests.fakes.github_server import FakeGitHubProject, serve_fake_github

TOKEN = "ghp_fake_token"
DAY = 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def project() -> FakeGitHubProject:
    return FakeGitHubProject(owner="acme", number=3, field_edits_bump_last_updated=False)


@pytest.fixture
def url(project: FakeGitHubProject) -> Iterator[str]:
    with serve_fake_github(project) as served:
        yield served


def _connector(url: str, clock: Clock, **overrides: float) -> GitHubProjectConnector:
    config = GitHubBoardConfig(
        board_key="acme-web",
        owner="acme",
        project_number=3,
        api_url=url,
        token=TOKEN,
        **overrides,  # type: ignore[arg-type]
    )
    return GitHubProjectConnector(config, clock=clock)


def test_filter_covers_the_time_since_the_cursor_plus_overlap_in_whole_days() -> None:
    assert incremental_filter(60, 3600) == "-last-updated:1days"
    assert incremental_filter(DAY - 3600, 3600) == "-last-updated:1days"
    assert incremental_filter(DAY - 3599, 3600) == "-last-updated:2days"
    assert incremental_filter(3 * DAY, 0) == "-last-updated:3days"
    assert incremental_filter(-5, 0) == "-last-updated:1days"


def test_cursor_round_trip_and_garbage() -> None:
    assert parse_poll_cursor(format_poll_cursor(10.5, 3.25)) == (10.5, 3.25)
    for bad in (None, "", "2025-01-01T00:00:00Z", '{"since": 1}', '{"since": "x", "full": 1}'):
        assert parse_poll_cursor(bad) is None


async def test_incremental_reads_only_recent_items_and_reconcile_catches_field_edits(
    project: FakeGitHubProject, url: str
) -> None:
    items = project.add_issues(450, status="In Progress", hours=1)
    project.advance(timedelta(days=3))  # the board is quiet for three days
    clock = Clock()
    async with _connector(url, clock) as connector:
        full = await connector.poll(None)
        assert full.complete and len(full.items) == 450 and full.requests_made == 5

        clock.now += 300
        quiet = await connector.poll(full.cursor)
        assert not quiet.complete and quiet.items == () and quiet.requests_made == 1
        assert project.received[-1]["variables"]["query"] == "-last-updated:1days"

        # Content edits bump last-updated; this fake says project-field edits do not.
        for item in items[:150]:
            project.set_title(item.node_id, item.title + "!")
        project.move(items[200].node_id, "Done")  # a Status edit only
        clock.now += 300
        changed = await connector.poll(quiet.cursor)
        assert changed.requests_made == 2  # ⌈150/100⌉
        assert {i.item_id for i in changed.items} == {i.node_id for i in items[:150]}

        # The daily reconcile lists everything again and finds the Status edit.
        clock.now += DAY
        reconcile = await connector.poll(changed.cursor)
        assert reconcile.complete and reconcile.requests_made == 5
        done = [i for i in reconcile.items if i.item_id == items[200].node_id]
        assert done[0].state_category is StateCategory.DONE
        cursor = parse_poll_cursor(reconcile.cursor)
        assert cursor is not None and cursor[1] == clock.now


async def test_archived_items_are_left_to_the_reconcile(
    project: FakeGitHubProject, url: str
) -> None:
    item = project.add_issue("Shipped", status="Done", hours=2)
    clock = Clock()
    async with _connector(url, clock, full_reconcile_seconds=3600) as connector:
        first = await connector.poll(None)
        project.archive(item.node_id)
        clock.now += 60
        incremental = await connector.poll(first.cursor)
        assert incremental.items == ()  # a filtered listing leaves archived items out
        clock.now += 3600
        reconcile = await connector.poll(incremental.cursor)
        assert [i.item_id for i in reconcile.items] == [item.node_id]


async def test_a_cursor_older_than_a_year_or_from_the_future_lists_everything(
    project: FakeGitHubProject, url: str
) -> None:
    project.add_issue("One")
    clock = Clock()
    async with _connector(url, clock, full_reconcile_seconds=10 * 365 * DAY) as connector:
        old = await connector.poll(format_poll_cursor(clock.now - 400 * DAY, clock.now))
        assert old.complete
        future = await connector.poll(format_poll_cursor(clock.now + 60, clock.now))
        assert future.complete


async def test_zero_reconcile_interval_means_always_full(
    project: FakeGitHubProject, url: str
) -> None:
    project.add_issue("One")
    clock = Clock()
    async with _connector(url, clock, full_reconcile_seconds=0) as connector:
        first = await connector.poll(None)
        second = await connector.poll(first.cursor)
        assert second.complete and project.requests["items_page_filtered"] == 0


async def test_the_fake_refuses_filters_it_does_not_know(
    project: FakeGitHubProject, url: str
) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        response = await http.post(
            url,
            json={
                "query": "query { organization(login: $login) { projectV2(number: 3) "
                "{ items(first: 10) { nodes { id } } } } }",
                "variables": {"login": "acme", "number": 3, "first": 10, "query": "updated:>x"},
            },
        )
    body = response.json()
    assert body["data"] is None and "does not understand" in body["errors"][0]["message"]


async def test_the_connector_exposes_the_points_left(project: FakeGitHubProject, url: str) -> None:
    project.add_issue("One")
    project.set_rate_limit(4321)
    async with _connector(url, Clock()) as connector:
        assert connector.quota is None
        await connector.poll(None)
        quota = connector.quota
        assert quota is not None
        assert (quota.resource, quota.remaining, quota.limit) == ("graphql", 4320, 5000)
