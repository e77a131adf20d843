"""Benchmark 2: board snapshots mapped and committed per second through `Engine.ingest`.

The same snapshots go to an SQLite file ledger and to a PostgreSQL ledger (a throwaway
cluster from tests/conftest.py: fsync=off, loopback TCP), in phases that mirror a
board's life:

1. new items: N snapshots (60 % in progress with hours, 30 % already Done, 10 % Todo);
2. in-progress updates: the in-progress items' hours change (new revision);
3. Done transitions: those items move to Done (new entries become ready to bill);
4. unchanged re-poll: every item again, unchanged (what each GitHub poll feeds in).

The target (≥ 20,000 snapshots/s on SQLite) is measured on phases 1–3 together.
The baseline is the same driver inserting one items-like row per snapshot with a
plain ``executemany`` into a similar table (same columns, unique key, same pragmas,
one transaction per 500 rows), i.e. what the database itself costs.

``--profile`` reruns phases 1–3 on SQLite under cProfile and prints where time goes.

    .venv/bin/python bench/ingest.py [--quick] [--items N] [--repeat N] [--profile]
                                     [--no-postgres]

Each database gets ``--repeat`` (default 3) paired runs, engine then raw, each on a
fresh database; the best of each is reported with every run's figure (the machine is
shared: single runs vary by ±50 %). The ratio target (≥ 30 % of raw) is best / best.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import pstats
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from _common import (
    Row,
    fresh_postgres_database,
    own_time_by_package,
    postgres_server,
    print_machine,
    print_table,
    quiet_logs,
    write_json,
)
from sqlalchemy import event

from mapping.domain import BoardItem, Source, StateCategory
from sync.composition import Services, build_services
from sync.engine import BATCH_SIZE
from sync.settings import Settings

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
TARGET_SQLITE = 20_000.0
TARGET_RATIO = 0.30  # of raw executemany with the same rows, same run
PHASES = ("new items", "in-progress updates", "Done transitions", "unchanged re-poll")
CATEGORY = {
    "Todo": StateCategory.PROPOSED,
    "In progress": StateCategory.IN_PROGRESS,
    "Done": StateCategory.DONE,
}


class FixedClock:
    def __call__(self) -> datetime:
        return T0 + timedelta(days=3)


def _snap(n: int, column: str, hours: str | None, revision: int) -> BoardItem:
    return BoardItem(
        source=Source.FILE,
        board="web",
        item_id=f"T{n}",
        title=f"Ticket {n}: make the thing work",
        url=f"https://github.com/acme/web/issues/{n}",
        column=column,
        state_category=CATEGORY[column],
        updated_at=T0 + timedelta(minutes=revision),
        revision=revision,
        hours=Decimal(hours) if hours is not None else None,
        labels=("backend",) if n % 4 == 0 else (),
        assignees=(f"dev{n % 7}",),
        iteration="Sprint 12",
    )


def phases(items: int) -> list[list[BoardItem]]:
    """The four phases' snapshots (built before any timing)."""
    first: list[BoardItem] = []
    progressing: list[int] = []
    for n in range(items):
        bucket = n % 10
        if bucket < 6:
            first.append(_snap(n, "In progress", f"{1 + n % 5}.5", 1))
            progressing.append(n)
        elif bucket < 9:
            first.append(_snap(n, "Done", f"{1 + n % 8}", 1))
        else:
            first.append(_snap(n, "Todo", None, 1))
    updates = [_snap(n, "In progress", f"{2 + n % 5}.75", 2) for n in progressing]
    done = [_snap(n, "Done", f"{3 + n % 5}", 3) for n in progressing]
    final = {s.item_id: s for s in (*first, *updates, *done)}
    unchanged = [final[f"T{n}"] for n in range(items)]
    return [first, updates, done, unchanged]


def _settings(url: str) -> Settings:
    return Settings(
        ledger={"url": url},
        clients=[
            {
                "key": "acme",
                "name": "Acme",
                "stripe_customer_id": "cus_AcmeBench01",
                "currency": "EUR",
                "rate": "120",
                "rounding": {"increment_minutes": 15},
            }
        ],
        boards=[{"key": "web", "source": "file", "client": "acme"}],
    )


