"""Pure rules for reviewing invoices: how a time reads for finance, a line's flags, an
invoice's history status, the audit log as CSV. No I/O, no clock."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from mapping.domain import EntryState


def human_time(moment: datetime | None, zone: str) -> str:
    """'3 Dec 2026, 12:05 CET' in the finance time zone (naive times are UTC)."""
    if moment is None:
        return ""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    local = aware.astimezone(ZoneInfo(zone))
    return f"{local.day} {local:%b %Y, %H:%M} {local.tzname() or zone}"


def iso_time(moment: datetime | None) -> str | None:
    """Seconds precision, with its offset (machine-readable, no microseconds)."""
    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(microsecond=0).isoformat()


def line_flags(state: str, kind: str, rate: Decimal | None, review_reason: str | None) -> list[str]:
    """What finance should look at on a line, in words (never colour alone)."""
    flags: list[str] = []
    if state == EntryState.NEEDS_REVIEW.value:
        flags.append("needs review" + (f": {review_reason}" if review_reason else ""))
    if kind == "adjustment":
        flags.append("adjustment")
    if kind == "time" and rate is None:
        flags.append("no rate")
    return flags


# Audit actions that are part of an invoice's life, and how the history names them.
INVOICE_EVENTS: Mapping[str, str] = {
    "drafted": "drafted",
    "adjusted": "adjusted",
    "deferred": "line deferred",
    "approved": "approved",
    "approve_held_below_minimum": "approval held (below minimum)",
    "finalized": "finalized",
    "finalized_without_approval": "finalized outside kanvoice",
    "sent": "sent",
    "paid": "paid",
    "void": "voided",
    "deleted": "deleted",
    "uncollectible": "uncollectible",
    "rejected": "rejected",
}

_STATE_LABEL = {
    "draft": "drafted",
    "finalized": "finalized",
    "sent": "sent",
    "paid": "paid",
    "void": "voided",
    "deleted": "deleted",
    "uncollectible": "uncollectible",
}


def history_status(invoice_state: str, approved: bool, last_decision: str | None) -> str:
    """One word for the history list: the invoice's state, with a draft's decision."""
    if invoice_state == "draft":
        if approved:
            return "approved"
        if last_decision == "rejected":
            return "rejected"
    return _STATE_LABEL.get(invoice_state, invoice_state)


def matches(row: Mapping[str, Any], query: str) -> bool:
    """Case-insensitive search over a history row's words (client, number, people, ...)."""
    words = query.casefold().split()
    if not words:
        return True
    haystack = " ".join(str(v) for v in _flatten(row)).casefold()
    return all(word in haystack for word in words)


def _flatten(value: Any) -> Iterable[Any]:
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _flatten(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _flatten(item)
    elif value is not None:
        yield value


AUDIT_COLUMNS: Sequence[str] = (
    "id",
    "at",
    "at_local",
    "actor",
    "action",
    "subject",
    "client",
    "invoice_id",
    "number",
    "reason",
    "detail",
)


def audit_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """The audit rows as CSV (header first), the columns of `AUDIT_COLUMNS`. Cells that a
    spreadsheet would run as a formula are prefixed with a quote."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(AUDIT_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in AUDIT_COLUMNS])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping | list):
        import json

        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def parse_since(text: str, zone: str) -> datetime:
    """`2026-12-01` (midnight in the finance time zone) or an ISO time (naive: in the
    finance time zone). ValueError naming the expected form otherwise."""
    from datetime import date, time

    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day, time(0), ZoneInfo(zone)).astimezone(UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"since {text[:40]!r}: expected a date (2026-12-01) or an ISO time (2026-12-01T09:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return moment.astimezone(UTC)
