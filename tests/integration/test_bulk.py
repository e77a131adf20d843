"""The engine's driver-level bulk writes store what SQLAlchemy's column types would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert, select

from sync.ledger import bulk
from sync.ledger import schema as t
from sync.ledger.store import Ledger

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
TIMES = [
    NOW,
    datetime(2026, 11, 2, 9, 0, 0, 123456, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=2))),
    datetime(2026, 1, 1, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    datetime(1999, 12, 31, 0, 0),
]
NUMBERS = [Decimal(0), Decimal("1.5"), Decimal("1.50"), Decimal("-2.25"), Decimal("0.0000005")]


@pytest.fixture
def ledger(ledger_url: str) -> Any:
    the_ledger = Ledger(ledger_url)
    the_ledger.upgrade()
    yield the_ledger
    the_ledger.dispose()


def test_driver_values_equal_sqlalchemys_bind_processing(ledger: Ledger) -> None:
    dialect = ledger.engine.dialect
    values = bulk.DriverValues(dialect, NOW)
    as_datetime = t.items.c.updated_at.type._cached_bind_processor(dialect)
    as_json = t.items.c.labels.type._cached_bind_processor(dialect)
    as_scaled = t.items.c.hours.type._cached_bind_processor(dialect)
    for moment in TIMES:
        expected = as_datetime(moment) if as_datetime else moment
        assert values.timestamp(moment) == expected
        assert values.timestamp(moment) == expected  # the identity shortcut
    assert values.optional_timestamp(None) is None
    for labels in [(), ("backend",), ("a", "b, c", 'quote"d')]:
        got, want = values.string_list(labels), as_json(list(labels)) if as_json else labels
        assert str(got) == str(want)
    assert as_scaled is not None
    for number in NUMBERS:
        assert t.to_scaled(number) == as_scaled(number)


def _item_row(key: str, moment: datetime) -> dict[str, Any]:
    return {
        "item_key": key,
        "source": "file",
        "board": "web",
        "external_id": key,
        "client": "acme",
        "title": "T",
        "url": "u",
        "column_name": "Done",
        "state_category": "done",
        "is_done": True,
        "hours": Decimal("1.25"),
        "billing_type": "time_and_materials",
        "labels": ["x", "y"],
        "assignees": [],
        "iteration": None,
        "rate": None,
        "milestone_amount": Decimal("1000.5"),
        "revision": 7,
        "fingerprint": "f" * 40,
        "updated_at": moment,
        "done_at": moment,
        "first_seen_at": NOW,
        "last_seen_at": NOW,
    }


def test_a_bulk_insert_reads_back_like_a_core_insert(ledger: Ledger) -> None:
    moment = TIMES[2]
    row = _item_row("core", moment)
    writes = bulk.BatchWrites()
    state = bulk.ItemState(
        *(
            row[c] if c not in ("labels", "assignees") else tuple(row[c])
            for c in bulk.ItemState._fields
        )
    )
    writes.new_items["bulk"] = bulk.NewItem("bulk", "file", "web", "bulk", NOW, state)
    with ledger.unit_of_work(NOW) as uow:
        uow.conn.execute(insert(t.items), [row])
        ids = uow.write_batch(writes)
    with ledger.engine.connect() as conn:
        read = {r.item_key: r._asdict() for r in conn.execute(select(t.items)).all()}
    assert set(ids) == {"bulk"} and ids["bulk"] == read["bulk"]["id"]
    core, driver = read["core"], read["bulk"]
    for column in ("id", "item_key", "external_id"):
        core.pop(column), driver.pop(column)
    assert driver == core


def test_reserved_ids_follow_the_rows_already_there(ledger: Ledger) -> None:
    with ledger.unit_of_work(NOW) as uow:
        uow.conn.execute(insert(t.items), [_item_row("a", NOW)])
        first = uow.conn.execute(select(t.items.c.id)).scalar_one()
        reserved = bulk.reserve_ids(uow.conn, "items", 3)
    assert reserved == sorted(reserved) and len(set(reserved)) == 3
    assert min(reserved) > first
