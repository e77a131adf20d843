"""The GraphQL client: retries, secondary limits, GraphQL errors and rate-limit pacing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from connectors.base import FatalError, RetriableError
from connectors.github.auth import StaticToken
from connectors.github.graphql import GitHubGraphQLClient
from connectors.github.queries import PROJECT_ITEM_BY_ID

URL = "https://api.github.test/graphql"
NOW = 1_741_600_000.0  # 2025-03-10T09:46:40Z
RESET_ISO = "2025-03-10T10:46:40Z"  # NOW + 3600


class Sleeper:
    """An injected sleep that records instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def ok(
    data: dict[str, Any] | None = None, *, remaining: int = 4999, cost: int = 1
) -> httpx.Response:
    body = {"data": {"rateLimit": {"cost": cost, "remaining": remaining, "resetAt": RESET_ISO}}}
    body["data"].update(data or {"node": None})
    return httpx.Response(200, json=body)


@pytest.fixture
def sleeper() -> Sleeper:
    return Sleeper()


@pytest.fixture
async def client(sleeper: Sleeper) -> AsyncIterator[GitHubGraphQLClient]:
    http = httpx.AsyncClient()
    c = GitHubGraphQLClient(
        StaticToken("ghp_test"),
        url=URL,
        http_client=http,
        sleep=sleeper,
        clock=lambda: NOW,
        max_attempts=4,
        max_wait=300,
    )
    yield c
    await http.aclose()


@respx.mock
async def test_request_shape(client: GitHubGraphQLClient) -> None:
    route = respx.post(URL).mock(return_value=ok({"node": {"id": "x"}}))
    data = await client.execute(PROJECT_ITEM_BY_ID, {"id": "PVTI_1"})
    assert data["node"] == {"id": "x"}
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer ghp_test"
    sent = json.loads(request.content)
    assert sent["query"] == PROJECT_ITEM_BY_ID
    assert sent["variables"] == {"id": "PVTI_1"}
    assert sent["operationName"] == "ProjectItemById"
    assert client.requests_made == 1
    assert client.requests_by_operation["ProjectItemById"] == 1
    assert client.rate_limit is not None and client.rate_limit.remaining == 4999


@respx.mock
async def test_502_is_retried_with_backoff(client: GitHubGraphQLClient, sleeper: Sleeper) -> None:
    respx.post(URL).mock(
        side_effect=[
            httpx.Response(502, text="<html>Bad gateway</html>"),
            httpx.Response(502),
            ok(),
        ]
    )
    await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert client.requests_made == 3
    assert len(sleeper.calls) == 2
    assert sleeper.calls[0] < sleeper.calls[1] <= 8  # exponential, capped


@respx.mock
async def test_persistent_5xx_becomes_retriable_error(
    client: GitHubGraphQLClient, sleeper: Sleeper
) -> None:
    respx.post(URL).mock(return_value=httpx.Response(503))
    with pytest.raises(RetriableError, match="after 4 attempts"):
        await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert client.requests_made == 4
    assert len(sleeper.calls) == 3


@respx.mock
async def test_timeouts_are_retried(client: GitHubGraphQLClient) -> None:
    respx.post(URL).mock(side_effect=[httpx.ReadTimeout("slow"), httpx.ConnectError("x"), ok()])
    await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert client.requests_made == 3


@respx.mock
async def test_secondary_limit_honours_retry_after(
    client: GitHubGraphQLClient, sleeper: Sleeper
) -> None:
    limited = httpx.Response(
        403,
        headers={"retry-after": "37", "x-ratelimit-remaining": "4000"},
        json={"message": "You have exceeded a secondary rate limit."},
    )
    respx.post(URL).mock(side_effect=[limited, ok()])
    await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert sleeper.calls == [37.0]
    assert client.rate_limit_wait_seconds == 37.0


@respx.mock
async def test_429_with_remaining_zero_waits_for_reset(
    client: GitHubGraphQLClient, sleeper: Sleeper
) -> None:
    limited = httpx.Response(
        429,
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 120)},
        json={"message": "API rate limit exceeded"},
    )
    respx.post(URL).mock(side_effect=[limited, ok()])
    await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert sleeper.calls[0] == pytest.approx(121.0)


@respx.mock
async def test_secondary_limit_without_headers_waits_a_minute(
    client: GitHubGraphQLClient, sleeper: Sleeper
) -> None:
    limited = httpx.Response(403, json={"message": "You have exceeded a secondary rate limit."})
    respx.post(URL).mock(side_effect=[limited, ok()])
    await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert sleeper.calls == [60.0]


@respx.mock
async def test_long_retry_after_goes_back_to_the_scheduler(
    client: GitHubGraphQLClient, sleeper: Sleeper
) -> None:
    respx.post(URL).mock(
        return_value=httpx.Response(403, headers={"retry-after": "900"}, json={"message": "slow"})
    )
    with pytest.raises(RetriableError) as info:
        await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert info.value.retry_after == 900
    assert sleeper.calls == []
    assert client.requests_made == 1


@respx.mock
async def test_plain_403_is_fatal(client: GitHubGraphQLClient) -> None:
    respx.post(URL).mock(
        return_value=httpx.Response(403, json={"message": "Resource not accessible by integration"})
    )
    with pytest.raises(FatalError, match="not accessible"):
        await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert client.requests_made == 1


