"""Table tests for totals per currency, aging, sorting, overdue and reminders
(mapping.aging) and the digest's content and schedule (mapping.digest)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapping.aging import (
    AgeBucket,
    ClientAging,
    OverdueInvoice,
    ReadyWork,
    ReminderPolicy,
    age_days,
    bucket_for,
    client_aging,
    days_overdue,
    is_overdue,
    parse_sort,
    reminder_due,
    reminder_slot,
    sort_rows,
    totals_by_currency,
)
from mapping.digest import (
    DigestClient,
    DigestDraft,
    DigestSchedule,
    build_digest,
    latest_slot,
    parse_days,
    slot_due,
    slot_key,
)
from mapping.money import Money

TODAY = date(2026, 12, 3)
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def eur(amount: str) -> Money:
    return Money(Decimal(amount), "EUR")


def usd(amount: str) -> Money:
    return Money(Decimal(amount), "USD")


@pytest.mark.parametrize(
    ("days", "bucket"),
    [
        (0, AgeBucket.DAYS_0_7),
        (7, AgeBucket.DAYS_0_7),
        (8, AgeBucket.DAYS_8_30),
        (30, AgeBucket.DAYS_8_30),
        (31, AgeBucket.DAYS_31_60),
        (60, AgeBucket.DAYS_31_60),
        (61, AgeBucket.OVER_60),
        (400, AgeBucket.OVER_60),
    ],
)
def test_bucket_edges(days: int, bucket: AgeBucket) -> None:
    assert bucket_for(days) is bucket
    assert bucket_for(age_days(TODAY - timedelta(days=days), TODAY)) is bucket


def test_work_done_after_today_is_zero_days_old() -> None:
    assert age_days(TODAY + timedelta(days=2), TODAY) == 0


@pytest.mark.parametrize(
    ("amounts", "expected"),
    [
        ([], ()),
        ([eur("1.005"), eur("2")], (eur("3.01"),)),
        ([usd("5"), eur("1"), usd("-2")], (eur("1.00"), usd("3.00"))),
        ([Money(Decimal("1000"), "JPY"), eur("1")], (eur("1.00"), Money(Decimal(1000), "JPY"))),
    ],
)
def test_totals_are_per_currency_never_summed_across(
    amounts: list[Money], expected: tuple[Money, ...]
) -> None:
    assert totals_by_currency(amounts) == expected


@given(st.lists(st.tuples(st.sampled_from(["EUR", "USD", "JPY"]), st.integers(0, 10**9))))
def test_totals_keep_each_currency_exact(values: list[tuple[str, int]]) -> None:
    totals = totals_by_currency(Money(Decimal(v), c) for c, v in values)
    assert [m.currency for m in totals] == sorted({c for c, _ in values})
    for money in totals:
        assert money.amount == sum(Decimal(v) for c, v in values if c == money.currency)


def test_client_aging_buckets_and_oldest() -> None:
    work = [
        ReadyWork("acme", eur("100"), TODAY - timedelta(days=7)),
        ReadyWork("acme", eur("50"), TODAY - timedelta(days=8)),
        ReadyWork("acme", eur("25"), TODAY - timedelta(days=61)),
        ReadyWork("globex", usd("10"), None),
    ]
    aging = client_aging(work, TODAY, {"acme": "EUR", "globex": "USD", "idle": "GBP"})
    acme = aging["acme"]
    assert acme.oldest_days == 61
    assert acme.oldest_bucket is AgeBucket.OVER_60
    assert acme.bucket(AgeBucket.DAYS_0_7) == eur("100.00")
    assert acme.bucket(AgeBucket.DAYS_8_30) == eur("50.00")
    assert acme.bucket(AgeBucket.DAYS_31_60) == eur("0.00")
    assert acme.bucket(AgeBucket.OVER_60) == eur("25.00")
    assert acme.entries == 3
    assert aging["globex"].oldest_days == 0  # no Done date known: counted as today
    assert aging["idle"].oldest_days is None
    assert aging["idle"].bucket(AgeBucket.OVER_60) == Money(Decimal("0.00"), "GBP")


def test_an_entry_in_another_currency_is_its_own_row() -> None:
    work = [
        ReadyWork("acme", eur("1"), TODAY),
        ReadyWork("acme", usd("2"), TODAY - timedelta(days=40)),
    ]
    aging = client_aging(work, TODAY, {"acme": "EUR"})
    assert aging["acme"].bucket(AgeBucket.DAYS_0_7) == eur("1.00")
    assert aging["acme:USD"].bucket(AgeBucket.DAYS_31_60) == usd("2.00")


Row = tuple[str, Money, int | None]
ROWS: list[Row] = [
    ("acme", eur("100"), 3),
    ("bolt", eur("900"), 70),
    ("cyan", usd("5000"), 10),
    ("dune", eur("0"), None),
]


@pytest.mark.parametrize(
    ("by", "order"),
    [
        ("client", ["acme", "bolt", "cyan", "dune"]),
        ("gap", ["bolt", "acme", "dune", "cyan"]),  # EUR first, largest first; then USD
        ("age", ["bolt", "cyan", "acme", "dune"]),  # oldest first; nothing ready last
    ],
)
def test_sort_by_gap_and_age(by: str, order: list[str]) -> None:
    rows = sort_rows(
        ROWS,
        parse_sort(by),
        client=lambda r: r[0],
        gap=lambda r: r[1],
        oldest_days=lambda r: r[2],
    )
    assert [r[0] for r in rows] == order


def test_unknown_sort_is_refused_with_the_choices() -> None:
    assert parse_sort(None) == "client"
    with pytest.raises(ValueError, match="client, gap, age"):
        parse_sort("amount")


DUE = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("state", "due", "now", "flagged", "overdue"),
    [
        ("finalized", DUE, DUE + timedelta(seconds=1), False, True),
        ("sent", DUE, DUE + timedelta(days=3), False, True),
        ("sent", DUE, DUE, False, False),  # due today: not yet overdue
        ("sent", DUE, DUE - timedelta(days=1), False, False),
        ("sent", None, NOW, False, False),
        ("sent", None, NOW, True, True),  # Stripe said so
        ("paid", DUE, NOW, True, False),
        ("void", DUE, NOW, False, False),
        ("deleted", DUE, NOW, False, False),
        ("uncollectible", DUE, NOW, False, False),
        ("draft", DUE, NOW, False, False),
    ],
)
def test_overdue_decision(
    state: str, due: datetime | None, now: datetime, flagged: bool, overdue: bool
) -> None:
    assert is_overdue(state, due, now, flagged) is overdue


def test_days_overdue() -> None:
    assert days_overdue(DUE, DUE + timedelta(days=13, hours=5)) == 13
    assert days_overdue(DUE, DUE - timedelta(days=1)) == 0
    assert days_overdue(None, NOW) == 0


WEEK = timedelta(days=7)
ON = ReminderPolicy(enabled=True, interval=WEEK)


@pytest.mark.parametrize(
    ("policy", "overdue", "last", "due"),
    [
        (ReminderPolicy(), True, None, False),  # off by default
        (ON, False, None, False),
        (ON, True, None, True),  # the first reminder
        (ON, True, NOW - WEEK + timedelta(seconds=1), False),  # within the interval
        (ON, True, NOW - WEEK, True),
        (ON, True, NOW - timedelta(days=30), True),
    ],
)
def test_reminder_at_most_once_per_interval(
    policy: ReminderPolicy, overdue: bool, last: datetime | None, due: bool
) -> None:
    assert reminder_due(policy, overdue, last, NOW) is due


def test_reminder_slot_names_the_interval() -> None:
    assert reminder_slot(DUE, DUE + timedelta(days=1), WEEK) == 0
    assert reminder_slot(DUE, DUE + timedelta(days=6, hours=23), WEEK) == 0
    assert reminder_slot(DUE, DUE + WEEK, WEEK) == 1
    assert reminder_slot(None, NOW, WEEK) == 0


# --- digest ---------------------------------------------------------------------------------


def test_digest_gap_per_currency_longest_waiting_first() -> None:
    digest = build_digest(
        as_of=NOW,
        timezone="Europe/Berlin",
        clients=[
            DigestClient("acme", "Acme", eur("1000"), eur("1000"), 12),
            DigestClient("bolt", "Bolt", eur("500.5"), eur("0"), 64),
            DigestClient("cyan", "Cyan", usd("20"), usd("20"), 3),
            DigestClient("idle", "Idle", eur("0"), eur("0"), None),
        ],
        drafts=[
            DigestDraft(7, "acme", "Acme", eur("1000"), 1),
            DigestDraft(9, "bolt", "Bolt", eur("500.50"), 4),
        ],
        overdue=[
            OverdueInvoice(3, "cyan", "Cyan", "INV-3", usd("70"), DUE, 5),
            OverdueInvoice(4, "acme", "Acme", "INV-4", eur("30"), DUE, 13),
        ],
    )
    assert digest.gap_by_currency == (eur("1500.50"), usd("20.00"))
    assert [c.client for c in digest.waiting_longest] == ["bolt", "acme", "cyan"]
    assert digest.clients_waiting == 3
    assert digest.clients_ready == 2  # bolt's gap is all drafted
    assert [d.invoice_id for d in digest.drafts] == [9, 7]
    assert digest.drafts_total == (eur("1500.50"),)
    assert [o.invoice_id for o in digest.overdue] == [4, 3]
    assert digest.overdue_total == (eur("30.00"), usd("70.00"))
    assert not digest.is_empty


def test_an_empty_digest_knows_it() -> None:
    digest = build_digest(as_of=NOW, timezone="UTC", clients=[], drafts=[], overdue=[])
    assert digest.is_empty
    assert digest.gap_by_currency == ()


BERLIN = DigestSchedule(days=(0,), at=time(9, 0), timezone="Europe/Berlin")


@pytest.mark.parametrize(
    ("now", "slot"),
    [
        # Thursday: the slot is last Monday 09:00 Berlin (08:00 UTC in winter)
        (datetime(2026, 12, 3, 12, 0, tzinfo=UTC), datetime(2026, 11, 30, 8, 0, tzinfo=UTC)),
        # Monday 07:59 UTC = 08:59 Berlin: still the previous Monday
        (datetime(2026, 11, 30, 7, 59, tzinfo=UTC), datetime(2026, 11, 23, 8, 0, tzinfo=UTC)),
        (datetime(2026, 11, 30, 8, 0, tzinfo=UTC), datetime(2026, 11, 30, 8, 0, tzinfo=UTC)),
        # summer time: 09:00 Berlin is 07:00 UTC
        (datetime(2026, 7, 6, 7, 30, tzinfo=UTC), datetime(2026, 7, 6, 7, 0, tzinfo=UTC)),
    ],
)
def test_latest_slot_in_the_finance_time_zone(now: datetime, slot: datetime) -> None:
    assert latest_slot(BERLIN, now) == slot


def test_slot_due_only_within_grace() -> None:
    monday = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert slot_due(BERLIN, monday + timedelta(hours=1)) == monday
    assert slot_due(BERLIN, monday + timedelta(days=1)) is None
    assert slot_key(monday) == slot_key(monday.astimezone(ZoneInfo("Europe/Berlin")))


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (["mon"], (0,)),
        (["Monday", "thu"], (0, 3)),
        (["weekdays"], (0, 1, 2, 3, 4)),
        (["daily"], (0, 1, 2, 3, 4, 5, 6)),
    ],
)
def test_parse_days(days: list[str], expected: tuple[int, ...]) -> None:
    assert parse_days(days) == expected


def test_parse_days_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="unknown day"):
        parse_days(["funday"])


def test_client_aging_type() -> None:
    assert isinstance(client_aging([], TODAY, {"a": "EUR"})["a"], ClientAging)
