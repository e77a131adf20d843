"""The Azure DevOps connector against the fake organization over real HTTP."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from connectors.azure_devops import AzureBoardConfig, AzureDevOpsConnector
from connectors.base import FatalError, RetriableError
from mapping.domain import StateCategory
from tests.fakes.azure_server import FakeAzureDevOps, serve_fake_azure

PAT = "fake-pat-123"
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


class Sleeps:
    """An injected sleep that records instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeAzureDevOps, str]]:
    """One real HTTP server for the module; each test starts from an empty organization."""
    shared = FakeAzureDevOps(pat=PAT, organization="fabrikam")
    with serve_fake_azure(shared) as url:
        yield shared, url


@pytest.fixture
def fake(served: tuple[FakeAzureDevOps, str]) -> FakeAzureDevOps:
    served[0].reset()
    return served[0]


@pytest.fixture
def org_url(served: tuple[FakeAzureDevOps, str]) -> str:
    return served[1]


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_config(org_url: str, project: str, **overrides: Any) -> AzureBoardConfig:
    values: dict[str, Any] = {
        "board_key": f"board-{project.lower()}",
        "organization_url": org_url,
        "project": project,
        "pat": PAT,
    }
    values.update(overrides)
    return AzureBoardConfig(**values)


@pytest.fixture
async def agile(
    fake: FakeAzureDevOps, org_url: str, sleeps: Sleeps
) -> AsyncIterator[AzureDevOpsConnector]:
    fake.add_project("Web Shop", "Agile")
    connector = AzureDevOpsConnector(make_config(org_url, "Web Shop"), sleep=sleeps)
    yield connector
    await connector.aclose()


async def test_agile_project_closed_items_are_done_with_done_time_from_the_batch(
    fake: FakeAzureDevOps, agile: AzureDevOpsConnector
) -> None:
    shop = fake.projects["web shop"]
    story = shop.add_item(
        "Checkout", tags=("billable", "frontend"), assigned_to="Jamal Hartnett", at=T0
    )
    shop.set_state(story, "Active", at=T0 + timedelta(hours=1))
    shop.set_hours(story, 6.5, at=T0 + timedelta(hours=5))
    shop.set_state(story, "Resolved", at=T0 + timedelta(hours=6))
    closed_at = T0 + timedelta(days=1, hours=2, milliseconds=250)
    shop.set_state(story, "Closed", at=closed_at)
    shop.change(story, {"System.Title": "Checkout (v2)"}, at=T0 + timedelta(days=2))
    bug = shop.add_item("Crash on login", work_item_type="Bug", state="Active", hours=2, at=T0)
    task = shop.add_item("Abandoned", work_item_type="Task", at=T0)
    shop.set_state(task, "Removed", at=T0 + timedelta(hours=3))

    result = await agile.poll(None)
    items = {i.item_id: i for i in result.items}

    done = items[str(story)]
    assert done.state_category is StateCategory.DONE
    assert done.column == "Closed"
    assert done.title == "Checkout (v2)"
    assert done.hours == Decimal("6.5")
    assert done.done_at == closed_at
    assert done.updated_at == T0 + timedelta(days=2)
    assert done.revision == 6
    assert done.labels == ("billable", "frontend")
    assert done.assignees == ("jamal.hartnett@fabrikam.example",)
    assert done.iteration == "Web Shop"
    assert done.url.endswith(f"/fabrikam/Web%20Shop/_workitems/edit/{story}")

    assert items[str(bug)].state_category is StateCategory.IN_PROGRESS
    assert items[str(bug)].hours == Decimal("2")
    assert items[str(bug)].done_at is None
    assert items[str(task)].state_category is StateCategory.REMOVED
    assert result.cursor == "2024-05-03T09:00:00.000000Z"
    # The Done time came with the batch (StateChangeDate): no updates call at all.
    assert fake.request_counts["updates"] == 0
    assert fake.request_counts["states"] == 3