@respx.mock
async def test_401_with_a_static_token_is_fatal(client: GitHubGraphQLClient) -> None:
    respx.post(URL).mock(return_value=httpx.Response(401, json={"message": "Bad credentials"}))
    with pytest.raises(FatalError, match="401"):
        await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert client.requests_made == 1


@pytest.mark.parametrize("error_type", ["NOT_FOUND", "FORBIDDEN", "INSUFFICIENT_SCOPES"])
@respx.mock
async def test_fatal_graphql_errors(client: GitHubGraphQLClient, error_type: str) -> None:
    respx.post(URL).mock(
        return_value=httpx.Response(
            200,
            json={
                "data": {"node": None},
                "errors": [{"type": error_type, "message": "nope", "path": ["node"]}],
            },
        )
    )
    with pytest.raises(FatalError, match=error_type):
        await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert client.requests_made == 1


@respx.mock
async def test_not_found_can_be_tolerated(client: GitHubGraphQLClient) -> None:
    respx.post(URL).mock(
        return_value=httpx.Response(
            200,
            json={
                "data": {"node": None},
                "errors": [{"type": "NOT_FOUND", "path": ["node"], "message": "gone"}],
            },
        )
    )
    assert await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"}, tolerate_not_found=True) == {
        "node": None
    }


@respx.mock
async def test_query_validation_errors_are_fatal(client: GitHubGraphQLClient) -> None:
    respx.post(URL).mock(
        return_value=httpx.Response(
            200,
            json={
                "errors": [
                    {
                        "message": "Field 'itemz' doesn't exist on type 'ProjectV2'",
                        "extensions": {"code": "undefinedField", "typeName": "ProjectV2"},
                    }
                ]
            },
        )
    )
    with pytest.raises(FatalError, match="itemz"):
        await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})


@respx.mock
async def test_something_went_wrong_is_retried(
    client: GitHubGraphQLClient, sleeper: Sleeper
) -> None:
    flaky = httpx.Response(
        200,
        json={
            "data": None,
            "errors": [
                {
                    "message": "Something went wrong while executing your query. This may be the "
                    "result of a timeout, or it could be a GitHub bug."
                }
            ],
        },
    )
    respx.post(URL).mock(side_effect=[flaky, ok()])
    await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert client.requests_made == 2


@respx.mock
async def test_graphql_rate_limited_waits_for_reset(
    client: GitHubGraphQLClient, sleeper: Sleeper
) -> None:
    limited = httpx.Response(
        200,
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 30)},
        json={"errors": [{"type": "RATE_LIMITED", "message": "API rate limit exceeded"}]},
    )
    respx.post(URL).mock(side_effect=[limited, ok()])
    await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert sleeper.calls == [pytest.approx(31.0)]


@respx.mock
async def test_non_json_200_is_retried(client: GitHubGraphQLClient) -> None:
    respx.post(URL).mock(side_effect=[httpx.Response(200, text="<html>"), ok()])
    await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert client.requests_made == 2


# -- pacing ----------------------------------------------------------------------------


@respx.mock
async def test_no_pacing_with_plenty_of_points(
    client: GitHubGraphQLClient, sleeper: Sleeper
) -> None:
    respx.post(URL).mock(return_value=ok(remaining=4000))
    for _ in range(3):
        await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert sleeper.calls == []


@respx.mock
async def test_low_points_spread_the_rest_until_reset(
    client: GitHubGraphQLClient, sleeper: Sleeper
) -> None:
    respx.post(URL).mock(side_effect=[ok(remaining=59, cost=2), ok(remaining=57, cost=2)])
    await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert sleeper.calls == []  # nothing known before the first answer
    await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    # 3600 s to the reset, 59 points at 2 per query: 29 queries left -> one per 120 s
    assert sleeper.calls == [pytest.approx(3600 / 30)]
    assert client.rate_limit_wait_seconds == pytest.approx(120)


async def test_exhausted_points_wait_for_the_reset(sleeper: Sleeper) -> None:
    clock = [NOW]
    async with httpx.AsyncClient() as http:
        c = GitHubGraphQLClient(
            StaticToken("t"),
            url=URL,
            http_client=http,
            sleep=sleeper,
            clock=lambda: clock[0],
            max_wait=300,
        )
        reset_soon = "2025-03-10T09:48:20Z"  # NOW + 100
        body = {
            "data": {"rateLimit": {"cost": 1, "remaining": 0, "resetAt": reset_soon}, "node": None}
        }
        with respx.mock:
            respx.post(URL).mock(return_value=httpx.Response(200, json=body))
            await c.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
            await c.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
        assert sleeper.calls == [pytest.approx(101.0)]


@respx.mock
async def test_exhausted_points_far_from_reset_raise_retriable(
    client: GitHubGraphQLClient, sleeper: Sleeper
) -> None:
    respx.post(URL).mock(return_value=ok(remaining=0))
    await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    with pytest.raises(RetriableError) as info:
        await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert info.value.retry_after == pytest.approx(3600)
    assert client.requests_made == 1
    assert sleeper.calls == []


@respx.mock
async def test_a_past_reset_clears_the_pacing(sleeper: Sleeper) -> None:
    clock = [NOW]
    async with httpx.AsyncClient() as http:
        c = GitHubGraphQLClient(
            StaticToken("t"), url=URL, http_client=http, sleep=sleeper, clock=lambda: clock[0]
        )
        respx.post(URL).mock(return_value=ok(remaining=10))
        await c.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
        clock[0] = NOW + 4000  # past resetAt
        respx.post(URL).mock(return_value=ok(remaining=5000))
        await c.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
    assert sleeper.calls == []
