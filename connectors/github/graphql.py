"""Async GraphQL client for GitHub: retries, secondary limits and rate-limit pacing.

Error policy (the connector taxonomy from `connectors.base`):

* 5xx, timeouts and transport errors are retried (`connectors.retry`: exponential backoff,
  `max_attempts` in all); when attempts run out the caller gets `RetriableError`.
* 403/429 secondary (or primary) rate limits: wait `retry-after` seconds if given,
  else until `x-ratelimit-reset` when `x-ratelimit-remaining` is 0, else a minute,
  then retry. A wait longer than `max_wait` is not slept through: `RetriableError`
  with `retry_after` goes back to the scheduler instead.
* 401: an App token is dropped and fetched again once; a static token is `FatalError`.
* GraphQL `errors`: `RATE_LIMITED` and GitHub's "something went wrong / timeout"
  errors are retriable; `NOT_FOUND`, `FORBIDDEN`, `INSUFFICIENT_SCOPES` and query
  validation errors are fatal (a person has to fix configuration or permissions).
  `NOT_FOUND` can be tolerated per call (the re-fetch of deleted items).

Pacing: every document selects `rateLimit { cost remaining resetAt }`. Before each
request, when the remaining points are below `low_remaining`, the client spreads the
rest evenly over the time to the reset; when they cannot pay for one more query it
waits for the reset. All waits go through the injectable `sleep`.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from connectors.base import CallObserver, FatalError, RetriableError, call_outcome
from connectors.github.auth import Clock, TokenProvider
from connectors.github.queries import operation_name
from connectors.retry import RetrySchedule, with_retries

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

DEFAULT_GRAPHQL_URL = "https://api.github.com/graphql"
_SECONDARY_LIMIT_DEFAULT_WAIT = 60.0  # GitHub: "wait at least one minute"
_FATAL_ERROR_TYPES = frozenset(
    {"NOT_FOUND", "FORBIDDEN", "INSUFFICIENT_SCOPES", "UNAUTHORIZED", "MAX_NODE_LIMIT_EXCEEDED"}
)
_RETRIABLE_ERROR_TYPES = frozenset({"RATE_LIMITED", "SERVICE_UNAVAILABLE", "INTERNAL", "TIMEOUT"})
_RETRIABLE_MESSAGE_HINTS = ("something went wrong", "timeout", "timed out", "try again")


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """The last known GraphQL rate-limit state (`reset_at` in epoch seconds)."""

    remaining: int
    reset_at: float
    cost: int = 1


class _Transient(Exception):
    """Internal: retry this request (after `retry_after` seconds if set)."""

    def __init__(
        self, message: str, retry_after: float | None = None, *, rate_limited: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.rate_limited = rate_limited


@dataclass(frozen=True, slots=True)
class GraphQLErrorInfo:
    """One entry of a GraphQL response's `errors` list."""

    message: str
    type: str | None
    path: tuple[str | int, ...]


