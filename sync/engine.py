"""The sync engine: the one entry point that takes board snapshots into the ledger.

Polling, webhooks, `kanvoice ingest` and the demo all call `Engine.ingest`; it plans
with the pure billing core and records the result in one transaction per batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import bindparam, insert, select, update
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
from mapping.domain import BoardItem, BoardPolicy, EntryState
from sync.conflicts import AUDIT_ACTION, SNAPSHOT_CONFLICTS, SnapshotConflict, split_batch_conflicts
from sync.ledger import schema as t
from sync.ledger.ops import audit, queue_draft_edits
from sync.ledger.store import HeldRow, Ledger, UnitOfWork, chunked
from sync.metrics import ITEMS_SEEN

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
BATCH_SIZE = 500
_INTEGRITY_RETRIES = 3


def _is_serialization_failure(exc: OperationalError) -> bool:
    """A deadlock or serialization failure (PostgreSQL): safe to plan the batch again."""
    return getattr(exc.orig, "sqlstate", None) in ("40P01", "40001")


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
    changes: list[str] = field(default_factory=list)
    # Same revision, other content (see sync.conflicts): logged, counted, audited.
    conflicts: list[SnapshotConflict] = field(default_factory=list)
    # With `ingest(..., claim=...)`: whether this ingest recorded the delivery id first.
    delivery_claimed: bool | None = None

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
        self.changes.extend(other.changes)
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
                    with self.ledger.unit_of_work(self.clock()) as uow:
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
        held = uow.held_items([s.key for s in batch])
        writer = _BatchWriter(uow.now, self.actor, {k: r.item_id for k, r in held.items()})
        planned, report.conflicts = (batch, []) if reread else split_batch_conflicts(batch)
        report.skipped += len(batch) - len(planned)
        for snapshot in planned:
            policy = self.policies[snapshot.board]
            row = held.get(snapshot.key)
            actions = plan(snapshot, row.held if row else None, policy, reread=reread)
            if len(actions) == 1 and isinstance(actions[0], Skip):
                report.skipped += 1
                if isinstance(actions[0], Conflict):
                    report.conflicts.append(SnapshotConflict.of(snapshot))
                continue
            held[snapshot.key] = writer.record(row, actions, policy.client.currency, report)
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
    """Collects one batch's ledger writes in memory, then writes them with a few
    executemany statements (per-row statements cost more than the billing itself).

    Several snapshots of one item in a batch are recorded in order: a row created in the
    batch is inserted once with its final values, and every state change still gets its
    own audit row."""

    def __init__(self, now: datetime, actor: str, item_ids: dict[str, int]) -> None:
        self.now = now
        self.actor = actor
        self.item_ids = dict(item_ids)
        self.new_items: dict[str, dict[str, Any]] = {}
        self.item_updates: dict[int, dict[str, Any]] = {}
        self.transitions: list[tuple[ItemRef, dict[str, Any]]] = []
        self.new_entries: dict[str, dict[str, Any]] = {}
        self.entry_updates: dict[int, dict[str, Any]] = {}
        self.events: list[tuple[EntryRef, dict[str, Any]]] = []
        self.on_draft: set[int] = set()

    def record(
        self,
        row: HeldRow | None,
        actions: tuple[Action, ...],
        currency: str,
        report: IngestReport,
    ) -> HeldRow:
        now = self.now
        record = next(a for a in actions if isinstance(a, RecordItem))
        item = record.item
        entry_ids = dict(row.entry_ids) if row else {}
        entries = {e.entry_key: e for e in row.held.entries} if row else {}
        values: dict[str, Any] = {
            "client": record.client_key,
            "title": item.title,
            "url": item.url,
            "column_name": item.column,
            "state_category": item.state_category.value,
            "is_done": record.done,
            "hours": item.hours,
            "billing_type": record.billing_type.value,
            "labels": list(item.labels),
            "assignees": list(item.assignees),
            "iteration": item.iteration,
            "rate": item.rate,
            "milestone_amount": item.milestone_amount,
            "revision": item.revision,
            "fingerprint": record.fingerprint,
            "updated_at": item.updated_at,
            "done_at": (item.done_at or item.updated_at) if record.done else None,
            "last_seen_at": now,
        }
        item_ref: ItemRef
        if item.key in self.item_ids:
            item_ref = self.item_ids[item.key]
            self.item_updates[item_ref] = values
            report.items_updated += 1
        elif item.key in self.new_items:
            item_ref = item.key
            self.new_items[item.key].update(values)
            report.items_updated += 1
        else:
            item_ref = item.key
            self.new_items[item.key] = {
                **values,
                "item_key": item.key,
                "source": item.source.value,
                "board": item.board,
                "external_id": item.item_id,
                "first_seen_at": now,
            }
            report.items_new += 1

        def entry_ref(key: str) -> EntryRef:
            return entry_ids.get(key, key)

        def change(key: str, columns: dict[str, Any]) -> None:
            ref = entry_ref(key)
            if isinstance(ref, int):
                self.entry_updates.setdefault(ref, {}).update(columns, updated_at=now)
            else:
                self.new_entries[ref].update(columns, updated_at=now)

        for action in actions:
            if isinstance(action, RecordTransition):
                self.transitions.append(
                    (
                        item_ref,
                        {
                            "from_column": action.from_column,
                            "to_column": action.to_column,
                            "from_category": action.from_category.value
                            if action.from_category
                            else None,
                            "to_category": action.to_category.value,
                            "revision": item.revision,
                            "at": action.at,
                            "recorded_at": now,
                        },
                    )
                )
            elif isinstance(action, CreateEntry):
                entry = action.entry
                self.new_entries[entry.entry_key] = {
                    "entry_key": entry.entry_key,
                    "item_ref": item_ref,
                    "client": record.client_key,
                    "kind": entry.kind.value,
                    "seq": entry.seq,
                    "state": entry.state.value,
                    "hours": entry.hours,
                    "rate": entry.rate,
                    "amount": entry.amount.amount if entry.amount else None,
                    "currency": currency,
                    "description": entry.description,
                    "person": entry.person,
                    "role": entry.role,
                    "cost_rate": entry.cost_rate,
                    "cost": entry.cost.amount if entry.cost else None,
                    "done_at": action.done_at,
                    "review_reason": action.reason
                    if entry.state is EntryState.NEEDS_REVIEW
                    else None,
                    "created_at": now,
                    "updated_at": now,
                }
                entries[entry.entry_key] = entry
                self.events.append(
                    (
                        entry.entry_key,
                        self._event(None, entry.state, entry.hours, entry.amount, action.reason),
                    )
                )
                report.entries_created += 1
                report.changes.append(
                    _describe(item, entry.state, entry.hours, entry.amount, action.reason)
                )
            elif isinstance(action, UpdateEntry):
                columns: dict[str, Any] = {
                    "hours": action.hours,
                    "rate": action.rate,
                    "amount": action.amount.amount if action.amount else None,
                    "cost_rate": action.cost_rate,
                    "cost": action.cost.amount if action.cost else None,
                }
                if action.done_at is not None:
                    columns["done_at"] = action.done_at
                change(action.entry_key, columns)
                report.entries_updated += 1
            elif isinstance(action, ChangeEntryState):
                columns = {"state": action.to_state.value}
                if action.to_state is EntryState.NEEDS_REVIEW:
                    columns["review_reason"] = action.reason
                change(action.entry_key, columns)
                report.state_changes += 1
                current = next(
                    (
                        a
                        for a in reversed(actions)
                        if isinstance(a, UpdateEntry) and a.entry_key == action.entry_key
                    ),
                    None,
                )
                hours = current.hours if current else entries[action.entry_key].hours
                amount = current.amount if current else entries[action.entry_key].amount
                self.events.append(
                    (
                        entry_ref(action.entry_key),
                        self._event(
                            action.from_state, action.to_state, hours, amount, action.reason
                        ),
                    )
                )
                report.changes.append(
                    _describe(item, action.to_state, hours, amount, action.reason)
                )

        # Lines already on a Stripe draft follow the board while the draft is open.
        for a in actions:
            if (
                isinstance(a, UpdateEntry | ChangeEntryState)
                and a.entry_key in entry_ids
                and entries[a.entry_key].state is EntryState.DRAFTED
            ):
                self.on_draft.add(entry_ids[a.entry_key])

        new_held = evolve(row.held if row else None, actions)
        assert new_held is not None
        return HeldRow(row.item_id if row else 0, new_held, entry_ids)

    def _event(
        self,
        from_state: EntryState | None,
        to_state: EntryState,
        hours: Any,
        amount: Any,
        reason: str,
    ) -> dict[str, Any]:
        return {
            "from_state": from_state.value if from_state else None,
            "to_state": to_state.value,
            "hours": hours,
            "amount": amount.amount if amount is not None else None,
            "actor": self.actor,
            "reason": reason,
            "at": self.now,
        }

    def flush(self, uow: UnitOfWork) -> None:
        conn = uow.conn
        if self.new_items:
            # Plain executemany, then one SELECT for the ids: SQLite cannot return ids
            # of a multi-row insert in order, so RETURNING would go row by row.
            conn.execute(insert(t.items), list(self.new_items.values()))
            self.item_ids.update(
                _ids_by_key(conn, t.items, t.items.c.item_key, list(self.new_items))
            )
        _update_many(conn, t.items, self.item_updates)

        def item_id(ref: ItemRef) -> int:
            return ref if isinstance(ref, int) else self.item_ids[ref]

        entry_ids: dict[str, int] = {}
        if self.new_entries:
            rows = []
            for values in self.new_entries.values():
                row = dict(values)
                row["item_id"] = item_id(row.pop("item_ref"))
                rows.append(row)
            conn.execute(insert(t.entries), rows)
            entry_ids = _ids_by_key(conn, t.entries, t.entries.c.entry_key, list(self.new_entries))
        _update_many(conn, t.entries, self.entry_updates)
        if self.transitions:
            conn.execute(
                insert(t.transitions),
                [{**row, "item_id": item_id(ref)} for ref, row in self.transitions],
            )
        if self.events:
            conn.execute(
                insert(t.entry_events),
                [
                    {**row, "entry_id": ref if isinstance(ref, int) else entry_ids[ref]}
                    for ref, row in self.events
                ],
            )
        if self.on_draft:
            queue_draft_edits(conn, sorted(self.on_draft), self.now)


def _ids_by_key(conn: Any, table: Any, key_column: Any, keys: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        for row in conn.execute(select(table.c.id, key_column).where(key_column.in_(chunk))):
            found[row[1]] = row[0]
    return found


def _update_many(conn: Any, table: Any, updates: dict[int, dict[str, Any]]) -> None:
    """UPDATE rows by id with executemany, one statement per set of changed columns."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row_id, columns in updates.items():
        keys = tuple(sorted(columns))
        groups.setdefault(keys, []).append(
            {"b_id": row_id, **{f"b_{k}": v for k, v in columns.items()}}
        )
    for keys, params in groups.items():
        statement = (
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values({k: bindparam(f"b_{k}", type_=table.c[k].type) for k in keys})
        )
        conn.execute(statement, params)


def _describe(item: BoardItem, state: EntryState, hours: Any, amount: Any, reason: str) -> str:
    money = f" = {amount}" if amount is not None else ""
    return f"{item.board} {item.item_id} {item.title!r}: {state.value} {hours} h{money} ({reason})"
