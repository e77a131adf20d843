"""Bulk reads and writes of items and entries for the engine, at the driver level.

`Engine.ingest` writes up to four rows per changed snapshot. Through SQLAlchemy Core
every one of those rows is turned into a dict of bind parameters and passed through
the column types' bind processors in Python, which cost several times what the
driver's own `executemany` costs. Here the statements are plain SQL strings built
once per dialect (`exec_driver_sql`), the rows are tuples in a fixed column order, and
the values are converted to what the driver takes by `DriverValues`, which gives the
same values SQLAlchemy's types would bind (tests/integration/test_bulk.py compares
them), so rows written here read back through the ordinary schema unchanged.

Records come in and go out typed (`NewItem`, `NewEntry`, …); nothing here decides
anything: what to write is the billing core's plan, as the engine collected it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal, NamedTuple

from sqlalchemy import Connection, Dialect

from mapping.domain import BillableEntry, EntryKind, EntryState, StateCategory
from mapping.money import Money
from sync.ledger import schema as t

# Rows per IN (...) list (SQLite's default limit on bound parameters is far higher).
CHUNK = 500


# --- typed records -----------------------------------------------------------------


class ItemState(NamedTuple):
    """The columns of `items` that each recorded snapshot sets."""

    client: str
    title: str
    url: str
    column_name: str
    state_category: str
    is_done: bool
    hours: Decimal | None
    billing_type: str
    labels: tuple[str, ...]
    assignees: tuple[str, ...]
    iteration: str | None
    rate: Decimal | None
    milestone_amount: Decimal | None
    revision: int
    fingerprint: str
    updated_at: datetime
    done_at: datetime | None
    last_seen_at: datetime


class NewItem(NamedTuple):
    """An `items` row to insert: the item's identity, then its state."""

    item_key: str
    source: str
    board: str
    external_id: str
    first_seen_at: datetime
    state: ItemState


class NewEntry(NamedTuple):
    """An `entries` row to insert; `item_id` is resolved by `BatchWrites.flush`."""

    entry_key: str
    item_ref: str | int  # the key of an item inserted in the same batch, or its id
    client: str
    kind: str
    seq: int
    state: str
    hours: Decimal
    rate: Decimal | None
    amount: Decimal | None
    currency: str
    description: str
    person: str | None  # 0006: who did the work (None: the whole item), their role,
    role: str | None  # the cost rate and cost (hours × cost rate, in `currency`)
    cost_rate: Decimal | None
    cost: Decimal | None
    done_at: datetime | None
    review_reason: str | None
    created_at: datetime
    updated_at: datetime


class NewTransition(NamedTuple):
    item_ref: str | int
    from_column: str | None
    to_column: str
    from_category: str | None
    to_category: str
    revision: int
    at: datetime
    recorded_at: datetime


class NewEntryEvent(NamedTuple):
    """An audit row of one entry's change of state."""

    entry_ref: str | int  # the key of an entry inserted in the same batch, or its id
    from_state: str | None
    to_state: str
    hours: Decimal
    amount: Decimal | None
    actor: str
    reason: str
    at: datetime


# Entry columns an update may set (the billing core's UpdateEntry / ChangeEntryState).
EntryColumn = Literal[
    "hours",
    "rate",
    "amount",
    "cost_rate",
    "cost",
    "done_at",
    "state",
    "review_reason",
    "updated_at",
]
EntryChange = dict[EntryColumn, Any]


class HeldItemRow(NamedTuple):
    id: int
    item_key: str
    client: str
    revision: int
    fingerprint: str
    column_name: str
    state_category: StateCategory


# --- driver values -----------------------------------------------------------------


