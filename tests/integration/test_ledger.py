"""The ledger on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from mapping.domain import EntryState
from sync.engine import Engine
from sync.ledger import schema as t
from sync.ledger.store import Ledger
from tests.builders import policy, snap
from tests.conftest import FixedClock

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def ledger(ledger_url: str) -> Any:
    the_ledger = Ledger(ledger_url)
    the_ledger.upgrade()
    yield the_ledger
    the_ledger.dispose()


def engine_for(ledger: Ledger) -> Engine:
    return Engine(ledger, {"web": policy()}, FixedClock(NOW))


def test_migrations_build_exactly_the_declared_schema(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), t.metadata)
    assert diff == []
    ledger.upgrade()  # idempotent on every start
    assert ledger.current_revision() == "0012_approval_forced"


def _entry_row(item_id: int, key: str, seq: int) -> dict[str, Any]:
    return {
        "entry_key": key,
        "item_id": item_id,
        "client": "acme",
        "kind": "time",
        "seq": seq,
        "state": "ready",
        "hours": 1,
        "currency": "EUR",
        "description": "",
        "created_at": NOW,
        "updated_at": NOW,
    }


def test_database_refuses_double_entries(ledger: Ledger) -> None:
    engine_for(ledger).ingest([snap("Done", "3", 1)])
    with ledger.engine.connect() as conn:
        row = conn.execute(select(t.entries)).one()
    for duplicate in (
        _entry_row(row.item_id, row.entry_key, 99),  # same entry key
        _entry_row(row.item_id, "other-key", row.seq),  # same item, kind and sequence
    ):
        with pytest.raises(IntegrityError), ledger.engine.begin() as conn:
            conn.execute(insert(t.entries).values(**duplicate))


def test_one_open_draft_per_client_and_period(ledger: Ledger) -> None:
    draft = {
        "client": "acme",
        "period_key": "2026-11",
        "currency": "EUR",
        "state": "draft",
        "open_slot": "acme|2026-11",
        "created_at": NOW,
        "updated_at": NOW,
    }
    with ledger.engine.begin() as conn:
        conn.execute(insert(t.invoices).values(**draft))
    with pytest.raises(IntegrityError), ledger.engine.begin() as conn:
        conn.execute(insert(t.invoices).values(**draft))
    # Finalized invoices give up the slot (NULL), so any number may exist.
    with ledger.engine.begin() as conn:
        for _ in range(2):
            conn.execute(insert(t.invoices).values(**{**draft, "open_slot": None, "state": "paid"}))


def test_a_delivery_is_claimed_once(ledger: Ledger) -> None:
    with ledger.unit_of_work(NOW) as uow:
        assert uow.claim_delivery("github", "d-1") is True
        assert uow.claim_delivery("github", "d-1") is False
        assert uow.claim_delivery("azure_devops", "d-1") is True
    with ledger.unit_of_work(NOW) as uow:
        assert uow.claim_delivery("github", "d-1") is False


def test_cursors_round_trip(ledger: Ledger) -> None:
    with ledger.unit_of_work(NOW) as uow:
        assert uow.cursor("azure_devops", "b") is None
        uow.set_cursor("azure_devops", "b", "2026-11-02T09:00:00Z")
        uow.set_cursor("azure_devops", "b", "2026-11-02T10:00:00Z")
    with ledger.unit_of_work(NOW) as uow:
        assert uow.cursor("azure_devops", "b") == "2026-11-02T10:00:00Z"


def test_every_state_change_has_an_audit_row(ledger: Ledger) -> None:
    engine_for(ledger).ingest(
        [
            snap("In progress", "1", 1),
            snap("Done", "3", 2),
            snap("In progress", "3", 3),
            snap("Done", "5", 4),
        ]
    )
    with ledger.engine.connect() as conn:
        events = conn.execute(
            select(
                t.entry_events.c.from_state, t.entry_events.c.to_state, t.entry_events.c.hours
            ).order_by(t.entry_events.c.id)
        ).all()
        transitions = conn.execute(select(func.count()).select_from(t.transitions)).scalar_one()
    assert [(e.from_state, e.to_state, str(e.hours)) for e in events] == [
        (None, "in_progress", "1"),
        ("in_progress", "ready", "3"),
        (None, "ready", "2"),
    ]
    assert transitions == 4


def test_batch_and_one_by_one_give_the_same_ledger(tmp_path: Any) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'a.db'}")
    ledger.upgrade()
    history = [
        snap("In progress", "1", 1),
        snap("Done", "3", 2),
        snap("In progress", "3", 3),
        snap("Done", "5", 4),
    ]
    engine_for(ledger).ingest(history)  # one batch
    other = Ledger(f"sqlite:///{tmp_path / 'b.db'}")
    other.upgrade()
    for s in history:
        engine_for(other).ingest([s])

    def entries(the_ledger: Ledger) -> list[tuple[str, str, str]]:
        with the_ledger.engine.connect() as conn:
            return [
                (r.entry_key, r.state, str(r.hours))
                for r in conn.execute(select(t.entries).order_by(t.entries.c.entry_key))
            ]

    assert entries(ledger) == entries(other)
    assert [e[1:] for e in entries(ledger)] == [("ready", "3"), ("ready", "2")]
    other.dispose()
    ledger.dispose()


def test_concurrent_ingest_of_the_same_change_bills_once(ledger_url: str, ledger: Ledger) -> None:
    """Two instances (threads, separate engines) record the same Done at once."""
    snapshots = [snap("Done", "3", 2, item_id=str(i)) for i in range(40)]
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def worker() -> None:
        own = Ledger(ledger_url)
        try:
            barrier.wait()
            engine_for(own).ingest(snapshots)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with ledger.engine.connect() as conn:
        states = conn.execute(
            select(t.entries.c.state, func.count()).group_by(t.entries.c.state)
        ).all()
    assert dict(states) == {EntryState.READY.value: 40}


def test_upgrading_keeps_a_forced_approval_forced(ledger_url: str) -> None:
    """0012 fills `approvals.forced_below_minimum` from the `approved` audit rows, so an
    approval forced before the upgrade still finalizes under the minimum afterwards."""
    from alembic import command
    from alembic.config import Config

    from sync.ledger.store import MIGRATIONS_DIR

    ledger = Ledger(ledger_url)
    try:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("sqlalchemy.url", ledger_url.replace("%", "%%"))
        with ledger.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0006_people_cost")
        with ledger.engine.begin() as conn:  # the 0006 tables: only their columns
            for invoice_id, forced in ((1, True), (2, False)):
                conn.execute(
                    insert(t.invoices).values(
                        id=invoice_id,
                        client="acme",
                        period_key="2026-11",
                        currency="EUR",
                        state="draft",
                        version=1,
                        created_at=NOW,
                        updated_at=NOW,
                    )
                )
                detail: dict[str, Any] = {"total_minor": 40}
                if forced:
                    detail["forced_below_minimum"] = True
                conn.execute(
                    insert(t.audit_log).values(
                        at=NOW,
                        actor="U1",
                        action="approved",
                        subject=f"invoice:{invoice_id}",
                        detail=detail,
                    )
                )
                conn.execute(
                    insert(t.approvals).values(
                        invoice_id=invoice_id,
                        approver="U1",
                        channel="cli",
                        total_minor=40,
                        decided_at=NOW,
                    )
                )
        ledger.upgrade()
        with ledger.engine.connect() as conn:
            flags = dict(
                conn.execute(
                    select(t.approvals.c.invoice_id, t.approvals.c.forced_below_minimum)
                ).all()
            )
        assert flags == {1: True, 2: False}
    finally:
        ledger.dispose()
