"""Board connectors built from settings, and the shell that feeds them to the engine.

* `build_connectors(settings)` turns every ``github`` / ``azure_devops`` board into a
  `BoardConnector` (simulated and file boards have none). Missing credentials are a
  `ConfigError` naming the setting. Building is cheap: each connector (and its httpx
  client) is created on first use, in the event loop that uses it.
* `sync_board` / `sync_all`: one poll, through `Engine.ingest`, then the cursor.
* Webhooks do not come here directly: they are stored in the inbox and drained by
  `sync.intake.drain_inbox`, which re-fetches through these connectors.
  They take any `BoardServices` (the composition root's `Services` is one): this
  module is built by the root and never imports it.

The ledger is synchronous (SQLAlchemy); its calls run in a worker thread so the
event loop serving webhooks never blocks on the database. Engine listeners are
therefore called from that worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import structlog

from connectors.azure_devops.config import DEFAULT_HOURS_FIELD, AzureBoardConfig
from connectors.azure_devops.connector import AzureDevOpsConnector
from connectors.azure_devops.service_hook import parse_azure_service_hook
from connectors.base import (
    BoardConnector,
    CallObserver,
    ConnectorError,
    PollResult,
    QuotaObservation,
    WebhookTrigger,
)
from connectors.github.config import GitHubBoardConfig
from connectors.github.connector import GitHubProjectConnector
from connectors.github.webhook import DEFAULT_MAX_BODY_BYTES, parse_github_webhook
from mapping.domain import BoardItem, Source
from sync.engine import Clock, Engine, IngestReport
from sync.ledger.store import Ledger
from sync.settings import BoardSettings, ConfigError, Settings

log = structlog.get_logger(__name__)

#: Board sources that have a connector to poll.
POLLED_SOURCES = frozenset({Source.GITHUB.value, Source.AZURE_DEVOPS.value})

_RealConnector = GitHubProjectConnector | AzureDevOpsConnector
_T = TypeVar("_T")
#: The window of `LazyBoardConnector.calls_last_hour`.
CALLS_WINDOW_SECONDS = 3600.0


def _requests_of(real: _RealConnector) -> int:
    """HTTP requests the connector has sent so far (retries included)."""
    if isinstance(real, GitHubProjectConnector):
        return real.requests_made
    return real.client.requests_made


class BoardServices(Protocol):
    """What polling and webhook handling need from the composition root's `Services`."""

    @property
    def ledger(self) -> Ledger: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def connectors(self) -> Mapping[str, BoardConnector]: ...


# -- building ---------------------------------------------------------------------------