class GitHubGraphQLClient:
    """POSTs `{query, variables}` to GitHub's GraphQL endpoint with a bearer token.

    `requests_made` counts HTTP requests sent (retries included);
    `requests_by_operation` counts them per operation name.
    """

    def __init__(
        self,
        auth: TokenProvider,
        *,
        url: str = DEFAULT_GRAPHQL_URL,
        http_client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_wait: float = 300.0,
        low_remaining: int = 200,
        timeout: float = 30.0,
        user_agent: str = "kanvoice",
        observer: CallObserver | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.url = url
        self._observer = observer
        self._auth = auth
        self._own_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._sleep = sleep
        self._clock = clock
        self._max_attempts = max_attempts
        self._schedule = RetrySchedule(max_attempts, backoff_base, backoff_max)
        self._max_wait = max_wait
        self._low_remaining = low_remaining
        self._timeout = timeout
        self._user_agent = user_agent
        self.requests_made = 0
        self.requests_by_operation: Counter[str] = Counter()
        self.rate_limit: RateLimitInfo | None = None
        #: The points per hour (``x-ratelimit-limit``) once a response said.
        self.rate_limit_limit: float | None = None
        #: Seconds spent waiting because of rate limits (pacing and secondary limits).
        self.rate_limit_wait_seconds = 0.0
        self._pending_rate_wait = 0.0

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._own_http:
            await self._http.aclose()

    async def execute(
        self,
        document: str,
        variables: Mapping[str, Any] | None = None,
        *,
        tolerate_not_found: bool = False,
    ) -> dict[str, Any]:
        """Run one document; return its `data`. Raises RetriableError or FatalError.

        With `tolerate_not_found`, `NOT_FOUND` errors (a deleted node in `nodes(ids:)`)
        are dropped and the (partial) data returned.
        """
        op = operation_name(document) or "anonymous"
        payload: dict[str, Any] = {"query": document, "variables": dict(variables or {})}
        if op != "anonymous":
            payload["operationName"] = op
        auth_retry = [True]
        try:
            return await with_retries(
                lambda: self._send(op, payload, tolerate_not_found, auth_retry),
                schedule=self._schedule,
                retry_on=lambda exc: isinstance(exc, _Transient),
                sleep=self._sleep_for_retry,
                before_sleep=self._note_retry_wait,
            )
        except _Transient as exc:
            raise RetriableError(
                f"GitHub GraphQL {op} failed after {self._max_attempts} attempts: {exc}",
                retry_after=exc.retry_after,
            ) from exc

    def _note_retry_wait(self, exc: Exception, seconds: float) -> None:
        """A wait GitHub asked for (rate limits) is counted apart from plain backoff."""
        limited = isinstance(exc, _Transient) and exc.rate_limited and exc.retry_after is not None
        self._pending_rate_wait = seconds if limited else 0.0

    async def _sleep_for_retry(self, seconds: float) -> None:
        if self._pending_rate_wait > 0:
            # We wait as GitHub told us; the stale numbers must not add a second wait.
            self.rate_limit_wait_seconds += self._pending_rate_wait
            self.rate_limit = None
        self._pending_rate_wait = 0.0
        if seconds > 0:
            await self._sleep(seconds)

    async def _pace(self) -> None:
        info = self.rate_limit
        if info is None:
            return
        now = self._clock()
        until_reset = info.reset_at - now
        if until_reset <= 0:
            self.rate_limit = None
            return
        cost = max(info.cost, 1)
        if info.remaining >= self._low_remaining and info.remaining >= cost:
            return
        if info.remaining < cost:
            delay = until_reset + 1.0
            reason = "exhausted"
        else:
            delay = until_reset / (info.remaining // cost + 1)
            reason = "low"
        if delay > self._max_wait:
            raise RetriableError(
                f"GitHub GraphQL rate limit {reason} ({info.remaining} points left); "
                f"resets in {math.ceil(until_reset)} s",
                retry_after=until_reset,
            )
        log.warning(
            "github rate limit %s: %d points left, waiting %.1f s",
            reason,
            info.remaining,
            delay,
        )
        self.rate_limit_wait_seconds += delay
        await self._sleep(delay)
        if reason == "exhausted":
            self.rate_limit = None

    async def _send(
        self,
        op: str,
        payload: Mapping[str, Any],
        tolerate_not_found: bool,
        auth_retry: list[bool],
    ) -> dict[str, Any]:
        await self._pace()
        token = await self._auth.token()
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "User-Agent": self._user_agent,
        }
        self.requests_made += 1
        self.requests_by_operation[op] += 1
        try:
            data = await self._post(op, payload, headers, tolerate_not_found, auth_retry)
        except Exception as exc:
            self._observe(exc)
            raise
        self._observe(None)
        return data

    def _observe(self, error: Exception | None) -> None:
        if self._observer is not None:
            self._observer("github", call_outcome(error))

    async def _post(
        self,
        op: str,
        payload: Mapping[str, Any],
        headers: Mapping[str, str],
        tolerate_not_found: bool,
        auth_retry: list[bool],
    ) -> dict[str, Any]:
        try:
            response = await self._http.post(
                self.url, json=payload, headers=headers, timeout=self._timeout
            )
        except httpx.TimeoutException as exc:
            raise _Transient(f"timeout ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _Transient(f"transport error ({type(exc).__name__})") from exc

        self._note_rate_limit_headers(response.headers)
        status = response.status_code
        if status == 401:
            if auth_retry[0] and self._auth.invalidate():
                auth_retry[0] = False
                raise _Transient("token rejected (401); fetched a new one", retry_after=0.0)
            raise FatalError(
                "GitHub rejected the credentials (HTTP 401 Bad credentials); "
                "check the token or GitHub App settings"
            )
        if status in (403, 429):
            wait = self._rate_limit_wait(response)
            if wait is not None:
                self._raise_wait(f"rate limited (HTTP {status})", wait)
            raise FatalError(f"GitHub refused the request (HTTP {status}): {_message(response)}")
        if status >= 500:
            hinted = _retry_after(response, self._clock)
            if hinted is not None and hinted > self._max_wait:
                hinted = None
            raise _Transient(f"HTTP {status}", retry_after=hinted)
        if status >= 400:
            raise FatalError(f"GitHub answered HTTP {status}: {_message(response)}")

        try:
            body = response.json()
        except ValueError as exc:
            raise _Transient(f"HTTP {status} with a body that is not JSON") from exc
        if not isinstance(body, dict):
            raise _Transient("response is not a JSON object")
        data = body.get("data")
        if isinstance(data, dict):
            self._note_rate_limit_body(data.get("rateLimit"))
        errors = _errors(body.get("errors"))
        if errors:
            self._raise_for_errors(op, errors, tolerate_not_found, response)
        if not isinstance(data, dict):
            raise _Transient("response carries no data")
        return data

    def _raise_wait(self, what: str, wait: float) -> None:
        if wait > self._max_wait:
            raise RetriableError(f"GitHub {what}; retry in {math.ceil(wait)} s", retry_after=wait)
        log.warning("github %s; waiting %.1f s", what, wait)
        raise _Transient(what, retry_after=wait, rate_limited=True)

    def _rate_limit_wait(self, response: httpx.Response) -> float | None:
        """Seconds to wait if a 403/429 is a rate limit; None if it is a refusal."""
        retry_after = _retry_after(response, self._clock)
        if retry_after is not None:
            return retry_after
        remaining = response.headers.get("x-ratelimit-remaining")
        reset = _float(response.headers.get("x-ratelimit-reset"))
        if remaining == "0" and reset is not None:
            return max(reset - self._clock(), 0.0) + 1.0
        text = response.text.lower()
        if response.status_code == 429 or "rate limit" in text or "RATE_LIMITED" in response.text:
            return _SECONDARY_LIMIT_DEFAULT_WAIT
        return None

    def _raise_for_errors(
        self,
        op: str,
        errors: Sequence[GraphQLErrorInfo],
        tolerate_not_found: bool,
        response: httpx.Response,
    ) -> None:
        remaining = [e for e in errors if not (tolerate_not_found and e.type == "NOT_FOUND")]
        if not remaining:
            return
        summary = "; ".join(f"{e.type or 'error'}: {e.message}" for e in remaining[:3])
        if any(e.type == "RATE_LIMITED" for e in remaining):
            wait = self._rate_limit_wait(response)
            if wait is None and self.rate_limit is not None:
                wait = max(self.rate_limit.reset_at - self._clock(), 0.0) + 1.0
            self._raise_wait("GraphQL rate limit exceeded", wait or _SECONDARY_LIMIT_DEFAULT_WAIT)
        if any(e.type in _FATAL_ERROR_TYPES for e in remaining):
            raise FatalError(f"GitHub GraphQL {op}: {summary}")
        if all(_retriable(e) for e in remaining):
            raise _Transient(summary)
        raise FatalError(f"GitHub GraphQL {op}: {summary}")

    def _note_rate_limit_headers(self, headers: httpx.Headers) -> None:
        if headers.get("x-ratelimit-resource", "graphql") != "graphql":
            return
        limit = _float(headers.get("x-ratelimit-limit"))
        if limit is not None:
            self.rate_limit_limit = limit
        remaining = _float(headers.get("x-ratelimit-remaining"))
        reset = _float(headers.get("x-ratelimit-reset"))
        if remaining is None or reset is None:
            return
        cost = self.rate_limit.cost if self.rate_limit is not None else 1
        self.rate_limit = RateLimitInfo(remaining=int(remaining), reset_at=reset, cost=cost)

    def _note_rate_limit_body(self, value: Any) -> None:
        if not isinstance(value, dict):
            return
        try:
            reset = datetime.fromisoformat(str(value["resetAt"]).replace("Z", "+00:00"))
            self.rate_limit = RateLimitInfo(
                remaining=int(value["remaining"]),
                reset_at=reset.timestamp(),
                cost=int(value.get("cost") or 1),
            )
        except (KeyError, TypeError, ValueError):
            log.debug("github rateLimit block not understood: %r", value)


def _retriable(error: GraphQLErrorInfo) -> bool:
    if error.type in _RETRIABLE_ERROR_TYPES:
        return True
    if error.type is None:
        message = error.message.lower()
        return any(hint in message for hint in _RETRIABLE_MESSAGE_HINTS)
    return False


def _errors(value: Any) -> list[GraphQLErrorInfo]:
    if not isinstance(value, list):
        return []
    out: list[GraphQLErrorInfo] = []
    for entry in value:
        if not isinstance(entry, dict):
            out.append(GraphQLErrorInfo(message=str(entry), type=None, path=()))
            continue
        raw_type = entry.get("type")
        if raw_type is None and isinstance(entry.get("extensions"), dict):
            code = entry["extensions"].get("code")
            # Query validation errors carry extensions.code: a bug, not a blip.
            raw_type = "INVALID_QUERY" if code else None
        path = entry.get("path")
        out.append(
            GraphQLErrorInfo(
                message=str(entry.get("message", "")),
                type=str(raw_type) if raw_type is not None else None,
                path=tuple(p for p in path if isinstance(p, str | int))
                if isinstance(path, list)
                else (),
            )
        )
    return out


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _retry_after(response: httpx.Response, clock: Clock) -> float | None:
    """`retry-after` in seconds (delta-seconds or an HTTP date), None if absent."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    seconds = _float(value.strip())
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - clock(), 0.0)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return (response.text[:200] or response.reason_phrase).strip()
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])[:200]
    return response.reason_phrase
