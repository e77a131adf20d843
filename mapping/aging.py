"""Totals per currency, how long ready work has waited, overdue invoices, reminders.

Pure: no I/O, no clock. `today` / `now` are passed in by the shell (its injected clock,
in the finance time zone for days).

- Money is summed **per currency**, never across currencies (`totals_by_currency`):
  kanvoice holds no exchange rates, so an EUR and a USD gap are two figures.
- A ready entry's age is the number of whole days since it was Done (`age_days`); the
  buckets are 0–7, 8–30, 31–60 and more than 60 days (`bucket_for`).
- Sorting by gap groups the clients by currency (no exchange rates), largest gap first
  in each; sorting by age puts the client whose oldest ready entry waited longest first.
- An invoice is overdue when it is open (finalized or sent), has a due date, and the
  due date has passed; or when Stripe said so (``invoice.overdue``) and it is still open.
- A reminder (Stripe's own ``send`` again) is due for an overdue invoice at most once per
  configured interval: never twice within the interval of the last reminder, and each
  reminder's idempotency slot (`reminder_slot`) makes two instances deciding at once
  send one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Literal, TypeVar

from mapping.money import Money, normalize_currency

_T = TypeVar("_T")

SortKey = Literal["client", "gap", "age"]
SORT_KEYS: tuple[SortKey, ...] = ("client", "gap", "age")


class AgeBucket(StrEnum):
    """Days since Done of a ready entry."""

    DAYS_0_7 = "0-7"
    DAYS_8_30 = "8-30"
    DAYS_31_60 = "31-60"
    OVER_60 = ">60"

    @property
    def slug(self) -> str:
        """For ids and CSS: ``0-7``, ``8-30``, ``31-60``, ``over-60``."""
        return "over-60" if self is AgeBucket.OVER_60 else self.value

    @property
    def label(self) -> str:
        return {"0-7": "0–7 d", "8-30": "8–30 d", "31-60": "31–60 d", ">60": "> 60 d"}[self.value]


BUCKETS: tuple[AgeBucket, ...] = tuple(AgeBucket)


def age_days(done_on: date, today: date) -> int:
    """Whole days since Done; work done "in the future" (clock skew) is 0 days old."""
    return max(0, (today - done_on).days)


def bucket_for(days: int) -> AgeBucket:
    """0–7, 8–30, 31–60, > 60 days (edges inclusive on the lower bucket)."""
    if days <= 7:
        return AgeBucket.DAYS_0_7
    if days <= 30:
        return AgeBucket.DAYS_8_30
    if days <= 60:
        return AgeBucket.DAYS_31_60
    return AgeBucket.OVER_60


def totals_by_currency(amounts: Iterable[Money]) -> tuple[Money, ...]:
    """One sum per currency (sorted by currency code), each quantized; never one sum of
    several currencies."""
    sums: dict[str, Decimal] = {}
    for money in amounts:
        sums[money.currency] = sums.get(money.currency, Decimal(0)) + money.amount
    return tuple(Money(sums[code], code).quantized() for code in sorted(sums))


@dataclass(frozen=True, slots=True)
class ReadyWork:
    """One ready-to-bill entry as aging sees it: its amount and the day it was Done
    (None: unknown, counted as done `today`)."""

    client: str
    amount: Money
    done_on: date | None


@dataclass(frozen=True, slots=True)
class ClientAging:
    """A client's ready work by age: money per bucket (the client's currency) and the
    age of its oldest ready entry (None: nothing ready)."""

    client: str
    currency: str
    oldest_days: int | None
    buckets: tuple[tuple[AgeBucket, Money], ...]
    entries: int = 0

    def bucket(self, which: AgeBucket) -> Money:
        return dict(self.buckets).get(which, Money.zero(self.currency))

    @property
    def oldest_bucket(self) -> AgeBucket | None:
        return None if self.oldest_days is None else bucket_for(self.oldest_days)


def empty_aging(client: str, currency: str) -> ClientAging:
    zero = Money.zero(currency).quantized()
    buckets = tuple((b, zero) for b in BUCKETS)
    return ClientAging(client, normalize_currency(currency), None, buckets)


@dataclass(frozen=True, slots=True)
class BucketSum:
    """Ready work of one client, currency and bucket, summed (what the ledger's one
    aggregate query returns): amount, entries, and the oldest entry's Done day."""

    client: str
    currency: str
    bucket: AgeBucket
    amount: Decimal
    entries: int
    oldest_on: date | None


def bucket_cutoffs(today: date) -> tuple[date, date, date]:
    """The earliest Done day of the 0–7, 8–30 and 31–60 buckets: work Done on or after
    the first is 0–7 days old, on or after the second 8–30, on or after the third
    31–60, before it more than 60 (the shell turns them into midnights of the finance
    time zone and lets the database sum per bucket)."""
    return (today - timedelta(days=7), today - timedelta(days=30), today - timedelta(days=60))


def bucket_sums(work: Iterable[ReadyWork], today: date) -> list[BucketSum]:
    """Ready entries summed per client, currency and bucket (unknown Done day: today)."""
    sums: dict[tuple[str, str, AgeBucket], tuple[Decimal, int, date]] = {}
    for entry in work:
        day = entry.done_on or today
        key = (entry.client, entry.amount.currency, bucket_for(age_days(day, today)))
        amount, count, oldest = sums.get(key, (Decimal(0), 0, day))
        sums[key] = (amount + entry.amount.amount, count + 1, min(oldest, day))
    return [BucketSum(c, cur, b, a, n, o) for (c, cur, b), (a, n, o) in sums.items()]


