"""A small async client for the Azure DevOps work item tracking REST API (api-version 7.1).

Only what the connector needs: WIQL, the work items batch, a work item's updates, a
work item type's states, a single work item and the reporting revisions stream. Every call carries
``api-version=7.1`` and the personal access token as basic auth (empty user name).

Throttling: 429 and 503 wait for ``Retry-After`` (or back off) and try again; a
response carrying ``Retry-After`` / ``X-RateLimit-Delay`` or a low
``X-RateLimit-Remaining`` slows the next request down. Other 5xx answers, timeouts
and connection errors are retried with exponential backoff (`connectors.retry`). All waiting
goes through an injectable `sleep` so tests never wait. When the attempts run out
the call raises `RetriableError`; 401/403 (or a redirect to the sign-in page) raise
`FatalError` naming the board and the permission it needs.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import quote

import httpx

from connectors.azure_devops.config import AzureBoardConfig
from connectors.base import (
    CallObserver,
    FatalError,
    QuotaObservation,
    RetriableError,
    call_outcome,
)
from connectors.retry import RetrySchedule, with_retries

log = logging.getLogger(__name__)

API_VERSION = "7.1"
BATCH_LIMIT = 200  # workitemsbatch accepts at most 200 ids per call
UPDATES_PAGE = 200  # updates are paged with $top / $skip
REVISIONS_PAGE = 200  # revisions asked for per reporting batch ($maxPageSize)

SleepFn = Callable[[float], Awaitable[None]]
JSON = dict[str, Any]


class _Transient(Exception):
    """One failed attempt that may succeed if repeated."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _header_seconds(headers: httpx.Headers, name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None  # an HTTP-date Retry-After: not sent by Azure DevOps; use backoff
    if value != value or value < 0:  # NaN or negative
        return None
    return value