async def test_scrum_project_done_with_original_estimate(
    fake: FakeAzureDevOps, org_url: str, sleeps: Sleeps
) -> None:
    board = fake.add_project("Mobile", "Scrum")
    pbi = board.add_item("Offline mode", hours=8, at=T0)
    board.set_state(pbi, "Approved", at=T0 + timedelta(minutes=5))
    board.set_state(pbi, "Committed", at=T0 + timedelta(minutes=10))
    board.set_hours(pbi, 13.25, at=T0 + timedelta(hours=3))
    done_at = T0 + timedelta(hours=4)
    board.set_state(pbi, "Done", at=done_at)
    todo = board.add_item("Push notifications", at=T0 + timedelta(hours=5))
    cfg = make_config(org_url, "Mobile", hours_field="Microsoft.VSTS.Scheduling.OriginalEstimate")
    async with AzureDevOpsConnector(cfg, sleep=sleeps) as connector:
        result = await connector.poll(None)
    items = {i.item_id: i for i in result.items}
    assert items[str(pbi)].state_category is StateCategory.DONE
    assert items[str(pbi)].column == "Done"
    assert items[str(pbi)].hours == Decimal("13.25")
    assert items[str(pbi)].done_at == done_at
    assert items[str(todo)].state_category is StateCategory.PROPOSED
    assert items[str(todo)].hours is None


async def test_scrum_project_with_a_custom_hours_field(
    fake: FakeAzureDevOps, org_url: str, sleeps: Sleeps
) -> None:
    fake.add_field("Custom.BillableHours")
    board = fake.add_project("Mobile", "Scrum", hours_field="Custom.BillableHours")
    task = board.add_item("API client", work_item_type="Task", hours=3.5, at=T0)
    board.set_state(task, "In Progress", at=T0 + timedelta(hours=1))
    board.set_state(task, "Done", at=T0 + timedelta(hours=2))
    cfg = make_config(org_url, "Mobile", hours_field="Custom.BillableHours")
    async with AzureDevOpsConnector(cfg, sleep=sleeps) as connector:
        (item,) = (await connector.poll(None)).items
    assert item.hours == Decimal("3.5")
    assert item.state_category is StateCategory.DONE
    assert item.done_at == T0 + timedelta(hours=2)


async def test_unknown_hours_field_is_a_clear_fatal_error(
    fake: FakeAzureDevOps, org_url: str, sleeps: Sleeps
) -> None:
    board = fake.add_project("Mobile", "Scrum")
    board.add_item("Offline mode", at=T0)
    cfg = make_config(org_url, "Mobile", hours_field="Custom.Hourz")
    async with AzureDevOpsConnector(cfg, sleep=sleeps) as connector:
        with pytest.raises(FatalError, match=r"TF51535.*Custom\.Hourz"):
            await connector.poll(None)


async def test_450_changed_items_take_one_wiql_and_three_batches(
    fake: FakeAzureDevOps, agile: AzureDevOpsConnector
) -> None:
    shop = fake.projects["web shop"]
    for n in range(450):
        shop.add_item(f"Story {n}", hours=1, state="Active")
    result = await agile.poll(None)
    assert len(result.items) == 450
    assert fake.request_counts["wiql"] == 1
    assert fake.request_counts["batch"] == 3
    assert fake.request_counts["states"] == 1  # one type, read once
    assert fake.request_counts["updates"] == 0  # nothing Done
    assert result.requests_made == 5
    assert agile.request_counts == {"wiql": 1, "batch": 3, "states": 1}


async def test_incremental_poll_uses_the_cursor_with_overlap(
    fake: FakeAzureDevOps, agile: AzureDevOpsConnector
) -> None:
    shop = fake.projects["web shop"]
    old = shop.add_item("Old", at=T0)
    recent = shop.add_item("Recent", at=T0 + timedelta(hours=1))
    first = await agile.poll(None)
    assert {i.item_id for i in first.items} == {str(old), str(recent)}
    assert first.cursor == "2024-05-01T10:00:00.000000Z"

    # Nothing changed: the overlap window re-reads only the latest item.
    second = await agile.poll(first.cursor)
    assert {i.item_id for i in second.items} == {str(recent)}
    assert second.cursor == first.cursor

    shop.set_state(old, "Active", at=T0 + timedelta(hours=3))
    third = await agile.poll(second.cursor)
    # The changed item, plus the one still inside the overlap window.
    assert {i.item_id for i in third.items} == {str(old), str(recent)}
    assert third.cursor == "2024-05-01T12:00:00.000000Z"
    assert fake.request_counts["wiql"] == 3
    wiql_bodies = [r for r in fake.requests if r[0] == "wiql"]
    assert all("timePrecision=true" in r[2] for r in wiql_bodies)


