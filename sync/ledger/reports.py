"""Read-only queries for the reports: profitability and the people seen on boards.

SQL lives here; the sums and groupings are pure (`mapping.profitability`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import Connection, func, select

from mapping.domain import EntryKind, EntryState
from mapping.profitability import ProfitEntry
from sync.ledger import schema as t
from sync.ledger.records import BreakdownRow


def _day(value: datetime | None) -> date | None:
    if value is None:
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).date()


def profit_entries(conn: Connection, client: str | None = None) -> list[ProfitEntry]:
    """Every entry with what profitability reads of it and its item. The day an entry
    counts on is its own Done time, else its item's, else when it was recorded."""
    query = (
        select(
            t.entries.c.client,
            t.entries.c.kind,
            t.entries.c.state,
            t.entries.c.hours,
            t.entries.c.amount,
            t.entries.c.cost,
            t.entries.c.currency,
            t.entries.c.person,
            t.entries.c.done_at,
            t.entries.c.created_at,
            t.items.c.item_key,
            t.items.c.board,
            t.items.c.iteration,
            t.items.c.title,
            t.items.c.assignees,
            t.items.c.done_at.label("item_done_at"),
        )
        .join(t.items, t.items.c.id == t.entries.c.item_id)
        .order_by(t.entries.c.id)
    )
    if client is not None:
        query = query.where(t.entries.c.client == client)
    out = []
    for row in conn.execute(query).all():
        kind = EntryKind(row.kind)
        out.append(
            ProfitEntry(
                client=row.client,
                board=row.board,
                sprint=row.iteration,
                person=row.person,
                kind=kind,
                state=EntryState(row.state),
                hours=row.hours,
                amount=row.amount,
                cost=row.cost,
                currency=row.currency,
                item_key=row.item_key,
                title=row.title,
                done_on=_day(row.done_at or row.item_done_at or row.created_at),
                shared=kind in (EntryKind.MILESTONE, EntryKind.COST)
                and row.person is None
                and len(_names(row.assignees)) > 1,
            )
        )
    return out


def _names(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def assignees_seen(conn: Connection) -> dict[str, set[str]]:
    """Every assignee on an item in the ledger: identity -> the boards it was seen on."""
    seen: dict[str, set[str]] = {}
    for row in conn.execute(select(t.items.c.board, t.items.c.assignees)).all():
        for name in _names(row.assignees):
            seen.setdefault(name, set()).add(row.board)
    return seen


def breakdown_rows(conn: Connection) -> list[BreakdownRow]:
    """Entries summed per client, board, iteration, state, kind and currency (the
    dashboard's per-board and per-sprint splits)."""
    e, i = t.entries, t.items
    query = (
        select(
            e.c.client,
            i.c.board,
            i.c.iteration,
            e.c.state,
            e.c.kind,
            e.c.currency,
            func.count().label("entries"),
            func.coalesce(func.sum(e.c.hours), 0).label("hours"),
            func.coalesce(func.sum(e.c.amount), 0).label("amount"),
        )
        .select_from(e.join(i, i.c.id == e.c.item_id))
        .group_by(e.c.client, i.c.board, i.c.iteration, e.c.state, e.c.kind, e.c.currency)
    )
    return [BreakdownRow.from_row(r) for r in conn.execute(query).mappings()]
