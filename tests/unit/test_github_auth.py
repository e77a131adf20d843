"""GitHub App auth: JWT → installation token, cached and refreshed before expiry."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.base import FatalError, RetriableError
from connectors.github.auth import GitHubAppAuth, StaticToken
from connectors.github.config import GitHubBoardConfig
from connectors.github.connector import GitHubProjectConnector
from connectors.github.graphql import GitHubGraphQLClient
from connectors.github.queries import PROJECT_ITEM_BY_ID
from tests.fakes.github_server import FakeGitHubProject, serve_fake_github

API = "https://api.github.com"
TOKEN_URL = f"{API}/app/installations/4242/access_tokens"
NOW = 1_741_600_000  # 2025-03-10T09:46:40Z


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pem(rsa_key: rsa.RSAPrivateKey) -> str:
    return rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _token_response(token: str, expires: float) -> httpx.Response:
    return httpx.Response(
        201,
        json={
            "token": token,
            "expires_at": _iso(expires),
            "permissions": {"organization_projects": "read", "issues": "read"},
            "repository_selection": "all",
        },
    )


def test_jwt_claims(pem: str, rsa_key: rsa.RSAPrivateKey) -> None:
    auth = GitHubAppAuth(123456, pem, 4242, clock=Clock())
    token = auth.app_jwt()
    claims: dict[str, Any] = jwt.decode(
        token,
        rsa_key.public_key(),
        algorithms=["RS256"],
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["iss"] == "123456"
    assert claims["iat"] == NOW - 60
    assert claims["exp"] == NOW + 540
    assert claims["exp"] - NOW <= 600  # GitHub's 10-minute maximum
    assert jwt.get_unverified_header(token)["alg"] == "RS256"


@respx.mock
async def test_installation_token_is_fetched_once_and_cached(
    pem: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    clock = Clock()
    route = respx.post(TOKEN_URL).mock(return_value=_token_response("ghs_one", NOW + 3600))
    auth = GitHubAppAuth("123456", pem, "4242", clock=clock)
    assert await auth.token() == "ghs_one"
    assert await auth.token() == "ghs_one"
    assert route.call_count == 1
    request = route.calls.last.request
    bearer = request.headers["authorization"].removeprefix("Bearer ")
    jwt.decode(
        bearer,
        rsa_key.public_key(),
        algorithms=["RS256"],
        options={"verify_exp": False, "verify_iat": False},
    )
    assert request.headers["accept"] == "application/vnd.github+json"
    assert auth.expires_at == NOW + 3600


@respx.mock
async def test_token_is_refreshed_before_it_expires(pem: str) -> None:
    clock = Clock()
    route = respx.post(TOKEN_URL).mock(
        side_effect=[
            _token_response("ghs_one", NOW + 3600),
            _token_response("ghs_two", NOW + 7200),
        ]
    )
    auth = GitHubAppAuth("1", pem, "4242", clock=clock, refresh_margin=300)
    assert await auth.token() == "ghs_one"
    clock.now = NOW + 3600 - 301  # still more than the margin left
    assert await auth.token() == "ghs_one"
    clock.now = NOW + 3600 - 299  # inside the margin: refresh before expiry
    assert await auth.token() == "ghs_two"
    assert route.call_count == 2
    assert auth.refreshes == 2


@pytest.mark.parametrize(
    ("status", "error"), [(401, FatalError), (404, FatalError), (502, RetriableError)]
)
@respx.mock
async def test_token_endpoint_failures(pem: str, status: int, error: type[Exception]) -> None:
    respx.post(TOKEN_URL).mock(
        return_value=httpx.Response(status, json={"message": "Integration not found"})
    )
    auth = GitHubAppAuth("1", pem, "4242", clock=Clock())
    with pytest.raises(error):
        await auth.token()


@respx.mock
async def test_token_endpoint_transport_error_is_retriable(pem: str) -> None:
    respx.post(TOKEN_URL).mock(side_effect=httpx.ConnectError("down"))
    with pytest.raises(RetriableError):
        await GitHubAppAuth("1", pem, "4242", clock=Clock()).token()


def test_bad_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="PEM"):
        GitHubAppAuth("1", "not a key", "2")
    broken = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"
    with pytest.raises(FatalError, match="private key"):
        GitHubAppAuth("1", broken, "2").app_jwt()
    with pytest.raises(ValueError):
        StaticToken("  ")


def test_repr_hides_secrets(pem: str) -> None:
    assert "PRIVATE" not in repr(GitHubAppAuth("1", pem, "2"))
    assert "ghp_x" not in repr(StaticToken("ghp_x"))


@respx.mock
async def test_a_401_drops_the_app_token_and_retries_once(pem: str) -> None:
    clock = Clock()
    tokens = respx.post(TOKEN_URL).mock(
        side_effect=[
            _token_response("ghs_revoked", NOW + 3600),
            _token_response("ghs_new", NOW + 3600),
        ]
    )
    graphql = respx.post(f"{API}/graphql").mock(
        side_effect=[
            httpx.Response(401, json={"message": "Bad credentials"}),
            httpx.Response(200, json={"data": {"node": None}}),
        ]
    )
    auth = GitHubAppAuth("1", pem, "4242", clock=clock)
    async with httpx.AsyncClient() as http:
        client = GitHubGraphQLClient(auth, http_client=http, clock=clock)
        assert await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"}) == {"node": None}
    assert tokens.call_count == 2
    assert graphql.calls[0].request.headers["authorization"] == "Bearer ghs_revoked"
    assert graphql.calls[1].request.headers["authorization"] == "Bearer ghs_new"


@respx.mock
async def test_a_second_401_is_fatal(pem: str) -> None:
    respx.post(TOKEN_URL).mock(return_value=_token_response("ghs_x", NOW + 3600))
    respx.post(f"{API}/graphql").mock(
        return_value=httpx.Response(401, json={"message": "Bad credentials"})
    )
    auth = GitHubAppAuth("1", pem, "4242", clock=Clock())
    async with httpx.AsyncClient() as http:
        client = GitHubGraphQLClient(auth, http_client=http, clock=Clock())
        with pytest.raises(FatalError):
            await client.execute(PROJECT_ITEM_BY_ID, {"id": "x"})
        assert client.requests_made == 2


async def test_app_credentials_end_to_end_against_the_fake(pem: str) -> None:
    project = FakeGitHubProject(owner="acme")
    project.require_auth = True  # only tokens the fake issued are accepted
    project.add_issues(3, status="Done", hours=1.5)
    with serve_fake_github(project) as url:
        config = GitHubBoardConfig(
            board_key="acme",
            owner="acme",
            project_number=1,
            api_url=url,
            rest_api_url=url.removesuffix("/graphql"),
            app_id="123456",
            app_private_key=pem,
            app_installation_id="4242",
        )
        async with GitHubProjectConnector(config) as connector:
            result = await connector.poll(None)
            await connector.poll(None)
    assert len(result.items) == 3
    assert project.installation_tokens_issued == 1
    assert project.requests["unauthorized"] == 0
    assert json.dumps(project.received[0]["variables"])  # variables reached the fake
