"""One outbox mechanism for every external side effect (Stripe, Slack, what comes next).

The transaction that decides a side effect enqueues it (`sync.ledger.outbox.enqueue`).
A `Drainer` then performs the due rows of the operations its `HandlerRegistry` knows:

1. claim the row (compare-and-set with a lease; the attempt is counted there, once);
2. call the operation's handler, which reads the ledger as it is now, makes the call
   with `op.call_key`, and returns an `Outcome`:
   - `Done(result, record)`: the call happened (or was not needed: `cancelled`);
     `record(conn)` writes its result to the ledger in the transaction that closes
     the row, and only if this claim still holds the lease;
   - `Wait(after)`: not yet possible (the draft does not exist yet); the attempt is
     given back and the row is due again `after` from now (by default at once: the
     next round of the same drain);
   - `Retry(after, new_key, error)`: a transient failure; due again after the backoff
     (or the server's hint); `new_key` moves to the next idempotency key generation;
   - `Park(reason)`: refused for good; parked with an audit row and the operation's
     park hook (Stripe: the entry goes to `needs_review`), in one transaction.
3. Exceptions a handler did not turn into an outcome: `RetriableError` is a `Retry`
   (with its `retry_after`); `FatalError` (credentials, configuration: every row would
   fail alike) releases the row and aborts the drain, reported in `DrainReport.aborted`;
   anything else (a bug, the ledger) is logged and retried with backoff, so one bad
   row never blocks the others and nothing is lost.

A drainer that loses its lease (it was slower than the lease) never writes over its
successor: every write is conditioned on its claim token (`DrainReport.lost`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection

from connectors.base import FatalError, RetriableError
from sync.ledger import outbox as store
from sync.ledger.outbox import Operation, OutboxOp, OutboxStatus, Service
from sync.ledger.store import Ledger

log = structlog.get_logger(__name__)

__all__ = [
    "BackoffPolicy",
    "Done",
    "DrainReport",
    "Drainer",
    "HandlerRegistry",
    "Operation",
    "OutboxOp",
    "OutboxStatus",
    "Outcome",
    "Park",
    "Retry",
    "Service",
    "Wait",
]

Clock = Callable[[], datetime]
Record = Callable[[Connection], None]


# --- outcomes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Done:
    """The side effect happened (`cancelled`: it was no longer needed).

    `record` writes the call's result to the ledger; it runs in the transaction that
    closes the row, after the lease is checked, so a result is recorded at most once
    and never by a drainer that lost the row."""

    result: Mapping[str, Any] = field(default_factory=dict)
    record: Record | None = None
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class Wait:
    """Not possible yet (a dependency is still pending). Not an attempt."""

    after: timedelta = timedelta(0)
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Retry:
    """A transient failure: try again after the backoff, or `after` seconds if the
    other side said so. `new_key`: the idempotency key was spent (a 5xx stored under
    it), the next try uses the next generation and must search before creating."""

    error: str
    after: float | None = None
    new_key: bool = False


@dataclass(frozen=True, slots=True)
class Park:
    """Refused for good: a person must look. Never retried."""

    reason: str


Outcome = Done | Wait | Retry | Park

Handler = Callable[[OutboxOp], Awaitable[Outcome]]
# Runs in the parking transaction, after the row is parked: e.g. entry → needs_review.
ParkHook = Callable[[Connection, OutboxOp, str, datetime], None]


# --- policy ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Delay before the next try after `attempts` failed ones: `floor * 2**(attempts-1)`
    capped at `cap`; a server's hint (Retry-After) is honoured up to `max_hint`, never
    below `floor`. `park_after`: park a row after that many attempts (None: never)."""

    floor: float = 1.0
    cap: float = 300.0
    max_hint: float = 3600.0
    park_after: int | None = None

    def __post_init__(self) -> None:
        if self.floor <= 0 or self.cap < self.floor or self.max_hint < self.floor:
            raise ValueError(f"backoff needs 0 < floor <= cap, max_hint: {self}")
        if self.park_after is not None and self.park_after < 1:
            raise ValueError("park_after must be at least 1")

    def delay(self, attempts: int, hint: float | None = None) -> float:
        if hint is not None:
            return min(max(hint, self.floor), self.max_hint)
        exponent = min(max(attempts, 1) - 1, 62)
        return min(self.floor * 2.0**exponent, self.cap)


