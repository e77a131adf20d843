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
from sqlalchemy.exc import IntegrityError

from mapping.billing import (
    Action,
    ChangeEntryState,
    CreateEntry,
    RecordItem,
    RecordTransition,
    Skip,
    UpdateEntry,
    evolve,
    plan,
)
from mapping.domain import BoardItem, BoardPolicy, EntryState
from sync.ledger.ops import queue_draft_edits
from sync.ledger.store import HeldRow, Ledger, UnitOfWork, chunked
from sync.metrics import ITEMS_SEEN

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
BATCH_SIZE = 500
_INTEGRITY_RETRIES = 3


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

    def ingest(self, snapshots: Iterable[BoardItem]) -> IngestReport:
        """Record every snapshot; stale or unchanged ones are skipped.

        Each batch commits on its own. If another instance recorded the same entry first
        (a unique-constraint violation), the batch is rolled back and planned again
        against what is now in the ledger, so nothing is billed twice.
        """
        report = IngestReport()
        for batch in chunked(snapshots, BATCH_SIZE):
            self.check(batch)
            for attempt in range(_INTEGRITY_RETRIES):
                try:
                    with self.ledger.unit_of_work(self.clock()) as uow:
                        batch_report = self._ingest_batch(uow, batch)
                    break
                except IntegrityError:
                    if attempt == _INTEGRITY_RETRIES - 1:
                        raise
                    log.info("ingest.replan_after_conflict", attempt=attempt + 1)
            report.merge(batch_report)
            for board, seen in Counter(s.board for s in batch).items():
                ITEMS_SEEN.labels(board=board).inc(seen)
            if batch_report.changed:
                for listener in self._listeners:
                    listener(batch_report)
        return report

    def _ingest_batch(self, uow: UnitOfWork, batch: list[BoardItem]) -> IngestReport:
        report = IngestReport(seen=len(batch))
        held = uow.held_items([s.key for s in batch])
        transitions: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for snapshot in batch:
            policy = self.policies[snapshot.board]
            row = held.get(snapshot.key)
            actions = plan(snapshot, row.held if row else None, policy)
            if len(actions) == 1 and isinstance(actions[0], Skip):
                report.skipped += 1
                continue
            row = self._record(uow, row, actions, transitions, events, report)
            held[snapshot.key] = row
        uow.insert_transitions(transitions)
        uow.insert_entry_events(events)
        return report

    def _record(
        self,
        uow: UnitOfWork,
        row: HeldRow | None,
        actions: tuple[Action, ...],
        transitions: list[dict[str, Any]],
        events: list[dict[str, Any]],
        report: IngestReport,
    ) -> HeldRow:
        now = uow.now
        item_id = row.item_id if row else 0
        entry_ids = dict(row.entry_ids) if row else {}
        entries = {e.entry_key: e for e in row.held.entries} if row else {}
        record = next(a for a in actions if isinstance(a, RecordItem))
        item = record.item
        values = {
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
        if row is None:
            item_id = uow.insert_item(
                {
                    **values,
                    "item_key": item.key,
                    "source": item.source.value,
                    "board": item.board,
                    "external_id": item.item_id,
                    "first_seen_at": now,
                }
            )
            report.items_new += 1
        else:
            uow.update_item(item_id, values)
            report.items_updated += 1
        currency = self.policies[item.board].client.currency

        for action in actions:
            if isinstance(action, RecordTransition):
                transitions.append(
                    {
                        "item_id": item_id,
                        "from_column": action.from_column,
                        "to_column": action.to_column,
                        "from_category": action.from_category.value
                        if action.from_category
                        else None,
                        "to_category": action.to_category.value,
                        "revision": item.revision,
                        "at": action.at,
                        "recorded_at": now,
                    }
                )
            elif isinstance(action, CreateEntry):
                entry = action.entry
                entry_id = uow.insert_entry(
                    {
                        "entry_key": entry.entry_key,
                        "item_id": item_id,
                        "client": record.client_key,
                        "kind": entry.kind.value,
                        "seq": entry.seq,
                        "state": entry.state.value,
                        "hours": entry.hours,
                        "rate": entry.rate,
                        "amount": entry.amount.amount if entry.amount else None,
                        "currency": currency,
                        "description": entry.description,
                        "done_at": action.done_at,
                        "review_reason": action.reason
                        if entry.state is EntryState.NEEDS_REVIEW
                        else None,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                entry_ids[entry.entry_key] = entry_id
                entries[entry.entry_key] = entry
                events.append(
                    self._event(
                        entry_id, None, entry.state, entry.hours, entry.amount, action.reason, now
                    )
                )
                report.entries_created += 1
                report.changes.append(
                    _describe(item, entry.state, entry.hours, entry.amount, action.reason)
                )
            elif isinstance(action, UpdateEntry):
                changes: dict[str, Any] = {
                    "hours": action.hours,
                    "rate": action.rate,
                    "amount": action.amount.amount if action.amount else None,
                }
                if action.done_at is not None:
                    changes["done_at"] = action.done_at
                uow.update_entry(entry_ids[action.entry_key], changes)
                report.entries_updated += 1
            elif isinstance(action, ChangeEntryState):
                entry_id = entry_ids[action.entry_key]
                changes = {"state": action.to_state.value}
                if action.to_state is EntryState.NEEDS_REVIEW:
                    changes["review_reason"] = action.reason
                uow.update_entry(entry_id, changes)
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
                events.append(
                    self._event(
                        entry_id,
                        action.from_state,
                        action.to_state,
                        hours,
                        amount,
                        action.reason,
                        now,
                    )
                )
                report.changes.append(
                    _describe(item, action.to_state, hours, amount, action.reason)
                )

        # Lines already on a Stripe draft follow the board while the draft is open.
        on_draft = [
            entry_ids[a.entry_key]
            for a in actions
            if isinstance(a, UpdateEntry | ChangeEntryState)
            and a.entry_key in entries
            and entries[a.entry_key].state is EntryState.DRAFTED
        ]
        if on_draft:
            queue_draft_edits(uow.conn, sorted(set(on_draft)), now)

        new_held = evolve(row.held if row else None, actions)
        assert new_held is not None
        return HeldRow(item_id, new_held, entry_ids)

    def _event(
        self,
        entry_id: int,
        from_state: EntryState | None,
        to_state: EntryState,
        hours: Any,
        amount: Any,
        reason: str,
        now: datetime,
    ) -> dict[str, Any]:
        return {
            "entry_id": entry_id,
            "from_state": from_state.value if from_state else None,
            "to_state": to_state.value,
            "hours": hours,
            "amount": amount.amount if amount is not None else None,
            "actor": self.actor,
            "reason": reason,
            "at": now,
        }


def _describe(item: BoardItem, state: EntryState, hours: Any, amount: Any, reason: str) -> str:
    money = f" = {amount}" if amount is not None else ""
    return f"{item.board} {item.item_id} {item.title!r}: {state.value} {hours} h{money} ({reason})"