async def test_a_quiet_board_costs_one_wiql_call_per_poll(
    fake: FakeAzureDevOps, agile: AzureDevOpsConnector
) -> None:
    shop = fake.projects["web shop"]
    shop.add_item("Old", at=T0)
    first = await agile.poll(None)
    # Quiet minutes on the server. The overlap counts back from each query's own time
    # (asOf): the next poll still re-reads the change (inside the window), and after
    # that a quiet board costs one WIQL call and no batch.
    fake.advance(timedelta(minutes=10))
    second = await agile.poll(first.cursor)
    assert [i.title for i in second.items] == ["Old"]
    assert second.cursor == "2024-05-01T09:10:00.000000Z"
    fake.advance(timedelta(minutes=10))
    fake.request_counts.clear()
    third = await agile.poll(second.cursor)
    assert third.items == ()
    assert dict(fake.request_counts) == {"wiql": 1}
    assert third.cursor == "2024-05-01T09:20:00.000000Z"


async def test_done_at_comes_from_the_batch_and_follows_a_reclose(
    fake: FakeAzureDevOps, agile: AzureDevOpsConnector
) -> None:
    shop = fake.projects["web shop"]
    story = shop.add_item("Story", hours=1, at=T0)
    shop.set_state(story, "Closed", at=T0 + timedelta(hours=1))
    (item,) = (await agile.poll(None)).items
    assert item.done_at == T0 + timedelta(hours=1)
    shop.set_state(story, "Active", at=T0 + timedelta(hours=2))
    reclosed = T0 + timedelta(hours=3)
    shop.set_state(story, "Closed", at=reclosed)
    (item,) = (await agile.poll(None)).items
    assert item.done_at == reclosed
    assert fake.request_counts["updates"] == 0
    assert fake.request_counts["states"] == 1


async def test_column_boards_take_the_done_time_from_the_revisions_stream(
    fake: FakeAzureDevOps, org_url: str, sleeps: Sleeps
) -> None:
    shop = fake.add_project("Web Shop", "Agile")
    config = make_config(org_url, "Web Shop", done_board_columns=frozenset({"Shipped"}))
    async with AzureDevOpsConnector(config, sleep=sleeps) as connector:
        story = shop.add_item("Story", hours=1, at=T0)
        shipped = T0 + timedelta(hours=1)
        shop.change(story, {"System.BoardColumn": "Shipped"}, at=shipped)
        # Still in the Done column, hours edited later: Done since it was shipped.
        shop.set_hours(story, 2, at=T0 + timedelta(hours=2))
        (item,) = (await connector.poll(None)).items
        assert item.done_at == shipped
        assert fake.request_counts["updates"] == 0  # no call per item
        assert fake.request_counts["revisions"] == 1
        (item,) = (await connector.poll(None)).items
        assert item.done_at == shipped
        assert fake.request_counts["revisions"] == 1  # the stream already told
        # Out of the Done column and back: Done since it came back.
        shop.change(story, {"System.BoardColumn": "Active"}, at=T0 + timedelta(hours=3))
        back = T0 + timedelta(hours=4)
        shop.change(story, {"System.BoardColumn": "Shipped"}, at=back)
        (item,) = (await connector.poll(None)).items
        assert item.done_at == back
        assert fake.request_counts["revisions"] == 2  # continued from the watermark
        assert fake.request_counts["updates"] == 0


