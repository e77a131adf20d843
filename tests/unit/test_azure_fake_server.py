"""The fake Azure DevOps server answers with the real API's shapes and limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.fakes.azure_server import FakeAzureDevOps, serve_fake_azure

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
V = {"api-version": "7.1"}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeAzureDevOps, str]]:
    shared = FakeAzureDevOps(pat="pat")
    with serve_fake_azure(shared) as org_url:
        yield shared, org_url


@pytest.fixture
def fake(served: tuple[FakeAzureDevOps, str]) -> FakeAzureDevOps:
    fake = served[0]
    fake.reset()
    shop = fake.add_project("Web Shop", "Agile")
    story = shop.add_item("Story", hours=1, at=T0)
    shop.set_state(story, "Active", at=T0 + timedelta(hours=1))
    shop.set_state(story, "Closed", hours=3, at=T0 + timedelta(hours=2))
    return fake


@pytest.fixture
def url(fake: FakeAzureDevOps, served: tuple[FakeAzureDevOps, str]) -> str:
    return served[1]


@pytest.fixture
async def http(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url + "/", auth=("", "pat")) as client:
        yield client


async def test_auth_is_required(url: str) -> None:
    async with httpx.AsyncClient() as anonymous:
        response = await anonymous.get(f"{url}/Web Shop/_apis/wit/workitems/1", params=V)
        assert response.status_code == 401
        wrong = await anonymous.get(
            f"{url}/Web Shop/_apis/wit/workitems/1", params=V, auth=("", "nope")
        )
        assert wrong.status_code == 401


async def test_api_version_is_required(http: httpx.AsyncClient) -> None:
    response = await http.get("Web Shop/_apis/wit/workitems/1")
    assert response.status_code == 400
    assert "api-version" in response.json()["message"]


async def test_batch_rejects_more_than_200_ids(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "Web Shop/_apis/wit/workitemsbatch",
        params=V,
        json={"ids": list(range(1, 202)), "fields": ["System.Id"]},
    )
    assert response.status_code == 400
    assert "200" in response.json()["message"]


async def test_batch_lists_only_requested_fields_and_omits_missing(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(
        "Web Shop/_apis/wit/workitemsbatch",
        params=V,
        json={"ids": [1, 99], "fields": ["System.Id", "System.State"], "errorPolicy": "omit"},
    )
    body = response.json()
    assert body["count"] == 2
    assert body["value"][0]["fields"] == {"System.Id": 1, "System.State": "Closed"}
    assert body["value"][0]["rev"] == 3
    assert body["value"][1] is None
    strict = await http.post(
        "Web Shop/_apis/wit/workitemsbatch", params=V, json={"ids": [99], "errorPolicy": "fail"}
    )
    assert strict.status_code == 404


async def test_wiql_filters_on_changed_date_and_needs_time_precision(
    http: httpx.AsyncClient,
) -> None:
    query = (
        "SELECT [System.Id] FROM WorkItems WHERE [System.TeamProject] = @project "
        "AND [System.ChangedDate] >= '2024-05-01T10:30:00.000000Z' "
        "ORDER BY [System.ChangedDate] ASC"
    )
    without = await http.post("Web Shop/_apis/wit/wiql", params=V, json={"query": query})
    assert without.status_code == 400
    found = await http.post(
        "Web Shop/_apis/wit/wiql", params={**V, "timePrecision": "true"}, json={"query": query}
    )
    assert [w["id"] for w in found.json()["workItems"]] == [1]
    later = query.replace("2024-05-01T10:30", "2024-05-01T11:30")
    none = await http.post(
        "Web Shop/_apis/wit/wiql", params={**V, "timePrecision": "true"}, json={"query": later}
    )
    assert none.json()["workItems"] == []


async def test_updates_carry_state_transitions(http: httpx.AsyncClient) -> None:
    response = await http.get("Web Shop/_apis/wit/workItems/1/updates", params=V)
    updates = response.json()["value"]
    assert [u["rev"] for u in updates] == [1, 2, 3]
    closing = updates[2]["fields"]
    assert closing["System.State"] == {"oldValue": "Active", "newValue": "Closed"}
    assert closing["System.ChangedDate"]["newValue"] == "2024-05-01T11:00:00.000Z"
    assert closing["Microsoft.VSTS.Scheduling.CompletedWork"] == {"oldValue": 1, "newValue": 3}
    assert updates[2]["revisedDate"] == "2024-05-01T11:00:00.000Z"


async def test_reporting_revisions_stream_in_batches_with_a_continuation_token(
    http: httpx.AsyncClient, fake: FakeAzureDevOps
) -> None:
    path = "Web Shop/_apis/wit/reporting/workitemrevisions"
    fields = "System.Id,System.Rev,System.State"
    first = await http.get(path, params={**V, "fields": fields, "$maxPageSize": "2"})
    assert first.status_code == 200
    batch = first.json()
    assert [(v["id"], v["rev"], v["fields"]["System.State"]) for v in batch["values"]] == [
        (1, 1, "New"),
        (1, 2, "Active"),
    ]
    assert batch["isLastBatch"] is False
    assert "continuationToken=" in batch["nextLink"]
    rest = await http.get(
        path, params={**V, "fields": fields, "continuationToken": batch["continuationToken"]}
    )
    last = rest.json()
    assert [(v["rev"], v["fields"]["System.State"]) for v in last["values"]] == [(3, "Closed")]
    assert last["isLastBatch"] is True
    # Nothing new since: an empty last batch that keeps the watermark.
    again = (
        await http.get(
            path, params={**V, "fields": fields, "continuationToken": last["continuationToken"]}
        )
    ).json()
    assert (again["values"], again["isLastBatch"]) == ([], True)
    assert again["continuationToken"] == last["continuationToken"]
    # startDateTime: only the revisions after it.
    after = await http.get(
        path, params={**V, "fields": fields, "startDateTime": "2024-05-01T10:30:00Z"}
    )
    assert [v["rev"] for v in after.json()["values"]] == [3]
    # The real API's rules: not both starting points, only tokens it issued, known fields.
    both = await http.get(
        path,
        params={**V, "continuationToken": "wm-1", "startDateTime": "2024-05-01T10:30:00Z"},
    )
    assert both.status_code == 400
    forged = await http.get(path, params={**V, "continuationToken": "wm-99"})
    assert forged.status_code == 400
    unknown = await http.get(path, params={**V, "fields": "Custom.Nope"})
    assert unknown.status_code == 400
    assert fake.request_counts["revisions"] == 7


async def test_type_states_have_categories(http: httpx.AsyncClient) -> None:
    response = await http.get("Web Shop/_apis/wit/workitemtypes/User Story/states", params=V)
    states = {s["name"]: s["category"] for s in response.json()["value"]}
    assert states == {
        "New": "Proposed",
        "Active": "InProgress",
        "Resolved": "Resolved",
        "Closed": "Completed",
        "Removed": "Removed",
    }
    missing = await http.get("Web Shop/_apis/wit/workitemtypes/Epic/states", params=V)
    assert missing.status_code == 404


async def test_faults_are_injected_and_counted(
    fake: FakeAzureDevOps, http: httpx.AsyncClient
) -> None:
    fake.inject_fault(429, kind="work_item", retry_after=2)
    fake.inject_fault(500, kind="work_item")
    first = await http.get("Web Shop/_apis/wit/workitems/1", params=V)
    second = await http.get("Web Shop/_apis/wit/workitems/1", params=V)
    third = await http.get("Web Shop/_apis/wit/workitems/1", params=V)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "2")
    assert second.status_code == 500
    assert third.status_code == 200
    assert fake.request_counts["work_item"] == 3


def test_builder_rejects_unknown_states_and_fields() -> None:
    fake = FakeAzureDevOps()
    scrum = fake.add_project("Mobile", "Scrum")
    with pytest.raises(ValueError, match="no state"):
        scrum.add_item("x", state="Closed")
    with pytest.raises(ValueError, match="TF51535"):
        scrum.add_item("x", fields={"Custom.Nope": 1})
    item = scrum.add_item("x")
    assert fake.items[item].fields["System.State"] == "New"
    assert fake.service_hook_payload(item, "workitem.created")["resource"]["id"] == item
