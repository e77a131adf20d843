"""`SlackApprovals`: the Slack Web API calls an approval needs, with bounded retries.

Built on `slack_sdk.web.async_client.AsyncWebClient` (``base_url`` points it at a
fake in tests). Failures surface as the connector taxonomy of `connectors.base`:

- `SlackUnavailable` (a `RetriableError`): Slack down, timed out, 5xx, 429 (with
  ``retry_after`` from ``Retry-After``) after the retries of `RetryPolicy` ran out;
  the outbox tries again later, nothing blocks ingest, drafts stay unfinalized.
- `SlackCallFailed` (a `FatalError`): Slack answered ``ok: false`` with an error a
  retry will not fix (``invalid_auth``, ``channel_not_found``, ``expired_trigger_id``…);
  ``error`` holds Slack's code.

Every call is bounded: at most ``1 + max_retries`` HTTP attempts, each limited by
``timeout``, and the whole call (waits included) by ``deadline``. A ``Retry-After``
longer than ``max_retry_after`` is not waited for: the call fails at once with
``retry_after`` set so the caller can schedule the retry.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.http_retry.interval_calculator import RetryIntervalCalculator
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.models.blocks import Block
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from connectors.base import CallObserver, FatalError, RetriableError, call_outcome
from connectors.retry import retry_after_from
from connectors.slack import messages
from connectors.slack.model import DraftSummary, Outcome
from mapping.digest import Digest

if TYPE_CHECKING:
    from connectors.slack.port import SlackPort

SLACK_API_URL = "https://slack.com/api/"

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

# ok:false codes that mean "try again later" rather than "a person must act".
_RETRIABLE_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
_AUTH_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "not_allowed_token_type",
        "team_access_not_granted",
    }
)
_SERVER_ERRORS = frozenset({500, 502, 503, 504})


class SlackUnavailable(RetriableError):
    """Slack could not be reached or asked us to wait; the same call may succeed later."""

    def __init__(
        self, method: str, message: str, retry_after: float | None = None, error: str = ""
    ) -> None:
        super().__init__(f"Slack {method}: {message}", retry_after=retry_after)
        self.method = method
        self.error = error


class SlackCallFailed(FatalError):
    """Slack answered ``ok: false`` with `error`; retrying the same call will not help."""

    def __init__(self, method: str, error: str, needed: str | None = None) -> None:
        hint = f" (needs scope {needed})" if needed else ""
        super().__init__(f"Slack {method} failed: {error}{hint}")
        self.method = method
        self.error = error
        self.needed = needed

    @property
    def is_auth_error(self) -> bool:
        """The token is wrong, revoked or lacks a scope: check-config should say so."""
        return self.error in _AUTH_ERRORS


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one Slack call before giving up with `SlackUnavailable`.

    ``max_retries`` extra attempts after the first (for 429, 5xx and connection
    errors); 5xx / connection waits grow as ``backoff * 2**n`` (jittered, at most
    ``max_backoff``); 429 waits ``Retry-After * retry_after_scale`` when
    ``Retry-After <= max_retry_after``. ``timeout`` bounds each HTTP attempt and
    ``deadline`` the whole call. Tests shrink ``backoff`` and ``retry_after_scale``.
    """

    max_retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 30.0
    retry_after_scale: float = 1.0
    timeout: float = 10.0
    deadline: float = 60.0


@dataclass(frozen=True, slots=True)
class SlackIdentity:
    """Who the bot token belongs to (``auth.test``), for check-config and logs."""

    team: str
    team_id: str
    user: str
    user_id: str
    bot_id: str | None
    url: str


def retry_after_seconds(headers: Mapping[str, Any] | None) -> float | None:
    """``Retry-After`` in seconds (aiohttp / slack_sdk header shapes), or None."""
    return retry_after_from(headers)


class _Backoff(RetryIntervalCalculator):
    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def calculate_sleep_duration(self, current_attempt: int) -> float:
        interval = min(self.policy.backoff * (2**current_attempt), self.policy.max_backoff)
        return float(interval) * random.uniform(0.5, 1.0)


