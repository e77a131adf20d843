"""Azure DevOps Boards as a `BoardConnector`: WIQL poll, batch fetch, Done time from updates.

Done detection survives process templates: each work item type's states are read
once (``/_apis/wit/workitemtypes/{type}/states``) and their category decides.
Completed → DONE (Agile "Closed", Scrum and Basic "Done"), Removed → REMOVED,
Resolved → RESOLVED, InProgress → IN_PROGRESS, Proposed → PROPOSED. A board may
instead bill on board columns (``System.BoardColumn``).

For Done items the time of the Done transition comes with the batch read
(``Microsoft.VSTS.Common.StateChangeDate``, else ``ClosedDate``): no call per item.
A board that bills on columns learns when an item entered its Done column from the
reporting revisions stream (``_apis/wit/reporting/workitemrevisions``: every revision
of the project in change order, 200 per batch, continued from a watermark kept across
runs with the type states), so it makes no call per item either. Only an item the
stream does not account for (or without either field) reads its own updates, cached
by revision so an unchanged item costs no further call.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from connectors.azure_devops.client import AzureDevOpsClient, SleepFn
from connectors.azure_devops.config import AzureBoardConfig
from connectors.azure_devops.service_hook import parse_azure_service_hook
from connectors.base import CallObserver, FatalError, PollResult, QuotaObservation, WebhookTrigger
from mapping.domain import BillingType, BoardItem, Source, StateCategory
from mapping.rules import parse_hours_by_person

log = logging.getLogger(__name__)

CATEGORY_MAP: Mapping[str, StateCategory] = {
    "proposed": StateCategory.PROPOSED,
    "inprogress": StateCategory.IN_PROGRESS,
    "resolved": StateCategory.RESOLVED,
    "completed": StateCategory.DONE,
    "removed": StateCategory.REMOVED,
}

_BILLING_WORDS: Mapping[str, BillingType] = {
    "fixedprice": BillingType.FIXED_PRICE,
    "fixed": BillingType.FIXED_PRICE,
    "fixedfee": BillingType.FIXED_PRICE,
    "milestone": BillingType.FIXED_PRICE,
    "timeandmaterials": BillingType.TIME_AND_MATERIALS,
    "timeandmaterial": BillingType.TIME_AND_MATERIALS,
    "timematerials": BillingType.TIME_AND_MATERIALS,
    "tm": BillingType.TIME_AND_MATERIALS,
    "hourly": BillingType.TIME_AND_MATERIALS,
    "nonbillable": BillingType.NON_BILLABLE,
    "notbillable": BillingType.NON_BILLABLE,
    "internal": BillingType.NON_BILLABLE,
}

STATE_CHANGE_DATE = "Microsoft.VSTS.Common.StateChangeDate"
CLOSED_DATE = "Microsoft.VSTS.Common.ClosedDate"
_FAR_FUTURE_YEAR = 9999
_UPDATES_CONCURRENCY = 4
#: The fields read from the reporting revisions stream (column-based boards).
REVISION_FIELDS = ("System.Id", "System.Rev", "System.BoardColumn", "System.ChangedDate")
#: Batches read per catch-up at most (200 revisions each: 2 M revisions).
_MAX_REVISION_BATCHES = 10_000
#: The key of the column-board stream state inside `process_cache()`.
REVISIONS_CACHE_KEY = "__revisions__"
#: WIQL windows per poll (each up to `max_items_per_poll` ids): 50 x 19,999 ≈ 1 M items.
_MAX_WINDOWS = 50


def _norm_word(value: str) -> str:
    return re.sub(r"[^a-z0-9]", "", value.lower())


def parse_azure_datetime(value: Any) -> datetime | None:
    """An Azure DevOps timestamp as an aware UTC datetime (None if absent or invalid).

    Accepts ``Z`` or offsets and up to 7 fractional digits (Azure's .NET precision).
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_cursor(moment: datetime) -> str:
    """The cursor string for a moment: ISO 8601, UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _wiql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        result = Decimal(str(value))
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None
    if not result.is_finite():
        return None
    return result


def _under(path: str, root: str) -> bool:
    p, r = path.lower(), root.lower().rstrip("\\")
    return p == r or p.startswith(r + "\\")


class AzureDevOpsConnector:
    """One Azure DevOps board (project, optional team and area path) as a BoardConnector."""

    def __init__(
        self,
        config: AzureBoardConfig,
        *,
        http: httpx.AsyncClient | None = None,
        sleep: SleepFn = asyncio.sleep,
        client: AzureDevOpsClient | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        self.config = config
        self.board_key = config.board_key
        self.client = client or AzureDevOpsClient(config, http=http, sleep=sleep, observer=observer)
        # work item type (lower) -> state name (lower) -> category
        self._type_states: dict[str, dict[str, StateCategory]] = {}
        # work item type (lower) -> names of its Completed states (lower)
        self._completed_states: dict[str, frozenset[str]] = {}
        # work item id -> (rev, done_at) read from the updates
        self._done_at_cache: dict[int, tuple[int, datetime | None]] = {}
        # Column-based boards, from the reporting revisions stream: the watermark read
        # up to, and per work item (latest rev seen, in a Done column since).
        self._revisions_token: str | None = None
        self._column_done: dict[int, tuple[int, datetime | None]] = {}

    # -- lifecycle -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Release the HTTP client (if the connector created it)."""
        await self.client.aclose()

    async def __aenter__(self) -> AzureDevOpsConnector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def quota(self) -> QuotaObservation | None:
        """The last rate-limit headers seen (None: Azure sent none, i.e. not throttled)."""
        return self.client.quota

    @property
    def request_counts(self) -> Mapping[str, int]:
        """HTTP requests sent so far, by kind (wiql, batch, updates, states, work_item)."""
        return dict(self.client.request_counts)

    # -- BoardConnector ------------------------------------------------------------

    def requested_fields(self) -> list[str]:
        """The field reference names requested for each work item."""
        cfg = self.config
        names = [
            "System.Id",
            "System.Title",
            "System.WorkItemType",
            "System.State",
            "System.BoardColumn",
            "System.ChangedDate",
            "System.IterationPath",
            "System.AreaPath",
            "System.TeamProject",
            "System.AssignedTo",
            "System.Tags",
            # When the item entered its state: the Done time of a Completed item, read
            # with the other fields instead of one `updates` call per Done item.
            STATE_CHANGE_DATE,
            CLOSED_DATE,
            cfg.hours_field,
        ]
        for extra in (
            cfg.billing_type_field,
            cfg.rate_field,
            cfg.milestone_field,
            cfg.hours_by_person_field,
        ):
            if extra:
                names.append(extra)
        return list(dict.fromkeys(names))

    def wiql(self, since: datetime | None) -> str:
        """The WIQL query for items changed at or after `since` (None: all items)."""
        cfg = self.config
        clauses = ["[System.TeamProject] = @project"]
        if since is not None:
            clauses.append(f"[System.ChangedDate] >= {_wiql_literal(format_cursor(since))}")
        if cfg.area_path:
            clauses.append(f"[System.AreaPath] UNDER {_wiql_literal(cfg.area_path)}")
        if cfg.work_item_types:
            types = ", ".join(_wiql_literal(t) for t in cfg.work_item_types)
            clauses.append(f"[System.WorkItemType] IN ({types})")
        # WIQL, not SQL; every literal above goes through _wiql_literal.
        where = " AND ".join(clauses)
        return f"SELECT [System.Id] FROM WorkItems WHERE {where} ORDER BY [System.ChangedDate] ASC"  # noqa: S608

    async def poll(self, cursor: str | None) -> PollResult:
        """Every work item changed since `cursor` minus the overlap window, as snapshots."""
        before = self.client.requests_made
        previous: datetime | None = None
        since: datetime | None = None
        if cursor:
            previous = parse_azure_datetime(cursor)
            if previous is None:
                raise FatalError(
                    f"Azure DevOps board {self.board_key!r}: cursor {cursor!r} is not an "
                    "ISO 8601 timestamp"
                )
            since = previous - timedelta(seconds=self.config.overlap_seconds)
        top = self.config.max_items_per_poll
        by_id: dict[str, BoardItem] = {}
        window = since
        cut_short = False
        for _window in range(_MAX_WINDOWS):
            # WIQL refuses answers over 20,000 ids (VS402337): ask for at most `top`,
            # oldest change first, and when the answer is full start the next window
            # at the last change read (>=, so items sharing that time are read again).
            ids = await self.client.query_ids(self.wiql(window), top=top)
            # Items of the previous window come back here only if they share its last
            # change time or changed since: read them again, keep the newest revision.
            raw = await self.client.get_work_items_batch(ids, self.requested_fields())
            read = await self._snapshots(raw, check_scope=False)
            for snapshot in read:
                known = by_id.get(snapshot.item_id)
                if known is None or snapshot.revision >= known.revision:
                    by_id[snapshot.item_id] = snapshot
            cut_short = len(ids) >= top
            if not cut_short:
                break
            last = max((i.updated_at for i in read), default=None)
            if last is None or (window is not None and last <= window):
                log.warning(
                    "Azure DevOps board %s: more than %d items changed at %s; the rest "
                    "follow on the next poll",
                    self.board_key,
                    top,
                    window,
                )
                break
            window = last
        else:
            log.warning(
                "Azure DevOps board %s: %d WIQL windows read; the rest follow on the next poll",
                self.board_key,
                _MAX_WINDOWS,
            )
        items = list(by_id.values())
        latest = previous
        for item in items:
            if latest is None or item.updated_at > latest:
                latest = item.updated_at
        # Everything changed up to the query's own time (`asOf`) has been read, unless
        # the per-poll limit cut the answer short: then only up to the last item read.
        # Counting the overlap back from `asOf` rather than from the last change keeps
        # a quiet board at one WIQL call per poll.
        as_of = parse_azure_datetime(self.client.last_as_of or "")
        if as_of is not None and not cut_short and (latest is None or as_of > latest):
            latest = as_of
        new_cursor = format_cursor(latest) if latest is not None else cursor
        return PollResult(
            items=tuple(items),
            requests_made=self.client.requests_made - before,
            cursor=new_cursor,
        )

    async def fetch(self, item_ids: tuple[str, ...]) -> tuple[BoardItem, ...]:
        """Current snapshots of the given work items; missing or out-of-board ones omitted."""
        ids: list[int] = []
        for raw_id in item_ids:
            text = str(raw_id).strip()
            if text.isascii() and text.isdigit() and int(text) > 0:
                ids.append(int(text))
            else:
                log.warning("Azure DevOps board %s: ignoring item id %r", self.board_key, raw_id)
        ids = list(dict.fromkeys(ids))
        if not ids:
            return ()
        raw = await self.client.get_work_items_batch(ids, self.requested_fields())
        return tuple(await self._snapshots(raw, check_scope=True))

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookTrigger:
        """Verify a service hook delivery (basic auth) and name the work item to re-fetch."""
        return parse_azure_service_hook(
            self.config.hook_username, self.config.hook_password, headers, body
        )

    # -- state categories ----------------------------------------------------------

    def process_cache(self) -> dict[str, dict[str, str]]:
        """The work item types' states read so far: type → state → category (lower case).

        The shell keeps it in the ledger so the next run (``sync --once``) reads no
        states; a state the cache does not know is read again (`_ensure_categories`).
        A column-based board adds its revisions stream state under
        `REVISIONS_CACHE_KEY`: the watermark and, for the items in a Done column, their
        rev and since when (``"rev|ISO time"``), so the next run reads only the
        revisions made since.
        """
        cache = {
            wit: {state: category.value for state, category in states.items()}
            for wit, states in self._type_states.items()
        }
        if self._revisions_token is not None:
            stream = {"token": self._revisions_token}
            for item_id, (rev, since) in self._column_done.items():
                if since is not None:
                    stream[str(item_id)] = f"{rev}|{format_cursor(since)}"
            cache[REVISIONS_CACHE_KEY] = stream
        return cache

    def prime_process_cache(self, cache: Mapping[str, Any]) -> None:
        """Take a `process_cache()` kept from an earlier run (types already read win)."""
        by_value = {c.value: c for c in StateCategory}
        for wit, states in cache.items():
            if not isinstance(wit, str) or not isinstance(states, Mapping):
                continue
            if wit == REVISIONS_CACHE_KEY:
                self._prime_revisions(states)
                continue
            key = wit.lower()
            if key in self._type_states:
                continue
            mapping = {
                str(state).lower(): by_value[category]
                for state, category in states.items()
                if isinstance(category, str) and category in by_value
            }
            self._type_states[key] = mapping
            self._completed_states[key] = frozenset(
                n for n, c in mapping.items() if c is StateCategory.DONE
            )

    def _prime_revisions(self, stream: Mapping[str, Any]) -> None:
        token = stream.get("token")
        if self._revisions_token is not None or not isinstance(token, str) or not token:
            return
        column_done: dict[int, tuple[int, datetime | None]] = {}
        for key, value in stream.items():
            if key == "token" or not key.isdigit() or not isinstance(value, str):
                continue
            rev_text, _, when = value.partition("|")
            since = parse_azure_datetime(when)
            if rev_text.isdigit() and since is not None:
                column_done[int(key)] = (int(rev_text), since)
        self._revisions_token = token
        self._column_done = column_done

    async def _load_type_states(self, work_item_type: str) -> None:
        states = await self.client.get_type_states(work_item_type)
        mapping: dict[str, StateCategory] = {}
        for state in states:
            name, category = state.get("name"), state.get("category")
            if not isinstance(name, str) or not isinstance(category, str):
                continue
            mapped = CATEGORY_MAP.get(_norm_word(category))
            if mapped is None:
                log.warning(
                    "Azure DevOps board %s: state %r of %r has unknown category %r",
                    self.board_key,
                    name,
                    work_item_type,
                    category,
                )
                continue
            mapping[name.lower()] = mapped
        key = work_item_type.lower()
        self._type_states[key] = mapping
        self._completed_states[key] = frozenset(
            n for n, c in mapping.items() if c is StateCategory.DONE
        )

    async def _ensure_categories(self, raw: Sequence[Mapping[str, Any]]) -> None:
        refreshed: set[str] = set()
        for item in raw:
            fields = item.get("fields") or {}
            wit, state = fields.get("System.WorkItemType"), fields.get("System.State")
            if not isinstance(wit, str) or not wit:
                continue
            key = wit.lower()
            if key not in self._type_states:
                await self._load_type_states(wit)
                refreshed.add(key)
            elif (
                isinstance(state, str)
                and state.lower() not in self._type_states[key]
                and key not in refreshed
            ):
                # The process changed since the states were cached: read them again, once.
                await self._load_type_states(wit)
                refreshed.add(key)

    def _category(self, wit: str, state: str, column: str | None) -> StateCategory:
        category = self._type_states.get(wit.lower(), {}).get(state.lower())
        if category is None:
            log.warning(
                "Azure DevOps board %s: state %r of %r has no known category; "
                "treated as in progress",
                self.board_key,
                state,
                wit,
            )
            category = StateCategory.IN_PROGRESS
        done_columns = self.config.done_board_columns
        if done_columns and category is not StateCategory.REMOVED:
            if column is not None and column in done_columns:
                return StateCategory.DONE
            if category is StateCategory.DONE:
                # Completed by process, but the board bills on a column it is not in.
                return StateCategory.RESOLVED
        return category

    # -- Done time -----------------------------------------------------------------

    def _done_time_from_updates(
        self, wit: str, updates: Iterable[Mapping[str, Any]]
    ) -> datetime | None:
        done_columns = self.config.done_board_columns
        completed = self._completed_states.get(wit.lower(), frozenset())
        for update in reversed(list(updates)):
            fields = update.get("fields")
            if not isinstance(fields, Mapping):
                continue
            if done_columns:
                change = fields.get("System.BoardColumn")
                matched = isinstance(change, Mapping) and change.get("newValue") in done_columns
            else:
                change = fields.get("System.State")
                new_state = change.get("newValue") if isinstance(change, Mapping) else None
                matched = isinstance(new_state, str) and new_state.lower() in completed
            if not matched:
                continue
            for name in ("System.ChangedDate", "System.AuthorizedDate"):
                value = fields.get(name)
                if isinstance(value, Mapping):
                    moment = parse_azure_datetime(value.get("newValue"))
                    if moment is not None:
                        return moment
            moment = parse_azure_datetime(update.get("revisedDate"))
            if moment is not None and 1 < moment.year < _FAR_FUTURE_YEAR:
                return moment
            return None
        return None

    def _done_time_from_fields(self, fields: Mapping[str, Any]) -> datetime | None:
        """The Done time from the batch's own fields (None: ask the updates).

        A state-based board's item is Done since it entered its (Completed) state:
        ``StateChangeDate``, else ``ClosedDate``. A board that bills on columns cannot
        tell from fields when the column changed, so it still reads the updates.
        """
        if self.config.done_board_columns:
            return None
        for name in (STATE_CHANGE_DATE, CLOSED_DATE):
            moment = parse_azure_datetime(fields.get(name))
            if moment is not None and 1 < moment.year < _FAR_FUTURE_YEAR:
                return moment
        return None

    def _note_revision(self, value: Mapping[str, Any]) -> None:
        """Fold one revision of the stream into `_column_done` (revisions come in
        change order, so an item's come in rev order)."""
        item_id = value.get("id")
        fields = value.get("fields")
        if not isinstance(item_id, int) or not isinstance(fields, Mapping):
            return
        rev = value.get("rev", fields.get("System.Rev"))
        if not isinstance(rev, int):
            return
        known = self._column_done.get(item_id)
        if known is not None and rev <= known[0]:
            return
        column = fields.get("System.BoardColumn")
        since: datetime | None = None
        if isinstance(column, str) and column in self.config.done_board_columns:
            if known is not None and known[1] is not None:
                since = known[1]  # still in a Done column: since it first entered it
            else:
                since = parse_azure_datetime(fields.get("System.ChangedDate"))
        self._column_done[item_id] = (rev, since)

    async def _catch_up_revisions(self) -> None:
        """Read the reporting revisions stream from the kept watermark to its end."""
        for _batch in range(_MAX_REVISION_BATCHES):
            values, token, last = await self.client.read_revisions(
                REVISION_FIELDS, continuation_token=self._revisions_token
            )
            for value in values:
                self._note_revision(value)
            moved = token is not None and token != self._revisions_token
            if token is not None:
                self._revisions_token = token
            if last or not moved:
                return
        log.warning(
            "Azure DevOps board %s: %d revision batches read; the rest follow on the next poll",
            self.board_key,
            _MAX_REVISION_BATCHES,
        )

    def _column_done_at(self, item_id: int, rev: int) -> tuple[bool, datetime | None]:
        """(known, since when in a Done column) from the stream read so far."""
        known = self._column_done.get(item_id)
        if known is None or known[0] < rev or known[1] is None:
            return False, None
        return True, known[1]

    async def _done_at(self, item_id: int, rev: int, wit: str) -> datetime | None:
        cached = self._done_at_cache.get(item_id)
        if cached is not None and cached[0] == rev:
            return cached[1]
        updates = await self.client.get_updates(item_id)
        done_at = self._done_time_from_updates(wit, updates)
        self._done_at_cache[item_id] = (rev, done_at)
        return done_at

    # -- mapping -------------------------------------------------------------------

    def _in_scope(self, fields: Mapping[str, Any]) -> bool:
        cfg = self.config
        project = fields.get("System.TeamProject")
        if isinstance(project, str) and project.lower() != cfg.project.lower():
            return False
        area = fields.get("System.AreaPath")
        if cfg.area_path and isinstance(area, str) and not _under(area, cfg.area_path):
            return False
        wit = fields.get("System.WorkItemType")
        return not (
            cfg.work_item_types
            and isinstance(wit, str)
            and wit.lower() not in {t.lower() for t in cfg.work_item_types}
        )

    def _billing_type(self, value: Any) -> BillingType | None:
        if not isinstance(value, str) or not value.strip():
            return None
        configured = self.config.billing_type_values
        for option, billing in configured.items():
            if _norm_word(option) == _norm_word(value):
                return billing
        word = _norm_word(value)
        for billing in BillingType:
            if word == _norm_word(billing.value):
                return billing
        found = _BILLING_WORDS.get(word)
        if found is None:
            log.warning(
                "Azure DevOps board %s: billing type value %r is not mapped",
                self.board_key,
                value,
            )
        return found

    def _amount(self, item_id: int, name: str, value: Any) -> Decimal | None:
        amount = _decimal(value)
        if value is not None and (amount is None or amount < 0):
            log.warning(
                "Azure DevOps board %s: work item %d has %s %r: ignored",
                self.board_key,
                item_id,
                name,
                value,
            )
            return None
        return amount

    async def _snapshots(
        self, raw: Sequence[Mapping[str, Any]], *, check_scope: bool
    ) -> list[BoardItem]:
        usable: list[Mapping[str, Any]] = []
        for item in raw:
            fields = item.get("fields")
            if not isinstance(item.get("id"), int) or not isinstance(fields, Mapping):
                continue
            if check_scope and not self._in_scope(fields):
                continue
            usable.append(item)
        await self._ensure_categories(usable)

        prepared: list[tuple[Mapping[str, Any], StateCategory]] = []
        done_jobs: dict[int, tuple[int, str]] = {}
        done_at: dict[int, datetime | None] = {}
        for item in usable:
            fields = item["fields"]
            wit = str(fields.get("System.WorkItemType") or "")
            state = str(fields.get("System.State") or "")
            column = fields.get("System.BoardColumn")
            category = self._category(wit, state, column if isinstance(column, str) else None)
            prepared.append((item, category))
            if category is StateCategory.DONE:
                known = self._done_time_from_fields(fields)
                if known is not None:
                    done_at[item["id"]] = known
                    continue
                rev = item.get("rev")
                done_jobs[item["id"]] = (rev if isinstance(rev, int) else 0, wit)

        if done_jobs and self.config.done_board_columns:
            # A column-based board: when each item entered its Done column comes from
            # the revisions stream (caught up once per poll, in batches), not from one
            # `updates` call per item; only what the stream cannot tell is read per item.
            if any(not self._column_done_at(i, r)[0] for i, (r, _) in done_jobs.items()):
                await self._catch_up_revisions()
            for item_id, (rev, _wit) in list(done_jobs.items()):
                streamed, entered = self._column_done_at(item_id, rev)
                if streamed:
                    done_at[item_id] = entered
                    del done_jobs[item_id]

        semaphore = asyncio.Semaphore(_UPDATES_CONCURRENCY)

        async def read(item_id: int, rev: int, wit: str) -> None:
            async with semaphore:
                done_at[item_id] = await self._done_at(item_id, rev, wit)

        if done_jobs:
            try:
                async with asyncio.TaskGroup() as group:
                    for item_id, (rev, wit) in done_jobs.items():
                        group.create_task(read(item_id, rev, wit))
            except BaseExceptionGroup as group_error:
                # Surface one error of the taxonomy (a fatal one first), not a group.
                errors = list(group_error.exceptions)
                errors.sort(key=lambda e: 0 if isinstance(e, FatalError) else 1)
                raise errors[0] from None

        snapshots: list[BoardItem] = []
        for item, category in prepared:
            snapshot = self._to_item(item, category, done_at.get(item["id"]))
            if snapshot is not None:
                snapshots.append(snapshot)
        return snapshots

    def _to_item(
        self, item: Mapping[str, Any], category: StateCategory, done_at: datetime | None
    ) -> BoardItem | None:
        cfg = self.config
        item_id: int = item["id"]
        fields: Mapping[str, Any] = item["fields"]
        updated_at = parse_azure_datetime(fields.get("System.ChangedDate"))
        if updated_at is None:
            log.warning(
                "Azure DevOps board %s: work item %d has no System.ChangedDate; skipped",
                self.board_key,
                item_id,
            )
            return None
        rev = item.get("rev")
        column = fields.get("System.BoardColumn")
        state = fields.get("System.State")
        column_text = column if isinstance(column, str) and column else str(state or "")
        tags = fields.get("System.Tags")
        labels = (
            tuple(t.strip() for t in tags.split(";") if t.strip()) if isinstance(tags, str) else ()
        )
        assignees: tuple[str, ...] = ()
        assigned = fields.get("System.AssignedTo")
        if isinstance(assigned, Mapping):
            who = assigned.get("uniqueName") or assigned.get("displayName")
            if isinstance(who, str) and who:
                assignees = (who,)
        elif isinstance(assigned, str) and assigned:
            assignees = (assigned,)
        iteration = fields.get("System.IterationPath")
        return BoardItem(
            source=Source.AZURE_DEVOPS,
            board=cfg.board_key,
            item_id=str(item_id),
            title=str(fields.get("System.Title") or ""),
            url=cfg.web_url(item_id),
            column=column_text,
            state_category=category,
            updated_at=updated_at,
            revision=rev if isinstance(rev, int) else int(updated_at.timestamp()),
            hours=self._amount(item_id, cfg.hours_field, fields.get(cfg.hours_field)),
            billing_type=(
                self._billing_type(fields.get(cfg.billing_type_field))
                if cfg.billing_type_field
                else None
            ),
            labels=labels,
            assignees=assignees,
            iteration=iteration if isinstance(iteration, str) and iteration else None,
            rate=(
                self._amount(item_id, cfg.rate_field, fields.get(cfg.rate_field))
                if cfg.rate_field
                else None
            ),
            milestone_amount=(
                self._amount(item_id, cfg.milestone_field, fields.get(cfg.milestone_field))
                if cfg.milestone_field
                else None
            ),
            done_at=done_at if category is StateCategory.DONE else None,
            hours_by_person=parse_hours_by_person(
                str(fields.get(cfg.hours_by_person_field) or "")
                if cfg.hours_by_person_field
                else None
            ),
        )
