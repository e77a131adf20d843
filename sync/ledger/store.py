"""The ledger: a SQLAlchemy engine plus a unit of work with the queries the shell needs.

Every change made inside one `Ledger.unit_of_work()` block commits together or not at
all; nothing outside this module writes SQL.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.dml import Insert

from mapping.billing import HeldItem
from mapping.frozen import quick_init
from sync.ledger import bulk
from sync.ledger import schema as t
from sync.ledger.ops import queue_draft_edits
from sync.ledger.records import JsonObject, PipelineRow
from sync.ledger.writer_lock import WriterLock, writer_lock_for

_T = TypeVar("_T")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT = 30  # seconds a writer waits for SQLite's write lock


#: The webhook intake's bounds: a hung ledger must turn into a fast 503, not a request
#: that hangs until the sender gives up (GitHub waits 10 s).
INTAKE_BUSY_SECONDS = 2.0
INTAKE_CONNECT_SECONDS = 2
INTAKE_STATEMENT_MS = 2000
#: Everyone else's bounds on PostgreSQL (worker jobs, dashboard, CLI): generous, but a
#: partition or a stopped server ends in an error, never a thread waiting forever.
CONNECT_SECONDS = 10
STATEMENT_MS = 120_000
LOCK_MS = 30_000


def make_engine(url: str, *, intake: bool = False) -> Engine:
    """An engine with SQLite set up for a daemon: WAL, foreign keys, a busy timeout
    (and the writer lock of sync/ledger/writer_lock.py); on PostgreSQL connect,
    statement and lock timeouts and TCP keepalives, so a hung server fails calls.

    `intake=True`: the small engine the webhook intake writes through, with short
    bounds everywhere (SQLite busy timeout; PostgreSQL connect, statement and lock
    timeouts, TCP keepalives and user timeout; pool wait), so that a locked or hung
    ledger fails the INSERT in about two seconds and the webhook is answered 503.
    """
    if url.startswith("sqlite"):
        # Pooled connections: opening one costs about a millisecond (pragmas, and the WAL
        # checkpoint when the last one closes), more than a typical transaction.
        engine = create_engine(
            url,
            connect_args={
                "timeout": INTAKE_BUSY_SECONDS if intake else SQLITE_BUSY_TIMEOUT,
                "check_same_thread": False,
            },
            pool_size=2 if intake else 5,
            max_overflow=2 if intake else 10,
            pool_timeout=INTAKE_BUSY_SECONDS if intake else 30,
            pool_pre_ping=True,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(
            dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry
        ) -> None:
            # Let SQLAlchemy own the transaction boundaries (pysqlite's legacy mode
            # would otherwise defer BEGIN and break SAVEPOINTs).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            if intake:
                # The intake's commits never run a WAL checkpoint (its fsyncs took up to
                # 150 ms inside a one-row commit under load, a p99 stall for every
                # webhook queued behind it): the other connections' commits, which are
                # not waited on by a webhook sender, checkpoint as usual.
                cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.close()

        # Writers queue on one lock across threads and processes before BEGIN IMMEDIATE
        # (sync/ledger/writer_lock.py), held until their COMMIT / ROLLBACK returns.
        lock = writer_lock_for(make_url(url).database)
        wait = INTAKE_BUSY_SECONDS if intake else float(SQLITE_BUSY_TIMEOUT)
        holding: set[int] = set()  # id() of the DBAPI connections holding it

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # IMMEDIATE: take the write lock at the start, so two writers serialize
            # instead of failing half-way with "database is locked". Reads (Ledger.read)
            # take no write lock.
            if conn.get_execution_options().get("kanvoice_read_only"):
                conn.exec_driver_sql("BEGIN")
                return
            if not lock.acquire(conn.get_execution_options().get("kanvoice_lock_wait", wait)):
                raise OperationalError(
                    "BEGIN IMMEDIATE",
                    {},
                    TimeoutError("database is locked: the ledger's write lock is busy"),
                )
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                lock.release()
                raise
            holding.add(id(conn.connection.dbapi_connection))

        dialect: Any = engine.dialect
        for name in ("do_commit", "do_rollback"):
            setattr(dialect, name, _releasing(getattr(dialect, name), lock, holding))
        return engine
    # No server-side prepared statements: their generic plans turn the batch lookups
    # (item_key IN (500 values)) into sequential scans (bench/RESULTS.md, section 2).
    connect_args: dict[str, object] = {"prepare_threshold": None}
    if not intake:
        connect_args.update(
            connect_timeout=CONNECT_SECONDS,
            options=f"-c statement_timeout={STATEMENT_MS} -c lock_timeout={LOCK_MS}",
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
            tcp_user_timeout=STATEMENT_MS,
        )
        return create_engine(
            url, pool_pre_ping=True, pool_timeout=CONNECT_SECONDS * 3, connect_args=connect_args
        )
    connect_args.update(
        connect_timeout=INTAKE_CONNECT_SECONDS,
        options=f"-c statement_timeout={INTAKE_STATEMENT_MS} -c lock_timeout={INTAKE_STATEMENT_MS}",
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=2,
        tcp_user_timeout=INTAKE_STATEMENT_MS,
    )
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=2,
        pool_timeout=INTAKE_CONNECT_SECONDS,
        connect_args=connect_args,
    )


def _releasing(end: Any, lock: WriterLock, holding: set[int]) -> Any:
    """The dialect's commit / rollback, then the writer lock given back."""

    def finish(dbapi_connection: Any) -> None:
        try:
            end(dbapi_connection)
        finally:
            # SQLAlchemy passes the pool's proxy (commit) or the raw connection (reset).
            key = id(getattr(dbapi_connection, "dbapi_connection", None) or dbapi_connection)
            if key in holding:
                holding.discard(key)
                lock.release()

    return finish