class AzureDevOpsClient:
    """Async REST client for one board's project, with retries and request counting.

    `request_counts` counts HTTP requests actually sent (retries included) by kind:
    ``wiql``, ``batch``, ``updates``, ``states``, ``work_item``, ``revisions``.
    """

    def __init__(
        self,
        config: AzureBoardConfig,
        *,
        http: httpx.AsyncClient | None = None,
        sleep: SleepFn = asyncio.sleep,
        max_attempts: int = 4,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 120.0,
        low_remaining_fraction: float = 0.1,
        low_remaining_pause: float = 1.0,
        observer: CallObserver | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.config = config
        self._observer = observer
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_seconds), follow_redirects=False
        )
        self._sleep = sleep
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_retry_after = max_retry_after
        self._schedule = RetrySchedule(
            max_attempts, backoff_initial, backoff_max, max_hint=max_retry_after
        )
        self._low_remaining_fraction = low_remaining_fraction
        self._low_remaining_pause = low_remaining_pause
        token = base64.b64encode(f":{config.pat}".encode()).decode("ascii")
        self._auth_header = f"Basic {token}"
        self._pending_pause = 0.0
        self.request_counts: Counter[str] = Counter()
        self.last_as_of: str | None = None  # the server time of the last WIQL answer
        self.throttle_pauses: list[float] = []
        #: The last rate-limit headers Azure DevOps sent (on any status), if any.
        self.quota: QuotaObservation | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the underlying HTTP client if this object created it."""
        if self._owns_http:
            await self._http.aclose()

    @property
    def requests_made(self) -> int:
        """Total HTTP requests sent so far (all kinds, retries included)."""
        return sum(self.request_counts.values())

    # -- endpoints -----------------------------------------------------------------

    async def query_ids(self, wiql: str, *, top: int | None = None) -> list[int]:
        """Run a flat WIQL query; the ids of the matching work items, in query order."""
        cfg = self.config
        base = cfg.project_url
        if cfg.team:
            base = f"{base}/{quote(cfg.team, safe='')}"
        params: dict[str, str] = {"timePrecision": "true"}
        if top is not None:
            params["$top"] = str(top)
        data = await self._request(
            "wiql", "POST", f"{base}/_apis/wit/wiql", params=params, json={"query": wiql}
        )
        as_of = data.get("asOf")
        self.last_as_of = as_of if isinstance(as_of, str) else None
        refs = data.get("workItems")
        if not isinstance(refs, list):
            raise RetriableError(
                f"Azure DevOps board {cfg.board_key!r}: WIQL answer has no 'workItems' list"
            )
        ids: list[int] = []
        for ref in refs:
            if isinstance(ref, dict) and isinstance(ref.get("id"), int):
                ids.append(ref["id"])
        return ids

    async def get_work_items_batch(self, ids: Sequence[int], fields: Sequence[str]) -> list[JSON]:
        """Fields of the given work items, in calls of at most 200 ids.

        Missing (deleted or unreadable) items are left out (``errorPolicy: omit``).
        """
        items: list[JSON] = []
        for start in range(0, len(ids), BATCH_LIMIT):
            chunk = list(ids[start : start + BATCH_LIMIT])
            data = await self._request(
                "batch",
                "POST",
                f"{self.config.project_url}/_apis/wit/workitemsbatch",
                json={"ids": chunk, "fields": list(fields), "errorPolicy": "omit"},
            )
            value = data.get("value")
            if not isinstance(value, list):
                raise RetriableError(
                    f"Azure DevOps board {self.config.board_key!r}: work items batch answer "
                    "has no 'value' list"
                )
            items.extend(v for v in value if isinstance(v, dict))
        return items

    async def get_updates(self, work_item_id: int) -> list[JSON]:
        """Every update (field deltas per revision) of one work item, oldest first."""
        updates: list[JSON] = []
        skip = 0
        while True:
            data = await self._request(
                "updates",
                "GET",
                f"{self.config.project_url}/_apis/wit/workItems/{work_item_id}/updates",
                params={"$top": str(UPDATES_PAGE), "$skip": str(skip)},
            )
            value = data.get("value")
            if not isinstance(value, list):
                raise RetriableError(
                    f"Azure DevOps board {self.config.board_key!r}: updates of work item "
                    f"{work_item_id} have no 'value' list"
                )
            page = [v for v in value if isinstance(v, dict)]
            updates.extend(page)
            if len(value) < UPDATES_PAGE:
                return updates
            skip += len(value)

    async def read_revisions(
        self,
        fields: Sequence[str],
        *,
        continuation_token: str | None = None,
        start: str | None = None,
    ) -> tuple[list[JSON], str | None, bool]:
        """One batch of the project's reporting revisions stream
        (``GET _apis/wit/reporting/workitemrevisions``): every revision of every work
        item, in change order, with the given fields.

        Start at `continuation_token` (a watermark an earlier batch returned) or at
        `start` (revisions after that time; the API refuses both at once), or at the
        beginning of the project's history. Returns (revisions, the token to continue
        from, whether this was the last batch currently available).
        """
        params: dict[str, str] = {"fields": ",".join(fields), "$maxPageSize": str(REVISIONS_PAGE)}
        if continuation_token is not None:
            params["continuationToken"] = continuation_token
        elif start is not None:
            params["startDateTime"] = start
        data = await self._request(
            "revisions",
            "GET",
            f"{self.config.project_url}/_apis/wit/reporting/workitemrevisions",
            params=params,
        )
        values = data.get("values")
        if not isinstance(values, list):
            raise RetriableError(
                f"Azure DevOps board {self.config.board_key!r}: reporting revisions answer "
                "has no 'values' list"
            )
        token = data.get("continuationToken")
        is_last = data.get("isLastBatch")
        return (
            [v for v in values if isinstance(v, dict)],
            token if isinstance(token, str) and token else None,
            is_last is not False,
        )

    async def get_type_states(self, work_item_type: str) -> list[JSON]:
        """The states of a work item type, each with its ``category``."""
        path = (
            f"{self.config.project_url}/_apis/wit/workitemtypes/"
            f"{quote(work_item_type, safe='')}/states"
        )
        data = await self._request("states", "GET", path)
        value = data.get("value")
        if not isinstance(value, list):
            raise RetriableError(
                f"Azure DevOps board {self.config.board_key!r}: states of type "
                f"{work_item_type!r} have no 'value' list"
            )
        return [v for v in value if isinstance(v, dict)]

    async def get_work_item(self, work_item_id: int, fields: Sequence[str]) -> JSON | None:
        """One work item (None if it does not exist or cannot be read)."""
        data: JSON | None = await self._request(
            "work_item",
            "GET",
            f"{self.config.project_url}/_apis/wit/workitems/{work_item_id}",
            params={"fields": ",".join(fields)},
            missing_ok=True,
        )
        return data

    # -- transport -----------------------------------------------------------------

    async def _retry_sleep(self, seconds: float) -> None:
        self.throttle_pauses.append(seconds)
        await self._sleep(seconds)

    async def _request(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        missing_ok: bool = False,
    ) -> Any:
        try:
            return await with_retries(
                lambda: self._attempt(
                    kind, method, url, params=params, json=json, missing_ok=missing_ok
                ),
                schedule=self._schedule,
                retry_on=lambda exc: isinstance(exc, _Transient),
                sleep=self._retry_sleep,
            )
        except _Transient as exc:
            raise RetriableError(
                f"Azure DevOps board {self.config.board_key!r}: {kind} request failed after "
                f"{self._max_attempts} attempts: {exc}",
                retry_after=exc.retry_after,
            ) from exc

    async def _attempt(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None,
        json: Any,
        missing_ok: bool,
    ) -> Any:
        if self._pending_pause > 0:
            pause, self._pending_pause = self._pending_pause, 0.0
            self.throttle_pauses.append(pause)
            await self._sleep(pause)
        query = {"api-version": API_VERSION, **(params or {})}
        headers = {"Authorization": self._auth_header, "Accept": "application/json"}
        self.request_counts[kind] += 1
        try:
            try:
                response = await self._http.request(
                    method, url, params=query, json=json, headers=headers
                )
            except httpx.TimeoutException as exc:
                raise _Transient(f"timeout ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise _Transient(f"connection error ({type(exc).__name__}: {exc})") from exc
            result = self._handle(kind, response, missing_ok=missing_ok)
        except Exception as exc:
            self._observe(exc)
            raise
        self._observe(None)
        return result

    def _observe(self, error: Exception | None) -> None:
        if self._observer is not None:
            self._observer("azure_devops", call_outcome(error))

    def _note_rate_limits(self, response: httpx.Response) -> None:
        headers = response.headers
        pause = 0.0
        retry_after = _header_seconds(headers, "Retry-After")
        if retry_after:
            pause = retry_after
        delay = _header_seconds(headers, "X-RateLimit-Delay")
        if delay:
            pause = max(pause, delay)
        remaining = _header_seconds(headers, "X-RateLimit-Remaining")
        limit = _header_seconds(headers, "X-RateLimit-Limit")
        if remaining is not None:
            low = remaining <= 0 or (
                limit is not None and limit > 0 and remaining < limit * self._low_remaining_fraction
            )
            if low:
                pause = max(pause, self._low_remaining_pause)
        if pause > 0:
            resource = headers.get("X-RateLimit-Resource", "")
            log.warning(
                "Azure DevOps board %s is being rate limited%s; slowing down %.3fs",
                self.config.board_key,
                f" ({resource})" if resource else "",
                pause,
            )
            self._pending_pause = min(max(self._pending_pause, pause), self._max_retry_after)

    def _observe_quota(self, headers: httpx.Headers) -> None:
        """Keep the rate-limit headers as an observation (the pacing is `_note_rate_limits`)."""
        names = ("X-RateLimit-Remaining", "X-RateLimit-Limit", "X-RateLimit-Delay", "Retry-After")
        if not any(name in headers for name in names):
            return
        reset = _header_seconds(headers, "X-RateLimit-Reset")
        self.quota = QuotaObservation(
            resource=headers.get("X-RateLimit-Resource", "") or "tstu",
            remaining=_header_seconds(headers, "X-RateLimit-Remaining"),
            limit=_header_seconds(headers, "X-RateLimit-Limit"),
            reset_at=reset,
            retry_after=_header_seconds(headers, "Retry-After"),
            delay=_header_seconds(headers, "X-RateLimit-Delay"),
            observed_at=time.time(),
        )

    def _handle(self, kind: str, response: httpx.Response, *, missing_ok: bool) -> Any:
        self._observe_quota(response.headers)
        cfg = self.config
        status = response.status_code
        where = (
            f"Azure DevOps board {cfg.board_key!r} "
            f"({cfg.organization_url}, project {cfg.project!r})"
        )
        if status in (401, 403) or 300 <= status < 400 or status == 203:
            # 203 / 302 with an HTML sign-in page is how Azure DevOps answers a bad PAT.
            raise FatalError(
                f"{where}: {kind} request answered {status}: the personal access token is "
                "missing, expired or lacks permission. It needs the 'Work Items (Read)' "
                "scope (vso.work) and read access to the project"
                + (f" and team {cfg.team!r}" if cfg.team else "")
                + "."
            )
        if status in (429, 503):
            retry_after = _header_seconds(response.headers, "Retry-After")
            if retry_after is None:
                retry_after = _header_seconds(response.headers, "X-RateLimit-Delay")
            raise _Transient(f"HTTP {status} ({_error_message(response)})", retry_after)
        if status >= 500:
            raise _Transient(f"HTTP {status} ({_error_message(response)})")
        if status == 404:
            if missing_ok:
                return None
            raise FatalError(
                f"{where}: {kind} request answered 404 ({_error_message(response)}): check the "
                "organization URL, project"
                + (", team" if cfg.team else "")
                + " and work item type names."
            )
        if status >= 400:
            raise FatalError(
                f"{where}: {kind} request answered {status}: {_error_message(response)} "
                "(check hours_field, billing_type_field, rate_field, milestone_field and "
                "area_path in the board's configuration)."
            )
        self._note_rate_limits(response)
        try:
            data = response.json()
        except ValueError as exc:
            content_type = response.headers.get("content-type", "")
            if "html" in content_type:
                raise FatalError(
                    f"{where}: {kind} request returned a web page instead of JSON: the "
                    "personal access token was not accepted (it needs 'Work Items (Read)')."
                ) from exc
            raise _Transient(f"HTTP {status} with a body that is not JSON") from exc
        if not isinstance(data, dict):
            raise _Transient(f"HTTP {status} with a JSON body that is not an object")
        return cast(JSON, data)


def _error_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        text = response.text.strip().replace("\n", " ")
        return text[:200] or response.reason_phrase
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])[:500]
    return response.reason_phrase