async def test_column_boards_page_the_stream_and_keep_the_watermark_across_runs(
    fake: FakeAzureDevOps, org_url: str, sleeps: Sleeps
) -> None:
    shop = fake.add_project("Web Shop", "Agile")
    config = make_config(org_url, "Web Shop", done_board_columns=frozenset({"Shipped"}))
    ids = [shop.add_item(f"Story {n}", hours=1, at=T0) for n in range(150)]
    shipped = T0 + timedelta(hours=1)
    for item_id in ids:
        shop.change(item_id, {"System.BoardColumn": "Shipped"}, at=shipped)
    async with AzureDevOpsConnector(config, sleep=sleeps) as first:
        items = (await first.poll(None)).items
        cache = first.process_cache()
    assert {i.done_at for i in items} == {shipped}
    # 300 revisions, 200 per batch: 2 batches, none per item.
    assert fake.request_counts["revisions"] == 2
    assert fake.request_counts["updates"] == 0
    revision_requests = [q for kind, _, q in fake.requests if kind == "revisions"]
    assert "continuationToken" not in revision_requests[0]
    assert "continuationToken=wm-200" in revision_requests[1]

    late = T0 + timedelta(hours=5)
    newcomer = shop.add_item("Late story", hours=1, at=late)
    shop.change(newcomer, {"System.BoardColumn": "Shipped"}, at=late)
    fake.reset_counts()
    # A new run (`sync --once`) primed with what the ledger kept: only the new revisions.
    async with AzureDevOpsConnector(config, sleep=sleeps) as second:
        second.prime_process_cache(cache)
        items = (await second.poll(None)).items
    by_id = {i.item_id: i for i in items}
    assert by_id[str(newcomer)].done_at == late
    assert by_id[str(ids[0])].done_at == shipped
    assert fake.request_counts["revisions"] == 1
    assert fake.request_counts["updates"] == 0


async def test_new_state_added_to_the_process_is_read_again(
    fake: FakeAzureDevOps, agile: AzureDevOpsConnector
) -> None:
    shop = fake.projects["web shop"]
    shop.add_item("Story", at=T0)
    await agile.poll(None)
    shop.add_state("User Story", "Accepted", "Completed")
    item_id = shop.add_item("Accepted story", at=T0 + timedelta(hours=1))
    shop.set_state(item_id, "Accepted", at=T0 + timedelta(hours=2))
    items = {i.item_id: i for i in (await agile.poll(None)).items}
    assert items[str(item_id)].state_category is StateCategory.DONE
    assert items[str(item_id)].done_at == T0 + timedelta(hours=2)
    assert fake.request_counts["states"] == 2


async def test_area_path_and_types_scope_the_board(
    fake: FakeAzureDevOps, org_url: str, sleeps: Sleeps
) -> None:
    shop = fake.add_project("Web Shop", "Agile")
    inside = shop.add_item("In area", area="Web Shop\\Payments\\Cards", at=T0)
    shop.add_item("Other area", area="Web Shop\\Search", at=T0)
    shop.add_item("A task", work_item_type="Task", area="Web Shop\\Payments", at=T0)
    other = fake.add_project("Other", "Agile")
    foreign = other.add_item("Elsewhere", at=T0)
    cfg = make_config(
        org_url, "Web Shop", area_path="Web Shop\\Payments", work_item_types=("User Story",)
    )
    async with AzureDevOpsConnector(cfg, sleep=sleeps) as connector:
        polled = await connector.poll(None)
        assert [i.item_id for i in polled.items] == [str(inside)]
        fetched = await connector.fetch((str(inside), str(foreign), "999999", "not-an-id"))
    assert [i.item_id for i in fetched] == [str(inside)]


async def test_team_scoped_wiql_and_on_premises_collection_url(sleeps: Sleeps) -> None:
    fake = FakeAzureDevOps(pat=PAT, base_path="/tfs/DefaultCollection")
    board = fake.add_project("Legacy", "CMMI", teams=("Platform",))
    req = board.add_item("Requirement", hours=4, at=T0)
    board.set_state(req, "Closed", at=T0 + timedelta(hours=1))
    with serve_fake_azure(fake) as url:
        assert url.endswith("/tfs/DefaultCollection")
        cfg = make_config(url, "Legacy", team="Platform")
        async with AzureDevOpsConnector(cfg, sleep=sleeps) as connector:
            (item,) = (await connector.poll(None)).items
            assert item.state_category is StateCategory.DONE
            assert item.url == f"{url}/Legacy/_workitems/edit/{req}"
        wiql_paths = [r[2] for r in fake.requests if r[0] == "wiql"]
        assert wiql_paths[0].startswith("/tfs/DefaultCollection/Legacy/Platform/_apis/wit/wiql")
        bad = make_config(url, "Legacy", team="Nope")
        async with AzureDevOpsConnector(bad, sleep=sleeps) as connector:
            with pytest.raises(FatalError, match="404"):
                await connector.poll(None)