class _RateLimitHandler(AsyncRetryHandler):
    """429: wait what ``Retry-After`` says (scaled), unless that is longer than allowed."""

    def __init__(self, policy: RetryPolicy, sleep: Sleep) -> None:
        super().__init__(max_retry_count=policy.max_retries, interval_calculator=_Backoff(policy))
        self.policy = policy
        self.sleep = sleep

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = retry_after_seconds(response.headers)
        return wait is None or wait <= self.policy.max_retry_after

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        state.next_attempt_requested = True
        wait = retry_after_seconds(response.headers if response else None)
        if wait is None:
            wait = self.interval_calculator.calculate_sleep_duration(state.current_attempt)
        await self.sleep(wait * self.policy.retry_after_scale)
        state.increment_current_attempt()


class _ServerErrorHandler(AsyncRetryHandler):
    """500 / 502 / 503 / 504: exponential backoff with jitter."""

    def __init__(self, policy: RetryPolicy, sleep: Sleep) -> None:
        super().__init__(max_retry_count=policy.max_retries, interval_calculator=_Backoff(policy))
        self.sleep = sleep

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code in _SERVER_ERRORS

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        state.next_attempt_requested = True
        await self.sleep(self.interval_calculator.calculate_sleep_duration(state.current_attempt))
        state.increment_current_attempt()


def retry_handlers(policy: RetryPolicy, sleep: Sleep = asyncio.sleep) -> list[AsyncRetryHandler]:
    """slack_sdk retry handlers implementing `policy` (429, 5xx, connection errors)."""
    return [
        _RateLimitHandler(policy, sleep),
        _ServerErrorHandler(policy, sleep),
        AsyncConnectionErrorRetryHandler(
            max_retry_count=policy.max_retries, interval_calculator=_Backoff(policy)
        ),
    ]


class _Counted(AsyncRetryHandler):
    """One of the retry handlers, telling `on_retry` of each failed attempt it retries
    (slack_sdk retries inside one API call; each attempt is a call to Slack)."""

    def __init__(self, inner: AsyncRetryHandler, on_retry: Callable[[], None]) -> None:
        super().__init__(
            max_retry_count=inner.max_retry_count, interval_calculator=inner.interval_calculator
        )
        self.inner = inner
        self.on_retry = on_retry

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return await self.inner.can_retry_async(
            state=state, request=request, response=response, error=error
        )

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        self.on_retry()
        await self.inner.prepare_for_next_attempt_async(
            state=state, request=request, response=response, error=error
        )


def _translate(method: str, exc: SlackApiError) -> Exception:
    response = exc.response
    status = int(getattr(response, "status_code", 0) or 0)
    data = getattr(response, "data", None)
    error = str(data.get("error", "")) if isinstance(data, Mapping) else ""
    if status == 429 or error == "ratelimited":
        retry_after = retry_after_seconds(getattr(response, "headers", None))
        return SlackUnavailable(method, "rate limited (429)", retry_after, error or "ratelimited")
    if status >= 500 or error in _RETRIABLE_ERRORS:
        return SlackUnavailable(method, f"server error {status} {error}".strip(), error=error)
    if error:
        needed = data.get("needed") if isinstance(data, Mapping) else None
        return SlackCallFailed(method, error, needed if isinstance(needed, str) else None)
    return SlackUnavailable(method, f"unexpected HTTP {status}")


