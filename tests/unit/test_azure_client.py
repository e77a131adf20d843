"""Retries, throttling and error mapping of the Azure DevOps REST client (respx)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from connectors.azure_devops import AzureBoardConfig, AzureDevOpsClient
from connectors.base import FatalError, RetriableError

ORG = "https://dev.azure.com/fabrikam"
WIQL = f"{ORG}/Web/_apis/wit/wiql"
BATCH = f"{ORG}/Web/_apis/wit/workitemsbatch"
UPDATES = f"{ORG}/Web/_apis/wit/workItems/7/updates"
EMPTY_WIQL = {"queryType": "flat", "workItems": [{"id": 7, "url": "x"}]}


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def client(sleeps: Sleeps, **kwargs: Any) -> AzureDevOpsClient:
    cfg = AzureBoardConfig(board_key="web", organization_url=ORG, project="Web", pat="pat")
    return AzureDevOpsClient(cfg, sleep=sleeps, **kwargs)


@respx.mock
async def test_timeouts_are_retried_then_retriable_error() -> None:
    route = respx.post(WIQL).mock(side_effect=httpx.ReadTimeout("slow"))
    sleeps = Sleeps()
    api = client(sleeps, max_attempts=3)
    with pytest.raises(RetriableError, match="timeout"):
        await api.query_ids("SELECT [System.Id] FROM WorkItems")
    await api.aclose()
    assert route.call_count == 3
    assert sleeps.calls == [0.5, 1.0]
    assert api.request_counts == {"wiql": 3}


@respx.mock
async def test_connection_error_then_success() -> None:
    respx.post(WIQL).mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(200, json=EMPTY_WIQL)]
    )
    sleeps = Sleeps()
    api = client(sleeps)
    assert await api.query_ids("q") == [7]
    await api.aclose()
    assert sleeps.calls == [0.5]


@respx.mock
async def test_429_without_retry_after_backs_off_exponentially() -> None:
    respx.post(WIQL).mock(
        side_effect=[
            httpx.Response(429),
            httpx.Response(429),
            httpx.Response(429),
            httpx.Response(200, json=EMPTY_WIQL),
        ]
    )
    sleeps = Sleeps()
    api = client(sleeps)
    assert await api.query_ids("q") == [7]
    await api.aclose()
    assert sleeps.calls == [0.5, 1.0, 2.0]


@respx.mock
async def test_huge_retry_after_is_capped() -> None:
    respx.post(WIQL).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "86400"}),
            httpx.Response(200, json=EMPTY_WIQL),
        ]
    )
    sleeps = Sleeps()
    api = client(sleeps, max_retry_after=60)
    await api.query_ids("q")
    await api.aclose()
    assert sleeps.calls == [60]


@respx.mock
async def test_retry_after_on_a_success_delays_the_next_request() -> None:
    respx.post(WIQL).respond(json=EMPTY_WIQL, headers={"Retry-After": "3"})
    respx.post(BATCH).respond(json={"count": 0, "value": []})
    sleeps = Sleeps()
    api = client(sleeps)
    await api.query_ids("q")
    assert sleeps.calls == []  # nothing waits until another request is made
    await api.get_work_items_batch([7], ["System.Id"])
    await api.aclose()
    assert sleeps.calls == [3.0]


@respx.mock
async def test_batch_chunks_at_200_ids() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        ids = json.loads(request.content)["ids"]
        assert len(ids) <= 200
        value: list[dict[str, Any] | None] = [{"id": i, "rev": 1, "fields": {}} for i in ids]
        value.append(None)  # a deleted item under errorPolicy=omit
        return httpx.Response(200, json={"count": len(value), "value": value})

    route = respx.post(BATCH).mock(side_effect=answer)
    api = client(Sleeps())
    items = await api.get_work_items_batch(list(range(1, 402)), ["System.Id"])
    await api.aclose()
    assert route.call_count == 3
    assert [i["id"] for i in items] == list(range(1, 402))


@respx.mock
async def test_updates_are_paged() -> None:
    page = [{"id": n, "rev": n, "fields": {}} for n in range(1, 201)]
    route = respx.get(UPDATES).mock(
        side_effect=[
            httpx.Response(200, json={"count": 200, "value": page}),
            httpx.Response(200, json={"count": 1, "value": [{"id": 201, "rev": 201}]}),
        ]
    )
    api = client(Sleeps())
    updates = await api.get_updates(7)
    await api.aclose()
    assert len(updates) == 201
    assert route.calls[1].request.url.params["$skip"] == "200"


@respx.mock
@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failures_are_fatal_and_not_retried(status: int) -> None:
    route = respx.post(WIQL).respond(status)
    sleeps = Sleeps()
    api = client(sleeps)
    with pytest.raises(FatalError) as caught:
        await api.query_ids("q")
    await api.aclose()
    assert route.call_count == 1
    assert sleeps.calls == []
    message = str(caught.value)
    assert "'web'" in message and str(status) in message and "Work Items (Read)" in message


@respx.mock
async def test_sign_in_page_instead_of_json_is_fatal() -> None:
    respx.post(WIQL).respond(
        203, text="<html>Sign in</html>", headers={"Content-Type": "text/html"}
    )
    api = client(Sleeps())
    with pytest.raises(FatalError, match="personal access token"):
        await api.query_ids("q")
    await api.aclose()


@respx.mock
async def test_redirect_to_sign_in_is_fatal() -> None:
    respx.post(WIQL).respond(302, headers={"Location": "https://login.microsoftonline.com/"})
    api = client(Sleeps())
    with pytest.raises(FatalError, match="302"):
        await api.query_ids("q")
    await api.aclose()


@respx.mock
async def test_missing_single_work_item_is_none() -> None:
    respx.get(f"{ORG}/Web/_apis/wit/workitems/9").respond(404, json={"message": "TF401232"})
    api = client(Sleeps())
    assert await api.get_work_item(9, ["System.Id"]) is None
    await api.aclose()