@quick_init
@dataclass(frozen=True, slots=True)
class HeldRow:
    item_id: int
    held: HeldItem
    entry_ids: dict[str, int]


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes: they were stored in UTC."""
    from datetime import UTC

    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


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
        # The client of each item read by held_items in this transaction.
        self._clients: dict[int, str] = {}

    # --- items and entries ---------------------------------------------------------

    def held_items(self, item_keys: Sequence[str]) -> dict[str, HeldRow]:
        """What the ledger holds for these items (absent keys are new items).

        In a write unit of work the item rows stay locked until commit (PostgreSQL):
        a concurrent ingest of the same items waits, then plans against what this one
        recorded."""
        if not item_keys:
            return {}
        keys = list(dict.fromkeys(item_keys))
        items, by_item = bulk.held_item_rows(self.conn, keys, lock=not self.read_only)
        clients = self._clients
        held: dict[str, HeldRow] = {}
        none = bulk.HeldEntries([], {})
        for r in items:
            clients[r.id] = r.client
            entries, ids = by_item.get(r.id, none)
            held[r.item_key] = HeldRow(
                r.id,
                HeldItem(
                    r.revision, r.fingerprint, r.column_name, r.state_category, tuple(entries)
                ),
                ids if entries else {},
            )
        return held

    def write_batch(self, rows: bulk.BatchWrites) -> dict[str, int]:
        """Insert and update one ingest batch's rows; the ids of the rows inserted."""
        return rows.flush(self.conn, bulk.DriverValues(self.conn.dialect, self.now), self._clients)

    def queue_draft_edits(self, entry_ids: list[int]) -> None:
        """Entries on an open Stripe draft changed: queue the edits of their lines."""
        queue_draft_edits(self.conn, entry_ids, self.now)

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

    def board_item_ids(self, source: str, board: str) -> set[str]:
        """The board's own ids of every item the ledger holds for it."""
        rows = self.conn.execute(
            select(t.items.c.external_id).where(
                t.items.c.source == source, t.items.c.board == board
            )
        )
        return {str(r[0]) for r in rows}

    def board_state_cache(self, source: str, board: str) -> tuple[JsonObject, datetime] | None:
        """A board's cached process description and when it was read, None if none."""
        row = self.conn.execute(
            select(t.board_state_cache.c.value, t.board_state_cache.c.fetched_at).where(
                t.board_state_cache.c.source == source, t.board_state_cache.c.board == board
            )
        ).first()
        if row is None:
            return None
        fetched: datetime = row.fetched_at
        if fetched.tzinfo is None:  # SQLite keeps no offset; the ledger writes UTC
            fetched = fetched.replace(tzinfo=UTC)
        value = row.value
        return (value if isinstance(value, Mapping) else {}), fetched

    def set_board_state_cache(self, source: str, board: str, value: JsonObject) -> None:
        """Store a board's process description (read now) for later runs."""
        changed = self.conn.execute(
            update(t.board_state_cache)
            .where(t.board_state_cache.c.source == source, t.board_state_cache.c.board == board)
            .values(value=value, fetched_at=self.now)
        ).rowcount
        if not changed:
            self.conn.execute(
                insert(t.board_state_cache).values(
                    source=source, board=board, value=value, fetched_at=self.now
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

    # --- the inbox -----------------------------------------------------------------

    def pending_inbox(self, limit: int) -> list[InboxRow]:
        """Pending inbox rows due now (not backing off), oldest first."""
        rows = self.conn.execute(
            select(t.inbox)
            .where(
                t.inbox.c.status == "pending",
                (t.inbox.c.not_before.is_(None)) | (t.inbox.c.not_before <= self.now),
            )
            .order_by(t.inbox.c.id)
            .limit(limit)
        ).all()
        return [
            InboxRow(
                id=r.id,
                source=r.source,
                delivery_id=r.delivery_id,
                event=r.event,
                action=r.action,
                item_id=r.item_id,
                board_hint=r.board_hint,
                revision=r.revision,
                body=r.body,
                attempts=r.attempts,
                received_at=_aware(r.received_at),
            )
            for r in rows
        ]

    def inbox_done(self, ids: Sequence[int], status: str = "done") -> None:
        """Mark inbox rows processed (`done`) or not acted on (`ignored`)."""
        for start in range(0, len(ids), 500):
            self.conn.execute(
                update(t.inbox)
                .where(t.inbox.c.id.in_(list(ids[start : start + 500])))
                .values(status=status, processed_at=self.now, body=None)
            )

    def inbox_retry(self, ids: Sequence[int], not_before: datetime, error: str) -> None:
        """Leave inbox rows pending, to be tried again from `not_before`."""
        for start in range(0, len(ids), 500):
            self.conn.execute(
                update(t.inbox)
                .where(t.inbox.c.id.in_(list(ids[start : start + 500])))
                .values(
                    attempts=t.inbox.c.attempts + 1, not_before=not_before, last_error=error[:2000]
                )
            )

    def prune_inbox(self, before: datetime, limit: int = 5_000) -> int:
        """Delete up to `limit` processed rows (done / ignored) processed before `before`;
        pending rows are never pruned. Returns how many were deleted."""
        ids = list(
            self.conn.execute(
                select(t.inbox.c.id)
                .where(
                    t.inbox.c.status.in_(("done", "ignored")),
                    t.inbox.c.processed_at < before,
                )
                .order_by(t.inbox.c.id)
                .limit(limit)
            ).scalars()
        )
        if ids:
            self.conn.execute(delete(t.inbox).where(t.inbox.c.id.in_(ids)))
        return len(ids)

    def inbox_backlog(self) -> tuple[int, datetime | None]:
        """(pending rows, when the oldest pending row was received)."""
        row = self.conn.execute(
            select(func.count(), func.min(t.inbox.c.received_at)).where(
                t.inbox.c.status == "pending"
            )
        ).one()
        return int(row[0]), (_aware(row[1]) if row[1] is not None else None)

    def inbox_counts(self) -> dict[str, int]:
        """Inbox rows per status (for readiness and tests)."""
        return {
            str(r[0]): int(r[1])
            for r in self.conn.execute(
                select(t.inbox.c.status, func.count()).group_by(t.inbox.c.status)
            )
        }

    # --- reading the pipeline ------------------------------------------------------

    def pipeline_rows(self) -> list[PipelineRow]:
        """Hours and amounts (exact Decimals) summed per client, state, kind, currency."""
        return [
            PipelineRow.from_row(row)
            for row in self.conn.execute(
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
            ).mappings()
        ]


class Ledger:
    """The ledger database. `url`: sqlite:///PATH (default) or postgresql+psycopg://…"""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._intake_engine: Engine | None = None
        # SQLite's one writer: every write transaction queues on the engine's writer
        # lock (sync/ledger/writer_lock.py, across threads and processes) instead of in
        # SQLite's busy handler, whose sleeps would land on the intake's answers.

    @property
    def intake_engine(self) -> Engine:
        """The short-timeout engine of the webhook intake (created on first use)."""
        if self._intake_engine is None:
            self._intake_engine = make_engine(self.url, intake=True)
        return self._intake_engine

    def accept_deliveries(self, deliveries: Sequence[InboxDelivery], now: datetime) -> list[bool]:
        """Write verified deliveries to the inbox in one INSERT (one transaction).

        Returns, per delivery, True if it is new and False if its (source, delivery id)
        was already in the inbox (a redelivery: nothing written). Raises SQLAlchemy
        errors (OperationalError when the ledger is down, locked or hung).
        """
        if not deliveries:
            return []
        rows: dict[tuple[str, str], dict[str, object]] = {}
        for d in deliveries:
            key = (d.source, delivery_key(d.delivery_id))
            rows.setdefault(
                key,
                {
                    "source": d.source,
                    "delivery_id": key[1],
                    "event": d.event[:100],
                    "action": d.action[:100],
                    "item_id": d.item_id,
                    "board_hint": d.board_hint,
                    "revision": d.revision,
                    "body": d.body,
                    "status": "pending",
                    "attempts": 0,
                    "received_at": now,
                },
            )
        inserted = self._insert_inbox(list(rows.values()))  # the intake engine's bounds
        answers: list[bool] = []
        for d in deliveries:
            key = (d.source, delivery_key(d.delivery_id))
            answers.append(key in inserted)
            inserted.discard(key)  # the same id twice in one batch: the second is a repeat
        return answers

    def _insert_inbox(self, rows: list[dict[str, object]]) -> set[tuple[str, str]]:
        with self.intake_engine.begin() as conn:
            return {
                (r[0], r[1])
                for r in conn.execute(
                    _insert_ignoring_duplicates(conn, rows).returning(
                        t.inbox.c.source, t.inbox.c.delivery_id
                    )
                )
            }

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

    def write_problem(self, now: datetime, wait_seconds: float = 2.0) -> str | None:
        """Why the ledger cannot take a write now (None: it can), by writing.

        SQLite: first `ROOM_BYTES` are written to a scratch file beside the database
        and removed. A small commit alone would not tell a full disk: SQLite reuses the
        WAL space a failed transaction left behind, so a probe row may commit while
        every real batch fails. Then (both databases) one commit that inserts and
        deletes a probe row (``ledger_meta``, key ``readiness_probe``): nothing changes,
        but a read-only database or file system, lost storage or a full disk (SQLite
        ``database or disk is full``, PostgreSQL ``53100``) fail it as they would a real
        write. A write lock held longer than `wait_seconds` by a busy writer is not a
        problem.
        """
        sqlite = self.url.startswith("sqlite")
        database = make_url(self.url).database if sqlite else None
        if database and database != ":memory:" and not database.startswith("file:"):
            problem = _room_for(Path(database), ROOM_BYTES)
            if problem is not None:
                return problem
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(kanvoice_lock_wait=wait_seconds)
                raw: Any = conn.connection.driver_connection
                if sqlite:
                    raw.execute(f"PRAGMA busy_timeout = {int(wait_seconds * 1000)}")
                try:
                    with conn.begin():
                        if not sqlite:
                            ms = int(wait_seconds * 1000)
                            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ms}")
                            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms * 2}")
                        _touch_probe(conn, now)
                finally:
                    if sqlite:
                        raw.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT * 1000}")
        except OperationalError as exc:
            if _lock_wait(exc):
                return None  # busy, not broken: a writer holds the lock
            return _reason(exc)
        except SQLAlchemyError as exc:
            return _reason(exc)
        return None

    def dispose(self) -> None:
        self.engine.dispose()
        if self._intake_engine is not None:
            self._intake_engine.dispose()


