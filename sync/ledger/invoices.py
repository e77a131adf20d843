"""Ledger reads and writes of drafting, approval, the Stripe calls' results and the
Slack approval messages (`sync.invoicing`, `sync.approvals`): each takes the caller's
`Connection` (the shell keeps its transactions) and returns typed records.

Money moves through these rows: a draft's lines, its approval and its finalized
state. None of them calls out; the outbox rows that do are queued by the shell, in
the same transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from decimal import Decimal
from typing import cast

from sqlalchemy import Connection, Select, and_, func, insert, or_, select, update

from mapping.domain import EntryState
from mapping.invoices import InvoiceState
from sync.ledger import schema as t
from sync.ledger.records import (
    ApprovalRecord,
    AuditRecord,
    EntryLineRecord,
    EntryLink,
    EntryRecord,
    InvoiceRecord,
    SummaryLineRecord,
)
from sync.ledger.review import deferred_from

#: The states of an entry on a draft (its lines).
ON_DRAFT = (EntryState.DRAFTED.value, EntryState.APPROVED.value)


def _states(states: Iterable[EntryState | str]) -> list[str]:
    return [s.value if isinstance(s, EntryState) else str(s) for s in states]


# -- invoices --------------------------------------------------------------------------


def find_invoice(conn: Connection, invoice_id: int) -> InvoiceRecord | None:
    """The invoice, or None (`ops.invoice_row` raises LookupError instead)."""
    row = conn.execute(select(t.invoices).where(t.invoices.c.id == invoice_id)).mappings().first()
    return InvoiceRecord.from_row(row) if row is not None else None


def lock_invoice(conn: Connection, invoice_id: int) -> None:
    """Hold the invoice row until the transaction ends (FOR UPDATE on PostgreSQL;
    SQLite's write lock is taken at BEGIN); no such invoice: nothing held."""
    conn.execute(
        select(t.invoices.c.id).where(t.invoices.c.id == invoice_id).with_for_update()
    ).first()


def open_draft_in_slot(conn: Connection, slot: str) -> InvoiceRecord | None:
    """The draft holding the open slot (``client|period``), held until commit: two
    refreshes of one draft take turns, so no entry is added twice."""
    row = (
        conn.execute(select(t.invoices).where(t.invoices.c.open_slot == slot).with_for_update())
        .mappings()
        .first()
    )
    return InvoiceRecord.from_row(row) if row is not None else None


def invoice_by_stripe_id(conn: Connection, stripe_invoice_id: str | None) -> InvoiceRecord | None:
    """The invoice Stripe knows by this id (the id of a webhook's object)."""
    row = (
        conn.execute(
            select(t.invoices).where(t.invoices.c.stripe_invoice_id == stripe_invoice_id)
        )
        .mappings()
        .first()
    )
    return InvoiceRecord.from_row(row) if row is not None else None


def stripe_backed_invoices(conn: Connection, client: str | None = None) -> list[InvoiceRecord]:
    """Every invoice that has a Stripe id (of one client, if given), by id."""
    query = select(t.invoices).where(t.invoices.c.stripe_invoice_id.is_not(None))
    if client:
        query = query.where(t.invoices.c.client == client)
    rows = conn.execute(query.order_by(t.invoices.c.id)).mappings()
    return [InvoiceRecord.from_row(r) for r in rows]


def insert_draft(
    conn: Connection,
    *,
    client: str,
    period_key: str,
    period_start: datetime,
    period_end: datetime,
    currency: str,
    slot: str,
    now: datetime,
) -> int:
    """A new empty draft holding the open slot (an IntegrityError when another
    instance opened the same slot first). Returns its id."""
    result = conn.execute(
        insert(t.invoices).values(
            client=client,
            period_key=period_key,
            period_start=period_start,
            period_end=period_end,
            currency=currency,
            state=InvoiceState.DRAFT.value,
            open_slot=slot,
            version=0,
            created_at=now,
            updated_at=now,
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def close_slot(conn: Connection, invoice_id: int, now: datetime) -> None:
    """The invoice gives up its open slot: the client's next lines go on a new draft."""
    conn.execute(
        update(t.invoices)
        .where(t.invoices.c.id == invoice_id)
        .values(open_slot=None, updated_at=now)
    )


def set_stripe_invoice(
    conn: Connection, invoice_id: int, stripe_invoice_id: str, now: datetime
) -> None:
    """Link the draft to the Stripe invoice created (or adopted) for it."""
    conn.execute(
        update(t.invoices)
        .where(t.invoices.c.id == invoice_id)
        .values(stripe_invoice_id=stripe_invoice_id, updated_at=now)
    )


def record_finalized(
    conn: Connection,
    invoice_id: int,
    *,
    number: object,
    hosted_url: object,
    total_minor: object,
    now: datetime,
) -> None:
    """The invoice is finalized on Stripe: its number, hosted page and total (minor
    units) as Stripe gave them; it gives up its open slot."""
    conn.execute(
        update(t.invoices)
        .where(t.invoices.c.id == invoice_id)
        .values(
            state=InvoiceState.FINALIZED.value,
            open_slot=None,
            number=number,
            hosted_url=hosted_url,
            total_minor=total_minor,
            updated_at=now,
        )
    )


def move_invoice(conn: Connection, invoice_id: int, state: InvoiceState, now: datetime) -> None:
    """The invoice follows Stripe to `state` (and holds no open slot any more)."""
    conn.execute(
        update(t.invoices)
        .where(t.invoices.c.id == invoice_id)
        .values(state=state.value, open_slot=None, updated_at=now)
    )


def mark_sent(conn: Connection, invoice_id: int, now: datetime) -> bool:
    """A finalized invoice was sent: whether it moved (False: not finalized any more)."""
    moved = conn.execute(
        update(t.invoices)
        .where(
            and_(
                t.invoices.c.id == invoice_id,
                t.invoices.c.state == InvoiceState.FINALIZED.value,
            )
        )
        .values(state="sent", updated_at=now)
    ).rowcount
    return bool(moved)


def set_slack_message(
    conn: Connection, invoice_id: int, channel: str | None, ts: str | None
) -> None:
    """The Slack message asking for the draft's approval (None, None: none any more)."""
    conn.execute(
        update(t.invoices)
        .where(t.invoices.c.id == invoice_id)
        .values(slack_channel=channel, slack_ts=ts)
    )


def invoice_total(conn: Connection, invoice_id: int) -> tuple[Decimal, int]:
    """The sum of the draft's line amounts (drafted and approved entries) and their count."""
    row = conn.execute(
        select(func.coalesce(func.sum(t.entries.c.amount), 0), func.count()).where(
            t.entries.c.invoice_id == invoice_id,
            t.entries.c.state.in_(ON_DRAFT),
        )
    ).one()
    return Decimal(row[0]), int(row[1])


# -- approvals -------------------------------------------------------------------------


def approval_of(conn: Connection, invoice_id: int) -> ApprovalRecord | None:
    """The invoice's approval (at most one), or None."""
    row = (
        conn.execute(select(t.approvals).where(t.approvals.c.invoice_id == invoice_id))
        .mappings()
        .first()
    )
    return ApprovalRecord.from_row(row) if row is not None else None


def insert_approval(
    conn: Connection,
    *,
    invoice_id: int,
    approver: str,
    channel: str,
    total_minor: int,
    now: datetime,
    forced_below_minimum: bool,
) -> None:
    """The approval row at the approved total: the only path to finalizing. A second
    approval of one invoice is an IntegrityError (the column is unique)."""
    conn.execute(
        insert(t.approvals).values(
            invoice_id=invoice_id,
            approver=approver,
            channel=channel,
            total_minor=total_minor,
            decided_at=now,
            forced_below_minimum=forced_below_minimum,
        )
    )


def last_decision(conn: Connection, invoice_id: int) -> AuditRecord | None:
    """The latest ``approved`` or ``rejected`` audit row of the invoice."""
    row = (
        conn.execute(
            select(t.audit_log)
            .where(
                t.audit_log.c.subject == f"invoice:{invoice_id}",
                t.audit_log.c.action.in_(["approved", "rejected"]),
            )
            .order_by(t.audit_log.c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return AuditRecord.from_row(row) if row is not None else None


# -- entries ---------------------------------------------------------------------------


def ready_entry_ids(conn: Connection, client: str, currency: str) -> list[int]:
    """The client's ready entries in its currency, oldest first."""
    return [
        int(i)
        for i in conn.execute(
            select(t.entries.c.id)
            .where(
                t.entries.c.client == client,
                t.entries.c.state == EntryState.READY.value,
                t.entries.c.currency == currency,
            )
            .order_by(t.entries.c.id)
        ).scalars()
    ]


def deferred_entry_ids(conn: Connection, invoice_id: int) -> set[int]:
    """Entries deferred from this draft: they wait for the client's next draft."""
    # `deferred_from` is typed as a one-tuple column (SQLAlchemy 2.1's Select typing).
    return {cast(int, v) for v in conn.execute(deferred_from(invoice_id)).scalars()}


def _with_item() -> Select[tuple[object, ...]]:
    """Entries joined to their items (the columns a Stripe line needs)."""
    return select(
        t.entries,
        t.items.c.item_key,
        t.items.c.board,
        t.items.c.title,
        t.items.c.url,
        t.items.c.external_id,
    ).join(t.items, t.items.c.id == t.entries.c.item_id)


def entry_line(conn: Connection, entry_id: int) -> EntryLineRecord:
    """The entry with its item (NoResultFound if none): what its Stripe line says."""
    row = conn.execute(_with_item().where(t.entries.c.id == entry_id)).mappings().one()
    return EntryLineRecord.from_row(row)


def grouping_lines(
    conn: Connection, ready: Collection[int], invoice_id: int
) -> list[EntryLineRecord]:
    """The entries joining the draft (`ready`) and those already drafted on it, with
    their items: what the line grouping is decided on."""
    rows = conn.execute(
        _with_item().where(
            or_(
                t.entries.c.id.in_(list(ready)),
                and_(
                    t.entries.c.invoice_id == invoice_id,
                    t.entries.c.state == EntryState.DRAFTED.value,
                ),
            )
        )
    ).mappings()
    return [EntryLineRecord.from_row(r) for r in rows]


def entry_for_update(conn: Connection, entry_id: int) -> EntryRecord | None:
    """The entry, held until commit (FOR UPDATE on PostgreSQL), or None."""
    row = (
        conn.execute(select(t.entries).where(t.entries.c.id == entry_id).with_for_update())
        .mappings()
        .first()
    )
    return EntryRecord.from_row(row) if row is not None else None


def entries_on(
    conn: Connection, invoice_id: int, states: Iterable[EntryState | str]
) -> list[EntryRecord]:
    """The invoice's entries in these states, by id."""
    rows = conn.execute(
        select(t.entries)
        .where(t.entries.c.invoice_id == invoice_id, t.entries.c.state.in_(_states(states)))
        .order_by(t.entries.c.id)
    ).mappings()
    return [EntryRecord.from_row(r) for r in rows]


def entry_ids_on(
    conn: Connection, invoice_id: int, states: Iterable[EntryState | str]
) -> list[int]:
    """The ids of the invoice's entries in these states."""
    return [
        int(i)
        for i in conn.execute(
            select(t.entries.c.id).where(
                t.entries.c.invoice_id == invoice_id, t.entries.c.state.in_(_states(states))
            )
        ).scalars()
    ]


def lock_entries_of(conn: Connection, invoice_id: int) -> None:
    """Hold every entry of the invoice until commit (FOR UPDATE on PostgreSQL): a
    Stripe create recording its line meanwhile either committed first or waits."""
    conn.execute(
        select(t.entries.c.id).where(t.entries.c.invoice_id == invoice_id).with_for_update()
    ).all()


def links_to_release(conn: Connection, invoice_id: int) -> list[EntryLink]:
    """The invoice's drafted, approved and invoiced entries with their Stripe lines,
    held until commit (FOR UPDATE on PostgreSQL)."""
    rows = conn.execute(
        select(t.entries.c.id, t.entries.c.stripe_invoice_item_id)
        .where(
            t.entries.c.invoice_id == invoice_id,
            t.entries.c.state.in_(
                [EntryState.DRAFTED.value, EntryState.APPROVED.value, EntryState.INVOICED.value]
            ),
        )
        .with_for_update()
    ).all()
    return [EntryLink(int(r.id), r.stripe_invoice_item_id) for r in rows]


def entries_linked_to(conn: Connection, item_ids: Collection[str]) -> list[EntryLink]:
    """The entries linked to any of these Stripe lines, by id."""
    if not item_ids:
        return []
    rows = conn.execute(
        select(t.entries.c.id, t.entries.c.stripe_invoice_item_id)
        .where(t.entries.c.stripe_invoice_item_id.in_(list(item_ids)))
        .order_by(t.entries.c.id)
    ).all()
    return [EntryLink(int(r.id), r.stripe_invoice_item_id) for r in rows]


def set_entry_item(
    conn: Connection, entry_id: int, stripe_item_id: str | None, now: datetime | None = None
) -> None:
    """Link the entry to its Stripe line (None: unlink); `now` also stamps `updated_at`."""
    values: dict[str, object] = {"stripe_invoice_item_id": stripe_item_id}
    if now is not None:
        values["updated_at"] = now
    conn.execute(update(t.entries).where(t.entries.c.id == entry_id).values(**values))


def item_creates_count(conn: Connection, entry_id: int, invoice_id: int) -> int:
    """How many line creates were ever queued for the entry on this draft (an entry
    taken off and put back needs a new idempotency key)."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(t.outbox)
            .where(
                t.outbox.c.entry_id == entry_id,
                t.outbox.c.invoice_id == invoice_id,
                t.outbox.c.operation == "create_invoice_item",
            )
        ).scalar_one()
    )


def count_entries(conn: Connection, invoice_id: int, states: Iterable[EntryState | str]) -> int:
    """How many of the invoice's entries are in these states."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(t.entries)
            .where(t.entries.c.invoice_id == invoice_id, t.entries.c.state.in_(_states(states)))
        ).scalar_one()
    )


def summary_lines(
    conn: Connection, invoice_id: int, states: Iterable[EntryState | str]
) -> list[SummaryLineRecord]:
    """The invoice's entries in these states with their items' titles, by id: the
    lines of its approval message."""
    rows = conn.execute(
        select(
            t.entries.c.id,
            t.entries.c.kind,
            t.entries.c.hours,
            t.entries.c.rate,
            t.entries.c.amount,
            t.entries.c.description,
            t.entries.c.person,
            t.entries.c.role,
            t.items.c.title,
            t.items.c.url,
        )
        .join(t.items, t.items.c.id == t.entries.c.item_id)
        .where(t.entries.c.invoice_id == invoice_id, t.entries.c.state.in_(_states(states)))
        .order_by(t.entries.c.id)
    ).mappings()
    return [SummaryLineRecord.from_row(r) for r in rows]


def open_draft_ids(conn: Connection, client: str) -> list[int]:
    """The client's drafts that still hold an open slot (undecided, taking lines)."""
    return [
        int(i)
        for i in conn.execute(
            select(t.invoices.c.id).where(
                t.invoices.c.client == client,
                t.invoices.c.state == InvoiceState.DRAFT.value,
                t.invoices.c.open_slot.is_not(None),
            )
        ).scalars()
    ]
