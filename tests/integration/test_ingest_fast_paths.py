"""Issue 15: the fast ingest path records exactly what the straightforward one does.

The fast path is `Engine.ingest` of a whole stream: batches with several snapshots of
one item (planned against what the earlier ones recorded, rows written once with their
final values), held state read once per batch, memoized rounding / line amounts /
scaled values, driver values cached by identity. The straightforward path ingests the
same snapshots one call each: every snapshot its own transaction, planned against what
the ledger holds after the one before. A third reference is the pure billing core
folded over the stream (`plan` then `evolve`), with no database at all.

The two ledger paths run in one database on two boards ("fast", "slow") with the same
client, so the comparison holds on SQLite and PostgreSQL alike; every example uses
fresh item ids.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from mapping.billing import HeldItem, Skip, evolve, plan
from mapping.domain import BoardItem, Source, StateCategory
from sync import engine as engine_module
from sync.composition import Services, build_services
from sync.ledger import bulk
from sync.ledger import schema as t
from sync.settings import Settings
from tests.conftest import FixedClock

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
CATEGORY = {
    "Todo": StateCategory.PROPOSED,
    "In progress": StateCategory.IN_PROGRESS,
    "Review": StateCategory.IN_PROGRESS,
    "Done": StateCategory.DONE,
    "Removed": StateCategory.REMOVED,
}
LABELS: list[tuple[str, ...]] = [(), ("backend",), ("internal",), ("fixed-price",), ("urgent",)]
ASSIGNEES: list[tuple[str, ...]] = [(), ("alice-gh",), ("alice-gh", "bob-gh"), ("carol",)]
RUN = itertools.count(1)


def _settings(url: str, people: bool, rules: bool) -> Settings:
    board = {"source": "file", "client": "acme", "done_columns": ["Shipped"]}
    data: dict[str, Any] = {
        "ledger": {"url": url},
        "clients": [
            {
                "key": "acme",
                "name": "Acme",
                "stripe_customer_id": "cus_AcmeFast01",
                "currency": "EUR",
                "rate": "120",
                "rounding": {"increment_minutes": 15},
                # A label rule: rates resolved through the rules, not the plain-rate path.
                "rate_rules": [{"label": "urgent", "rate": "180"}] if rules else [],
            }
        ],
        "boards": [{**board, "key": "fast"}, {**board, "key": "slow"}],
    }
    if people:
        data["roles"] = [{"key": "junior", "rate": "90", "cost_rate": "40"}]
        data["people"] = [
            {"key": "alice", "identities": ["alice-gh"], "rate": "160", "cost_rate": "80"},
            {"key": "bob", "identities": ["bob-gh"], "role": "junior"},
        ]
    return Settings(**data)


@pytest.fixture(
    params=[(False, False), (True, False), (True, True)], ids=["per-item", "people", "rules"]
)
def services(ledger_url: str, request: pytest.FixtureRequest) -> Iterator[Services]:
    people, rules = request.param
    built = build_services(
        _settings(ledger_url, people, rules), FixedClock(T0 + timedelta(days=3))
    )
    try:
        yield built
    finally:
        built.close()


@st.composite
def streams(draw: st.DrawFn) -> list[BoardItem]:
    """Snapshots of a few items: moves between columns, hours up and down, the same
    revision again (unchanged, or a conflict), stale revisions, re-opened items."""
    revisions: dict[int, int] = {}
    out: list[BoardItem] = []
    for _ in range(draw(st.integers(1, 20))):
        n = draw(st.integers(0, 3))
        step = draw(st.sampled_from([1, 1, 1, 1, 0, -1]))
        revision = max(1, revisions.get(n, 0) + step)
        revisions[n] = max(revisions.get(n, 0), revision)
        column = draw(st.sampled_from([*CATEGORY, "Shipped"]))
        hours = draw(st.one_of(st.none(), st.decimals("0", "12", places=2)))
        labels = draw(st.sampled_from(LABELS))
        out.append(
            BoardItem(
                source=Source.FILE,
                board="fast",
                item_id=f"T{n}",
                title=f"Ticket {n}",
                url=f"https://example.test/{n}",
                column=column,
                state_category=CATEGORY.get(column, StateCategory.IN_PROGRESS),
                updated_at=T0 + timedelta(minutes=revision),
                revision=revision,
                hours=hours,
                labels=labels,
                assignees=draw(st.sampled_from(ASSIGNEES)),
                milestone_amount=Decimal("500") if "fixed-price" in labels else None,
                done_at=T0 + timedelta(minutes=revision, seconds=30)
                if draw(st.booleans())
                else None,
            )
        )
    return out


def _rows(services: Services, board: str, run: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every ledger row the run's items caused, ids replaced by keys and the board name
    by a placeholder, in insertion order."""
    prefix = f"file:{board}:r{run}-"

    def norm(value: Any) -> Any:
        if value == board:
            return "B"
        if isinstance(value, str):
            return value.replace(f":{board}:", ":B:").replace(f"/{board}/", "/B/")
        if isinstance(value, dict):
            return {k: norm(v) for k, v in sorted(value.items())}
        return value

    def plain(row: Any, *drop: str) -> tuple[Any, ...]:
        return tuple(norm(v) for k, v in row._mapping.items() if k not in drop)

    with services.ledger.engine.connect() as conn:
        items = conn.execute(
            select(t.items).where(t.items.c.item_key.startswith(prefix)).order_by(t.items.c.id)
        ).all()
        item_keys = {r.id: r.item_key for r in items}
        entries = conn.execute(
            select(t.entries)
            .where(t.entries.c.item_id.in_(list(item_keys) or [-1]))
            .order_by(t.entries.c.id)
        ).all()
        entry_keys = {r.id: r.entry_key for r in entries}
        transitions = conn.execute(
            select(t.transitions)
            .where(t.transitions.c.item_id.in_(list(item_keys) or [-1]))
            .order_by(t.transitions.c.id)
        ).all()
        events = conn.execute(
            select(t.entry_events)
            .where(t.entry_events.c.entry_id.in_(list(entry_keys) or [-1]))
            .order_by(t.entry_events.c.id)
        ).all()
        audits = conn.execute(
            select(t.audit_log.c.action, t.audit_log.c.subject, t.audit_log.c.detail)
            .where(t.audit_log.c.subject.startswith(f"item:{prefix}"))
            .order_by(t.audit_log.c.id)
        ).all()
    return {
        "items": [plain(r, "id", "board") for r in items],
        "entries": [(norm(item_keys[r.item_id]), *plain(r, "id", "item_id")) for r in entries],
        "transitions": [
            (norm(item_keys[r.item_id]), *plain(r, "id", "item_id")) for r in transitions
        ],
        "entry_events": [
            (norm(entry_keys[r.entry_id]), *plain(r, "id", "entry_id")) for r in events
        ],
        "audit_log": [plain(r) for r in audits],
    }