class DriverValues:
    """Values as this dialect's driver takes them: what SQLAlchemy's column types would
    bind, without building a parameter dict per row. `now` (the batch's time, on most
    rows) is converted once."""

    def __init__(self, dialect: Dialect, now: datetime) -> None:
        self.dialect = dialect
        self._datetime = _datetime_encoder(dialect)
        self.now = now
        self.now_value = self._datetime(now)
        # What SQLAlchemy binds for a Boolean (an int on SQLite: a bool parameter
        # takes the driver's slower adaptation path there).
        as_boolean = t.items.c.is_done.type._cached_bind_processor(dialect)
        self.true: Any = as_boolean(True) if as_boolean else True
        self.false: Any = as_boolean(False) if as_boolean else False
        # Encoded values by the identity of the datetime object (kept alive here, so an
        # id is never reused while this batch's values live): an item's update time is
        # also its transition's and its entry's, written in other tables.
        self._seen: dict[int, tuple[datetime, Any]] = {}
        json_process = t.items.c.labels.type._cached_bind_processor(dialect)
        self._json: Callable[[Any], Any] = json_process or (lambda v: v)
        self._json_cache: dict[tuple[str, ...], Any] = {}

    def timestamp(self, value: datetime) -> Any:
        # Most rows repeat `now`, or a datetime object another row of the batch used:
        # by identity, not equality, since equal instants in two zones are stored as
        # different text.
        if value is self.now:
            return self.now_value
        found = self._seen.get(id(value))
        if found is None:
            found = self._seen[id(value)] = (value, self._datetime(value))
        return found[1]

    def optional_timestamp(self, value: datetime | None) -> Any:
        return None if value is None else self.timestamp(value)

    def string_list(self, values: tuple[str, ...]) -> Any:
        """A tuple of strings as a JSON list (boards reuse a few label sets: cached)."""
        found = self._json_cache.get(values)
        if found is None:
            found = self._json_cache[values] = self._json(list(values))
        return found


@lru_cache(maxsize=1 << 14)
def _scaled(value: Decimal | None) -> int | None:
    """`schema.to_scaled`, memoized for the bulk writes (a board repeats a few hour
    values, rates and amounts): exact, since equal Decimals scale to the same integer.
    Only the billing core's finite values come here."""
    return t.to_scaled(value)


def _datetime_encoder(dialect: Dialect) -> Callable[[datetime], Any]:
    process = t.items.c.updated_at.type._cached_bind_processor(dialect)
    if process is None:
        return lambda value: value

    def fast(value: datetime) -> str:
        # SQLite's default storage format: local fields, no zone (as SQLAlchemy
        # stores them), from one C call instead of a dict and %-formatting.
        return value.isoformat(" ", "microseconds")[:26]

    if all(process(d) == fast(d) for d in _DATETIME_SAMPLES):
        return fast
    return process


_DATETIME_SAMPLES = (
    datetime(1, 1, 1),
    datetime(2001, 2, 3, 4, 5, 6, 7),
    datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
    datetime(2026, 11, 2, 9, 0, 0, 250, tzinfo=timezone(timedelta(hours=-5))),
    datetime(999, 12, 31, 23, 59, 59, 999999),
    datetime(2026, 11, 2, 9, 0),
    datetime(9999, 12, 31, 23, 59, 59, 1),
)


# --- statements --------------------------------------------------------------------


# Rows are written in these column orders. The columns that are mostly NULL together
# come last: a row with all of them None is written by a statement with NULL literals
# there and without those values (`_TwoShapes`). SQLite's driver binds a None
# parameter through its adaptation path, which raises and clears an AttributeError
# inside (about 0.3 µs a value, bench/ingest.py); PostgreSQL gets fewer parameters.
_ITEM_PRICING = ("rate", "milestone_amount")  # an item's own rate / milestone fields
_ITEM_STATE_COLUMNS = (
    *(c for c in ItemState._fields if c not in _ITEM_PRICING),
    *_ITEM_PRICING,
)
_ITEM_COLUMNS = (*NewItem._fields[:-1], *_ITEM_STATE_COLUMNS)
_ENTRY_PEOPLE = ("person", "role", "cost_rate", "cost", "review_reason")
_ENTRY_COST = frozenset({"cost_rate", "cost"})
_ENTRY_COLUMNS = (
    *("item_id" if f == "item_ref" else f for f in NewEntry._fields if f not in _ENTRY_PEOPLE),
    *_ENTRY_PEOPLE,
)
_TRANSITION_FROM = ("from_column", "from_category")  # None on an item's first sighting
_TRANSITION_COLUMNS = (
    *("item_id" if f == "item_ref" else f for f in NewTransition._fields[:1]),
    *(f for f in NewTransition._fields[1:] if f not in _TRANSITION_FROM),
    *_TRANSITION_FROM,
)
_EVENT_COLUMNS = tuple("entry_id" if f == "entry_ref" else f for f in NewEntryEvent._fields)