def client_aging(
    work: Iterable[ReadyWork], today: date, currencies: dict[str, str] | None = None
) -> dict[str, ClientAging]:
    """Aging per client from single entries (see `aging_from_sums`)."""
    return aging_from_sums(bucket_sums(work, today), today, currencies)


def aging_from_sums(
    sums: Iterable[BucketSum], today: date, currencies: dict[str, str] | None = None
) -> dict[str, ClientAging]:
    """Aging per client. `currencies` (client -> currency) adds clients with nothing
    ready (all buckets zero). Work in another currency than the client's own is its
    own row (keyed ``client:CUR``), so no bucket ever mixes currencies."""
    grouped: dict[tuple[str, str], dict[AgeBucket, Decimal]] = {}
    oldest: dict[tuple[str, str], int] = {}
    counts: dict[tuple[str, str], int] = {}
    for row in sums:
        key = (row.client, normalize_currency(row.currency))
        bucket_sums_ = grouped.setdefault(key, {})
        bucket_sums_[row.bucket] = bucket_sums_.get(row.bucket, Decimal(0)) + row.amount
        days = age_days(row.oldest_on, today) if row.oldest_on is not None else 0
        oldest[key] = max(oldest.get(key, 0), days)
        counts[key] = counts.get(key, 0) + row.entries
    out: dict[str, ClientAging] = {}
    for client, currency in (currencies or {}).items():
        out[client] = empty_aging(client, currency)
    primary: dict[str, str] = {c: normalize_currency(cur) for c, cur in (currencies or {}).items()}
    for (client, currency), by_bucket in sorted(grouped.items()):
        primary.setdefault(client, currency)
        row_key = client if primary[client] == currency else f"{client}:{currency}"
        out[row_key] = ClientAging(
            client,
            currency,
            oldest[(client, currency)],
            tuple((b, Money(by_bucket.get(b, Decimal(0)), currency).quantized()) for b in BUCKETS),
            counts[(client, currency)],
        )
    return out


def sort_rows(
    rows: Sequence[_T],
    by: SortKey,
    *,
    client: Callable[[_T], str],
    gap: Callable[[_T], Money],
    oldest_days: Callable[[_T], int | None],
) -> list[_T]:
    """Rows in the requested order; ties and "client" by client key.

    - ``gap``: by currency code (amounts in different currencies are not compared),
      then the largest gap first;
    - ``age``: the oldest ready entry first; clients with nothing ready last.
    """
    if by == "gap":
        return sorted(rows, key=lambda r: (gap(r).currency, -gap(r).amount, client(r)))
    if by == "age":

        def age_key(r: _T) -> tuple[int, int, str]:
            days = oldest_days(r)
            return (1 if days is None else 0, -(days or 0), client(r))

        return sorted(rows, key=age_key)
    return sorted(rows, key=client)


def parse_sort(value: str | None) -> SortKey:
    """A user's ``sort`` value; anything unknown is a ValueError naming the choices."""
    if value is None or value == "":
        return "client"
    if value not in SORT_KEYS:
        raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}, not {value!r}")
    return value


# --- overdue invoices and reminders --------------------------------------------------------

OPEN_INVOICE_STATES = frozenset({"finalized", "sent"})


def is_overdue(
    state: str, due_date: datetime | None, now: datetime, flagged: bool = False
) -> bool:
    """Open (finalized / sent, so not paid, voided, deleted or uncollectible) and past
    its due date, or flagged overdue by Stripe's ``invoice.overdue``."""
    if state not in OPEN_INVOICE_STATES:
        return False
    if flagged:
        return True
    return due_date is not None and due_date < now


def days_overdue(due_date: datetime | None, now: datetime) -> int:
    """Whole days past the due date (0 on the due day or without one)."""
    if due_date is None or due_date >= now:
        return 0
    return (now - due_date).days


@dataclass(frozen=True, slots=True)
class ReminderPolicy:
    """Whether kanvoice re-sends overdue invoices, and how often at most."""

    enabled: bool = False
    interval: timedelta = timedelta(days=7)


def reminder_due(
    policy: ReminderPolicy,
    overdue: bool,
    last_reminder_at: datetime | None,
    now: datetime,
) -> bool:
    """A reminder is due: reminders are on, the invoice is overdue, and no reminder was
    sent within the interval (the first one goes out as soon as it is overdue)."""
    if not policy.enabled or not overdue:
        return False
    return last_reminder_at is None or now - last_reminder_at >= policy.interval


def reminder_slot(due_date: datetime | None, now: datetime, interval: timedelta) -> int:
    """Which interval since the due date `now` falls in: the reminder's idempotency
    key names it, so two instances deciding in the same interval send one reminder."""
    if due_date is None or now <= due_date or interval <= timedelta(0):
        return 0
    return int((now - due_date) / interval)


@dataclass(frozen=True, slots=True)
class OverdueInvoice:
    """An open invoice past its due date, as the pipeline and the digest show it."""

    invoice_id: int
    client: str
    client_name: str
    number: str | None
    amount: Money
    due_date: datetime | None
    days_overdue: int
    hosted_url: str | None = None
    last_reminder_at: datetime | None = None
    reminders: int = 0