class SlackApprovals:
    """The Slack side of approvals: post, update, re-post, ephemeral, modals, approvers.

    One instance per bot token; safe to share between tasks. ``base_url`` must end
    in ``/api/`` (the fake's runner yields such a URL). ``clock`` (monotonic
    seconds) and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        token: str,
        *,
        base_url: str = SLACK_API_URL,
        retry: RetryPolicy | None = None,
        group_cache_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        observer: CallObserver | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._observer = observer
        self._handlers: list[AsyncRetryHandler] = [
            _Counted(handler, lambda: self._observe(RetriableError("retried")))
            for handler in retry_handlers(self.retry, sleep)
        ]
        self.web = AsyncWebClient(
            token=token,
            base_url=base_url,
            timeout=max(1, math.ceil(self.retry.timeout)),
            retry_handlers=self._handlers,
        )
        self.group_cache_ttl = group_cache_ttl
        self._clock = clock
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._group_lock = asyncio.Lock()

    async def _call(
        self,
        method: str,
        call: Callable[[], Awaitable[AsyncSlackResponse]],
        deadline: float | None = None,
    ) -> AsyncSlackResponse:
        limit = self.retry.deadline if deadline is None else min(deadline, self.retry.deadline)
        try:
            try:
                async with asyncio.timeout(limit):
                    response = await call()
            except SlackApiError as exc:
                raise _translate(method, exc) from exc
            except TimeoutError as exc:
                raise SlackUnavailable(method, f"no answer within {limit:g} s") from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise SlackUnavailable(method, f"connection failed: {exc!r}") from exc
        except Exception as exc:
            self._observe(exc)
            raise
        self._observe(None)
        return response

    def _observe(self, error: Exception | None) -> None:
        if self._observer is not None:
            self._observer("slack", call_outcome(error))

    # ---- identity -------------------------------------------------------------------

    async def auth_test(self) -> SlackIdentity:
        """``auth.test``: is the token valid, and for which workspace and bot user."""
        resp = await self._call("auth.test", lambda: self.web.auth_test())
        return SlackIdentity(
            team=str(resp.get("team", "")),
            team_id=str(resp.get("team_id", "")),
            user=str(resp.get("user", "")),
            user_id=str(resp.get("user_id", "")),
            bot_id=resp.get("bot_id"),
            url=str(resp.get("url", "")),
        )

    # ---- messages -------------------------------------------------------------------

    async def _post(self, channel: str, text: str, blocks: Sequence[Block]) -> tuple[str, str]:
        """``chat.postMessage`` without link unfurls; returns Slack's (channel id, ts)."""
        resp = await self._call(
            "chat.postMessage",
            lambda: self.web.chat_postMessage(
                channel=channel, text=text, blocks=blocks, unfurl_links=False, unfurl_media=False
            ),
        )
        return str(resp["channel"]), str(resp["ts"])

    async def post_draft(self, channel: str, summary: DraftSummary) -> tuple[str, str]:
        """Post the approval message; returns Slack's (channel id, message ts)."""
        return await self._post(
            channel, messages.approval_text(summary), messages.approval_blocks(summary)
        )

    async def post_alert(
        self, channel: str, text: str, over: bool, client_name: str
    ) -> tuple[str, str]:
        """Post a budget alert; returns Slack's (channel id, message ts)."""
        return await self._post(
            channel,
            messages.budget_alert_text(text, over),
            messages.budget_alert_blocks(text, over, client_name),
        )

    async def post_digest(self, channel: str, digest: Digest) -> tuple[str, str]:
        """Post the finance digest; returns Slack's (channel id, message ts)."""
        return await self._post(
            channel, messages.digest_text(digest), messages.digest_blocks(digest)
        )

    async def update_decided(
        self,
        channel: str,
        ts: str,
        summary: DraftSummary,
        outcome: Outcome,
        user: str,
        at: datetime,
        reason: str | None = None,
    ) -> None:
        """Replace the approval message with who decided, when and what (no buttons)."""
        await self._call(
            "chat.update",
            lambda: self.web.chat_update(
                channel=channel,
                ts=ts,
                text=messages.decided_text(summary, outcome, user, at),
                blocks=messages.decided_blocks(summary, outcome, user, at, reason),
            ),
        )

    async def repost_draft(
        self,
        channel: str,
        ts: str,
        summary: DraftSummary,
        user: str,
        at: datetime,
        previous: DraftSummary | None = None,
    ) -> tuple[str, str]:
        """After an adjustment: mark the old message adjusted, then post `summary` anew.

        The update comes first so a retry after a failed post repeats only the
        (idempotent) update. `previous` renders the old message with the old figures;
        without it the new ones are shown. Returns the new (channel id, ts).
        """
        await self.update_decided(channel, ts, previous or summary, "adjusted", user, at)
        return await self.post_draft(channel, summary)

    async def post_ephemeral(self, channel: str, user: str, text: str) -> None:
        """A message only `user` sees in `channel` (refusals, stale clicks)."""
        await self._call(
            "chat.postEphemeral",
            lambda: self.web.chat_postEphemeral(channel=channel, user=user, text=text),
        )

    async def respond(
        self,
        response_url: str,
        text: str,
        *,
        ephemeral: bool = True,
        replace_original: bool = False,
    ) -> None:
        """Answer through an interaction's ``response_url`` (works outside channels too)."""
        try:
            await self._respond(response_url, text, ephemeral, replace_original)
        except Exception as exc:
            self._observe(exc)
            raise
        self._observe(None)

    async def _respond(
        self, response_url: str, text: str, ephemeral: bool, replace_original: bool
    ) -> None:
        client = AsyncWebhookClient(
            url=response_url,
            timeout=max(1, math.ceil(self.retry.timeout)),
            retry_handlers=self._handlers,
        )
        method = "response_url"
        try:
            async with asyncio.timeout(self.retry.deadline):
                resp = await client.send(
                    text=text,
                    response_type="ephemeral" if ephemeral else "in_channel",
                    replace_original=replace_original,
                )
        except TimeoutError as exc:
            raise SlackUnavailable(method, "no answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise SlackUnavailable(method, f"connection failed: {exc!r}") from exc
        if resp.status_code == 429:
            retry_after = retry_after_seconds(resp.headers)
            raise SlackUnavailable(method, "rate limited (429)", retry_after, "ratelimited")
        if resp.status_code >= 500:
            raise SlackUnavailable(method, f"server error {resp.status_code}")
        if resp.status_code != 200:
            raise SlackCallFailed(method, (resp.body or f"HTTP {resp.status_code}").strip())

    # ---- modals ---------------------------------------------------------------------

    async def open_adjust_modal(
        self,
        trigger_id: str,
        summary: DraftSummary,
        channel_id: str | None = None,
        message_ts: str | None = None,
    ) -> str:
        """``views.open`` the Adjust modal; returns the view id.

        A trigger id expires 3 s after the click, so this call gives up after 2.5 s.
        """
        view = messages.adjust_modal(summary, channel_id, message_ts)
        resp = await self._call(
            "views.open",
            lambda: self.web.views_open(trigger_id=trigger_id, view=view),
            deadline=2.5,
        )
        return str(resp["view"]["id"])

    async def open_reject_modal(
        self,
        trigger_id: str,
        summary: DraftSummary,
        channel_id: str | None = None,
        message_ts: str | None = None,
    ) -> str:
        """``views.open`` the reject-reason modal; returns the view id (2.5 s budget)."""
        view = messages.reject_modal(summary, channel_id, message_ts)
        resp = await self._call(
            "views.open",
            lambda: self.web.views_open(trigger_id=trigger_id, view=view),
            deadline=2.5,
        )
        return str(resp["view"]["id"])

    # ---- approvers ------------------------------------------------------------------

    async def group_members(self, group_id: str) -> frozenset[str]:
        """Members of a user group (``usergroups.users.list``), cached `group_cache_ttl` s."""
        async with self._group_lock:
            cached = self._groups.get(group_id)
            now = self._clock()
            if cached and cached[0] > now:
                return cached[1]
            resp = await self._call(
                "usergroups.users.list",
                lambda: self.web.usergroups_users_list(usergroup=group_id),
            )
            users = resp.get("users") or []
            members = frozenset(str(u) for u in users if isinstance(u, str))
            self._groups[group_id] = (now + self.group_cache_ttl, members)
            return members

    async def is_approver(
        self, user_id: str, approvers: Iterable[str], group_id: str | None
    ) -> bool:
        """True if `user_id` is listed in `approvers` or is a member of `group_id`.

        The list is checked first (no call). Raises `SlackUnavailable` /
        `SlackCallFailed` when the group cannot be read: callers must then refuse.
        """
        if user_id in set(approvers):
            return True
        if not group_id:
            return False
        return user_id in await self.group_members(group_id)

    def forget_groups(self) -> None:
        """Drop cached group memberships (after a config reload)."""
        self._groups.clear()


if TYPE_CHECKING:  # mypy: the real adapter satisfies the port
    _port: type[SlackPort] = SlackApprovals