def _placeholder(dialect: Dialect) -> str:
    if dialect.paramstyle == "qmark":
        return "?"
    if dialect.paramstyle in ("format", "pyformat"):
        return "%s"
    raise NotImplementedError(f"bulk writes: paramstyle {dialect.paramstyle!r}")


def _quote(dialect: Dialect, name: str) -> str:
    return str(dialect.identifier_preparer.quote(name))


@lru_cache(maxsize=64)
def _insert_sql(dialect: Dialect, table: str, columns: tuple[str, ...], nulls: int = 0) -> str:
    """`nulls`: the last so many columns are written as NULL literals."""
    names = ", ".join(_quote(dialect, c) for c in columns)
    values = ", ".join(_marks(dialect, len(columns), nulls))
    return f"INSERT INTO {_quote(dialect, table)} ({names}) VALUES ({values})"  # noqa: S608


@lru_cache(maxsize=64)
def _update_sql(dialect: Dialect, table: str, columns: tuple[str, ...], nulls: int = 0) -> str:
    """`nulls`: the last so many columns are set to NULL literals."""
    marks = _marks(dialect, len(columns), nulls)
    sets = ", ".join(f"{_quote(dialect, c)} = {m}" for c, m in zip(columns, marks, strict=True))
    return f"UPDATE {_quote(dialect, table)} SET {sets} WHERE id = {_placeholder(dialect)}"  # noqa: S608


def _marks(dialect: Dialect, count: int, nulls: int) -> list[str]:
    return [_placeholder(dialect)] * (count - nulls) + ["NULL"] * nulls


