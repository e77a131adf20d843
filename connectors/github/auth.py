"""Credentials for GitHub's GraphQL API: a classic/fine-grained token or a GitHub App.

A GitHub App authenticates in two steps: a short-lived JWT signed with the App's
private key (RS256, `iss` = App id, `iat` 60 s in the past against clock drift,
`exp` at most 10 minutes ahead) buys an installation access token from
`POST /app/installations/{id}/access_tokens`; that token lasts an hour. The token
is cached and replaced `refresh_margin` seconds before it expires, so a request
never goes out with a token about to lapse.

Secrets never appear in `repr()`, log lines or exception messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import httpx
import jwt

from connectors.base import CallObserver, FatalError, RetriableError, call_outcome

log = logging.getLogger(__name__)

Clock = Callable[[], float]

DEFAULT_REST_API_URL = "https://api.github.com"
_JWT_BACKDATE_SECONDS = 60
_JWT_LIFETIME_SECONDS = 9 * 60  # GitHub allows at most 10 minutes


class TokenProvider(Protocol):
    """Supplies the bearer token for each request."""

    async def token(self) -> str:
        """A token valid for at least the next few minutes."""
        ...

    def invalidate(self) -> bool:
        """Forget the current token after a 401; True if a new one can be obtained."""
        ...


class StaticToken:
    """A personal access token (classic or fine-grained); it cannot be refreshed."""

    def __init__(self, token: str) -> None:
        if not token or not token.strip():
            raise ValueError("GitHub token is empty")
        self._token = token.strip()

    def __repr__(self) -> str:
        return "StaticToken(<redacted>)"

    async def token(self) -> str:
        return self._token

    def invalidate(self) -> bool:
        return False


class GitHubAppAuth:
    """GitHub App installation auth: JWT → installation token, refreshed before expiry.

    `http_client` is used for the token endpoint only (the caller owns it); without
    one, a private client is created per refresh. `clock` returns epoch seconds.
    """

    def __init__(
        self,
        app_id: str | int,
        private_key: str,
        installation_id: str | int,
        *,
        api_url: str = DEFAULT_REST_API_URL,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock = time.time,
        refresh_margin: float = 300.0,
        timeout: float = 30.0,
        observer: CallObserver | None = None,
    ) -> None:
        self._observer = observer
        if not str(app_id).strip():
            raise ValueError("GitHub App id is empty")
        if not str(installation_id).strip():
            raise ValueError("GitHub App installation id is empty")
        if "PRIVATE KEY" not in private_key:
            raise ValueError("GitHub App private key is not a PEM private key")
        self.app_id = str(app_id).strip()
        self.installation_id = str(installation_id).strip()
        self._private_key = private_key
        self._api_url = api_url.rstrip("/")
        self._http = http_client
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._timeout = timeout
        self._token: str | None = None
        self._expires_at: float = 0.0
        self._lock = asyncio.Lock()
        #: Installation-token requests made (each one is a refresh).
        self.refreshes = 0

    def __repr__(self) -> str:
        return (
            f"GitHubAppAuth(app_id={self.app_id!r}, installation_id={self.installation_id!r}, "
            "private_key=<redacted>)"
        )

    @property
    def expires_at(self) -> float:
        """Epoch seconds at which the cached installation token expires (0: none)."""
        return self._expires_at

    def app_jwt(self) -> str:
        """A fresh JWT identifying the App (valid 9 minutes, backdated 60 seconds)."""
        now = int(self._clock())
        claims = {
            "iat": now - _JWT_BACKDATE_SECONDS,
            "exp": now + _JWT_LIFETIME_SECONDS,
            "iss": self.app_id,
        }
        try:
            return jwt.encode(claims, self._private_key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise FatalError(
                "GitHub App private key cannot sign a JWT (expected an RSA PEM key)"
            ) from exc

    def _fresh(self) -> bool:
        return self._token is not None and self._expires_at - self._clock() > self._refresh_margin

    async def token(self) -> str:
        if self._fresh():
            assert self._token is not None
            return self._token
        async with self._lock:
            if not self._fresh():
                await self._refresh()
            assert self._token is not None
            return self._token

    def invalidate(self) -> bool:
        self._token = None
        self._expires_at = 0.0
        return True

    async def _refresh(self) -> None:
        try:
            await self._request_token()
        except Exception as exc:
            self._observe(exc)
            raise
        self._observe(None)

    def _observe(self, error: Exception | None) -> None:
        if self._observer is not None:
            self._observer("github", call_outcome(error))

    async def _request_token(self) -> None:
        url = f"{self._api_url}/app/installations/{self.installation_id}/access_tokens"
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self.app_jwt()}",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "kanvoice",
        }
        self.refreshes += 1
        try:
            if self._http is not None:
                response = await self._http.post(url, headers=headers, timeout=self._timeout)
            else:
                async with httpx.AsyncClient(timeout=self._timeout) as client:
                    response = await client.post(url, headers=headers)
        except httpx.HTTPError as exc:
            raise RetriableError(f"GitHub App token request failed: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise RetriableError(
                f"GitHub App token request failed with HTTP {response.status_code}"
            )
        if response.status_code in (403, 429) and "retry-after" in response.headers:
            raise RetriableError(
                "GitHub App token request was rate limited",
                retry_after=_float_or_none(response.headers.get("retry-after")),
            )
        if response.status_code != 201 and response.status_code != 200:
            raise FatalError(
                f"GitHub refused an installation token for App {self.app_id} installation "
                f"{self.installation_id} (HTTP {response.status_code}: "
                f"{_message(response)}); check the App id, private key and installation id"
            )
        try:
            body = response.json()
            token = body["token"]
            expires_at = _parse_time(body["expires_at"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RetriableError("GitHub App token response is not understood") from exc
        if not isinstance(token, str) or not token:
            raise RetriableError("GitHub App token response carries no token")
        self._token = token
        self._expires_at = expires_at
        log.info(
            "github app installation token refreshed",
            extra={"app_id": self.app_id, "installation_id": self.installation_id},
        )


def _parse_time(value: Any) -> float:
    if not isinstance(value, str):
        raise TypeError("expires_at is not a string")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("expires_at has no time zone")
    return parsed.timestamp()


def _float_or_none(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "no message"
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])[:200]
    return response.reason_phrase or "no message"
