"""The engine's driver-level bulk writes store what SQLAlchemy's column types would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert, select

from mapping.money import Money
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


# With a milestone amount, and with neither an item rate nor a milestone (those two
# are then written as NULL literals, not bound parameters).
@pytest.mark.parametrize("milestone", [Decimal("1000.5"), None])
def test_a_bulk_insert_reads_back_like_a_core_insert(
    ledger: Ledger, milestone: Decimal | None
) -> None:
    moment = TIMES[2]
    row = {**_item_row("core", moment), "milestone_amount": milestone}
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


def _entry_row(key: str, item_id: int, moment: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "entry_key": key,
        "item_id": item_id,
        "client": "acme",
        "kind": "time",
        "seq": 1,
        "state": "in_progress",
        "hours": Decimal("1.50"),
        "rate": Decimal("120"),
        "amount": Decimal("180.00"),
        "currency": "EUR",
        "description": "",
        "person": None,
        "role": None,
        "cost_rate": None,
        "cost": None,
        "done_at": moment,
        "review_reason": None,
        "created_at": NOW,
        "updated_at": moment,
        **extra,
    }


# Entries of the whole item (no people configured: as before issue 18) and per-person
# shares with their role, cost rate and cost (0006_people_cost).
ENTRY_CASES: list[dict[str, Any]] = [
    {},
    {
        "person": "alice",
        "role": "dev",
        "cost_rate": Decimal("60.5"),
        "cost": Decimal("90.75"),
        "state": "needs_review",
        "review_reason": "why",
    },
    {"person": "bob", "role": None, "cost_rate": Decimal(0), "cost": Decimal("0.00")},
    {"person": "p" * 200, "role": "r" * 100, "rate": None, "amount": None, "done_at": None},
]


def _new_entry(row: dict[str, Any], item_ref: str | int) -> bulk.NewEntry:
    return bulk.NewEntry(*(item_ref if f == "item_ref" else row[f] for f in bulk.NewEntry._fields))


def test_bulk_entries_read_back_like_core_inserts(ledger: Ledger) -> None:
    moment = TIMES[3]
    with ledger.unit_of_work(NOW) as uow:
        uow.conn.execute(insert(t.items), [_item_row("item", moment)])
        item_id = uow.conn.execute(select(t.items.c.id)).scalar_one()
        writes = bulk.BatchWrites()
        for n, case in enumerate(ENTRY_CASES):
            core = _entry_row(f"core-{n}", item_id, moment, seq=2 * n, **case)
            uow.conn.execute(insert(t.entries), [core])
            row = _entry_row(f"bulk-{n}", item_id, moment, seq=2 * n + 1, **case)
            writes.new_entries[row["entry_key"]] = _new_entry(row, item_id)
        ids = uow.write_batch(writes)
    with ledger.engine.connect() as conn:
        read = {r.entry_key: r._asdict() for r in conn.execute(select(t.entries)).all()}
    assert {f"bulk-{n}" for n in range(len(ENTRY_CASES))} == set(ids)
    for n, case in enumerate(ENTRY_CASES):
        core, driver = read[f"core-{n}"], read[f"bulk-{n}"]
        assert ids[f"bulk-{n}"] == driver["id"]
        for column in ("id", "entry_key", "seq"):
            core.pop(column), driver.pop(column)
        assert driver == core
        for column, value in case.items():
            assert driver[column] == value


def test_bulk_entries_of_an_item_inserted_in_the_same_batch(ledger: Ledger) -> None:
    row = _item_row("new", NOW)
    state = bulk.ItemState(
        *(
            row[c] if c not in ("labels", "assignees") else tuple(row[c])
            for c in bulk.ItemState._fields
        )
    )
    writes = bulk.BatchWrites()
    writes.new_items["new"] = bulk.NewItem("new", "file", "web", "new", NOW, state)
    entry = _entry_row("new#time-1@alice", 0, NOW, person="alice", cost=Decimal("45"))
    writes.new_entries[entry["entry_key"]] = _new_entry(entry, "new")
    with ledger.unit_of_work(NOW) as uow:
        ids = uow.write_batch(writes)
    with ledger.engine.connect() as conn:
        got = conn.execute(select(t.entries)).one()
    assert got.item_id == ids["new"] and got.id == ids["new#time-1@alice"]
    assert (got.person, got.role, got.cost_rate, got.cost) == ("alice", None, None, Decimal(45))


def test_bulk_entry_updates_of_cost_columns_read_back_like_core_updates(ledger: Ledger) -> None:
    later = TIMES[1]
    with ledger.unit_of_work(NOW) as uow:
        uow.conn.execute(insert(t.items), [_item_row("item", NOW)])
        item_id = uow.conn.execute(select(t.items.c.id)).scalar_one()
        for n, key in enumerate(("core", "bulk")):
            uow.conn.execute(
                insert(t.entries),
                [_entry_row(key, item_id, NOW, seq=n, person="alice", cost_rate=Decimal(50))],
            )
    change: bulk.EntryChange = {
        "hours": Decimal("2.5"),
        "rate": Decimal("100"),
        "amount": Decimal("250.00"),
        "cost_rate": Decimal("55.25"),
        "cost": Decimal("138.125"),
        "done_at": later,
        "updated_at": later,
    }
    with ledger.unit_of_work(NOW) as uow:
        ids = dict(uow.conn.execute(select(t.entries.c.entry_key, t.entries.c.id)).all())
        uow.conn.execute(
            t.entries.update().where(t.entries.c.id == ids["core"]).values(dict(change))
        )
        writes = bulk.BatchWrites()
        writes.entry_updates[ids["bulk"]] = dict(change)
        uow.write_batch(writes)
    with ledger.engine.connect() as conn:
        read = {r.entry_key: r._asdict() for r in conn.execute(select(t.entries)).all()}
    core, driver = read["core"], read["bulk"]
    for column in ("id", "entry_key", "seq"):
        core.pop(column), driver.pop(column)
    assert driver == core
    assert driver["cost"] == Decimal("138.125") and driver["person"] == "alice"


def test_held_state_carries_person_role_cost_rate_and_cost(ledger: Ledger) -> None:
    with ledger.unit_of_work(NOW) as uow:
        uow.conn.execute(insert(t.items), [_item_row("item", NOW)])
        item_id = uow.conn.execute(select(t.items.c.id)).scalar_one()
        for n, case in enumerate(ENTRY_CASES):
            uow.conn.execute(insert(t.entries), [_entry_row(f"e-{n}", item_id, NOW, seq=n, **case)])
    with ledger.read(NOW) as uow:
        held = uow.held_items(["item"])["item"]
    entries = {e.entry_key: e for e in held.held.entries}
    assert set(held.entry_ids) == set(entries) == {f"e-{n}" for n in range(len(ENTRY_CASES))}
    for n, case in enumerate(ENTRY_CASES):
        entry, row = entries[f"e-{n}"], _entry_row(f"e-{n}", item_id, NOW, **case)
        assert (entry.person, entry.role, entry.cost_rate) == (
            row["person"],
            row["role"],
            row["cost_rate"],
        )
        assert entry.cost == (Money(row["cost"], "EUR") if row["cost"] is not None else None)
        assert entry.amount == (Money(row["amount"], "EUR") if row["amount"] is not None else None)
        assert (entry.hours, entry.rate, entry.state.value) == (
            row["hours"],
            row["rate"],
            row["state"],
        )
