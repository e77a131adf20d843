"""The pure review rules: times as finance reads them, flags in words, history status,
search, the audit CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from mapping.review import (
    AUDIT_COLUMNS,
    audit_csv,
    history_status,
    human_time,
    iso_time,
    line_flags,
    matches,
    parse_since,
)

MOMENT = datetime(2026, 12, 3, 11, 5, 7, 123456, tzinfo=UTC)


def test_times_read_in_the_finance_zone_without_microseconds() -> None:
    assert human_time(MOMENT, "UTC") == "3 Dec 2026, 11:05 UTC"
    assert human_time(MOMENT, "Europe/Berlin") == "3 Dec 2026, 12:05 CET"
    assert human_time(datetime(2026, 7, 1, 22, 30, tzinfo=UTC), "Europe/Berlin") == (
        "2 Jul 2026, 00:30 CEST"
    )
    assert human_time(MOMENT.replace(tzinfo=None), "UTC") == "3 Dec 2026, 11:05 UTC"
    assert human_time(None, "UTC") == ""
    assert iso_time(MOMENT) == "2026-12-03T11:05:07+00:00"


def test_since_is_midnight_in_the_finance_zone() -> None:
    assert parse_since("2026-12-01", "Europe/Berlin") == datetime(2026, 11, 30, 23, tzinfo=UTC)
    assert parse_since("2026-12-01T09:00", "UTC") == datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert parse_since("2026-12-01T09:00+01:00", "UTC") == datetime(2026, 12, 1, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="expected a date"):
        parse_since("last week", "UTC")


def test_flags_are_words() -> None:
    assert line_flags("drafted", "time", Decimal(100), None) == []
    assert line_flags("needs_review", "time", None, "no rate") == [
        "needs review: no rate",
        "no rate",
    ]
    assert line_flags("drafted", "adjustment", None, None) == ["adjustment"]


@pytest.mark.parametrize(
    ("state", "approved", "decision", "status"),
    [
        ("draft", False, None, "drafted"),
        ("draft", True, "approved", "approved"),
        ("draft", False, "rejected", "rejected"),
        ("finalized", True, "approved", "finalized"),
        ("void", True, "approved", "voided"),
        ("paid", True, "approved", "paid"),
    ],
)
def test_history_status(state: str, approved: bool, decision: str | None, status: str) -> None:
    assert history_status(state, approved, decision) == status


def test_search_needs_every_word_in_any_field() -> None:
    row = {"client": "acme", "number": "INV-7", "events": [{"actor": "Dana"}]}
    assert matches(row, "")
    assert matches(row, "ACME dana")
    assert matches(row, "inv-7")
    assert not matches(row, "acme globex")


def test_audit_csv_has_a_header_and_defuses_formulas() -> None:
    rows = [
        {
            "id": 1,
            "actor": "=HYPERLINK(1)",
            "action": "rejected",
            "reason": "-5 h",
            "detail": {"a": 1},
        },
    ]
    parsed = list(csv.reader(io.StringIO(audit_csv(rows))))
    assert parsed[0] == list(AUDIT_COLUMNS)
    record = dict(zip(parsed[0], parsed[1], strict=True))
    assert record["actor"] == "'=HYPERLINK(1)" and record["reason"] == "'-5 h"
    assert record["detail"] == '{"a": 1}' and record["client"] == ""