async def test_fetch_after_a_hook_reads_the_current_item(
    fake: FakeAzureDevOps, agile: AzureDevOpsConnector
) -> None:
    shop = fake.projects["web shop"]
    story = shop.add_item("Story", hours=2, at=T0)
    shop.set_state(story, "Active", at=T0 + timedelta(hours=1))
    early_hook = shop.service_hook_payload(story)  # rev 2
    shop.set_state(story, "Closed", hours=5, at=T0 + timedelta(hours=2))
    late_hook = shop.service_hook_payload(story)  # rev 3
    hook_headers = {
        "Content-Type": "application/json",
        "Authorization": "Basic " + base64.b64encode(b"hook:pw").decode(),
    }
    agile_cfg = agile.config
    connector = AzureDevOpsConnector(
        AzureBoardConfig(
            **{
                **{f: getattr(agile_cfg, f) for f in ("board_key", "organization_url", "project")},
                "pat": PAT,
                "hook_username": "hook",
                "hook_password": "pw",
            }
        )
    )
    try:
        # The newer revision's hook arrives first, the older one late.
        newer = connector.parse_webhook(hook_headers, json.dumps(late_hook).encode())
        older = connector.parse_webhook(hook_headers, json.dumps(early_hook).encode())
        assert (newer.item_ids, newer.revision) == ((str(story),), 3)
        assert (older.item_ids, older.revision) == ((str(story),), 2)
        assert newer.delivery_id != older.delivery_id
        (from_newer,) = await connector.fetch(newer.item_ids)
        (from_older,) = await connector.fetch(older.item_ids)
    finally:
        await connector.aclose()
    # Both re-fetches read the current item: the late, older hook changes nothing.
    assert from_newer == from_older
    assert from_newer.revision == 3
    assert from_newer.state_category is StateCategory.DONE
    assert from_newer.hours == Decimal("5")


async def test_deleted_items_are_omitted_from_fetch(
    fake: FakeAzureDevOps, agile: AzureDevOpsConnector
) -> None:
    shop = fake.projects["web shop"]
    story = shop.add_item("Story", at=T0)
    shop.delete(story)
    assert await agile.fetch((str(story),)) == ()
    shop.restore(story)
    (item,) = await agile.fetch((str(story),))
    assert item.item_id == str(story)


async def test_429_retry_after_is_honoured_through_the_injected_sleep(
    fake: FakeAzureDevOps, agile: AzureDevOpsConnector, sleeps: Sleeps
) -> None:
    fake.projects["web shop"].add_item("Story", at=T0)
    fake.inject_fault(429, kind="batch", retry_after=7)
    result = await agile.poll(None)
    assert len(result.items) == 1
    assert sleeps.calls == [7.0]
    assert fake.request_counts["batch"] == 2
    assert result.requests_made == 4  # wiql, batch x2, states


async def test_5xx_is_retried_with_backoff_then_succeeds(
    fake: FakeAzureDevOps, agile: AzureDevOpsConnector, sleeps: Sleeps
) -> None:
    fake.projects["web shop"].add_item("Story", at=T0)
    fake.inject_fault(500, kind="wiql")
    fake.inject_fault(503, kind="wiql")
    result = await agile.poll(None)
    assert len(result.items) == 1
    assert sleeps.calls == [0.5, 1.0]
    assert fake.request_counts["wiql"] == 3


async def test_persistent_5xx_becomes_retriable_error(
    fake: FakeAzureDevOps, agile: AzureDevOpsConnector, sleeps: Sleeps
) -> None:
    fake.inject_fault(503, kind="wiql", times=10, retry_after=30)
    with pytest.raises(RetriableError) as caught:
        await agile.poll(None)
    assert caught.value.retry_after == 30
    assert fake.request_counts["wiql"] == 4
    assert sleeps.calls == [30.0, 30.0, 30.0]


async def test_rate_limit_headers_slow_the_next_request_down(
    fake: FakeAzureDevOps, agile: AzureDevOpsConnector, sleeps: Sleeps
) -> None:
    fake.projects["web shop"].add_item("Story", at=T0)
    fake.success_headers = {
        "X-RateLimit-Resource": "ATCPU",
        "X-RateLimit-Delay": "0.5",
        "X-RateLimit-Limit": "200",
        "X-RateLimit-Remaining": "3",
    }
    await agile.poll(None)
    # wiql, batch and states all answered with the headers: the next two requests waited.
    assert sleeps.calls == [1.0, 1.0]


