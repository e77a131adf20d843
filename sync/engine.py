"""The sync engine: the one entry point that takes board snapshots into the ledger.

Polling, webhooks, `kanvoice ingest` and the demo all call `Engine.ingest`; it plans
with the pure billing core and records the result in one transaction per batch.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import structlog
from sqlalchemy.exc import IntegrityError, OperationalError

from mapping.billing import (
    Action,
    ChangeEntryState,
    Conflict,
    CreateEntry,
    RecordItem,
    RecordTransition,
    Skip,
    UpdateEntry,
    evolve,
    plan,
)
from mapping.domain import BillableEntry, BoardItem, BoardPolicy, EntryState
from mapping.money import Money
from sync.conflicts import AUDIT_ACTION, SNAPSHOT_CONFLICTS, SnapshotConflict, split_batch_conflicts
from sync.ledger.bulk import (
    BatchWrites,
    EntryChange,
    ItemState,
    NewEntry,
    NewEntryEvent,
    NewItem,
    NewTransition,
)
from sync.ledger.ops import audit
from sync.ledger.store import HeldRow, Ledger, UnitOfWork, chunked
from sync.metrics import ITEMS_SEEN

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
BATCH_SIZE = 500
_INTEGRITY_RETRIES = 3


def _is_serialization_failure(exc: OperationalError) -> bool:
    """A deadlock or serialization failure (PostgreSQL): safe to plan the batch again."""
    return getattr(exc.orig, "sqlstate", None) in ("40P01", "40001")


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is planned and written.

    A batch allocates tens of thousands of small container objects (snapshots' actions,
    rows, parameters) that are all alive until it commits: the collector's young
    generations would scan them again and again (5-8 % of ingest time, bench/ingest.py)
    and find nothing to free. Reference counting still frees everything at once; the
    collector runs as usual after the batch. Only switched back on if it was on."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class ChangeFact(NamedTuple):
    """One entry created or moved to another state, for `IngestReport.changes` (the
    item's names only: a report must not keep every snapshot of a sync alive)."""

    board: str
    item_id: str
    title: str
    state: EntryState
    hours: Decimal
    amount: Money | None
    reason: str

    @classmethod
    def of(
        cls, item: BoardItem, state: EntryState, hours: Decimal, amount: Money | None, reason: str
    ) -> ChangeFact:
        return cls(item.board, item.item_id, item.title, state, hours, amount, reason)

    def describe(self) -> str:
        money = f" = {self.amount}" if self.amount is not None else ""
        return (
            f"{self.board} {self.item_id} {self.title!r}: {self.state._value_} "
            f"{self.hours} h{money} ({self.reason})"
        )


class UnknownBoardError(ValueError):
    """A snapshot names a board that is not configured."""


@dataclass
class IngestReport:
    """What one ingest did, in numbers and in lines a person can read."""

    seen: int = 0
    skipped: int = 0
    items_new: int = 0
    items_updated: int = 0
    entries_created: int = 0
    entries_updated: int = 0
    state_changes: int = 0
    # What changed, as facts: formatted into `changes` only when someone reads them
    # (most polls are read as counts).
    change_facts: list[ChangeFact] = field(default_factory=list)
    # Same revision, other content (see sync.conflicts): logged, counted, audited.
    conflicts: list[SnapshotConflict] = field(default_factory=list)
    # With `ingest(..., claim=...)`: whether this ingest recorded the delivery id first.
    delivery_claimed: bool | None = None

    @property
    def changes(self) -> list[str]:
        """One line a person can read per entry created or moved to another state."""
        return [fact.describe() for fact in self.change_facts]

    @property
    def changed(self) -> bool:
        return bool(self.items_new or self.items_updated)

    def merge(self, other: IngestReport) -> None:
        for name in (
            "seen",
            "skipped",
            "items_new",
            "items_updated",
            "entries_created",
            "entries_updated",
            "state_changes",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.change_facts.extend(other.change_facts)
        self.conflicts.extend(other.conflicts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "skipped": self.skipped,
            "items_new": self.items_new,
            "items_updated": self.items_updated,
            "entries_created": self.entries_created,
            "entries_updated": self.entries_updated,
            "state_changes": self.state_changes,
            "changes": self.changes,
            "conflicts": [c.as_dict() for c in self.conflicts],
        }


class Engine:
    """Plans snapshots against the ledger and records the outcome, exactly once."""

    def __init__(
        self,
        ledger: Ledger,
        policies: Mapping[str, BoardPolicy],
        clock: Clock,
        actor: str = "sync",
    ) -> None:
        self.ledger = ledger
        self.policies = policies
        self.clock = clock
        self.actor = actor
        self._listeners: list[Callable[[IngestReport], None]] = []

    def on_change(self, listener: Callable[[IngestReport], None]) -> None:
        """Call `listener` after every committed batch that changed the ledger."""
        self._listeners.append(listener)

    def check(self, snapshots: Iterable[BoardItem]) -> None:
        """Raise UnknownBoardError for the first snapshot of an unconfigured board."""
        for snapshot in snapshots:
            if snapshot.board not in self.policies:
                raise UnknownBoardError(
                    f"item {snapshot.item_id!r} names board {snapshot.board!r}, which is not "
                    f"configured (configured boards: {sorted(self.policies) or 'none'})"
                )

    def ingest(
        self,
        snapshots: Iterable[BoardItem],
        claim: tuple[str, str] | None = None,
        *,
        reread: bool = False,
    ) -> IngestReport:
        """Record every snapshot; stale or unchanged ones are skipped.

        A snapshot with the revision already held (or already in the batch) but other
        content is a conflict (sync.conflicts): nothing is billed from it, and the report
        lists it so the caller re-reads GitHub / Azure DevOps items and ingests those
        fresh reads with `reread=True`, which the planner applies as the board's truth.

        Each batch commits on its own. If another instance recorded the same entry first
        (a unique-constraint violation), the batch is rolled back and planned again
        against what is now in the ledger, so nothing is billed twice.
        """
        report = IngestReport()
        batches = list(chunked(snapshots, BATCH_SIZE)) if claim else chunked(snapshots, BATCH_SIZE)
        last = len(batches) - 1 if isinstance(batches, list) else -1
        for number, batch in enumerate(batches):
            self.check(batch)
            for attempt in range(_INTEGRITY_RETRIES):
                try:
                    with _collector_paused(), self.ledger.unit_of_work(self.clock()) as uow:
                        batch_report = self._ingest_batch(uow, batch, reread)
                        if claim is not None and number == last:
                            # The webhook's delivery id, in the same transaction as what
                            # it caused: recorded together or not at all.
                            report.delivery_claimed = uow.claim_delivery(*claim)
                    break
                except (IntegrityError, OperationalError) as exc:
                    retriable = isinstance(exc, IntegrityError) or _is_serialization_failure(exc)
                    if not retriable or attempt == _INTEGRITY_RETRIES - 1:
                        raise
                    log.info("ingest.replan_after_conflict", attempt=attempt + 1)
            report.merge(batch_report)
            for conflict in batch_report.conflicts:
                SNAPSHOT_CONFLICTS.labels(
                    board=conflict.board, resolution=conflict.resolution
                ).inc()
                log.warning("ingest.snapshot_conflict", **conflict.as_dict())
            for board, seen in Counter(s.board for s in batch).items():
                ITEMS_SEEN.labels(board=board).inc(seen)
            if batch_report.changed:
                for listener in self._listeners:
                    listener(batch_report)
        return report

    def _ingest_batch(
        self, uow: UnitOfWork, batch: list[BoardItem], reread: bool = False
    ) -> IngestReport:
        report = IngestReport(seen=len(batch))
        keys = [s.key for s in batch]
        held = uow.held_items(keys)
        writer = _BatchWriter(uow.now, self.actor, {k: r.item_id for k, r in held.items()})
        planned, report.conflicts = (batch, []) if reread else split_batch_conflicts(batch)
        report.skipped += len(batch) - len(planned)
        # Nothing held back: the same snapshots in the same order (no keys computed twice).
        planned_keys = keys if len(planned) == len(batch) else [s.key for s in planned]
        # Items that come more than once: each later snapshot is planned against what the
        # earlier ones recorded.
        again = {k for k, n in Counter(planned_keys).items() if n > 1}
        for snapshot, key in zip(planned, planned_keys, strict=True):
            policy = self.policies[snapshot.board]
            row = held.get(key)
            actions = plan(snapshot, row.held if row else None, policy, reread=reread)
            if len(actions) == 1 and isinstance(actions[0], Skip):
                report.skipped += 1
                if isinstance(actions[0], Conflict):
                    report.conflicts.append(SnapshotConflict.of(snapshot))
                continue
            after = writer.record(row, actions, policy.client.currency, report, keep=key in again)
            if after is not None:
                held[key] = after
        writer.flush(uow)
        for conflict in report.conflicts:
            audit(
                uow.conn,
                uow.now,
                self.actor,
                AUDIT_ACTION,
                f"item:{conflict.item_key}",
                **conflict.as_dict(),
            )
        return report


ItemRef = str | int  # an item key (new in this batch) or a ledger id
EntryRef = str | int  # an entry key (new in this batch) or a ledger id


class _BatchWriter:
    """Collects one batch's ledger writes in memory as typed rows; `flush` writes them
    with one executemany per table (per-row statements, or SQLAlchemy's per-row
    parameter processing, cost more than the billing itself: bench/RESULTS.md).

    Several snapshots of one item in a batch are recorded in order: a row created in the
    batch is inserted once with its final values, and every state change still gets its
    own audit row."""

    def __init__(self, now: datetime, actor: str, item_ids: dict[str, int]) -> None:
        self.now = now
        self.actor = actor
        self.item_ids = dict(item_ids)
        self.rows = BatchWrites()
        self.on_draft: set[int] = set()

    def record(
        self,
        row: HeldRow | None,
        actions: tuple[Action, ...],
        currency: str,
        report: IngestReport,
        keep: bool = True,
    ) -> HeldRow | None:
        """Collect the rows for one snapshot's actions. Returns what the ledger holds for
        the item afterwards when `keep` (the item comes again later in the batch)."""
        now = self.now
        rows = self.rows
        actor = self.actor
        record = actions[0]
        if not isinstance(record, RecordItem):
            record = next(a for a in actions if isinstance(a, RecordItem))
        item = record.item
        key = item.key
        entry_ids = row.entry_ids if row else {}
        held_entries: dict[str, BillableEntry] | None = None
        created: dict[str, BillableEntry] = {}
        # The last UpdateEntry of each entry so far: a state change records the hours
        # and amount the entry has by then.
        updated: dict[str, UpdateEntry] = {}

        def held_entry(entry_key: str) -> BillableEntry:
            nonlocal held_entries
            if entry_key in created:
                return created[entry_key]
            if held_entries is None:
                held_entries = {e.entry_key: e for e in row.held.entries} if row else {}
            return held_entries[entry_key]

        done = record.done
        state = ItemState(
            record.client_key,
            item.title,
            item.url,
            item.column,
            item.state_category._value_,
            done,
            item.hours,
            record.billing_type._value_,
            item.labels,
            item.assignees,
            item.iteration,
            item.rate,
            item.milestone_amount,
            item.revision,
            record.fingerprint,
            item.updated_at,
            (item.done_at or item.updated_at) if done else None,
            now,
        )
        item_ref: ItemRef
        item_id = self.item_ids.get(key)
        if item_id is not None:
            item_ref = item_id
            rows.item_updates[item_id] = state
            report.items_updated += 1
        elif key in rows.new_items:
            item_ref = key
            rows.new_items[key] = rows.new_items[key]._replace(state=state)
            report.items_updated += 1
        else:
            item_ref = key
            rows.new_items[key] = NewItem(
                key, item.source._value_, item.board, item.item_id, now, state
            )
            report.items_new += 1

        for action in actions:
            # By exact type (the billing core's action classes are final): cheaper than
            # a chain of isinstance checks, four to five per action.
            kind = type(action)
            if kind is RecordItem:
                continue
            if kind is RecordTransition:
                assert isinstance(action, RecordTransition)
                rows.transitions.append(
                    NewTransition(
                        item_ref,
                        action.from_column,
                        action.to_column,
                        action.from_category._value_ if action.from_category else None,
                        action.to_category._value_,
                        item.revision,
                        action.at,
                        now,
                    )
                )
                continue
            if kind is CreateEntry:
                assert isinstance(action, CreateEntry)
                entry = action.entry
                amount = entry.amount
                cost = entry.cost
                entry_state = entry.state
                rows.new_entries[entry.entry_key] = NewEntry(
                    entry.entry_key,
                    item_ref,
                    record.client_key,
                    entry.kind._value_,
                    entry.seq,
                    entry_state._value_,
                    entry.hours,
                    entry.rate,
                    amount.amount if amount else None,
                    currency,
                    entry.description,
                    entry.person,
                    entry.role,
                    entry.cost_rate,
                    cost.amount if cost else None,
                    action.done_at,
                    action.reason if entry_state is EntryState.NEEDS_REVIEW else None,
                    now,
                    now,
                )
                created[entry.entry_key] = entry
                rows.events.append(
                    NewEntryEvent(
                        entry.entry_key,
                        None,
                        entry_state._value_,
                        entry.hours,
                        amount.amount if amount is not None else None,
                        actor,
                        action.reason,
                        now,
                    )
                )
                report.entries_created += 1
                report.change_facts.append(
                    ChangeFact.of(item, entry_state, entry.hours, amount, action.reason)
                )
                continue
            columns: EntryChange
            if kind is UpdateEntry:
                assert isinstance(action, UpdateEntry)
                columns = {
                    "hours": action.hours,
                    "rate": action.rate,
                    "amount": action.amount.amount if action.amount else None,
                    "cost_rate": action.cost_rate,
                    "cost": action.cost.amount if action.cost else None,
                }
                if action.done_at is not None:
                    columns["done_at"] = action.done_at
                report.entries_updated += 1
                updated[action.entry_key] = action
            elif kind is ChangeEntryState:
                assert isinstance(action, ChangeEntryState)
                to_state = action.to_state
                columns = {"state": to_state._value_}
                if to_state is EntryState.NEEDS_REVIEW:
                    columns["review_reason"] = action.reason
                report.state_changes += 1
                current = updated.get(action.entry_key)
                if current is not None:
                    hours, amount = current.hours, current.amount
                else:
                    before = held_entry(action.entry_key)
                    hours, amount = before.hours, before.amount
                rows.events.append(
                    NewEntryEvent(
                        entry_ids.get(action.entry_key, action.entry_key),
                        action.from_state._value_,
                        to_state._value_,
                        hours,
                        amount.amount if amount is not None else None,
                        actor,
                        action.reason,
                        now,
                    )
                )
                report.change_facts.append(
                    ChangeFact.of(item, to_state, hours, amount, action.reason)
                )
            else:
                continue
            columns["updated_at"] = now
            entry_id = entry_ids.get(action.entry_key)
            if entry_id is None:  # created earlier in this batch: inserted with these values
                new = rows.new_entries[action.entry_key]
                rows.new_entries[action.entry_key] = new._replace(**columns)
                continue
            rows.entry_updates.setdefault(entry_id, {}).update(columns)
            # Lines already on a Stripe draft follow the board while the draft is open.
            if held_entry(action.entry_key).state is EntryState.DRAFTED:
                self.on_draft.add(entry_id)

        if not keep:
            return None
        new_held = evolve(row.held if row else None, actions)
        assert new_held is not None
        return HeldRow(row.item_id if row else 0, new_held, entry_ids)

    def flush(self, uow: UnitOfWork) -> None:
        uow.write_batch(self.rows)
        if self.on_draft:
            uow.queue_draft_edits(sorted(self.on_draft))

