"""`GitHubProjectConnector`: the BoardConnector for one GitHub Projects (v2) board."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Mapping
from typing import Any, Self

import httpx

from connectors.base import (
    CallObserver,
    FatalError,
    PollResult,
    QuotaObservation,
    RetriableError,
    WebhookTrigger,
)
from connectors.github.auth import Clock, GitHubAppAuth, StaticToken, TokenProvider
from connectors.github.config import GitHubBoardConfig
from connectors.github.graphql import GitHubGraphQLClient, Sleep
from connectors.github.parsing import GitHubItem, ItemShapeError, parse_item, to_board_item
from connectors.github.queries import (
    MAX_PAGE_SIZE,
    ORGANIZATION_PROJECT_ITEMS,
    PROJECT_ITEM_BY_ID,
    PROJECT_ITEMS_BY_IDS,
    USER_PROJECT_ITEMS,
)
from connectors.github.webhook import DEFAULT_MAX_BODY_BYTES, parse_github_webhook
from mapping.domain import BoardItem

log = logging.getLogger(__name__)

#: Safety stop: a project holds at most 50,000 items, i.e. 500 pages of 100.
_MAX_PAGES = 600
_DAY = 86_400.0
#: The filter's largest window worth asking for: beyond it a full listing is as cheap.
_MAX_FILTER_DAYS = 365


def incremental_filter(elapsed_seconds: float, overlap_seconds: float) -> str:
    """The filter-bar query for items updated in the last `elapsed + overlap` (whole days)."""
    days = max(1, math.ceil((max(elapsed_seconds, 0.0) + overlap_seconds) / _DAY))
    return f"-last-updated:{days}days"


def parse_poll_cursor(cursor: str | None) -> tuple[float, float] | None:
    """(last poll start, last full listing start) in epoch seconds, None if unusable."""
    if not cursor:
        return None
    try:
        data = json.loads(cursor)
        since, full = float(data["since"]), float(data["full"])
    except (ValueError, TypeError, KeyError):
        return None
    if not (math.isfinite(since) and math.isfinite(full)):
        return None
    return since, full


def format_poll_cursor(since: float, full: float) -> str:
    """The cursor a poll leaves: when it started, and when the last full listing did."""
    return json.dumps({"v": 1, "since": round(since, 3), "full": round(full, 3)})


class GitHubProjectConnector:
    """Reads one GitHub project (org- or user-owned) and parses its webhooks.

    * `poll(cursor)` lists the items updated since the cursor with the project filter
      ``-last-updated:Ndays`` (``ProjectV2.items(query:)``, GitHub changelog
      2025-10-22): ⌈k/page_size⌉ requests (at least 1) for k items updated in that
      many days. Without a cursor, and every `full_reconcile_seconds`, it lists every
      item instead (⌈N/page_size⌉ requests, archived items included, `complete=True`):
      the reconcile catches what the filter may miss (project-only field edits, if
      GitHub does not count them as updates; archived items). The cursor is JSON
      ``{"since", "full"}`` (epoch seconds of the poll's and the last full listing's
      start, by the connector's clock); snapshots are de-duplicated by item id,
      keeping the highest revision. The engine skips unchanged ones.
    * `fetch(ids)` re-reads items by ProjectV2Item node id (`node(id:)` for one,
      `nodes(ids:)` in chunks of 100 for several). Deleted items, REDACTED items and
      items of other projects are omitted.
    * `parse_webhook` verifies and parses a `projects_v2_item` / `ping` delivery.

    Items whose values the domain refuses (negative hours, say) are skipped with a
    warning rather than failing the whole poll; `skipped_items` counts them.
    Pass `http_client` to share a pool (it is not closed here); `sleep` and `clock`
    are injectable for tests.
    """

    def __init__(
        self,
        config: GitHubBoardConfig,
        http_client: httpx.AsyncClient | None = None,
        *,
        auth: TokenProvider | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
        observer: CallObserver | None = None,
    ) -> None:
        self.config = config
        self.board_key = config.board_key
        self._clock = clock
        self._own_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=config.timeout_seconds)
        if auth is None:
            if config.token:
                auth = StaticToken(config.token)
            else:
                assert config.app_id and config.app_private_key and config.app_installation_id
                auth = GitHubAppAuth(
                    config.app_id,
                    config.app_private_key,
                    config.app_installation_id,
                    api_url=config.rest_api_url,
                    http_client=self._http,
                    clock=clock,
                    timeout=config.timeout_seconds,
                    observer=observer,
                )
        self.auth = auth
        self.client = GitHubGraphQLClient(
            auth,
            url=config.api_url,
            http_client=self._http,
            sleep=sleep,
            clock=clock,
            max_attempts=config.max_attempts,
            max_wait=config.max_rate_limit_wait,
            low_remaining=config.low_rate_limit_remaining,
            timeout=config.timeout_seconds,
            observer=observer,
        )
        #: The project's node id (``PVT_…``) once a poll has seen it; webhooks name it.
        self.project_id: str | None = None
        self.project_url: str = config.default_project_url
        self.skipped_items = 0

    async def aclose(self) -> None:
        """Close the HTTP client if the connector created it."""
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def quota(self) -> QuotaObservation | None:
        """GraphQL points left as GitHub last reported them (None before any request)."""
        info = self.client.rate_limit
        if info is None:
            return None
        return QuotaObservation(
            resource="graphql",
            remaining=float(info.remaining),
            limit=self.client.rate_limit_limit,
            reset_at=info.reset_at,
            observed_at=self._clock(),
        )

    @property
    def requests_made(self) -> int:
        """GraphQL HTTP requests sent so far (retries included)."""
        return self.client.requests_made

    def matches_board_hint(self, hint: str | None) -> bool | None:
        """Whether a webhook's project node id is this board (None: not known yet)."""
        if hint is None or self.project_id is None:
            return None
        return hint == self.project_id

    # -- polling -------------------------------------------------------------------------

    async def resolve_project_id(self) -> str | None:
        """The project's node id, asked once (one page of one item) if not yet known.

        Webhooks name their project by node id: once it is known, deliveries of other
        projects of the organization are ignored without any call.
        """
        if self.project_id is None:
            document = (
                ORGANIZATION_PROJECT_ITEMS
                if self.config.owner_type == "organization"
                else USER_PROJECT_ITEMS
            )
            data = await self.client.execute(
                document,
                {
                    "login": self.config.owner,
                    "number": self.config.project_number,
                    "first": 1,
                    "after": None,
                },
            )
            self._project_of(data)
        return self.project_id

    async def poll(self, cursor: str | None) -> PollResult:
        """Items updated since `cursor` (a filtered listing), or every item when due."""
        started = self._clock()
        previous = parse_poll_cursor(cursor)
        query: str | None = None
        last_full = started
        if previous is not None:
            since, full = previous
            due = started - full >= self.config.full_reconcile_seconds
            elapsed = started - since
            if not due and elapsed >= 0 and elapsed < _MAX_FILTER_DAYS * _DAY:
                query = incremental_filter(elapsed, self.config.incremental_overlap_seconds)
                last_full = full
        items, requests = await self._list(query)
        new_cursor = format_poll_cursor(started, last_full)
        # A cursor a little older than this poll only widens the next window (by less
        # than half the overlap): keep it, and spare the ledger a write per poll.
        half_overlap = self.config.incremental_overlap_seconds / 2
        if query is not None and previous is not None and 0 <= started - previous[0] < half_overlap:
            new_cursor = cursor or new_cursor
        return PollResult(
            items=items,
            requests_made=requests,
            cursor=new_cursor,
            complete=query is None,
        )

    async def _list(self, query: str | None) -> tuple[tuple[BoardItem, ...], int]:
        """Page through the project's items (matching `query`, or all of them)."""
        document = (
            ORGANIZATION_PROJECT_ITEMS
            if self.config.owner_type == "organization"
            else USER_PROJECT_ITEMS
        )
        before = self.client.requests_made
        items: dict[str, BoardItem] = {}
        after: str | None = None
        for _page in range(_MAX_PAGES):
            data = await self.client.execute(
                document,
                {
                    "login": self.config.owner,
                    "number": self.config.project_number,
                    "first": min(self.config.page_size, MAX_PAGE_SIZE),
                    "after": after,
                    "query": query,
                },
            )
            project = self._project_of(data)
            connection = project.get("items")
            if not isinstance(connection, dict):
                raise RetriableError(f"{self._where()}: response has no items connection")
            nodes = connection.get("nodes")
            if not isinstance(nodes, list):
                raise RetriableError(f"{self._where()}: items.nodes is not a list")
            for node in nodes:
                snapshot = self._snapshot(node)
                if snapshot is None:
                    continue
                # An item updated while we page may show up twice: keep the newest.
                seen = items.get(snapshot.item_id)
                if seen is None or snapshot.revision >= seen.revision:
                    items[snapshot.item_id] = snapshot
            page_info = connection.get("pageInfo")
            if not isinstance(page_info, dict):
                raise RetriableError(f"{self._where()}: items has no pageInfo")
            if not page_info.get("hasNextPage"):
                break
            next_cursor = page_info.get("endCursor")
            if not isinstance(next_cursor, str) or not next_cursor or next_cursor == after:
                raise RetriableError(f"{self._where()}: hasNextPage without a new endCursor")
            after = next_cursor
        else:
            raise FatalError(f"{self._where()}: more than {_MAX_PAGES} pages of items")
        return tuple(items.values()), self.client.requests_made - before

    def _where(self) -> str:
        return (
            f"github board {self.board_key!r} ({self.config.owner_type} "
            f"{self.config.owner} project {self.config.project_number})"
        )

    def _project_of(self, data: Mapping[str, Any]) -> Mapping[str, Any]:
        owner = data.get(self.config.owner_type)
        if not isinstance(owner, dict):
            raise FatalError(
                f"{self._where()}: {self.config.owner_type} {self.config.owner!r} not found "
                "(check owner and owner_type, and that the token can see it)"
            )
        project = owner.get("projectV2")
        if not isinstance(project, dict):
            raise FatalError(
                f"{self._where()}: project number {self.config.project_number} not found or "
                "not readable with these credentials"
            )
        if isinstance(project.get("id"), str):
            self.project_id = project["id"]
        if isinstance(project.get("url"), str):
            self.project_url = project["url"]
        return project

    def _snapshot(self, node: Any) -> BoardItem | None:
        try:
            item = parse_item(node)
        except ItemShapeError as exc:
            raise RetriableError(f"{self._where()}: unexpected item shape: {exc}") from exc
        if item is None:
            return None
        return self._to_board_item(item)

    def _to_board_item(self, item: GitHubItem) -> BoardItem | None:
        try:
            return to_board_item(item, self.config, self.project_url)
        except ValueError as exc:
            self.skipped_items += 1
            log.warning("%s: item %s skipped: %s", self._where(), item.node_id, exc)
            return None

    # -- re-fetch ------------------------------------------------------------------------

    async def fetch(self, item_ids: tuple[str, ...]) -> tuple[BoardItem, ...]:
        """Fresh snapshots of the given ProjectV2Item node ids; missing ones omitted."""
        ids = tuple(dict.fromkeys(i for i in item_ids if i))
        if not ids:
            return ()
        nodes: list[Any] = []
        if len(ids) == 1:
            data = await self.client.execute(
                PROJECT_ITEM_BY_ID, {"id": ids[0]}, tolerate_not_found=True
            )
            nodes.append(data.get("node"))
        else:
            for start in range(0, len(ids), MAX_PAGE_SIZE):
                chunk = list(ids[start : start + MAX_PAGE_SIZE])
                data = await self.client.execute(
                    PROJECT_ITEMS_BY_IDS, {"ids": chunk}, tolerate_not_found=True
                )
                found = data.get("nodes")
                if not isinstance(found, list):
                    raise RetriableError(f"{self._where()}: nodes(ids:) returned no list")
                nodes.extend(found)
        out: list[BoardItem] = []
        for node in nodes:
            if node is None:
                continue  # deleted (or never existed): GitHub answers null + NOT_FOUND
            try:
                item = parse_item(node)
            except ItemShapeError as exc:
                raise RetriableError(f"{self._where()}: unexpected item shape: {exc}") from exc
            if item is None or not self._is_this_project(item):
                continue
            snapshot = self._to_board_item(item)
            if snapshot is not None:
                out.append(snapshot)
        return tuple(out)

    def _is_this_project(self, item: GitHubItem) -> bool:
        if item.project_id is not None and self.project_id is not None:
            same = item.project_id == self.project_id
        else:
            same = item.project_number == self.config.project_number and (
                item.project_owner is None
                or item.project_owner.casefold() == self.config.owner.casefold()
            )
        if not same:
            log.info(
                "%s: item %s belongs to another project (%s): omitted",
                self._where(),
                item.node_id,
                item.project_id or item.project_number,
            )
        elif item.project_id is not None and self.project_id is None:
            self.project_id = item.project_id
        if same and item.project_url:
            self.project_url = item.project_url
        return same

    # -- webhooks ------------------------------------------------------------------------

    def parse_webhook(
        self,
        headers: Mapping[str, str],
        body: bytes,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> WebhookTrigger:
        """Verify (``X-Hub-Signature-256`` with `webhook_secret`) and parse a delivery."""
        secret = (self.config.webhook_secret or "").encode()
        return parse_github_webhook(secret, headers, body, max_body_bytes=max_body_bytes)
