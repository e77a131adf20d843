"""The outbox table as typed records, and its compare-and-set claim with a lease.

Every external side effect (Stripe, Slack, whatever comes next) is one outbox row,
written in the transaction that decided it. A drainer performs a row only after
claiming it:

    UPDATE outbox SET status='claimed', lease_owner=:token, lease_until=:until,
                      attempts=attempts+1
     WHERE id=:id AND ((status='pending' AND (not_before IS NULL OR not_before<=:now))
                       OR (status='claimed' AND lease_until<:now))

and only a rowcount of 1 is a claim. Two drainers (the daemon and `kanvoice outbox
drain` on another host) can therefore never perform the same row at once, and a
drainer that died mid-call leaves a row that comes back when its lease lapses. The
attempt is counted there, once. Every later write of the row is conditioned on the
same lease token, so a drainer that lost its lease never overwrites its successor.

SQL lives here; rows leave as `OutboxOp`, never as untyped rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, RowMapping, or_, select, update

from mapping.domain import EntryState
from sync.ledger import ops
from sync.ledger import schema as t
from sync.ledger.ops import audit, move_entry

# The outbox's names live with the ledger's records (`sync.ledger.ops` writes them too).
from sync.ledger.records import Operation as Operation
from sync.ledger.records import OutboxStatus as OutboxStatus
from sync.ledger.records import Service as Service

# Stripe operations that change a draft's lines: a finalize waits until none is pending.
LINE_OPERATIONS = frozenset(
    {
        Operation.CREATE_INVOICE,
        Operation.CREATE_INVOICE_ITEM,
        Operation.UPDATE_INVOICE_ITEM,
        Operation.DELETE_INVOICE_ITEM,
    }
)
OPEN_STATUSES = frozenset({OutboxStatus.PENDING, OutboxStatus.CLAIMED})


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class OutboxOp:
    """One outbox row. `generation` (in the payload) counts spent idempotency keys."""

    id: int
    idempotency_key: str
    operation: Operation
    status: OutboxStatus
    attempts: int
    created_at: datetime
    entry_id: int | None = None
    invoice_id: int | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    not_before: datetime | None = None
    last_error: str | None = None
    result: Mapping[str, Any] | None = None
    completed_at: datetime | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None

    @property
    def generation(self) -> int:
        return int(self.payload.get("generation", 0))

    @property
    def call_key(self) -> str:
        """The idempotency key to send: the row's key, suffixed once it was spent (a
        5xx answer is stored by Stripe under the key; the next try needs a new one)."""
        gen = self.generation
        return self.idempotency_key if gen == 0 else f"{self.idempotency_key}-g{gen}"

    def key_may_be_unprotected(self, now: datetime, window: timedelta) -> bool:
        """The key no longer guards against a double call (spent, or older than the
        provider keeps keys): the handler must look for an earlier result first."""
        return self.generation > 0 or now - self.created_at > window


def op_from_row(row: RowMapping) -> OutboxOp:
    """The typed record of one `outbox` row (names and statuses as their enums)."""
    created = _utc(row["created_at"])
    assert created is not None
    return OutboxOp(
        id=int(row["id"]),
        idempotency_key=str(row["idempotency_key"]),
        operation=Operation(row["operation"]),
        status=OutboxStatus(row["status"]),
        attempts=int(row["attempts"]),
        created_at=created,
        entry_id=row["entry_id"],
        invoice_id=row["invoice_id"],
        payload=dict(row["payload"] or {}),
        not_before=_utc(row["not_before"]),
        last_error=row["last_error"],
        result=dict(row["result"]) if row["result"] is not None else None,
        completed_at=_utc(row["completed_at"]),
        lease_owner=row["lease_owner"],
        lease_until=_utc(row["lease_until"]),
    )


def new_lease_token(owner: str) -> str:
    """A token unique to one claim (`owner` says who, for people reading the table)."""
    return f"{owner[:60]}:{uuid.uuid4().hex[:16]}"


def enqueue(
    conn: Connection,
    operation: Operation,
    key: str,
    now: datetime,
    *,
    entry_id: int | None = None,
    invoice_id: int | None = None,
    payload: Mapping[str, Any] | None = None,
) -> bool:
    """Add a pending row unless its idempotency key exists (returns whether added).

    Call it in the transaction that decided the side effect: the intent and the
    decision commit together or not at all."""
    return ops.enqueue(
        conn,
        operation.value,
        key,
        now,
        entry_id=entry_id,
        invoice_id=invoice_id,
        payload=dict(payload or {}),
    )


def get_op(conn: Connection, op_id: int) -> OutboxOp | None:
    row = conn.execute(select(t.outbox).where(t.outbox.c.id == op_id)).mappings().first()
    return op_from_row(row) if row is not None else None


def ops_for(
    conn: Connection,
    *,
    invoice_id: int | None = None,
    entry_id: int | None = None,
    operations: Collection[Operation] | None = None,
    statuses: Collection[OutboxStatus] | None = None,
) -> list[OutboxOp]:
    """Rows of one invoice and/or entry, optionally by operation and status, by id."""
    query = select(t.outbox)
    if invoice_id is not None:
        query = query.where(t.outbox.c.invoice_id == invoice_id)
    if entry_id is not None:
        query = query.where(t.outbox.c.entry_id == entry_id)
    if operations is not None:
        query = query.where(t.outbox.c.operation.in_([o.value for o in operations]))
    if statuses is not None:
        query = query.where(t.outbox.c.status.in_([s.value for s in statuses]))
    return [op_from_row(r) for r in conn.execute(query.order_by(t.outbox.c.id)).mappings()]


def _claimable(now: datetime) -> ColumnElement[bool]:
    pending_due = (t.outbox.c.status == OutboxStatus.PENDING.value) & (
        t.outbox.c.not_before.is_(None) | (t.outbox.c.not_before <= now)
    )
    lapsed = (t.outbox.c.status == OutboxStatus.CLAIMED.value) & (t.outbox.c.lease_until < now)
    return or_(pending_due, lapsed)


def due_ids(
    conn: Connection, operations: Collection[Operation], now: datetime, limit: int = 500
) -> list[int]:
    """Ids of rows of these operations that can be claimed now, oldest first."""
    if not operations:
        return []
    rows = conn.execute(
        select(t.outbox.c.id)
        .where(t.outbox.c.operation.in_([o.value for o in operations]), _claimable(now))
        .order_by(t.outbox.c.id)
        .limit(limit)
    ).all()
    return [int(r.id) for r in rows]


def claim(
    conn: Connection, op_id: int, token: str, now: datetime, lease: timedelta
) -> OutboxOp | None:
    """Compare-and-set claim of one row; None when another drainer holds it (or it is
    not due, or no longer open). Counts the attempt: this is the only place that does."""
    claimed = conn.execute(
        update(t.outbox)
        .where(t.outbox.c.id == op_id, _claimable(now))
        .values(
            status=OutboxStatus.CLAIMED.value,
            lease_owner=token,
            lease_until=now + lease,
            attempts=t.outbox.c.attempts + 1,
        )
    ).rowcount
    if claimed != 1:
        return None
    return get_op(conn, op_id)


def claims(conn: Connection) -> list[tuple[int, str]]:
    """(id, lease token) of every claimed row, oldest first."""
    rows = conn.execute(
        select(t.outbox.c.id, t.outbox.c.lease_owner)
        .where(t.outbox.c.status == OutboxStatus.CLAIMED.value)
        .order_by(t.outbox.c.id)
    ).all()
    return [(int(r.id), str(r.lease_owner)) for r in rows if r.lease_owner]


def lease_owner(token: str) -> str:
    """The `owner` a lease token was made for (`new_lease_token`)."""
    return token.rsplit(":", 1)[0]


def expire_lease(conn: Connection, op_id: int, token: str, now: datetime) -> bool:
    """End a claim now (its holder is known to be gone): the row is claimable at once.
    Conditioned on the token, so a claim taken meanwhile is left alone."""
    changed = conn.execute(
        update(t.outbox)
        .where(
            t.outbox.c.id == op_id,
            t.outbox.c.status == OutboxStatus.CLAIMED.value,
            t.outbox.c.lease_owner == token,
        )
        .values(lease_until=now - timedelta(microseconds=1))
    ).rowcount
    return changed == 1


def _held(op: OutboxOp, token: str) -> ColumnElement[bool]:
    return (
        (t.outbox.c.id == op.id)
        & (t.outbox.c.status == OutboxStatus.CLAIMED.value)
        & (t.outbox.c.lease_owner == token)
    )


def holds_lease(conn: Connection, op: OutboxOp, token: str) -> bool:
    """Whether this claim still holds the row, locking it (FOR UPDATE on PostgreSQL)
    until the transaction ends, so what is recorded next is recorded by one claim."""
    found = conn.execute(select(t.outbox.c.id).where(_held(op, token)).with_for_update()).first()
    return found is not None


def complete(
    conn: Connection,
    op: OutboxOp,
    token: str,
    status: OutboxStatus,
    now: datetime,
    result: Mapping[str, Any] | None = None,
) -> bool:
    """Close a claimed row as done or cancelled; False if the lease was lost."""
    if status not in (OutboxStatus.DONE, OutboxStatus.CANCELLED):
        raise ValueError(f"complete() closes as done or cancelled, not {status}")
    changed = conn.execute(
        update(t.outbox)
        .where(_held(op, token))
        .values(
            status=status.value,
            result=dict(result or {}),
            completed_at=now,
            not_before=None,
            lease_owner=None,
            lease_until=None,
        )
    ).rowcount
    return changed == 1


def release(
    conn: Connection,
    op: OutboxOp,
    token: str,
    not_before: datetime | None,
    *,
    error: str | None = None,
    payload: Mapping[str, Any] | None = None,
    refund_attempt: bool = False,
) -> bool:
    """Give a claimed row back as pending, due at `not_before`; False if the lease was
    lost. `refund_attempt`: the claim did not try the call (it had to wait)."""
    values: dict[str, object] = {
        "status": OutboxStatus.PENDING.value,
        "not_before": not_before,
        "lease_owner": None,
        "lease_until": None,
    }
    if error is not None:
        values["last_error"] = error[:2000]
    if payload is not None:
        values["payload"] = dict(payload)
    if refund_attempt:
        values["attempts"] = t.outbox.c.attempts - 1
    changed = conn.execute(update(t.outbox).where(_held(op, token)).values(**values)).rowcount
    return changed == 1


def park(
    conn: Connection, op: OutboxOp, token: str, actor: str, reason: str, now: datetime
) -> bool:
    """Park a claimed row for a person (never retried), with an audit row; False if the
    lease was lost."""
    changed = conn.execute(
        update(t.outbox)
        .where(_held(op, token))
        .values(
            status=OutboxStatus.PARKED.value,
            last_error=reason[:2000],
            completed_at=now,
            lease_owner=None,
            lease_until=None,
        )
    ).rowcount
    if changed != 1:
        return False
    audit(
        conn,
        now,
        actor,
        "outbox_parked",
        f"outbox:{op.id}",
        operation=op.operation.value,
        error=reason,
    )
    return True


def park_entry_for_review(conn: Connection, op: OutboxOp, reason: str, now: datetime) -> None:
    """Stripe's park hook: an entry whose call Stripe refused leaves its draft and waits
    in `needs_review` for a person (only if it is still drafted or approved: an entry
    that moved on meanwhile is not pulled back)."""
    if op.entry_id is None:
        return
    state = conn.execute(
        select(t.entries.c.state).where(t.entries.c.id == op.entry_id)
    ).scalar_one_or_none()
    if state in (EntryState.DRAFTED.value, EntryState.APPROVED.value):
        move_entry(
            conn,
            op.entry_id,
            EntryState.NEEDS_REVIEW,
            op.operation.service.value,
            reason,
            now,
            review_reason=reason[:2000],
            invoice_id=None,
        )