# --- registry ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registration:
    handler: Handler
    on_park: ParkHook | None = None


class HandlerRegistry:
    """Which handler performs each operation, and what parking it also does."""

    def __init__(self) -> None:
        self._by_op: dict[Operation, Registration] = {}

    def register(
        self, operation: Operation, handler: Handler, *, on_park: ParkHook | None = None
    ) -> None:
        if operation in self._by_op:
            raise ValueError(f"{operation} already has a handler")
        self._by_op[operation] = Registration(handler, on_park)

    def get(self, operation: Operation) -> Registration | None:
        return self._by_op.get(operation)

    @property
    def operations(self) -> frozenset[Operation]:
        return frozenset(self._by_op)


# --- the drain -----------------------------------------------------------------------------


@dataclass
class DrainReport:
    done: int = 0
    cancelled: int = 0
    waiting: int = 0
    retried: int = 0
    parked: int = 0
    lost: int = 0  # leases lost to another drainer (their result was not recorded)
    aborted: str | None = None
    errors: list[str] = field(default_factory=list)


class Drainer:
    """Performs due outbox rows of `registry`'s operations. Safe beside other drainers
    (other processes or hosts): every row is claimed with a lease first.

    `lease` must exceed the longest handler call (the HTTP clients' deadlines); `owner`
    names this drainer in `lease_owner` (host, pid, "cli")."""

    def __init__(
        self,
        ledger: Ledger,
        registry: HandlerRegistry,
        clock: Clock,
        *,
        policy: BackoffPolicy | None = None,
        lease: timedelta = timedelta(minutes=5),
        owner: str = "kanvoice",
        batch: int = 200,
    ) -> None:
        self.ledger = ledger
        self.registry = registry
        self.clock = clock
        self.policy = policy or BackoffPolicy()
        self.lease = lease
        self.owner = owner
        self.batch = batch

    async def drain(self, max_rounds: int = 20) -> DrainReport:
        """Rounds over the due rows until one makes no progress (nothing done or
        parked), a `FatalError` aborts, or `max_rounds` is reached."""
        report = DrainReport()
        for _ in range(max_rounds):
            report.waiting = 0
            progressed = await self._round(report)
            if report.aborted is not None or not progressed:
                break
        return report

    async def drain_one(self, op_id: int) -> DrainReport:
        """Claim and perform one row (if it is due and free)."""
        report = DrainReport()
        await self._perform(op_id, report)
        return report

    def _due(self) -> list[int]:
        with self.ledger.engine.connect() as conn:
            return store.due_ids(conn, self.registry.operations, self.clock(), self.batch)

    async def _round(self, report: DrainReport) -> bool:
        progressed = False
        for op_id in await asyncio.to_thread(self._due):
            if await self._perform(op_id, report):
                progressed = True
            if report.aborted is not None:
                break
        return progressed

    def _claim(self, op_id: int, token: str) -> OutboxOp | None:
        with self.ledger.engine.begin() as conn:
            return store.claim(conn, op_id, token, self.clock(), self.lease)

    async def _perform(self, op_id: int, report: DrainReport) -> bool:
        """Returns whether the row was closed (done, cancelled or parked)."""
        token = store.new_lease_token(self.owner)
        op = await asyncio.to_thread(self._claim, op_id, token)
        if op is None:
            return False  # another drainer has it, or it is no longer due
        registration = self.registry.get(op.operation)
        assert registration is not None  # due_ids selects registered operations only
        outcome: Outcome
        try:
            outcome = await registration.handler(op)
        except RetriableError as exc:
            outcome = Retry(str(exc), exc.retry_after)
        except FatalError as exc:
            report.aborted = f"{op.operation} #{op.id}: {exc}"
            report.errors.append(report.aborted)
            log.error("outbox.aborted", operation=op.operation, op=op.id, error=str(exc))
            await asyncio.to_thread(self._hand_back, op, token, str(exc), report)
            return False
        except Exception as exc:  # a bug or the ledger: keep the row, try again later
            log.exception("outbox.handler_failed", operation=op.operation, op=op.id)
            outcome = Retry(repr(exc))
        return await asyncio.to_thread(self._apply, op, token, outcome, registration, report)

    def _apply(
        self,
        op: OutboxOp,
        token: str,
        outcome: Outcome,
        registration: Registration,
        report: DrainReport,
    ) -> bool:
        if isinstance(outcome, Retry):
            if self.policy.park_after is not None and op.attempts >= self.policy.park_after:
                outcome = Park(f"gave up after {op.attempts} attempts: {outcome.error}")
            else:
                self._retry(op, token, outcome, report)
                return False
        if isinstance(outcome, Park):
            return self._park(op, token, outcome, registration, report)
        now = self.clock()
        if isinstance(outcome, Wait):
            with self.ledger.engine.begin() as conn:
                not_before = now + outcome.after if outcome.after > timedelta(0) else None
                kept = store.release(conn, op, token, not_before, refund_attempt=True)
            if kept:
                report.waiting += 1
            else:
                self._lost(op, report)
            return False
        with self.ledger.engine.begin() as conn:
            if not store.holds_lease(conn, op, token):
                self._lost(op, report)
                return False
            if outcome.record is not None:
                outcome.record(conn)
            status = OutboxStatus.CANCELLED if outcome.cancelled else OutboxStatus.DONE
            store.complete(conn, op, token, status, now, outcome.result)
        if outcome.cancelled:
            report.cancelled += 1
        else:
            report.done += 1
        return True

    def _hand_back(self, op: OutboxOp, token: str, error: str, report: DrainReport) -> None:
        """The drain aborts: the row is pending again after the backoff floor."""
        due = self.clock() + timedelta(seconds=self.policy.floor)
        with self.ledger.engine.begin() as conn:
            if not store.release(conn, op, token, due, error=error):
                self._lost(op, report)

    def _retry(self, op: OutboxOp, token: str, outcome: Retry, report: DrainReport) -> None:
        delay = self.policy.delay(op.attempts, outcome.after)
        payload = dict(op.payload)
        if outcome.new_key:
            payload["generation"] = op.generation + 1
        with self.ledger.engine.begin() as conn:
            kept = store.release(
                conn,
                op,
                token,
                self.clock() + timedelta(seconds=delay),
                error=outcome.error,
                payload=payload,
            )
        if not kept:
            self._lost(op, report)
            return
        report.retried += 1
        report.errors.append(f"{op.operation} #{op.id}: {outcome.error}")
        log.warning(
            "outbox.retry_later",
            operation=op.operation,
            op=op.id,
            attempts=op.attempts,
            delay=delay,
        )

    def _park(
        self,
        op: OutboxOp,
        token: str,
        outcome: Park,
        registration: Registration,
        report: DrainReport,
    ) -> bool:
        now = self.clock()
        actor = op.operation.service.value
        with self.ledger.engine.begin() as conn:
            if not store.park(conn, op, token, actor, outcome.reason, now):
                self._lost(op, report)
                return False
            if registration.on_park is not None:
                registration.on_park(conn, op, outcome.reason, now)
        report.parked += 1
        report.errors.append(f"{op.operation} #{op.id}: {outcome.reason}")
        log.error("outbox.parked", operation=op.operation, op=op.id, error=outcome.reason)
        return True

    @staticmethod
    def _lost(op: OutboxOp, report: DrainReport) -> None:
        report.lost += 1
        log.warning("outbox.lease_lost", operation=op.operation, op=op.id)
