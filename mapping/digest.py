"""The finance digest: what it says, and when it is due. Pure: no I/O, no clock.

The digest tells finance, unprompted, the unbilled gap per currency, the clients whose
ready work has waited longest, drafts waiting for approval and invoices overdue. It is
posted once per scheduled slot (`latest_slot`: the most recent scheduled day and time,
in the finance time zone); the shell's outbox key names the slot, so restarts and two
instances post it once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from mapping.aging import OverdueInvoice, totals_by_currency
from mapping.money import Money

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MAX_CLIENTS_SHOWN = 5
MAX_DRAFTS_SHOWN = 10
MAX_OVERDUE_SHOWN = 10


@dataclass(frozen=True, slots=True)
class DigestClient:
    """A client with ready work: its gap (ready, drafted, approved) and oldest age."""

    client: str
    name: str
    gap: Money
    ready: Money
    oldest_days: int | None


@dataclass(frozen=True, slots=True)
class DigestDraft:
    """A draft posted for approval and not yet decided."""

    invoice_id: int
    client: str
    client_name: str
    total: Money
    waiting_days: int
    stripe_url: str | None = None


@dataclass(frozen=True, slots=True)
class Digest:
    """The content of one digest message."""

    as_of: datetime
    timezone: str
    gap_by_currency: tuple[Money, ...]
    waiting_longest: tuple[DigestClient, ...]
    clients_waiting: int
    drafts: tuple[DigestDraft, ...]
    drafts_total: tuple[Money, ...]
    overdue: tuple[OverdueInvoice, ...]
    overdue_total: tuple[Money, ...]
    clients_ready: int = 0
    dashboard_url: str | None = None

    @property
    def is_empty(self) -> bool:
        return not (self.gap_by_currency or self.drafts or self.overdue)


def build_digest(
    *,
    as_of: datetime,
    timezone: str,
    clients: Iterable[DigestClient],
    drafts: Iterable[DigestDraft],
    overdue: Iterable[OverdueInvoice],
    dashboard_url: str | None = None,
) -> Digest:
    """The digest: gaps summed per currency (zero gaps dropped), the clients with ready
    work oldest first, drafts oldest first, overdue invoices most overdue first."""
    clients = list(clients)
    waiting = [c for c in clients if not c.gap.amount.is_zero()]
    gaps = tuple(m for m in totals_by_currency(c.gap for c in waiting) if not m.amount.is_zero())
    longest = sorted(
        (c for c in waiting if c.oldest_days is not None),
        key=lambda c: (-(c.oldest_days or 0), c.gap.currency, -c.gap.amount, c.client),
    )
    draft_list = sorted(drafts, key=lambda d: (-d.waiting_days, d.invoice_id))
    overdue_list = sorted(overdue, key=lambda o: (-o.days_overdue, o.invoice_id))
    return Digest(
        as_of=as_of,
        timezone=timezone,
        gap_by_currency=gaps,
        waiting_longest=tuple(longest),
        clients_waiting=len(waiting),
        drafts=tuple(draft_list),
        drafts_total=totals_by_currency(d.total for d in draft_list),
        overdue=tuple(overdue_list),
        overdue_total=totals_by_currency(o.amount for o in overdue_list),
        clients_ready=sum(1 for c in clients if not c.ready.amount.is_zero()),
        dashboard_url=dashboard_url,
    )


# --- schedule -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestSchedule:
    """Days of the week and a local time in `timezone` (default: Monday 09:00 UTC)."""

    days: tuple[int, ...] = (0,)  # 0 = Monday
    at: time = time(9, 0)
    timezone: str = "UTC"


def parse_days(values: Sequence[str]) -> tuple[int, ...]:
    """``["mon", "thu"]`` (or full names, or ``"daily"``) as weekday numbers."""
    out: set[int] = set()
    for raw in values:
        value = raw.strip().lower()
        if value in ("daily", "every day", "*"):
            out.update(range(7))
            continue
        if value in ("weekdays",):
            out.update(range(5))
            continue
        if value in WEEKDAYS:
            out.add(WEEKDAYS.index(value))
        elif value in _FULL_DAYS:
            out.add(_FULL_DAYS.index(value))
        else:
            raise ValueError(f"unknown day {raw!r}: use mon, tue, … sun, weekdays or daily")
    if not out:
        raise ValueError("at least one day is needed")
    return tuple(sorted(out))


def latest_slot(schedule: DigestSchedule, now: datetime) -> datetime:
    """The most recent scheduled moment at or before `now` (an aware datetime)."""
    zone = ZoneInfo(schedule.timezone)
    local = now.astimezone(zone)
    day: date = local.date()
    for back in range(8):
        candidate_day = day - timedelta(days=back)
        if candidate_day.weekday() not in schedule.days:
            continue
        candidate = datetime.combine(candidate_day, schedule.at, tzinfo=zone)
        if candidate <= local:
            return candidate
    raise AssertionError("a weekly schedule has a slot within 8 days")  # pragma: no cover


def slot_due(
    schedule: DigestSchedule, now: datetime, grace: timedelta = timedelta(hours=12)
) -> datetime | None:
    """The slot to post now: the latest slot if it is at most `grace` old (a daemon
    that was down at 09:00 and comes back at 10:00 still posts; one that comes back a
    day later does not post yesterday's digest), else None."""
    slot = latest_slot(schedule, now)
    return slot if now - slot <= grace else None


def slot_key(slot: datetime) -> str:
    """The slot in the digest's outbox key: the same for every instance and restart."""
    return slot.astimezone(UTC).strftime("%Y%m%dT%H%MZ")