def _fold(stream: list[BoardItem], services: Services) -> dict[str, HeldItem]:
    """The pure billing core over the stream: what the ledger must hold afterwards."""
    held: dict[str, HeldItem] = {}
    for snapshot in stream:
        policy = services.engine.policies[snapshot.board]
        before = held.get(snapshot.key)
        actions = plan(snapshot, before, policy)
        if len(actions) == 1 and isinstance(actions[0], Skip):
            continue
        after = evolve(before, actions)
        assert after is not None
        held[snapshot.key] = after
    return held


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=streams(), batch=st.sampled_from([1, 2, 3, 7, 500]))
def test_batched_ingest_records_exactly_what_one_snapshot_at_a_time_does(
    services: Services, stream: list[BoardItem], batch: int
) -> None:
    run = next(RUN)
    fast = [replace(s, item_id=f"r{run}-{s.item_id}") for s in stream]
    slow = [replace(s, board="slow") for s in fast]

    # Small multi-row INSERTs on PostgreSQL, so that these short streams use them too.
    with (
        patch.object(engine_module, "BATCH_SIZE", batch),
        patch.object(bulk, "PG_VALUES_ROWS", 2),
    ):
        fast_report = services.engine.ingest(fast)
    slow_reports = [services.engine.ingest([s]) for s in slow]

    assert _rows(services, "fast", run) == _rows(services, "slow", run)
    # What a person reads: the same counts, the same lines.
    for name in ("seen", "skipped", "items_new", "entries_created", "state_changes"):
        assert getattr(fast_report, name) == sum(getattr(r, name) for r in slow_reports), name
    assert [c.split(" ", 1)[1] for c in fast_report.changes] == [  # without the board
        c.split(" ", 1)[1] for r in slow_reports for c in r.changes
    ]
    # And both hold what the pure billing core says they must.
    expected = _fold(fast, services)
    with services.ledger.read(T0) as uow:
        held = uow.held_items(list(expected))
    assert {k: r.held for k, r in held.items()} == expected