async def test_bad_pat_is_fatal_with_a_clear_message(
    fake: FakeAzureDevOps, org_url: str, sleeps: Sleeps
) -> None:
    fake.add_project("Web Shop", "Agile")
    cfg = make_config(org_url, "Web Shop", pat="wrong")
    async with AzureDevOpsConnector(cfg, sleep=sleeps) as connector:
        with pytest.raises(FatalError) as caught:
            await connector.poll(None)
    message = str(caught.value)
    assert "board-web shop" in message
    assert "401" in message
    assert "Work Items (Read)" in message
    assert sleeps.calls == []  # not retried
    assert fake.request_counts["wiql"] == 1


async def test_403_is_fatal_too(fake: FakeAzureDevOps, agile: AzureDevOpsConnector) -> None:
    fake.inject_fault(403, kind="wiql")
    with pytest.raises(FatalError, match="Work Items \\(Read\\)"):
        await agile.poll(None)


async def test_unknown_project_is_fatal(
    fake: FakeAzureDevOps, org_url: str, sleeps: Sleeps
) -> None:
    async with AzureDevOpsConnector(make_config(org_url, "Nope"), sleep=sleeps) as connector:
        with pytest.raises(FatalError, match="TF200016"):
            await connector.poll(None)


async def test_bad_cursor_is_fatal(agile: AzureDevOpsConnector) -> None:
    with pytest.raises(FatalError, match="cursor"):
        await agile.poll("yesterday")


async def test_a_board_larger_than_one_wiql_answer_syncs_in_date_windows(
    fake: FakeAzureDevOps, org_url: str, sleeps: Sleeps
) -> None:
    shop = fake.add_project("Web Shop", "Agile")
    ids = [shop.add_item(f"Story {n}", hours=1) for n in range(250)]
    config = make_config(org_url, "Web Shop", max_items_per_poll=100)
    async with AzureDevOpsConnector(config, sleep=sleeps) as connector:
        result = await connector.poll(None)
        assert sorted(int(i.item_id) for i in result.items) == ids
        # 100 + 100 + 52 ids (each later window re-reads the boundary item): 3 WIQL.
        assert fake.request_counts["wiql"] == 3
        assert fake.request_counts["batch"] == 3
        assert result.cursor is not None
        fake.reset_counts()
        quiet = await connector.poll(result.cursor)
        assert fake.request_counts["wiql"] == 1 and len(quiet.items) <= 6  # the overlap


async def test_the_fake_refuses_a_top_over_the_wiql_limit(
    fake: FakeAzureDevOps, org_url: str, sleeps: Sleeps
) -> None:
    fake.add_project("Web Shop", "Agile")
    config = make_config(org_url, "Web Shop")
    async with AzureDevOpsConnector(config, sleep=sleeps) as connector:
        with pytest.raises(FatalError, match="VS402337"):
            await connector.client.query_ids(connector.wiql(None), top=20_001)


async def test_rate_limit_headers_on_a_200_become_a_quota_observation_and_a_metric(
    fake: FakeAzureDevOps, agile: AzureDevOpsConnector, sleeps: Sleeps
) -> None:
    from prometheus_client import generate_latest

    from sync.metrics import register_board_quota_metrics

    fake.success_headers = {
        "X-RateLimit-Resource": "ATCPU",
        "X-RateLimit-Limit": "200",
        "X-RateLimit-Remaining": "12",
        "X-RateLimit-Delay": "0.5",
        "Retry-After": "3",
    }
    fake.projects["web shop"].add_item("Story", at=T0)
    await agile.poll(None)
    quota = agile.quota
    assert quota is not None
    assert (quota.resource, quota.remaining, quota.limit) == ("ATCPU", 12, 200)
    assert (quota.retry_after, quota.delay) == (3, 0.5)
    assert 3 in sleeps.calls  # Retry-After on a 200 is honoured before the next call
    register_board_quota_metrics({"shop": agile})
    scraped = generate_latest().decode()
    assert 'kanvoice_board_quota_remaining{board="shop",resource="ATCPU"} 12.0' in scraped
    assert 'kanvoice_board_retry_after_seconds{board="shop",resource="ATCPU"} 3.0' in scraped