@dataclass(frozen=True, slots=True)
class InboxDelivery:
    """A verified webhook as the intake writes it (see `Ledger.accept_deliveries`)."""

    source: str
    delivery_id: str
    event: str
    action: str
    item_id: str | None = None
    board_hint: str | None = None
    revision: int | None = None
    body: str | None = None


@dataclass(frozen=True, slots=True)
class InboxRow:
    """A pending inbox row as the worker reads it."""

    id: int
    source: str
    delivery_id: str
    event: str
    action: str
    item_id: str | None
    board_hint: str | None
    revision: int | None
    body: str | None
    attempts: int
    received_at: datetime


def _insert_ignoring_duplicates(conn: Connection, rows: list[dict[str, object]]) -> Insert:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(t.inbox).values(rows).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(t.inbox).values(rows).on_conflict_do_nothing()


PROBE_KEY = "readiness_probe"
ROOM_BYTES = 256 * 1024  # free space an SQLite ledger must have to count as writable


def _room_for(database: Path, size: int) -> str | None:
    """Whether `size` bytes can be written beside the database file (None: yes)."""
    directory = database.resolve().parent
    scratch = directory / f".{database.name}.readyz-{os.getpid()}"
    block = b"\0" * min(size, 1 << 16)
    try:
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            written = 0
            while written < size:
                written += os.write(fd, block)
        finally:
            os.close(fd)
            with suppress(OSError):
                scratch.unlink()
    except OSError as exc:
        return f"{exc.strerror or type(exc).__name__} ({directory})"
    return None


def _touch_probe(conn: Connection, now: datetime) -> None:
    """A write that leaves no trace: the row is gone again when the transaction commits,
    yet its pages are written (a no-op UPDATE would be skipped by SQLite)."""
    conn.execute(insert(t.ledger_meta).values(key=PROBE_KEY, value=now.isoformat()))
    conn.execute(delete(t.ledger_meta).where(t.ledger_meta.c.key == PROBE_KEY))


def _lock_wait(exc: OperationalError) -> bool:
    """SQLite's busy timeout, or PostgreSQL's lock_timeout (55P03)."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate == "55P03" or "database is locked" in str(exc.orig)


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's message, first line only (no SQL, no parameters)."""
    message = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return message[0] if message else type(exc).__name__


def chunked(values: Iterable[_T], size: int) -> Iterator[list[_T]]:
    batch: list[_T] = []
    for value in values:
        batch.append(value)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