class LazyBoardConnector:
    """A `BoardConnector` that creates the real connector on first use.

    Building it costs nothing but the (validated, frozen) config. The real connector
    and its httpx client are created in the running event loop when first needed and
    created again if a later call runs in another loop (httpx connections belong to
    the loop that opened them); `aclose()` releases them. Webhook parsing needs no
    HTTP and never creates the connector.
    """

    def __init__(
        self, config: GitHubBoardConfig | AzureBoardConfig, observer: CallObserver | None = None
    ) -> None:
        self.config = config
        self.observer = observer
        self.board_key = config.board_key
        self.source = (
            Source.GITHUB if isinstance(config, GitHubBoardConfig) else Source.AZURE_DEVOPS
        )
        self._real: _RealConnector | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._project_id: str | None = None  # GitHub: learnt from polls and fetches
        self._clock: Callable[[], float] = time.time
        # (epoch seconds, board API requests made) per poll / fetch, the last hour's.
        self._calls: deque[tuple[float, int]] = deque()

    def __repr__(self) -> str:
        return f"LazyBoardConnector({self.source.value}:{self.board_key})"

    @property
    def connector(self) -> _RealConnector:
        """The real connector for the running event loop (created if needed)."""
        loop = asyncio.get_running_loop()
        if self._real is None or self._loop is not loop:
            self._known_project_id()
            self._real = self._create()
            self._loop = loop
        return self._real

    @property
    def built(self) -> _RealConnector | None:
        """The real connector if one was created (for counters in tests), else None."""
        return self._real

    def _create(self) -> _RealConnector:
        if isinstance(self.config, GitHubBoardConfig):
            github = GitHubProjectConnector(self.config, observer=self.observer)
            github.project_id = self._project_id
            return github
        return AzureDevOpsConnector(self.config, observer=self.observer)

    def _known_project_id(self) -> str | None:
        if isinstance(self._real, GitHubProjectConnector) and self._real.project_id:
            self._project_id = self._real.project_id
        return self._project_id

    async def poll(self, cursor: str | None) -> PollResult:
        real = self.connector
        return await self._counted(real, real.poll(cursor))

    async def _counted(self, real: _RealConnector, call: Awaitable[_T]) -> _T:
        """Run one connector call, noting how many board API requests it made."""
        before = _requests_of(real)
        try:
            return await call
        finally:
            made = _requests_of(real) - before
            if made > 0:
                now = self._clock()
                self._calls.append((now, made))
                while self._calls and self._calls[0][0] < now - CALLS_WINDOW_SECONDS:
                    self._calls.popleft()

    def calls_last_hour(self, now: float | None = None) -> int:
        """Board API requests this process made for the board in the last hour
        (polls, re-fetches and project lookups; retries included)."""
        moment = self._clock() if now is None else now
        return sum(n for at, n in self._calls if at >= moment - CALLS_WINDOW_SECONDS)

    @property
    def quota(self) -> QuotaObservation | None:
        """The board API's last quota report (None before the connector is used)."""
        return self._real.quota if self._real is not None else None

    def process_cache(self) -> dict[str, dict[str, str]] | None:
        """Azure DevOps: the type states read so far (None for GitHub)."""
        real = self.connector
        return real.process_cache() if isinstance(real, AzureDevOpsConnector) else None

    def prime_process_cache(self, cache: Mapping[str, Any]) -> None:
        real = self.connector
        if isinstance(real, AzureDevOpsConnector):
            real.prime_process_cache(cache)

    async def fetch(self, item_ids: tuple[str, ...]) -> tuple[BoardItem, ...]:
        real = self.connector
        return await self._counted(real, real.fetch(item_ids))

    async def resolve_project_id(self) -> str | None:
        """GitHub: the project's node id (one small request the first time); else None."""
        if not isinstance(self.config, GitHubBoardConfig):
            return None
        if self._known_project_id() is None:
            real = self.connector
            assert isinstance(real, GitHubProjectConnector)
            self._project_id = await self._counted(real, real.resolve_project_id())
        return self._project_id

    def parse_webhook(
        self,
        headers: Mapping[str, str],
        body: bytes,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> WebhookTrigger:
        """Verify and parse with this board's webhook credentials (no HTTP involved)."""
        if isinstance(self.config, GitHubBoardConfig):
            secret = (self.config.webhook_secret or "").encode()
            return parse_github_webhook(secret, headers, body, max_body_bytes=max_body_bytes)
        return parse_azure_service_hook(
            self.config.hook_username, self.config.hook_password, headers, body, max_body_bytes
        )

    def matches_board_hint(self, hint: str | None) -> bool | None:
        """Whether a webhook's hint names this board; None when it cannot be told.

        GitHub: the hint is the project's node id, known once a poll or fetch saw it.
        Azure DevOps: the hint is the project name (several boards may share one).
        """
        if hint is None:
            return None
        if isinstance(self.config, AzureBoardConfig):
            return hint.casefold() == self.config.project.casefold()
        project_id = self._known_project_id()
        return None if project_id is None else hint == project_id

    async def aclose(self) -> None:
        """Close the real connector's HTTP client (a later call creates a new one)."""
        self._known_project_id()
        real, self._real, self._loop = self._real, None, None
        if real is not None:
            await real.aclose()


def _secret(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    raw = getter() if callable(getter) else value
    return str(raw) if raw else None


def _rest_api_url(graphql_url: str) -> str:
    """The REST base for App installation tokens, from the GraphQL URL.

    ``https://api.github.com/graphql`` → ``https://api.github.com``;
    GitHub Enterprise ``https://HOST/api/graphql`` → ``https://HOST/api/v3``.
    """
    base = graphql_url.rstrip("/").removesuffix("/graphql")
    return base + "/v3" if base.endswith("/api") else base


def _github_config(settings: Settings, index: int, board: BoardSettings) -> GitHubBoardConfig:
    section = board.github
    assert section is not None  # BoardSettings validates the section exists
    where = f"boards[{index}] ({board.key})"
    creds = settings.github
    token = _secret(creds.token)
    private_key = _secret(creds.private_key)
    app = {
        "github.app_id": creds.app_id,
        "github.installation_id": creds.installation_id,
        "github.private_key": private_key,
    }
    if token and any(app.values()):
        raise ConfigError(
            f"github.token and github.app_id/installation_id/private_key are both set "
            f"(used by {where}): set one of them"
        )
    if not token:
        if not any(app.values()):
            raise ConfigError(
                f"github.token or github.app_id/installation_id/private_key: required by "
                f"{where} (set KANVOICE_GITHUB__TOKEN, or the GitHub App settings)"
            )
        missing = [key for key, value in app.items() if not value]
        if missing:
            raise ConfigError(
                f"{', '.join(missing)}: required by {where} with the other GitHub App settings"
            )
    try:
        return GitHubBoardConfig(
            board_key=board.key,
            owner=section.owner,
            owner_type=section.owner_type,
            project_number=section.project_number,
            status_field=section.status_field,
            done_options=tuple(board.done_columns) or ("Done",),
            in_progress_options=tuple(section.in_progress_options),
            hours_field=board.hours_field or "Hours",
            billing_type_field=board.billing_type_field,
            billing_type_values=dict(board.billing_type_values),
            rate_field=board.rate_field,
            milestone_field=board.milestone_field,
            hours_by_person_field=board.hours_by_person_field,
            api_url=section.api_url,
            rest_api_url=_rest_api_url(section.api_url),
            full_reconcile_seconds=section.full_reconcile_seconds,
            incremental_overlap_seconds=section.incremental_overlap_seconds,
            token=token,
            app_id=None if token else creds.app_id,
            app_private_key=None if token else private_key,
            app_installation_id=None if token else creds.installation_id,
            webhook_secret=_secret(creds.webhook_secret),
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _azure_config(settings: Settings, index: int, board: BoardSettings) -> AzureBoardConfig:
    section = board.azure_devops
    assert section is not None  # BoardSettings validates the section exists
    where = f"boards[{index}] ({board.key})"
    creds = settings.azure_devops
    pat = _secret(creds.pat)
    if not pat:
        raise ConfigError(
            f"azure_devops.pat: required by {where} (a personal access token with "
            "Work Items: Read; set KANVOICE_AZURE_DEVOPS__PAT)"
        )
    try:
        return AzureBoardConfig(
            board_key=board.key,
            organization_url=section.organization_url,
            project=section.project,
            pat=pat,
            team=section.team,
            area_path=section.area_path,
            hours_field=board.hours_field or DEFAULT_HOURS_FIELD,
            billing_type_field=board.billing_type_field,
            billing_type_values=dict(board.billing_type_values),
            done_board_columns=frozenset(board.done_columns),
            rate_field=board.rate_field,
            milestone_field=board.milestone_field,
            hours_by_person_field=board.hours_by_person_field,
            overlap_seconds=section.overlap_seconds,
            work_item_types=tuple(section.work_item_types),
            hook_username=creds.hook_username or "",
            hook_password=_secret(creds.hook_password) or "",
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def build_connectors(
    settings: Settings, observer: CallObserver | None = None
) -> dict[str, BoardConnector]:
    """One connector per GitHub / Azure DevOps board, keyed by board key. `observer` is
    told of every call the connectors make (the external-call metrics).

    Raises `ConfigError` naming the missing or wrong setting. No network, no client.
    """
    connectors: dict[str, BoardConnector] = {}
    problems: list[str] = []  # every board's problem at once, not one per start
    for index, board in enumerate(settings.boards):
        try:
            if board.source == Source.GITHUB.value:
                config: GitHubBoardConfig | AzureBoardConfig = _github_config(
                    settings, index, board
                )
            elif board.source == Source.AZURE_DEVOPS.value:
                config = _azure_config(settings, index, board)
            else:
                continue
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        connectors[board.key] = LazyBoardConnector(config, observer)
    if problems:
        raise ConfigError("; ".join(dict.fromkeys(problems)))
    return connectors


async def close_connectors(connectors: Mapping[str, BoardConnector] | BoardServices) -> None:
    """Close every connector's HTTP client (those that have one); errors are logged."""
    if not isinstance(connectors, Mapping):
        connectors = connectors.connectors
    for key, connector in connectors.items():
        aclose = getattr(connector, "aclose", None)
        if aclose is None:
            continue
        try:
            await aclose()
        except Exception as exc:  # closing must not hide the real outcome
            log.warning("connector.close_failed", board=key, error=str(exc))


def source_of(connector: BoardConnector) -> Source:
    """The source a connector reads (github or azure_devops)."""
    source = getattr(connector, "source", None)
    if isinstance(source, Source):
        return source
    if isinstance(connector, GitHubProjectConnector):
        return Source.GITHUB
    if isinstance(connector, AzureDevOpsConnector):
        return Source.AZURE_DEVOPS
    raise TypeError(f"cannot tell the source of connector {connector!r}")


# -- polling ----------------------------------------------------------------------------


@dataclass
class BoardSyncReport(IngestReport):
    """An `IngestReport` for one board's poll, with the board, requests and cursor."""

    board: str = ""
    requests_made: int = 0
    cursor: str | None = None
    #: After a full listing: items the ledger holds that the board no longer lists
    #: (removed, deleted, or no longer readable). Reported, never unbilled (README).
    missing: tuple[str, ...] = ()


def _connector(services: BoardServices, board_key: str) -> BoardConnector:
    try:
        return services.connectors[board_key]
    except KeyError:
        raise KeyError(
            f"board {board_key!r} has no connector (GitHub and Azure DevOps boards do; "
            f"configured: {sorted(services.connectors) or 'none'})"
        ) from None


def _read_cursor(services: BoardServices, source: str, board: str) -> str | None:
    with services.ledger.read(services.clock()) as uow:
        return uow.cursor(source, board)


def _store_cursor(services: BoardServices, source: str, board: str, value: str) -> None:
    with services.ledger.unit_of_work(services.clock()) as uow:
        uow.set_cursor(source, board, value)


def _board_item_ids(services: BoardServices, source: str, board: str) -> set[str]:
    with services.ledger.read(services.clock()) as uow:
        return uow.board_item_ids(source, board)


#: How long a board's cached process (Azure type states) is trusted before it is read
#: again; a state it does not know is read at once anyway.
PROCESS_CACHE_MAX_AGE = timedelta(days=1)


def _read_process_cache(services: BoardServices, source: str, board: str) -> Any:
    with services.ledger.read(services.clock()) as uow:
        found = uow.board_state_cache(source, board)
    if found is None:
        return None
    value, fetched_at = found
    now: datetime = services.clock()
    return value if now - fetched_at <= PROCESS_CACHE_MAX_AGE else None


def _store_process_cache(services: BoardServices, source: str, board: str, value: Any) -> None:
    with services.ledger.unit_of_work(services.clock()) as uow:
        uow.set_board_state_cache(source, board, value)


async def _poll_with_process_cache(
    services: BoardServices, connector: BoardConnector, source: str, board: str, cursor: str | None
) -> PollResult:
    """Poll; a connector with a process cache gets it from the ledger and leaves it there."""
    prime = getattr(connector, "prime_process_cache", None)
    export = getattr(connector, "process_cache", None)
    if prime is None or export is None:
        return await connector.poll(cursor)
    kept = getattr(connector, "_process_cache_kept", None)
    if not export():
        kept = await asyncio.to_thread(_read_process_cache, services, source, board)
        if isinstance(kept, dict):
            prime(kept)
    result = await connector.poll(cursor)
    now = export()
    if now and now != kept:
        await asyncio.to_thread(_store_process_cache, services, source, board, now)
        kept = now
    connector._process_cache_kept = kept  # type: ignore[attr-defined]  # written once per change
    return result


async def sync_board(services: BoardServices, board_key: str) -> BoardSyncReport:
    """Poll one board since its cursor, ingest, then store the new cursor.

    The cursor is written in its own transaction only after the ingest committed, so
    a failed ingest polls the same window again. Raises RetriableError / FatalError
    from the connector, SQLAlchemy errors from the ledger.
    """
    connector = _connector(services, board_key)
    source = source_of(connector).value
    cursor = await asyncio.to_thread(_read_cursor, services, source, board_key)
    result = await _poll_with_process_cache(services, connector, source, board_key, cursor)
    ingested = await asyncio.to_thread(services.engine.ingest, result.items)
    await settle_conflicts(services, ingested)
    if result.cursor is not None and result.cursor != cursor:
        await asyncio.to_thread(_store_cursor, services, source, board_key, result.cursor)
    report = BoardSyncReport(board=board_key, requests_made=result.requests_made)
    report.merge(ingested)
    if result.complete:
        known = await asyncio.to_thread(_board_item_ids, services, source, board_key)
        report.missing = tuple(sorted(known - {i.item_id for i in result.items}))
        if report.missing:
            log.warning(
                "board.items_missing",
                board=board_key,
                count=len(report.missing),
                items=list(report.missing[:20]),
            )
    report.cursor = result.cursor if result.cursor is not None else cursor
    log.info(
        "board.synced",
        board=board_key,
        source=source,
        requests=result.requests_made,
        seen=report.seen,
        new=report.items_new,
        updated=report.items_updated,
        unchanged=report.skipped,
        entries_created=report.entries_created,
        state_changes=report.state_changes,
    )
    return report


async def settle_conflicts(services: BoardServices, report: IngestReport) -> None:
    """Read again from the board every item the ingest found in conflict (the same
    revision with other content), and ingest those reads as the board's truth.

    Until this succeeds nothing was billed from the conflicting snapshots; if the
    board cannot be read now, the error propagates and the next poll meets the same
    conflict and tries again. The outcome is merged into `report`."""
    wanted: dict[str, list[str]] = {}
    for conflict in report.conflicts:
        if conflict.needs_reread and conflict.item_id not in wanted.get(conflict.board, []):
            wanted.setdefault(conflict.board, []).append(conflict.item_id)
    for board, item_ids in wanted.items():
        fresh = await _connector(services, board).fetch(tuple(item_ids))
        settled = await asyncio.to_thread(
            functools.partial(services.engine.ingest, fresh, reread=True)
        )
        log.info("board.conflicts_reread", board=board, items=len(item_ids), found=len(fresh))
        settled.seen = 0  # the same items, counted once in the report
        conflicts = report.conflicts
        report.merge(settled)
        report.conflicts = conflicts


async def sync_all(
    services: BoardServices, boards: Iterable[str] | None = None
) -> dict[str, BoardSyncReport | ConnectorError]:
    """Poll every board (or those named), one after the other.

    A board whose connector fails (RetriableError, FatalError) gets its error in the
    result and the other boards still run. Ledger errors stop the run.
    """
    keys = list(boards) if boards is not None else list(services.connectors)
    results: dict[str, BoardSyncReport | ConnectorError] = {}
    for key in keys:
        try:
            results[key] = await sync_board(services, key)
        except ConnectorError as exc:
            log.error("board.sync_failed", board=key, error=str(exc), kind=exc.__class__.__name__)
            results[key] = exc
    return results
