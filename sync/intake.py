"""One intake for board webhooks: the inbox writer (web side) and its worker (leader).

Web side, `IntakeWriter`: a verified delivery is written to the ledger's inbox and
only then answered. The write runs on one dedicated thread (the event loop never
waits on the database) that takes every delivery waiting at that moment and writes
them in one INSERT, one transaction: a group commit, so a burst costs a few
transactions instead of one per request, and SQLite's single writer is never fought
over by a pool of threads. The request waits for its own commit, at most
`INTAKE_TIMEOUT_SECONDS`; past that (a hung or locked ledger) it is answered 503 and
the sender retries. If that slow commit lands after all, the retry is a duplicate of
a stored delivery: nothing is lost and nothing is done twice.

Leader side, `drain_inbox`: pending rows are grouped per item. An item is taken when
its newest delivery is older than the coalescing window (a bulk move sends several
deliveries per card within a second or two) or its oldest has waited `max_wait`; N
deliveries of one item become one re-fetch. The items taken are re-fetched per board
in batches (GitHub ``nodes(ids:)`` of up to 100, Azure DevOps ``workitemsbatch`` of
up to 200), ingested through `Engine.ingest` (the path polling uses), and only then
marked done. A crash anywhere before that leaves them pending: the next drain (after
a restart) does the work again, and since ingest is idempotent nothing is billed
twice. A board that cannot be reached keeps its rows pending with a backoff; other
boards go on.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from connectors.base import BoardConnector, ConnectorError, FatalError, RetriableError
from connectors.slack import SlackInputInvalid, SlackRequestRejected
from connectors.slack.verify import decision_from_payload
from mapping.domain import BoardItem, Source
from sync.boards import settle_conflicts
from sync.composition import Services
from sync.failpoints import failpoint
from sync.ledger.store import InboxDelivery, InboxRow, Ledger
from sync.metrics import INBOX_WRITE

if TYPE_CHECKING:
    from sync.approvals import ApprovalDesk

log = structlog.get_logger(__name__)

#: How long a webhook request waits for its inbox commit before answering 503.
INTAKE_TIMEOUT_SECONDS = 3.0
#: The most deliveries one intake transaction writes.
INTAKE_BATCH = 500
#: An item is re-fetched once its newest delivery is this old (coalescing window)…
COALESCE_SECONDS = 1.0
#: …or once its oldest has waited this long, however busy the item.
MAX_WAIT_SECONDS = 10.0
#: Inbox rows read per drain round.
DRAIN_LIMIT = 5_000
RETRY_SECONDS = 30.0
#: Snapshots per ingest transaction from the worker.
INGEST_CHUNK = 100
FATAL_RETRY_SECONDS = 300.0


class IntakeUnavailable(Exception):
    """The inbox could not be written in time (ledger down, locked or hung)."""


class IntakeWriter:
    """Writes deliveries to the inbox from one thread, in group commits."""

    def __init__(
        self,
        ledger: Ledger,
        clock: Callable[[], datetime],
        timeout: float = INTAKE_TIMEOUT_SECONDS,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.timeout = timeout
        self._lock = threading.Lock()
        self._waiting: list[
            tuple[InboxDelivery, asyncio.Future[bool], asyncio.AbstractEventLoop]
        ] = []
        self._running = False
        self._executor: ThreadPoolExecutor | None = None

    async def accept(self, delivery: InboxDelivery, wait: float | None = None) -> bool:
        """Store one delivery: True if new, False if a redelivery of a stored one.

        Raises `IntakeUnavailable` when the ledger does not commit it within `wait`
        seconds (default: the writer's timeout; Slack's answer is due within 3 s).
        """
        limit = self.timeout if wait is None else wait
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        started = time.perf_counter()
        with self._lock:
            self._waiting.append((delivery, future, loop))
            start = not self._running
            self._running = True
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="kanvoice-intake")
            executor = self._executor
        if start:
            executor.submit(self._write_waiting)
        try:
            return await asyncio.wait_for(asyncio.shield(future), limit)
        except TimeoutError:
            raise IntakeUnavailable(
                f"the ledger did not store the delivery within {limit:g} s"
            ) from None
        finally:
            INBOX_WRITE.observe(time.perf_counter() - started)

    def _write_waiting(self) -> None:
        while True:
            with self._lock:
                batch, self._waiting = self._waiting[:INTAKE_BATCH], self._waiting[INTAKE_BATCH:]
                if not batch:
                    self._running = False
                    return
            try:
                answers = self.ledger.accept_deliveries([d for d, _, _ in batch], self.clock())
            except Exception as exc:  # every waiter gets the error and answers 503
                failure = IntakeUnavailable(_reason(exc))
                for _, future, loop in batch:
                    loop.call_soon_threadsafe(_settle, future, None, failure)
                continue
            for (_, future, loop), new in zip(batch, answers, strict=True):
                loop.call_soon_threadsafe(_settle, future, new, None)

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


def _settle(future: asyncio.Future[bool], value: bool | None, error: Exception | None) -> None:
    if future.done():  # the request gave up waiting (503); the outcome stays in the ledger
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(bool(value))


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


# -- the worker -----------------------------------------------------------------------


@dataclass
class DrainReport:
    """What one `drain_inbox` did."""

    deliveries: int = 0  # inbox rows finished (done or ignored)
    items_fetched: int = 0  # distinct items asked for
    fetch_calls: int = 0  # board requests made for them
    deferred: int = 0  # rows left for a later round (window not over, or backing off)
    failed_boards: dict[str, str] = field(default_factory=dict)
    seen: int = 0
    changed: int = 0
    stale: int = 0  # Azure DevOps items whose hooks named no newer revision

    def merge(self, other: DrainReport) -> None:
        self.deliveries += other.deliveries
        self.items_fetched += other.items_fetched
        self.fetch_calls += other.fetch_calls
        self.deferred = other.deferred
        self.failed_boards.update(other.failed_boards)
        self.seen += other.seen
        self.changed += other.changed
        self.stale += other.stale


def candidates(
    connectors: Sequence[BoardConnector], hint: str | None, owner: str | None = None
) -> list[BoardConnector]:
    """The boards a delivery may concern: those its hint names, else those that might.

    `owner` (GitHub ``organization.login``) rules out boards of other accounts at
    once; a known project node id that is no board's rules out the rest.
    """
    pool = [c for c in connectors if _owner_matches(c, owner) is not False]
    answers = [(c, _matches(c, hint)) for c in pool]
    sure = [c for c, answer in answers if answer is True]
    if sure:
        return sure
    return [c for c, answer in answers if answer is None]


def _owner_matches(connector: BoardConnector, owner: str | None) -> bool | None:
    if owner is None:
        return None
    config = getattr(connector, "config", None)
    configured = getattr(config, "owner", None)
    if not isinstance(configured, str):
        return None
    return configured.casefold() == owner.casefold()


def _matches(connector: BoardConnector, hint: str | None) -> bool | None:
    matches = getattr(connector, "matches_board_hint", None)
    if matches is None:
        return None
    answer = matches(hint)
    return answer if isinstance(answer, bool) else None


def _source_of(connector: BoardConnector) -> str:
    from sync.boards import source_of

    return source_of(connector).value


def _read_pending(services: Services, limit: int) -> list[InboxRow]:
    with services.ledger.read(services.clock()) as uow:
        return uow.pending_inbox(limit)


def _finish(services: Services, done: list[int], ignored: list[int]) -> None:
    with services.ledger.unit_of_work(services.clock()) as uow:
        if done:
            uow.inbox_done(done)
        if ignored:
            uow.inbox_done(ignored, status="ignored")


def _retry(services: Services, ids: list[int], seconds: float, error: str) -> None:
    now = services.clock()
    with services.ledger.unit_of_work(now) as uow:
        uow.inbox_retry(ids, now + timedelta(seconds=seconds), error)


def _held_revisions(services: Services, keys: list[str]) -> dict[str, int]:
    with services.ledger.read(services.clock()) as uow:
        return {key: row.held.revision for key, row in uow.held_items(keys).items()}


async def drain_inbox(
    services: Services,
    *,
    window: float = COALESCE_SECONDS,
    max_wait: float = MAX_WAIT_SECONDS,
    limit: int = DRAIN_LIMIT,
    everything: bool = False,
    desk: ApprovalDesk | None = None,
) -> DrainReport:
    """Process the pending deliveries that are due (see the module docstring).

    Stripe events and Slack decisions are applied first, one at a time in the order
    received (`_apply_events`); board deliveries are coalesced and re-fetched.
    `everything=True` ignores the coalescing window (tests, `kanvoice` shutdown).
    Raises SQLAlchemy errors when the ledger is unreachable (the rows stay pending).
    """
    report = DrainReport()
    rows = await asyncio.to_thread(_read_pending, services, limit)
    if not rows:
        return report
    failpoint("inbox:before_drain")  # fault tests: killed with deliveries answered, unprocessed
    events = [row for row in rows if row.source in _EVENT_SOURCES]
    if events:
        await _apply_events(services, events, desk, report)
        rows = [row for row in rows if row.source not in _EVENT_SOURCES]
    now = services.clock()
    by_item: dict[tuple[str, str], list[InboxRow]] = defaultdict(list)
    ignored: list[int] = []
    for row in rows:
        if row.item_id is None or row.source not in _BOARD_SOURCES:
            ignored.append(row.id)  # nothing to re-fetch (kept only for dedupe)
            continue
        by_item[(row.source, row.item_id)].append(row)
    due: dict[tuple[str, str], list[InboxRow]] = {}
    for key, group in by_item.items():
        newest = max(r.received_at for r in group)
        oldest = min(r.received_at for r in group)
        if (
            everything
            or now - newest >= timedelta(seconds=window)
            or now - oldest >= timedelta(seconds=max_wait)
        ):
            due[key] = group
        else:
            report.deferred += len(group)

    connectors = list(services.connectors.values())
    if any(source == Source.GITHUB.value for source, _ in due):
        await _learn_project_ids(connectors, report)
    # Which boards each due item goes to (several boards may share a project).
    work: dict[str, tuple[BoardConnector, dict[str, list[InboxRow]]]] = {}
    for (source, item_id), group in due.items():
        latest = max(group, key=lambda r: r.id)
        of_source = [c for c in connectors if _source_of(c) == source]
        targets = candidates(of_source, latest.board_hint)
        if not targets:
            ignored.extend(r.id for r in group)
            continue
        for connector in targets:
            work.setdefault(connector.board_key, (connector, {}))[1][item_id] = group

    done: list[int] = []
    failed: set[int] = set()
    for board, (connector, items) in work.items():
        source = _source_of(connector)
        ids = list(items)
        if source == Source.AZURE_DEVOPS.value:
            ids = await _drop_stale(services, board, source, items, report)
        if not ids:
            continue
        before = _requests_made(connector)
        try:
            snapshots: tuple[BoardItem, ...] = await connector.fetch(tuple(ids))
        except ConnectorError as exc:
            seconds = (
                exc.retry_after
                if isinstance(exc, RetriableError) and exc.retry_after
                else FATAL_RETRY_SECONDS
                if isinstance(exc, FatalError)
                else RETRY_SECONDS
            )
            row_ids = [r.id for i in ids for r in items[i]]
            failed.update(row_ids)
            report.failed_boards[board] = str(exc)
            log.warning(
                "inbox.refetch_failed",
                board=board,
                items=len(ids),
                error=str(exc),
                retry_in=seconds,
            )
            await asyncio.to_thread(_retry, services, row_ids, seconds, str(exc))
            continue
        report.items_fetched += len(ids)
        report.fetch_calls += max(0, _requests_made(connector) - before)
        # Small transactions: the intake's INSERTs wait for the write lock between them.
        for start in range(0, len(snapshots), INGEST_CHUNK):
            chunk = snapshots[start : start + INGEST_CHUNK]
            ingested = await asyncio.to_thread(services.engine.ingest, chunk)
            if ingested.conflicts:
                # The same revision with other content: nothing was billed from it; the
                # board is read again now, or by the next poll if it cannot be read.
                try:
                    await settle_conflicts(services, ingested)
                except ConnectorError as exc:
                    log.warning("inbox.conflict_reread_failed", board=board, error=str(exc))
            report.seen += ingested.seen
            report.changed += ingested.items_new + ingested.items_updated
    for _board, (_connector, items) in work.items():
        for group in items.values():
            done.extend(r.id for r in group if r.id not in failed)
    done = sorted(set(done) - failed)
    if done or ignored:
        await asyncio.to_thread(_finish, services, done, ignored)
    report.deliveries += len(done) + len(ignored)
    if report.deliveries:
        log.info(
            "inbox.drained",
            deliveries=report.deliveries,
            items=report.items_fetched,
            requests=report.fetch_calls,
            changed=report.changed,
            stale=report.stale,
            deferred=report.deferred,
        )
    return report


_BOARD_SOURCES = frozenset({Source.GITHUB.value, Source.AZURE_DEVOPS.value})
#: Inbox sources whose rows carry the whole event in `body` (applied, not re-fetched).
STRIPE_SOURCE = "stripe"
SLACK_SOURCE = "slack"
_EVENT_SOURCES = frozenset({STRIPE_SOURCE, SLACK_SOURCE})


async def _apply_events(
    services: Services, rows: list[InboxRow], desk: ApprovalDesk | None, report: DrainReport
) -> None:
    """Apply stored Stripe events and Slack decisions, oldest first, each marked done
    right after it is applied.

    Money moves here, so each is applied through the same public entry points the
    request used to call: `Invoicing.apply_event` (which dedupes on the Stripe event id
    itself, so a crash between applying and marking done re-applies nothing) and
    `ApprovalDesk.decide` (approver check, audit, Stripe work queued in the outbox)
    followed by `follow_up` (notices; the approval message update goes through the
    outbox). The ledger failing leaves the row and every later one pending: the next
    round tries again, in order.
    """
    from sqlalchemy.exc import SQLAlchemyError

    for row in rows:
        try:
            if row.source == STRIPE_SOURCE:
                event = json.loads(row.body or "{}")
                outcome = await asyncio.to_thread(services.invoicing.apply_event, event)
                log.info(
                    "stripe.webhook", type=row.event, event_id=row.delivery_id, outcome=outcome
                )
            else:
                if desk is None:
                    from sync.approvals import desk_for

                    desk = desk_for(services)
                decision = decision_from_payload(json.loads(row.body or "{}"))
                if decision is not None:
                    reply = await desk.decide(decision)
                    log.info(
                        "slack.interaction",
                        kind=decision.kind,
                        invoice=decision.invoice_id,
                        user=decision.user_id,
                        outcome=reply.outcome,
                    )
                    if reply.has_follow_up:
                        await desk.follow_up(reply)  # never raises
        except SQLAlchemyError as exc:
            log.error("inbox.apply_failed", source=row.source, error=_reason(exc))
            raise
        except (ValueError, SlackRequestRejected, SlackInputInvalid) as exc:
            # Verified at intake, so not expected: kept for a human, never retried.
            log.error("inbox.event_unreadable", source=row.source, error=str(exc))
            await asyncio.to_thread(_finish, services, [], [row.id])
            report.deliveries += 1
            continue
        await asyncio.to_thread(_finish, services, [row.id], [])
        report.deliveries += 1


def _prune(services: Services, days: int) -> int:
    before = services.clock() - timedelta(days=days)
    total = 0
    while True:
        with services.ledger.unit_of_work(services.clock()) as uow:
            deleted = uow.prune_inbox(before)
        total += deleted
        if deleted < 5_000:
            return total


async def prune_inbox(services: Services) -> int:
    """Delete inbox rows processed more than `ledger.inbox_retention_days` ago (in
    batches of 5,000, each its own short transaction); pending rows stay."""
    days = services.settings.ledger.inbox_retention_days
    deleted = await asyncio.to_thread(_prune, services, days)
    if deleted:
        log.info("inbox.pruned", deleted=deleted, older_than_days=days)
    return deleted


async def _learn_project_ids(connectors: Sequence[BoardConnector], report: DrainReport) -> None:
    """GitHub boards whose project node id is not known yet ask for it (once per
    process), so that deliveries of the organization's other projects are ignored
    without re-fetching them."""
    for connector in connectors:
        resolve = getattr(connector, "resolve_project_id", None)
        if resolve is None or _matches(connector, "?") is not None:
            continue  # not GitHub, or its project id is known
        try:
            await resolve()
        except ConnectorError as exc:  # the re-fetch below reports the board's trouble
            log.warning("inbox.project_id_unknown", board=connector.board_key, error=str(exc))
            continue
        report.fetch_calls += 1


async def _drop_stale(
    services: Services,
    board: str,
    source: str,
    items: dict[str, list[InboxRow]],
    report: DrainReport,
) -> list[str]:
    """Azure DevOps items whose hooks name a revision newer than the ledger's."""
    keys = {f"{source}:{board}:{item_id}": item_id for item_id in items}
    held = await asyncio.to_thread(_held_revisions, services, list(keys))
    fresh: list[str] = []
    for key, item_id in keys.items():
        revisions = [r.revision for r in items[item_id] if r.revision is not None]
        if key in held and revisions and max(revisions) <= held[key]:
            report.stale += 1
            continue
        fresh.append(item_id)
    return fresh


def _requests_made(connector: BoardConnector) -> int:
    real: Any = getattr(connector, "built", None) or connector
    made = getattr(real, "requests_made", None)
    if not isinstance(made, int):
        made = getattr(getattr(real, "client", None), "requests_made", None)
    return int(made) if isinstance(made, int) else 0
