"""The line → entries link of merged Stripe lines (`line_entries`, migration 0007).

A merged line is named by its lead entry: the lead's `stripe_invoice_item_id` holds
the Stripe line, its id is in the line's idempotency keys and metadata, and the line
bills the sum of every linked entry's frozen amount. Lines of one entry have no rows.
Only SQL here; what to merge is `mapping.line_groups.group_lines`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Connection, delete, insert, select

from mapping.domain import EntryState
from sync.ledger import schema as t

#: States of the entries a draft's line bills.
ON_LINE_STATES = (EntryState.DRAFTED.value, EntryState.APPROVED.value)


@dataclass(frozen=True, slots=True)
class LineTotals:
    """What a line bills: its entries (lead first), summed hours and amount."""

    entries: tuple[int, ...]
    hours: Decimal
    amount: Decimal


def lead_of(conn: Connection, entry_id: int) -> int | None:
    """The lead entry of the merged line the entry is on (None: a line of its own)."""
    found = conn.execute(
        select(t.line_entries.c.lead_entry_id).where(t.line_entries.c.entry_id == entry_id)
    ).scalar_one_or_none()
    return int(found) if found is not None else None


def leads_on(conn: Connection, invoice_id: int) -> dict[int, int]:
    """entry id → lead entry id, for every entry on a merged line of the invoice."""
    rows = conn.execute(
        select(t.line_entries.c.entry_id, t.line_entries.c.lead_entry_id).where(
            t.line_entries.c.invoice_id == invoice_id
        )
    ).all()
    return {int(r.entry_id): int(r.lead_entry_id) for r in rows}


def members_of(conn: Connection, lead_id: int) -> list[int]:
    """The entries of the lead's merged line other than the lead (in id order)."""
    return [
        int(v)
        for v in conn.execute(
            select(t.line_entries.c.entry_id)
            .where(
                t.line_entries.c.lead_entry_id == lead_id,
                t.line_entries.c.entry_id != lead_id,
            )
            .order_by(t.line_entries.c.entry_id)
        ).scalars()
    ]


def line_totals(conn: Connection, lead_id: int, invoice_id: int) -> LineTotals | None:
    """The sums of the lead's merged line on the invoice (None: not a merged line)."""
    rows = conn.execute(
        select(t.entries.c.id, t.entries.c.hours, t.entries.c.amount)
        .join(t.line_entries, t.line_entries.c.entry_id == t.entries.c.id)
        .where(
            t.line_entries.c.lead_entry_id == lead_id,
            t.line_entries.c.invoice_id == invoice_id,
            t.entries.c.invoice_id == invoice_id,
            t.entries.c.state.in_(ON_LINE_STATES),
        )
        .order_by(t.entries.c.id)
    ).all()
    if len(rows) < 2:
        return None
    ids = sorted((int(r.id) for r in rows), key=lambda i: (i != lead_id, i))
    return LineTotals(
        entries=tuple(ids),
        hours=sum((r.hours for r in rows), Decimal(0)),
        amount=sum((r.amount or Decimal(0) for r in rows), Decimal(0)),
    )


def link(conn: Connection, lead_id: int, entry_ids: Iterable[int], invoice_id: int) -> None:
    """Put entries (and the lead itself) on the lead's merged line."""
    known = set(
        conn.execute(
            select(t.line_entries.c.entry_id).where(t.line_entries.c.lead_entry_id == lead_id)
        ).scalars()
    )
    for entry_id in dict.fromkeys((lead_id, *entry_ids)):
        if entry_id not in known:
            conn.execute(
                insert(t.line_entries).values(
                    entry_id=entry_id, lead_entry_id=lead_id, invoice_id=invoice_id
                )
            )


def unlink(conn: Connection, entry_ids: Iterable[int]) -> None:
    """Take entries off whatever merged line they were on."""
    ids = list(entry_ids)
    if ids:
        conn.execute(delete(t.line_entries).where(t.line_entries.c.entry_id.in_(ids)))


def unlink_line(conn: Connection, lead_id: int) -> None:
    """Forget a merged line altogether (its entries left the draft)."""
    conn.execute(delete(t.line_entries).where(t.line_entries.c.lead_entry_id == lead_id))


def unlink_invoice(conn: Connection, invoice_id: int) -> None:
    """Forget every merged line of an invoice (all its entries left it)."""
    conn.execute(delete(t.line_entries).where(t.line_entries.c.invoice_id == invoice_id))