def _services(url: str) -> Services:
    return build_services(_settings(url), FixedClock())


class StatementCounter:
    """Counts round trips (an executemany counts once) per statement kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        words = statement.lstrip().split(None, 3)
        kind = words[0].upper()
        if kind in ("INSERT", "UPDATE", "DELETE") and len(words) > 2:
            table = words[2] if kind != "UPDATE" else words[1]
            kind = f"{kind} {table.strip(chr(34))}"
        elif kind == "SELECT":
            kind = "SELECT"
        self.counts[kind] += 1


def run_engine(url: str, snapshot_phases: list[list[BoardItem]]) -> dict[str, Any]:
    """Ingest each phase; seconds, rates and statements per phase."""
    services = _services(url)
    counter = StatementCounter()
    event.listen(services.ledger.engine, "before_cursor_execute", counter)
    results: dict[str, Any] = {}
    try:
        for name, batch in zip(PHASES, snapshot_phases, strict=True):
            counter.counts.clear()
            started = time.perf_counter()
            report = services.engine.ingest(batch)
            seconds = time.perf_counter() - started
            results[name] = {
                "snapshots": len(batch),
                "seconds": seconds,
                "rate": len(batch) / seconds,
                "report": {k: v for k, v in report.as_dict().items() if k != "changes"},
                "statements": dict(counter.counts),
                "statements_per_snapshot": sum(counter.counts.values()) / len(batch),
            }
    finally:
        services.close()
    return results


def run_mapping_only(snapshot_phases: list[list[BoardItem]]) -> dict[str, Any]:
    """The pure billing core alone (plan + evolve, held state in a dict): no database."""
    from mapping.billing import Skip, evolve, plan

    policy = _settings("sqlite:///unused.db").board_policies()["web"]
    held: dict[str, Any] = {}
    results: dict[str, Any] = {}
    for name, batch in zip(PHASES, snapshot_phases, strict=True):
        started = time.perf_counter()
        for snapshot in batch:
            before = held.get(snapshot.key)
            actions = plan(snapshot, before, policy)
            if len(actions) == 1 and isinstance(actions[0], Skip):
                continue
            held[snapshot.key] = evolve(before, actions)
        seconds = time.perf_counter() - started
        results[name] = {"snapshots": len(batch), "seconds": seconds, "rate": len(batch) / seconds}
    return results


# -- the raw baseline ---------------------------------------------------------------------

_RAW_COLUMNS = (
    "item_key source board external_id client title url column_name state_category is_done "
    "hours billing_type labels assignees iteration rate milestone_amount revision fingerprint "
    "updated_at done_at first_seen_at last_seen_at"
).split()

_RAW_DDL = """
CREATE TABLE raw_items (
    id {serial} PRIMARY KEY,
    item_key VARCHAR(400) NOT NULL UNIQUE,
    source VARCHAR(32) NOT NULL, board VARCHAR(200) NOT NULL,
    external_id VARCHAR(200) NOT NULL, client VARCHAR(100) NOT NULL,
    title TEXT NOT NULL, url TEXT NOT NULL, column_name VARCHAR(200) NOT NULL,
    state_category VARCHAR(20) NOT NULL, is_done BOOLEAN NOT NULL, hours BIGINT,
    billing_type VARCHAR(32) NOT NULL, labels {json} NOT NULL, assignees {json} NOT NULL,
    iteration VARCHAR(400), rate BIGINT, milestone_amount BIGINT, revision BIGINT NOT NULL,
    fingerprint VARCHAR(40) NOT NULL, updated_at {ts} NOT NULL, done_at {ts},
    first_seen_at {ts} NOT NULL, last_seen_at {ts} NOT NULL
)
"""


def _raw_row(s: BoardItem, serial: int, now: Any) -> tuple[Any, ...]:
    """The items row for a snapshot, as plain driver values (one row per snapshot;
    later phases insert under a new key so every row is a fresh insert)."""
    hours = int(s.hours * 1_000_000) if s.hours is not None else None
    done = s.state_category is StateCategory.DONE
    return (
        f"{s.key}#{serial}",
        s.source.value,
        s.board,
        s.item_id,
        "acme",
        s.title,
        s.url,
        s.column,
        s.state_category.value,
        done,
        hours,
        "time_and_materials",
        json.dumps(list(s.labels)),
        json.dumps(list(s.assignees)),
        s.iteration,
        None,
        None,
        s.revision,
        "0" * 40,
        s.updated_at if not isinstance(now, str) else s.updated_at.isoformat(),
        (s.updated_at if not isinstance(now, str) else s.updated_at.isoformat()) if done else None,
        now,
        now,
    )


def _chunks(rows: Sequence[BoardItem]) -> list[Sequence[BoardItem]]:
    return [rows[i : i + BATCH_SIZE] for i in range(0, len(rows), BATCH_SIZE)]


def raw_sqlite(path: Path, snapshot_phases: list[list[BoardItem]]) -> dict[str, Any]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(_RAW_DDL.format(serial="INTEGER", json="JSON", ts="TIMESTAMP"))
    placeholders = ", ".join("?" for _ in _RAW_COLUMNS)
    sql = f"INSERT INTO raw_items ({', '.join(_RAW_COLUMNS)}) VALUES ({placeholders})"  # noqa: S608
    now = FixedClock()().isoformat()
    results: dict[str, Any] = {}
    try:
        for phase, (name, batch) in enumerate(zip(PHASES, snapshot_phases, strict=True)):
            started = time.perf_counter()
            for chunk in _chunks(batch):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, [_raw_row(s, phase, now) for s in chunk])
                conn.execute("COMMIT")
            seconds = time.perf_counter() - started
            results[name] = {
                "snapshots": len(batch),
                "seconds": seconds,
                "rate": len(batch) / seconds,
            }
    finally:
        conn.close()
    return results


def raw_postgres(url: str, snapshot_phases: list[list[BoardItem]]) -> dict[str, Any]:
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    results: dict[str, Any] = {}
    with psycopg.connect(conninfo) as conn:
        conn.execute(_RAW_DDL.format(serial="SERIAL", json="JSON", ts="TIMESTAMPTZ"))
        conn.commit()
        placeholders = ", ".join("%s" for _ in _RAW_COLUMNS)
        sql = f"INSERT INTO raw_items ({', '.join(_RAW_COLUMNS)}) VALUES ({placeholders})"  # noqa: S608
        now = FixedClock()()
        for phase, (name, batch) in enumerate(zip(PHASES, snapshot_phases, strict=True)):
            started = time.perf_counter()
            for chunk in _chunks(batch):
                with conn.cursor() as cur:
                    cur.executemany(sql, [_raw_row(s, phase, now) for s in chunk])
                conn.commit()
            seconds = time.perf_counter() - started
            results[name] = {
                "snapshots": len(batch),
                "seconds": seconds,
                "rate": len(batch) / seconds,
            }
    return results


def sqlite_connection_costs(path: Path, count: int = 300) -> dict[str, float]:
    """ms per small write transaction on this disk: with a new connection each time (as
    the ledger's NullPool engine does, pragmas included), with one kept connection, and
    with a new connection while another one stays open (no checkpoint at close)."""
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (a INTEGER)")
    setup.close()

    def transaction(conn: sqlite3.Connection | None) -> None:
        own = conn is None
        if conn is None:
            conn = sqlite3.connect(path, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("COMMIT")
        if own:
            conn.close()

    def timed(conn: sqlite3.Connection | None) -> float:
        started = time.perf_counter()
        for _ in range(count):
            transaction(conn)
        return (time.perf_counter() - started) / count * 1000

    fresh = timed(None)
    kept = sqlite3.connect(path, isolation_level=None)
    kept.execute("PRAGMA synchronous=NORMAL")
    kept_ms = timed(kept)
    fresh_while_open = timed(None)
    kept.close()
    return {"new_connection_ms": fresh, "kept_ms": kept_ms, "new_while_open_ms": fresh_while_open}


# -- profile ------------------------------------------------------------------------------


def profile_sqlite(path: Path, snapshot_phases: list[list[BoardItem]], top: int) -> str:
    services = _services(f"sqlite:///{path}")
    profiler = cProfile.Profile()
    try:
        profiler.enable()
        for batch in snapshot_phases[:3]:
            services.engine.ingest(batch)
        profiler.disable()
    finally:
        services.close()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(own_time_by_package(stats))
    stats.strip_dirs()
    out.write(f"-- top {top} by own time (tottime)\n")
    stats.sort_stats("tottime").print_stats(top)
    out.write(f"-- top {top} by cumulative time\n")
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# -- report -------------------------------------------------------------------------------


def _mixed(results: dict[str, Any]) -> tuple[int, float]:
    names = PHASES[:3]
    count = sum(results[n]["snapshots"] for n in names)
    seconds = sum(results[n]["seconds"] for n in names)
    return count, seconds


def _rate(results: dict[str, Any]) -> float:
    count, seconds = _mixed(results)
    return count / seconds


def _spread(values: Sequence[float]) -> str:
    return " / ".join(f"{v:,.0f}" for v in values)


def _rows(
    db: str,
    engines: Sequence[dict[str, Any]],
    raws: Sequence[dict[str, Any]],
    target: float | None,
) -> list[Row]:
    """Figures of N paired runs (engine, then raw, each on a fresh database): the best of
    each and every run's value, since the machine is shared and the figures are noisy."""
    rows: list[Row] = []
    rates = [_rate(e) for e in engines]
    raw_rates = [_rate(r) for r in raws]
    best, raw_best = max(rates), max(raw_rates)
    ratio = best / raw_best
    paired = [e / r for e, r in zip(rates, raw_rates, strict=True)]
    count, _ = _mixed(engines[0])
    rows.append(
        Row(
            f"{db}: Engine.ingest, phases 1-3 ({count} snapshots), best of {len(rates)}",
            f"{best:,.0f} snapshots/s (runs: {_spread(rates)})",
            f">= {target:,.0f}/s" if target else "",
            best >= target if target else None,
        )
    )
    rows.append(
        Row(
            f"{db}: raw executemany, same rows and driver, best of {len(raw_rates)}",
            f"{raw_best:,.0f} rows/s (runs: {_spread(raw_rates)})",
        )
    )
    rows.append(
        Row(
            f"{db}: engine / raw (best / best)",
            f"{ratio:.1%} (paired runs: {', '.join(f'{p:.1%}' for p in paired)})",
            f">= {TARGET_RATIO:.0%}" if target else "",
            ratio >= TARGET_RATIO if target else None,
        )
    )
    engine = engines[rates.index(best)]
    raw = raws[raw_rates.index(raw_best)]
    for name in PHASES:
        e, r = engine[name], raw[name]
        stmts = ", ".join(f"{k} {v}" for k, v in sorted(e["statements"].items()))
        rows.append(
            Row(
                f"{db}: {name} ({e['snapshots']})",
                f"{e['rate']:,.0f}/s vs raw {r['rate']:,.0f}/s; "
                f"{e['statements_per_snapshot']:.2f} statements/snapshot [{stmts}]",
            )
        )
    return rows


PG_VARIANTS: dict[str, dict[str, Any]] = {
    # psycopg prepares a statement server-side after 5 runs; PostgreSQL may then use a
    # generic plan. These variants show what that costs the ledger's `IN (...)` reads.
    "psycopg prepare_threshold=None": {"prepare_threshold": None},
    "plan_cache_mode=force_custom_plan": {"options": "-c plan_cache_mode=force_custom_plan"},
}


@contextlib.contextmanager
def _engine_connect_args(connect_args: dict[str, Any]) -> Iterator[None]:
    """Diagnostics only: the ledger's engine built with extra driver arguments."""
    from sync.ledger import store

    namespace = vars(store)  # the name `make_engine` calls
    original = namespace["create_engine"]

    def patched(url: str, **kwargs: Any) -> Any:
        kwargs["connect_args"] = {**kwargs.get("connect_args", {}), **connect_args}
        return original(url, **kwargs)

    namespace["create_engine"] = patched
    try:
        yield
    finally:
        namespace["create_engine"] = original


def _pg_section(
    snapshot_phases: list[list[BoardItem]],
    run: Callable[[str, list[list[BoardItem]]], dict[str, Any]],
    variants: bool,
    repeat: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    engines: list[dict[str, Any]] = []
    raws: list[dict[str, Any]] = []
    with postgres_server() as server:
        for n in range(repeat):
            engine_url = fresh_postgres_database(server, f"kv_bench_ingest{n}")
            raw_url = fresh_postgres_database(server, f"kv_bench_raw{n}")
            engines.append(run(engine_url, snapshot_phases))
            raws.append(raw_postgres(raw_url, snapshot_phases))
        extra: dict[str, Any] = {}
        if variants:
            for n, (label, connect_args) in enumerate(PG_VARIANTS.items()):
                url = fresh_postgres_database(server, f"kv_bench_variant{n}")
                with _engine_connect_args(connect_args):
                    extra[label] = run(url, snapshot_phases)
    return engines, raws, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 items instead of 20,000")
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--profile", action="store_true", help="cProfile phases 1-3 on SQLite")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--pg-variants",
        action="store_true",
        help="also run PostgreSQL with psycopg auto-prepare off / custom plans forced",
    )
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--repeat", type=int, default=3, help="paired engine/raw runs per database (best kept)"
    )
    args = parser.parse_args()
    items = args.items or (3_000 if args.quick else 20_000)
    quiet_logs()
    print_machine()
    snapshot_phases = phases(items)
    sizes = ", ".join(f"{n} {len(b)}" for n, b in zip(PHASES, snapshot_phases, strict=True))
    print(f"mode: {'quick' if args.quick else 'full'}; {items} items; phases: {sizes}")
    payload: dict[str, Any] = {"benchmark": "ingest", "items": items}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="kanvoice-bench-") as tmp:
        work = Path(tmp)
        mapping = run_mapping_only(snapshot_phases)
        payload["mapping_only"] = mapping
        count, seconds = _mixed(mapping)
        rows.append(
            Row(
                "mapping only (plan + evolve, no database), phases 1-3",
                f"{count / seconds:,.0f} snapshots/s; per phase "
                + ", ".join(f"{mapping[n]['rate']:,.0f}" for n in PHASES),
            )
        )
        sqlite_engine: list[dict[str, Any]] = []
        sqlite_raw: list[dict[str, Any]] = []
        for n in range(args.repeat):
            sqlite_engine.append(run_engine(f"sqlite:///{work / f'ledger{n}.db'}", snapshot_phases))
            sqlite_raw.append(raw_sqlite(work / f"raw{n}.db", snapshot_phases))
        payload["sqlite"] = {"engine": sqlite_engine, "raw": sqlite_raw}
        rows += _rows("SQLite", sqlite_engine, sqlite_raw, TARGET_SQLITE)
        if not args.no_postgres:
            try:
                pg_engine, pg_raw, pg_variants = _pg_section(
                    snapshot_phases, run_engine, args.pg_variants, args.repeat
                )
            except Exception as exc:  # report, never crash the run
                rows.append(Row("PostgreSQL", f"not measured: {exc}"))
            else:
                payload["postgres"] = {"engine": pg_engine, "raw": pg_raw, "variants": pg_variants}
                rows += _rows("PostgreSQL", pg_engine, pg_raw, None)
                for label, variant in pg_variants.items():
                    count, seconds = _mixed(variant)
                    per_phase = ", ".join(f"{variant[n]['rate']:,.0f}" for n in PHASES)
                    rows.append(
                        Row(
                            f"PostgreSQL with {label}",
                            f"phases 1-3 {count / seconds:,.0f}/s; per phase {per_phase}",
                        )
                    )
        costs = sqlite_connection_costs(work / "connections.db")
        payload["sqlite_connection_costs"] = costs
        rows.append(
            Row(
                "SQLite write transaction on this disk (1 row)",
                f"new connection each time (NullPool-style) {costs['new_connection_ms']:.2f} ms; "
                f"kept connection {costs['kept_ms']:.3f} ms; new connection while another "
                f"stays open {costs['new_while_open_ms']:.2f} ms",
            )
        )
        print_table("ingest throughput (snapshots mapped and committed per second)", rows)
        if args.profile:
            text = profile_sqlite(work / "profiled.db", snapshot_phases, args.top)
            print(text)
            payload["profile"] = text
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
