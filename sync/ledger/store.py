"""The ledger: a SQLAlchemy engine plus a unit of work with the queries the shell needs.

Every change made inside one `Ledger.unit_of_work()` block commits together or not at
all; nothing outside this module writes SQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from mapping.billing import HeldItem
from mapping.domain import BillableEntry, EntryKind, EntryState, StateCategory
from mapping.money import Money
from sync.ledger import schema as t

_T = TypeVar("_T")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine with SQLite set up for a daemon: WAL, foreign keys, a busy timeout."""
    if url.startswith("sqlite"):
        # Pooled connections: opening one costs about a millisecond (pragmas, and the WAL
        # checkpoint when the last one closes), more than a typical transaction.
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=5,
            max_overflow=10,
            pool_pre_ping=True,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy own the transaction boundaries (pysqlite's legacy mode
            # would otherwise defer BEGIN and break SAVEPOINTs).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # IMMEDIATE: take the write lock at the start, so two writers serialize
            # instead of failing half-way with "database is locked". Reads (Ledger.read)
            # take no write lock.
            if conn.get_execution_options().get("kanvoice_read_only"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # No server-side prepared statements: their generic plans turn the batch lookups
    # (item_key IN (500 values)) into sequential scans (bench/RESULTS.md, section 2).
    return create_engine(url, pool_pre_ping=True, connect_args={"prepare_threshold": None})


@dataclass(frozen=True, slots=True)
class HeldRow:
    item_id: int
    held: HeldItem
    entry_ids: dict[str, int]


def _entry_from_row(row: Any) -> BillableEntry:
    return BillableEntry(
        entry_key=row.entry_key,
        item_key=row.item_key,
        kind=EntryKind(row.kind),
        seq=row.seq,
        state=EntryState(row.state),
        hours=row.hours,
        rate=row.rate,
        amount=Money(row.amount, row.currency) if row.amount is not None else None,
        description=row.description,
        person=row.person,
        role=row.role,
        cost_rate=row.cost_rate,
        cost=Money(row.cost, row.currency) if row.cost is not None else None,
    )


def delivery_key(delivery_id: str) -> str:
    """What is stored for a delivery id: itself, or a digest when longer than the column
    holds (a sender's odd id must not turn into a server error)."""
    if len(delivery_id) <= 200:
        return delivery_id
    return "sha256:" + hashlib.sha256(delivery_id.encode()).hexdigest()


def claim_delivery(conn: Connection, source: str, delivery_id: str, now: datetime) -> bool:
    """Record a delivery id once; False when it was already recorded."""
    try:
        with conn.begin_nested():
            conn.execute(
                insert(t.seen_deliveries).values(
                    source=source, delivery_id=delivery_key(delivery_id), received_at=now
                )
            )
    except IntegrityError:
        return False
    return True


class UnitOfWork:
    """One transaction on the ledger. Created by `Ledger.unit_of_work()`."""

    def __init__(self, conn: Connection, now: datetime, read_only: bool = False) -> None:
        self.conn = conn
        self.now = now
        self.read_only = read_only

    # --- items and entries ---------------------------------------------------------

    def held_items(self, item_keys: Sequence[str]) -> dict[str, HeldRow]:
        """What the ledger holds for these items (absent keys are new items)."""
        if not item_keys:
            return {}
        found: dict[str, HeldRow] = {}
        entries_by_item: dict[int, list[BillableEntry]] = {}
        entry_ids: dict[int, dict[str, int]] = {}
        keys = list(dict.fromkeys(item_keys))
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            query = (
                select(
                    t.items.c.id,
                    t.items.c.item_key,
                    t.items.c.revision,
                    t.items.c.fingerprint,
                    t.items.c.column_name,
                    t.items.c.state_category,
                )
                .where(t.items.c.item_key.in_(chunk))
                .order_by(t.items.c.item_key)
            )
            if not self.read_only:
                # Held until commit (PostgreSQL): a concurrent ingest of the same items
                # waits, then plans against what this one recorded.
                query = query.with_for_update()
            rows = self.conn.execute(query).all()
            ids = [r.id for r in rows]
            if ids:
                entry_rows = self.conn.execute(
                    select(t.entries, t.items.c.item_key)
                    .join(t.items, t.items.c.id == t.entries.c.item_id)
                    .where(t.entries.c.item_id.in_(ids))
                    .order_by(t.entries.c.id)
                ).all()
                for er in entry_rows:
                    entries_by_item.setdefault(er.item_id, []).append(_entry_from_row(er))
                    entry_ids.setdefault(er.item_id, {})[er.entry_key] = er.id
            for r in rows:
                found[r.item_key] = HeldRow(
                    r.id,
                    HeldItem(
                        revision=r.revision,
                        fingerprint=r.fingerprint,
                        column=r.column_name,
                        state_category=StateCategory(r.state_category),
                        entries=tuple(entries_by_item.get(r.id, ())),
                    ),
                    entry_ids.get(r.id, {}),
                )
        return found

    # --- cursors and deliveries ----------------------------------------------------

    def cursor(self, source: str, board: str) -> str | None:
        value = self.conn.execute(
            select(t.cursors.c.value).where(
                t.cursors.c.source == source, t.cursors.c.board == board
            )
        ).scalar_one_or_none()
        return str(value) if value is not None else None

    def set_cursor(self, source: str, board: str, value: str) -> None:
        changed = self.conn.execute(
            update(t.cursors)
            .where(t.cursors.c.source == source, t.cursors.c.board == board)
            .values(value=value, updated_at=self.now)
        ).rowcount
        if not changed:
            self.conn.execute(
                insert(t.cursors).values(
                    source=source, board=board, value=value, updated_at=self.now
                )
            )

    def claim_delivery(self, source: str, delivery_id: str) -> bool:
        """Record a webhook delivery id; False if it was seen before (a redelivery)."""
        return claim_delivery(self.conn, source, delivery_id, self.now)

    def delivery_seen(self, source: str, delivery_id: str) -> bool:
        """Whether a delivery id was claimed before (a read only)."""
        found = self.conn.execute(
            select(t.seen_deliveries.c.id).where(
                t.seen_deliveries.c.source == source,
                t.seen_deliveries.c.delivery_id == delivery_key(delivery_id),
            )
        ).first()
        return found is not None

    # --- reading the pipeline ------------------------------------------------------

    def pipeline_rows(self) -> list[Any]:
        """Hours and amounts (exact Decimals) summed per client, state, kind, currency."""
        return list(
            self.conn.execute(
                select(
                    t.entries.c.client,
                    t.entries.c.state,
                    t.entries.c.kind,
                    t.entries.c.currency,
                    func.count().label("entries"),
                    func.coalesce(func.sum(t.entries.c.hours), 0).label("hours"),
                    func.coalesce(func.sum(t.entries.c.amount), 0).label("amount"),
                ).group_by(
                    t.entries.c.client, t.entries.c.state, t.entries.c.kind, t.entries.c.currency
                )
            ).all()
        )


class Ledger:
    """The ledger database. `url`: sqlite:///PATH (default) or postgresql+psycopg://…"""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)

    def upgrade(self) -> None:
        """Apply every Alembic migration not yet applied (safe to call on every start)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @contextmanager
    def unit_of_work(self, now: datetime) -> Iterator[UnitOfWork]:
        with self.engine.begin() as conn:
            yield UnitOfWork(conn, now)

    @contextmanager
    def read(self, now: datetime) -> Iterator[UnitOfWork]:
        """A consistent read that takes no write lock (figures, webhook pre-checks)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(kanvoice_read_only=True)
            with conn.begin():
                yield UnitOfWork(conn, now, read_only=True)

    def dispose(self) -> None:
        self.engine.dispose()


def chunked(values: Iterable[_T], size: int) -> Iterator[list[_T]]:
    batch: list[_T] = []
    for value in values:
        batch.append(value)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
