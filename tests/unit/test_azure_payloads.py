"""The Azure DevOps connector against captured-shape REST payloads (served by respx)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from connectors.azure_devops import AzureBoardConfig, AzureDevOpsConnector
from mapping.domain import BillingType, Source, StateCategory

DATA = Path(__file__).resolve().parents[1] / "data" / "azure_devops"
ORG = "https://dev.azure.com/fabrikam"
PROJECT = f"{ORG}/Fabrikam-Fiber"


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


async def no_sleep(seconds: float) -> None:
    return None


def config(**overrides: Any) -> AzureBoardConfig:
    values: dict[str, Any] = {
        "board_key": "fabrikam-web",
        "organization_url": ORG + "/",
        "project": "Fabrikam-Fiber",
        "pat": "s3cret-pat",
    }
    values.update(overrides)
    return AzureBoardConfig(**values)


@pytest.fixture
def api() -> respx.MockRouter:
    router = respx.mock(assert_all_called=False, assert_all_mocked=True)
    router.post(f"{PROJECT}/_apis/wit/wiql").respond(json=load("wiql_result.json"))
    router.post(f"{PROJECT}/_apis/wit/workitemsbatch").respond(
        json=load("workitemsbatch_result.json")
    )
    router.get(f"{PROJECT}/_apis/wit/workItems/301/updates").respond(json=load("updates_301.json"))
    for type_path, fixture in (
        ("User%20Story", "states_agile_user_story.json"),
        ("Bug", "states_agile_bug.json"),
        ("Task", "states_agile_task.json"),
    ):
        router.get(f"{PROJECT}/_apis/wit/workitemtypes/{type_path}/states").respond(
            json=load(fixture)
        )
    return router


async def test_captured_payloads_map_to_snapshots(api: respx.MockRouter) -> None:
    with api:
        async with AzureDevOpsConnector(config(), sleep=no_sleep) as connector:
            result = await connector.poll(None)

    items = {item.item_id: item for item in result.items}
    assert set(items) == {"301", "302", "303"}

    story = items["301"]
    assert story.source is Source.AZURE_DEVOPS
    assert story.board == "fabrikam-web"
    assert story.title == "Checkout page"
    assert story.url == f"{PROJECT}/_workitems/edit/301"
    assert story.column == "Closed"
    assert story.state_category is StateCategory.DONE
    assert story.hours == Decimal("12.5")
    assert story.labels == ("billable", "frontend")
    assert story.assignees == ("jamal@fabrikam.example",)
    assert story.iteration == "Fabrikam-Fiber\\Sprint 4"
    assert story.revision == 8
    assert story.updated_at == datetime(2024, 5, 3, 16, 20, 11, 357000, tzinfo=UTC)
    # The latest move into a Completed state (re-closed after a reactivation),
    # not the first close and not the later tag edit.
    assert story.done_at == datetime(2024, 5, 3, 15, 45, 2, 500000, tzinfo=UTC)

    bug = items["302"]
    assert bug.state_category is StateCategory.IN_PROGRESS
    assert bug.hours == Decimal("3")
    assert bug.done_at is None
    assert bug.labels == ()

    task = items["303"]
    assert task.state_category is StateCategory.REMOVED
    assert task.hours == Decimal("1.5")

    # The cursor is the WIQL answer's own time (asOf), later than the newest change.
    assert result.cursor == "2024-05-03T16:25:00.480000Z"
    # 1 WIQL + 1 batch + 3 type-state reads + updates of the one Done item.
    assert result.requests_made == 6
    assert connector.request_counts == {"wiql": 1, "batch": 1, "states": 3, "updates": 1}


async def test_every_call_carries_api_version_and_pat(api: respx.MockRouter) -> None:
    with api:
        async with AzureDevOpsConnector(config(), sleep=no_sleep) as connector:
            await connector.poll("2024-05-03T00:00:00Z")
        calls = list(api.calls)
    expected = "Basic " + base64.b64encode(b":s3cret-pat").decode()
    assert len(calls) == 6
    for call in calls:
        assert call.request.url.params["api-version"] == "7.1"
        assert call.request.headers["authorization"] == expected

    wiql_request = next(c.request for c in calls if c.request.url.path.endswith("/wiql"))
    assert wiql_request.url.params["timePrecision"] == "true"
    query = json.loads(wiql_request.content)["query"]
    assert query == (
        "SELECT [System.Id] FROM WorkItems WHERE [System.TeamProject] = @project "
        "AND [System.ChangedDate] >= '2024-05-02T23:55:00.000000Z' "
        "ORDER BY [System.ChangedDate] ASC"
    )
    batch_request = next(c.request for c in calls if c.request.url.path.endswith("batch"))
    body = json.loads(batch_request.content)
    assert body["ids"] == [303, 302, 301]
    assert body["errorPolicy"] == "omit"
    assert "Microsoft.VSTS.Scheduling.CompletedWork" in body["fields"]
    assert "System.BoardColumn" in body["fields"]


async def test_done_at_is_cached_by_revision(api: respx.MockRouter) -> None:
    with api:
        async with AzureDevOpsConnector(config(), sleep=no_sleep) as connector:
            await connector.poll(None)
            second = await connector.poll(None)
    # Same revisions: no more update or type-state reads.
    assert second.requests_made == 2
    assert connector.request_counts == {"wiql": 2, "batch": 2, "states": 3, "updates": 1}


async def test_billing_type_rate_and_milestone_fields(api: respx.MockRouter) -> None:
    batch = load("workitemsbatch_result.json")
    for entry in batch["value"]:
        entry["fields"]["Custom.BillingType"] = "Fixed Price"
        entry["fields"]["Custom.Rate"] = 95.5
        entry["fields"]["Custom.Milestone"] = "1200"
    batch["value"][1]["fields"]["Custom.BillingType"] = "Internal work"
    api.post(f"{PROJECT}/_apis/wit/workitemsbatch").respond(json=batch)
    cfg = config(
        billing_type_field="Custom.BillingType",
        billing_type_values={"internal work": BillingType.NON_BILLABLE},
        rate_field="Custom.Rate",
        milestone_field="Custom.Milestone",
    )
    with api:
        async with AzureDevOpsConnector(cfg, sleep=no_sleep) as connector:
            result = await connector.poll(None)
    items = {item.item_id: item for item in result.items}
    assert items["301"].billing_type is BillingType.FIXED_PRICE
    assert items["302"].billing_type is BillingType.NON_BILLABLE
    assert items["301"].rate == Decimal("95.5")
    assert items["301"].milestone_amount == Decimal("1200")


async def test_done_board_columns_override_the_category(api: respx.MockRouter) -> None:
    # The reporting revisions stream, as Read Reporting Revisions Get answers it.
    def revision(rev: int, column: str, changed: str) -> dict[str, object]:
        return {
            "id": 302,
            "rev": rev,
            "fields": {
                "System.Id": 302,
                "System.Rev": rev,
                "System.BoardColumn": column,
                "System.ChangedDate": changed,
            },
            "url": f"{PROJECT}/_apis/wit/workItems/302/revisions/{rev}",
        }

    stream = {
        "values": [
            revision(1, "New", "2024-05-01T08:00:00Z"),
            revision(2, "Active", "2024-05-02T09:00:00Z"),
            revision(3, "Active", "2024-05-03T11:30:00Z"),
        ],
        "nextLink": f"{PROJECT}/_apis/wit/reporting/workitemrevisions?continuationToken=7364",
        "continuationToken": "7364",
        "isLastBatch": True,
    }
    api.get(f"{PROJECT}/_apis/wit/reporting/workitemrevisions").respond(json=stream)
    cfg = config(done_board_columns=frozenset({"Active"}))
    with api:
        async with AzureDevOpsConnector(cfg, sleep=no_sleep) as connector:
            result = await connector.poll(None)
    items = {item.item_id: item for item in result.items}
    assert items["302"].state_category is StateCategory.DONE  # in the billing column
    assert items["302"].done_at == datetime(2024, 5, 2, 9, 0, tzinfo=UTC)  # entered the column
    assert items["301"].state_category is StateCategory.RESOLVED  # Closed, not a billing column
    assert items["303"].state_category is StateCategory.REMOVED  # Removed stays removed


def test_config_validates_and_normalizes() -> None:
    cfg = config(organization_url="https://tfs.example.com/tfs/DefaultCollection/")
    assert cfg.organization_url == "https://tfs.example.com/tfs/DefaultCollection"
    assert cfg.web_url(7) == (
        "https://tfs.example.com/tfs/DefaultCollection/Fabrikam-Fiber/_workitems/edit/7"
    )
    assert "s3cret" not in repr(cfg)
    with pytest.raises(ValueError, match="organization_url"):
        config(organization_url="dev.azure.com/fabrikam")
    with pytest.raises(ValueError, match="personal access token"):
        config(pat="")
    with pytest.raises(ValueError, match="overlap"):
        config(overlap_seconds=-1)


def test_project_names_with_spaces_are_quoted() -> None:
    cfg = config(project="Fabrikam Fiber")
    assert cfg.project_url == f"{ORG}/Fabrikam%20Fiber"


async def test_wiql_escapes_literals() -> None:
    cfg = config(area_path="Fabrikam-Fiber\\O'Brien team", work_item_types=("Bug", "User Story"))
    connector = AzureDevOpsConnector(cfg, http=httpx.AsyncClient())
    try:
        query = connector.wiql(None)
    finally:
        await connector.aclose()
    assert "[System.AreaPath] UNDER 'Fabrikam-Fiber\\O''Brien team'" in query
    assert "[System.WorkItemType] IN ('Bug', 'User Story')" in query
    assert "ChangedDate] >=" not in query


async def test_connector_satisfies_the_board_connector_protocol() -> None:
    from connectors.base import BoardConnector

    connector: BoardConnector = AzureDevOpsConnector(config(), http=httpx.AsyncClient())
    assert connector.board_key == "fabrikam-web"
    assert isinstance(connector, AzureDevOpsConnector)
    await connector.aclose()
