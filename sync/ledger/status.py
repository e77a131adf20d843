"""Ledger reads of the running daemon and its probes: is the ledger there, has it
changed, how deep are the queues, which snapshot conflicts were logged, and the
PostgreSQL advisory lock of the leader. Each takes the caller's `Connection` and
returns typed values (`sync.daemon`, `sync.leader`, `sync.metrics`, `sync.conflicts`,
`sync.web.health` call them; no SQL of theirs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, func, select, text

from sync.ledger import schema as t
from sync.ledger.records import JsonObject


def ping(conn: Connection) -> None:
    """A trivial read: raises (an `SQLAlchemyError`) when the ledger cannot answer."""
    conn.execute(text("SELECT 1"))


def try_advisory_lock(conn: Connection, key: int) -> bool:
    """PostgreSQL: take the session-level advisory lock `key` if free (held until
    `advisory_unlock` or the connection ends)."""
    return bool(
        conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one()
    )


def advisory_unlock(conn: Connection, key: int) -> None:
    """PostgreSQL: give the session-level advisory lock `key` back."""
    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


@dataclass(frozen=True, slots=True)
class LedgerMarks:
    """Cheap markers that move whenever any instance changes the ledger: compare two
    for equality (the values are as stored; None on an empty ledger)."""

    last_entry_event: int | None
    last_item_seen: datetime | None
    last_invoice_change: datetime | None
    last_audit: int | None


def ledger_marks(conn: Connection) -> LedgerMarks:
    """The ledger's change markers now (four index-backed maxima)."""
    return LedgerMarks(
        conn.execute(select(func.max(t.entry_events.c.id))).scalar(),
        conn.execute(select(func.max(t.items.c.last_seen_at))).scalar(),
        conn.execute(select(func.max(t.invoices.c.updated_at))).scalar(),
        conn.execute(select(func.max(t.audit_log.c.id))).scalar(),
    )


def entries_by_state(conn: Connection) -> dict[str, int]:
    """How many entries are in each state (states without entries are absent)."""
    return {
        str(state): int(count)
        for state, count in conn.execute(
            select(t.entries.c.state, func.count()).group_by(t.entries.c.state)
        )
    }


def outbox_by_status(conn: Connection) -> dict[str, int]:
    """How many outbox rows have each status (statuses without rows are absent)."""
    return {
        str(status): int(count)
        for status, count in conn.execute(
            select(t.outbox.c.status, func.count()).group_by(t.outbox.c.status)
        )
    }


@dataclass(frozen=True, slots=True)
class InboxPending:
    """Webhook deliveries received and not yet processed, and when the oldest came
    (as stored: SQLite hands back naive UTC; None when none is pending)."""

    count: int
    oldest: datetime | None


def inbox_pending(conn: Connection) -> InboxPending:
    count, first = conn.execute(
        select(func.count(), func.min(t.inbox.c.received_at)).where(
            t.inbox.c.status == "pending"
        )
    ).one()
    return InboxPending(int(count), first)


@dataclass(frozen=True, slots=True)
class LoggedAction:
    """One audit row of an action as logged: when (as stored) and its details."""

    at: datetime
    detail: JsonObject = field(default_factory=dict)


def count_actions(conn: Connection, action: str) -> int:
    """How many audit rows record `action`."""
    return int(
        conn.execute(
            select(func.count()).select_from(t.audit_log).where(t.audit_log.c.action == action)
        ).scalar_one()
    )


def latest_actions(conn: Connection, action: str, limit: int) -> list[LoggedAction]:
    """The latest `limit` audit rows recording `action`, newest first."""
    rows = conn.execute(
        select(t.audit_log.c.at, t.audit_log.c.detail)
        .where(t.audit_log.c.action == action)
        .order_by(t.audit_log.c.id.desc())
        .limit(limit)
    ).all()
    return [
        LoggedAction(r.at, dict(r.detail) if isinstance(r.detail, Mapping) else {}) for r in rows
    ]
