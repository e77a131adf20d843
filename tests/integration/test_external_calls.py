"""`kanvoice_external_calls_total` counts every call to GitHub, Azure DevOps, Slack and
Stripe by outcome (each retry is a call), failures included; /readyz shows each
service's latest outcome. Real HTTP against the project's fakes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from connectors.azure_devops import AzureBoardConfig, AzureDevOpsClient
from connectors.base import FatalError, RetriableError
from connectors.slack.client import RetryPolicy, SlackApprovals, SlackUnavailable
from connectors.stripe.gateway import StripeGateway, StripeRejected
from sync.boards import close_connectors
from sync.composition import Services, build_services
from sync.settings import Settings
from sync.web.app import create_app
from tests.conftest import FixedClock
from tests.fakes.azure_server import FakeAzureDevOps, serve_fake_azure
from tests.fakes.github_server import FakeGitHubProject, serve_fake_github
from tests.fakes.slack_server import DEFAULT_TOKEN, FakeSlack, serve_fake_slack
from tests.fakes.stripe_server import FakeStripe, run_fake_stripe_in_thread

TOKEN = "ghp_external_calls_token"
FAST_SLACK = RetryPolicy(max_retries=2, backoff=0.01, max_backoff=0.02, timeout=5)


class Calls:
    """A `CallObserver` that remembers what it was told."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, service: str, outcome: str) -> None:
        self.seen.append((service, outcome))


async def no_sleep(_seconds: float) -> None:
    return None


def counted(service: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "kanvoice_external_calls_total", {"service": service, "outcome": outcome}
    )
    return value or 0.0


@pytest.fixture
def project() -> Iterator[tuple[FakeGitHubProject, str]]:
    fake = FakeGitHubProject(owner="acme", number=3, require_token=TOKEN)
    with serve_fake_github(fake) as url:
        yield fake, url


def github_services(tmp_path: Path, api_url: str, token: str = TOKEN) -> Services:
    settings: dict[str, Any] = {
        "ledger": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        "clients": [
            {"key": "acme", "stripe_customer_id": "cus_A1", "currency": "EUR", "rate": "100"}
        ],
        "boards": [
            {
                "key": "acme-web",
                "source": "github",
                "client": "acme",
                "github": {"owner": "acme", "project_number": 3, "api_url": api_url},
            }
        ],
        "github": {"token": token},
    }
    return build_services(Settings(**settings), FixedClock())


async def test_a_failed_github_refetch_is_counted_and_shown_by_readyz(
    project: tuple[FakeGitHubProject, str], tmp_path: Path
) -> None:
    fake, api_url = project
    node = fake.add_issue("Checkout", status="Done", hours=2).node_id
    services = github_services(tmp_path, api_url)
    before = {o: counted("github", o) for o in ("ok", "retriable", "fatal")}
    try:
        # One 502, then the retry succeeds: two calls, one of each outcome.
        fake.fail_next(502)
        (item,) = await services.connectors["acme-web"].fetch((node,))
        assert item.item_id == node
        assert counted("github", "retriable") == before["retriable"] + 1
        assert counted("github", "ok") == before["ok"] + 1
        assert services.calls.status()["github"]["last_call"] == "ok"
    finally:
        await close_connectors(services)
        services.close()

    # Credentials GitHub refuses: the re-fetch fails at once, counted as fatal.
    refused = github_services(tmp_path, api_url, token="ghp_wrong")
    try:
        with pytest.raises(FatalError):
            await refused.connectors["acme-web"].fetch((node,))
        assert counted("github", "fatal") == before["fatal"] + 1
        with TestClient(create_app(refused), base_url="http://127.0.0.1") as client:
            ready = client.get("/readyz")
            metrics = client.get("/metrics").text
        # The ledger works, so the instance still takes webhooks; GitHub is named.
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["failing"] == ["github"]
        assert body["services"]["github"]["last_call"] == "fatal"
        assert "failing_since" in body["services"]["github"]
        assert 'kanvoice_external_calls_total{outcome="fatal",service="github"}' in metrics
    finally:
        await close_connectors(refused)
        refused.close()


async def test_azure_devops_calls_are_counted_by_outcome() -> None:
    fake = FakeAzureDevOps(pat="pat")
    fake.add_project("Web")
    calls = Calls()
    with serve_fake_azure(fake) as org_url:
        config = AzureBoardConfig(
            board_key="web", organization_url=org_url, project="Web", pat="pat"
        )
        api = AzureDevOpsClient(config, sleep=no_sleep, max_attempts=2, observer=calls)
        fake.inject_fault(500, times=2)
        with pytest.raises(RetriableError):
            await api.query_ids("SELECT [System.Id] FROM WorkItems")
        assert await api.query_ids("SELECT [System.Id] FROM WorkItems") == []
        fake.inject_fault(401)
        with pytest.raises(FatalError):
            await api.query_ids("SELECT [System.Id] FROM WorkItems")
        await api.aclose()
    assert calls.seen == [
        ("azure_devops", "retriable"),
        ("azure_devops", "retriable"),
        ("azure_devops", "ok"),
        ("azure_devops", "fatal"),
    ]


async def test_slack_calls_and_their_retries_are_counted() -> None:
    fake = FakeSlack()
    calls = Calls()
    with serve_fake_slack(fake) as url:
        slack = SlackApprovals(DEFAULT_TOKEN, base_url=url, retry=FAST_SLACK, observer=calls)
        fake.inject_fault(503, times=1)
        await slack.auth_test()  # a 503, retried inside slack_sdk, then ok
        fake.inject_fault(503, times=3)
        with pytest.raises(SlackUnavailable):
            await slack.auth_test()
        wrong = SlackApprovals("xoxb-wrong", base_url=url, retry=FAST_SLACK, observer=calls)
        with pytest.raises(FatalError):
            await wrong.auth_test()
    assert calls.seen == [
        ("slack", "retriable"),
        ("slack", "ok"),
        ("slack", "retriable"),
        ("slack", "retriable"),
        ("slack", "retriable"),
        ("slack", "fatal"),
    ]


async def test_stripe_calls_are_counted_per_attempt() -> None:
    fake = FakeStripe(api_key="sk_test_calls")
    calls = Calls()
    with run_fake_stripe_in_thread(fake) as base_url:
        gateway = StripeGateway(
            "sk_test_calls", api_base=base_url, sleep=no_sleep, observer=calls, max_attempts=2
        )
        try:
            fake.fail_next(path="/v1/customers", status=500)
            with pytest.raises(StripeRejected):
                await gateway.retrieve_customer("cus_missing")  # 500, then 404: refused
            wrong = StripeGateway("sk_test_wrong", api_base=base_url, observer=calls)
            with pytest.raises(FatalError):
                await wrong.retrieve_customer("cus_missing")
            await wrong.close()
        finally:
            await gateway.close()
            fake.close()
    assert calls.seen == [("stripe", "retriable"), ("stripe", "rejected"), ("stripe", "fatal")]