@lru_cache(maxsize=64)
def _in_list(dialect: Dialect, count: int) -> str:
    mark = _placeholder(dialect)
    return ", ".join(mark for _ in range(count))


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _write_many(conn: Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    driver: Any = conn.connection.driver_connection
    if conn.dialect.name != "postgresql" or not hasattr(driver, "prepare_threshold"):
        conn.exec_driver_sql(sql, rows)
        return
    # The ledger's engine turns psycopg's server-side prepared statements off (their
    # generic plans made the `IN (...)` reads scan: store.make_engine). These writes
    # have one plan whatever the values: prepared once, they skip a parse and plan per
    # row.
    previous = driver.prepare_threshold
    driver.prepare_threshold = 0
    try:
        size = PG_VALUES_ROWS
        if size > 1 and len(rows) >= size and sql.startswith("INSERT "):
            # Inserts of `size` rows per statement (one multi-row VALUES): PostgreSQL
            # executes one statement where it would execute `size`. Rows keep their
            # order (serial ids follow it); the rest goes row by row.
            full = len(rows) - len(rows) % size
            conn.exec_driver_sql(
                _values_sql(sql, size),
                [tuple(v for row in rows[i : i + size] for v in row) for i in range(0, full, size)],
            )
            rows = rows[full:]
        if rows:
            conn.exec_driver_sql(sql, rows)
    finally:
        driver.prepare_threshold = previous


#: Rows per multi-row INSERT on PostgreSQL (at most 25 columns: far below its limit of
#: 65,535 parameters per statement).
PG_VALUES_ROWS = 100


@lru_cache(maxsize=64)
def _values_sql(sql: str, rows: int) -> str:
    """`INSERT … VALUES (…)` as one statement for `rows` rows."""
    head, _, values = sql.partition(" VALUES ")
    return f"{head} VALUES " + ", ".join([values] * rows)


# --- reads -------------------------------------------------------------------------


_KINDS = {k.value: k for k in EntryKind}
_STATES = {s.value: s for s in EntryState}
_CATEGORIES = {c.value: c for c in StateCategory}


class HeldEntries(NamedTuple):
    """One held item's entries (in id order) and the ledger id of each by entry key."""

    entries: list[BillableEntry]
    ids: dict[str, int]


def held_item_rows(
    conn: Connection, item_keys: Sequence[str], lock: bool
) -> tuple[list[HeldItemRow], dict[int, HeldEntries]]:
    """The items with these keys and all their entries, grouped by item id (in id
    order); `lock` holds the item rows until commit (FOR UPDATE on PostgreSQL; SQLite's
    write lock is already held by the transaction)."""
    dialect = conn.dialect
    items: list[HeldItemRow] = []
    by_item: dict[int, HeldEntries] = {}
    suffix = " FOR UPDATE OF i" if lock and dialect.name == "postgresql" else ""
    from_scaled = t.from_scaled
    kinds, states, categories = _KINDS, _STATES, _CATEGORIES
    for chunk in _chunks(item_keys):
        # One statement: the items and their entries (none: NULLs), each item's
        # entries in id order.
        sql = (
            "SELECT i.id, i.item_key, i.client, i.revision, i.fingerprint, i.column_name, "  # noqa: S608
            "i.state_category, e.id, e.entry_key, e.kind, e.seq, e.state, e.hours, e.rate, "
            "e.amount, e.currency, e.description, e.person, e.role, e.cost_rate, e.cost "
            "FROM items i LEFT JOIN entries e ON e.item_id = i.id "
            f"WHERE i.item_key IN ({_in_list(dialect, len(chunk))}) "
            f"ORDER BY i.item_key, e.id{suffix}"
        )
        held: HeldEntries | None = None
        item_id, item_key = 0, ""  # ids start at 1
        for r in conn.exec_driver_sql(sql, tuple(chunk)).all():
            if r[0] != item_id:
                item_id, item_key = r[0], r[1]
                items.append(
                    HeldItemRow(item_id, item_key, r[2], r[3], r[4], r[5], categories[r[6]])
                )
                held = None
            if r[7] is None:  # an item without entries
                continue
            amount, cost, currency = r[14], r[20], r[15]
            entry = BillableEntry(
                r[8],
                item_key,
                kinds[r[9]],
                r[10],
                states[r[11]],
                from_scaled(r[12]) or _ZERO,  # NOT NULL
                from_scaled(r[13]),
                None if amount is None else _money(amount, currency),
                r[16],
                r[17],
                r[18],
                from_scaled(r[19]),
                None if cost is None else _money(cost, currency),
            )
            if held is None:
                held = by_item[item_id] = HeldEntries([], {})
            held.entries.append(entry)
            held.ids[entry.entry_key] = r[7]
    return items, by_item


_ZERO = Decimal(0)


@lru_cache(maxsize=1 << 14)
def _money(scaled: int, currency: str) -> Money:
    """A stored amount as Money, memoized (a board repeats a few amounts; Money is
    immutable, so a shared value is safe)."""
    amount = t.from_scaled(scaled)
    assert amount is not None
    return Money(amount, currency)


# --- writes ------------------------------------------------------------------------


def reserve_ids(
    conn: Connection, table: Literal["items", "entries", "transitions"], count: int
) -> list[int]:
    """`count` new ids for rows of `table`, ascending, so that an insert needs no SELECT
    afterwards to learn them.

    PostgreSQL: taken from the column's sequence (safe with concurrent writers).
    SQLite: the next ids after the largest one (SQLite's own choice for an INTEGER
    PRIMARY KEY without AUTOINCREMENT); safe because a write transaction holds the
    database's write lock from BEGIN IMMEDIATE (store.make_engine) until commit."""
    if count <= 0:
        return []
    name = conn.dialect.name
    if name == "postgresql":
        rows = conn.exec_driver_sql(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            (table, count),
        ).all()
        return sorted(int(r[0]) for r in rows)
    if name == "sqlite":
        if not conn.in_transaction():
            raise RuntimeError("reserve_ids needs the write transaction")
        top = conn.exec_driver_sql(f"SELECT MAX(id) FROM {table}").scalar()  # noqa: S608
        first = int(top or 0) + 1
        return list(range(first, first + count))
    raise NotImplementedError(f"reserve_ids: {name}")


class BatchWrites:
    """One batch's rows, collected by the engine and written by `flush` with one
    executemany per table (and per set of changed entry columns)."""

    def __init__(self) -> None:
        self.new_items: dict[str, NewItem] = {}
        self.item_updates: dict[int, ItemState] = {}
        self.new_entries: dict[str, NewEntry] = {}
        self.entry_updates: dict[int, EntryChange] = {}
        self.transitions: list[NewTransition] = []
        self.events: list[NewEntryEvent] = []

    def flush(
        self, conn: Connection, values: DriverValues, held_clients: Mapping[int, str]
    ) -> dict[str, int]:
        """Write everything; returns the ids of the items and entries inserted.

        `held_clients`: the client of each item as read in this transaction. An item
        whose client is unchanged is updated without setting `client`: setting an
        indexed column costs an index update even when the value stays the same.

        Each row is built in one of two shapes (see the column orders above): with its
        usually-NULL tail, or without it when every value there is None."""
        dialect = conn.dialect
        dt = values.timestamp
        odt = values.optional_timestamp
        strings = values.string_list
        scaled = _scaled
        # Most rows carry the batch's `now` (and an item's Done time is its update
        # time): those values are taken as they are, without a call.
        now, now_value = values.now, values.now_value
        true, false = values.true, values.false

        def item_state(s: ItemState) -> tuple[tuple[Any, ...], tuple[Any, ...] | None]:
            """(every column but `client` and the pricing tail, the tail or None)."""
            # Unpacked once (a NamedTuple's attributes are properties: slower).
            (
                _client,
                title,
                url,
                column_name,
                state_category,
                is_done,
                hours,
                billing_type,
                labels,
                assignees,
                iteration,
                rate,
                milestone_amount,
                revision,
                fingerprint,
                updated_at,
                done_at,
                last_seen_at,
            ) = s
            updated = dt(updated_at)
            head = (
                title,
                url,
                column_name,
                state_category,
                true if is_done else false,
                None if hours is None else scaled(hours),
                billing_type,
                strings(labels),
                strings(assignees),
                iteration,
                revision,
                fingerprint,
                updated,
                None if done_at is None else updated if done_at is updated_at else dt(done_at),
                now_value if last_seen_at is now else dt(last_seen_at),
            )
            if rate is None and milestone_amount is None:
                return head, None
            return head, (
                None if rate is None else scaled(rate),
                None if milestone_amount is None else scaled(milestone_amount),
            )

        ids: dict[str, int] = {}
        pricing = len(_ITEM_PRICING)
        if self.new_items:
            item_ids = reserve_ids(conn, "items", len(self.new_items))
            rows = _TwoShapes()
            for item_id, i in zip(item_ids, self.new_items.values(), strict=True):
                head, tail = item_state(i.state)
                row = (
                    item_id,
                    i.item_key,
                    i.source,
                    i.board,
                    i.external_id,
                    dt(i.first_seen_at),
                    i.state.client,
                    *head,
                )
                if tail is None:
                    rows.short.append(row)
                else:
                    rows.full.append(row + tail)
            rows.write(conn, "items", ("id", *_ITEM_COLUMNS), pricing)
            ids.update(zip(self.new_items, item_ids, strict=True))
        same_client = _TwoShapes()
        new_client = _TwoShapes()
        for item_id, s in self.item_updates.items():
            head, tail = item_state(s)
            if held_clients.get(item_id) != s.client:
                head = (s.client, *head)
                rows = new_client
            else:
                rows = same_client
            if tail is None:
                rows.short.append((*head, item_id))
            else:
                rows.full.append((*head, *tail, item_id))
        same_client.write(conn, "items", _ITEM_STATE_COLUMNS[1:], pricing, update=True)
        new_client.write(conn, "items", _ITEM_STATE_COLUMNS, pricing, update=True)

        if self.new_entries:
            entry_ids = reserve_ids(conn, "entries", len(self.new_entries))
            rows = _TwoShapes()
            for entry_id, e in zip(entry_ids, self.new_entries.values(), strict=True):
                item_ref = e.item_ref
                row = (
                    entry_id,
                    e.entry_key,
                    item_ref if isinstance(item_ref, int) else ids[item_ref],
                    e.client,
                    e.kind,
                    e.seq,
                    e.state,
                    scaled(e.hours),
                    scaled(e.rate),
                    scaled(e.amount),
                    e.currency,
                    e.description,
                    odt(e.done_at),
                    now_value if e.created_at is now else dt(e.created_at),
                    now_value if e.updated_at is now else dt(e.updated_at),
                )
                person, role, cost_rate, cost, review_reason = (
                    e.person,
                    e.role,
                    e.cost_rate,
                    e.cost,
                    e.review_reason,
                )
                if (
                    person is None
                    and role is None
                    and cost_rate is None
                    and cost is None
                    and review_reason is None
                ):
                    rows.short.append(row)
                else:
                    rows.full.append(
                        (*row, person, role, scaled(cost_rate), scaled(cost), review_reason)
                    )
            rows.write(conn, "entries", ("id", *_ENTRY_COLUMNS), len(_ENTRY_PEOPLE))
            ids.update(zip(self.new_entries, entry_ids, strict=True))
        self._update_entries(conn, values)
        # Ids reserved in the batch's order: the two statements keep an item's history
        # in order.
        transition_ids = reserve_ids(conn, "transitions", len(self.transitions))
        rows = _TwoShapes()
        for transition_id, r in zip(transition_ids, self.transitions, strict=True):
            item_ref = r.item_ref
            row = (
                transition_id,
                item_ref if isinstance(item_ref, int) else ids[item_ref],
                r.to_column,
                r.to_category,
                r.revision,
                dt(r.at),
                now_value if r.recorded_at is now else dt(r.recorded_at),
            )
            if r.from_column is None and r.from_category is None:
                rows.short.append(row)
            else:
                rows.full.append((*row, r.from_column, r.from_category))
        rows.write(conn, "transitions", ("id", *_TRANSITION_COLUMNS), len(_TRANSITION_FROM))
        _write_many(
            conn,
            _insert_sql(dialect, "entry_events", _EVENT_COLUMNS),
            [
                (
                    r.entry_ref if isinstance(r.entry_ref, int) else ids[r.entry_ref],
                    r.from_state,
                    r.to_state,
                    scaled(r.hours),
                    scaled(r.amount),
                    r.actor,
                    r.reason,
                    now_value if r.at is now else dt(r.at),
                )
                for r in self.events
            ],
        )
        return ids

    def _update_entries(self, conn: Connection, values: DriverValues) -> None:
        """UPDATE entries by id, one executemany per set of changed columns."""
        encode: Mapping[str, Callable[[Any], Any]] = {
            "hours": _scaled,
            "rate": _scaled,
            "amount": _scaled,
            "cost_rate": _scaled,
            "cost": _scaled,
            "done_at": values.optional_timestamp,
            "updated_at": values.optional_timestamp,
        }
        # Grouped by the columns set, in the order they were set (the same for every
        # entry the same kind of action changed).
        groups: dict[tuple[EntryColumn, ...], list[tuple[int, EntryChange]]] = {}
        for entry_id, change in self.entry_updates.items():
            groups.setdefault(tuple(change), []).append((entry_id, change))
        for columns, changes in groups.items():
            # The cost columns last: without people they are None (see the column
            # orders above).
            cost = tuple(c for c in columns if c in _ENTRY_COST)
            head = [(c, encode.get(c)) for c in columns if c not in _ENTRY_COST]
            rows = _TwoShapes()
            for entry_id, change in changes:
                row = [change[c] if f is None else f(change[c]) for c, f in head]
                tail = [change[c] for c in cost]
                if any(v is not None for v in tail):
                    row.extend(_scaled(v) for v in tail)
                    row.append(entry_id)
                    rows.full.append(tuple(row))
                else:
                    row.append(entry_id)
                    rows.short.append(tuple(row))
            ordered = (*(c for c, _ in head), *cost)
            rows.write(conn, "entries", ordered, len(cost), update=True)


class _TwoShapes:
    """One statement's rows in two shapes: `full` rows with every column, `short` rows
    without the last `tail` columns (all None: written as NULL literals)."""

    __slots__ = ("full", "short")

    def __init__(self) -> None:
        self.full: list[tuple[Any, ...]] = []
        self.short: list[tuple[Any, ...]] = []

    def write(
        self,
        conn: Connection,
        table: str,
        columns: tuple[str, ...],
        tail: int,
        *,
        update: bool = False,
    ) -> None:
        """Insert (or update by id, the id last in each row) both shapes' rows."""
        sql_of = _update_sql if update else _insert_sql
        _write_many(conn, sql_of(conn.dialect, table, columns), self.full)
        _write_many(conn, sql_of(conn.dialect, table, columns, tail), self.short)
