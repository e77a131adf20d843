"""Two snapshots of one item with the same revision and different content are never
settled by arrival order: GitHub / Azure DevOps items are read again from the board,
snapshot files keep the first; each conflict is logged, counted and shown in status."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from typer.testing import CliRunner

from connectors.base import PollResult
from mapping.domain import BoardItem, Source, StateCategory
from sync.boards import sync_board
from sync.cli import app
from sync.composition import Services, build_services
from sync.ledger import schema as t
from sync.settings import Settings
from tests.conftest import FixedClock

AT = datetime(2026, 11, 2, 8, 59, 59, tzinfo=UTC)  # both edits in this second


def item(
    source: Source, board: str, column: str, hours: str, labels: tuple[str, ...] = ()
) -> BoardItem:
    return BoardItem(
        source=source,
        board=board,
        item_id="PVTI_1",
        title="Checkout",
        url="https://example.test/1",
        column=column,
        state_category=StateCategory.DONE if column == "Done" else StateCategory.IN_PROGRESS,
        updated_at=AT,
        revision=int(AT.timestamp()),  # GitHub has no revision: the update second
        hours=Decimal(hours),
        labels=labels,
    )


class ScriptedBoard:
    """A board connector whose poll answers what the test says; `fetch` is the board's
    current state (what a fresh read finds)."""

    def __init__(self, board_key: str, polled: list[BoardItem], current: BoardItem) -> None:
        self.board_key = board_key
        self.source = Source.GITHUB
        self.polled = polled
        self.current = current
        self.fetched: list[tuple[str, ...]] = []

    async def poll(self, cursor: str | None) -> PollResult:
        return PollResult(tuple(self.polled), 1, None)

    async def fetch(self, item_ids: tuple[str, ...]) -> tuple[BoardItem, ...]:
        self.fetched.append(item_ids)
        return (self.current,)


def services_for(url: str, source: str) -> Services:
    board: dict[str, Any] = {
        "key": "web",
        "source": source,
        "client": "acme",
        "done_columns": ["Done"],
    }
    if source == "github":
        board["github"] = {"owner": "acme", "project_number": 3}
    settings = Settings(
        ledger={"url": url},
        clients=[
            {
                "key": "acme",
                "name": "Acme",
                "stripe_customer_id": "cus_Acme",
                "currency": "EUR",
                "rate": "100",
            }
        ],
        boards=[board],
        github={"token": "ghp_x"},
    )
    return build_services(settings, FixedClock())


def ledger_hours(services: Services) -> list[tuple[str, str]]:
    with services.ledger.engine.connect() as conn:
        rows = conn.execute(
            select(t.entries.c.state, t.entries.c.hours).order_by(t.entries.c.id)
        ).all()
    return [(r.state, str(r.hours)) for r in rows]


def conflicts_counted(board: str, resolution: str) -> float:
    value = REGISTRY.get_sample_value(
        "kanvoice_snapshot_conflicts_total", {"board": board, "resolution": resolution}
    )
    return value or 0.0


@pytest.mark.parametrize("source", [Source.GITHUB, Source.AZURE_DEVOPS])
def test_two_edits_in_one_second_are_settled_by_reading_the_board_again(
    sqlite_url: str, source: Source
) -> None:
    services = services_for(sqlite_url, "github")
    try:
        # The ledger holds the item in progress; then one poll sees two Done edits made
        # in the same second (3 h, then 5 h); the board now says 5 h.
        services.engine.ingest([replace(item(source, "web", "In progress", "2"), revision=1)])
        polled = [item(source, "web", "Done", "3"), item(source, "web", "Done", "5")]
        board = ScriptedBoard("web", polled, item(source, "web", "Done", "5"))
        board.source = source
        services.connectors = {"web": board}  # type: ignore[assignment]
        before = conflicts_counted("web", "re-read from the board")
        report = asyncio.run(sync_board(services, "web"))
        assert board.fetched == [("PVTI_1",)]
        assert ledger_hours(services) == [("ready", "5")]  # the board's truth, not arrival order
        assert [c.resolution for c in report.conflicts] == ["re-read from the board"]
        assert conflicts_counted("web", "re-read from the board") == before + 1

        # The same conflicting pair in the other order bills the same (nothing new).
        board.polled = list(reversed(polled))
        asyncio.run(sync_board(services, "web"))
        assert ledger_hours(services) == [("ready", "5")]
    finally:
        services.close()


def test_a_poll_racing_a_webhook_with_equal_revision_rereads_and_bills_once(
    sqlite_url: str,
) -> None:
    services = services_for(sqlite_url, "github")
    try:
        # The webhook's fetch recorded Done with 3 h; a poll read a moment later sees the
        # same second but 4 h and a label: a conflict, settled by the board (4 h).
        services.engine.ingest([item(Source.GITHUB, "web", "Done", "3")])
        current = item(Source.GITHUB, "web", "Done", "4", labels=("rush",))
        board = ScriptedBoard("web", [current], current)
        services.connectors = {"web": board}  # type: ignore[assignment]
        asyncio.run(sync_board(services, "web"))
        assert board.fetched == [("PVTI_1",)]
        assert sum(Decimal(h) for s, h in ledger_hours(services) if s == "ready") == 4
    finally:
        services.close()


def test_in_a_snapshot_file_the_first_of_two_equal_revisions_stands(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "kanvoice.toml"
    config.write_text(
        '[[clients]]\nkey = "acme"\nname = "Acme"\nstripe_customer_id = "cus_Acme"\n'
        'currency = "EUR"\nrate = "100"\n\n[[boards]]\nkey = "web"\nsource = "github"\n'
        'client = "acme"\ndone_columns = ["Done"]\n[boards.github]\nowner = "acme"\n'
        "project_number = 3\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("KANVOICE_LEDGER__URL", sqlite_url)
    monkeypatch.setenv("KANVOICE_GITHUB__TOKEN", "ghp_x")
    snapshot = {
        "board": "web",
        "item_id": "7",
        "title": "Checkout",
        "url": "https://example.test/7",
        "column": "Done",
        "state_category": "done",
        "updated_at": "2026-11-02T08:59:59Z",
        "revision": 4,
    }
    data = tmp_path / "snapshots.json"
    data.write_text(json.dumps([{**snapshot, "hours": 3}, {**snapshot, "hours": 5}]), "utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", str(data), "-c", str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "revision 4 seen twice with different content: first snapshot stands" in result.output
    status = runner.invoke(app, ["status", "--json", "-c", str(config)], catch_exceptions=False)
    payload = json.loads(status.output)
    ready = payload["clients"][0]
    assert payload["snapshot_conflicts"]["total"] == 1
    assert payload["snapshot_conflicts"]["recent"][0]["resolution"] == "first snapshot stands"
    assert "ready" in json.dumps(ready)
    # A later file with the same revision and other hours still changes nothing.
    data.write_text(json.dumps([{**snapshot, "hours": 9}]), "utf-8")
    runner.invoke(app, ["ingest", str(data), "-c", str(config)], catch_exceptions=False)
    status = runner.invoke(app, ["status", "--json", "-c", str(config)], catch_exceptions=False)
    payload = json.loads(status.output)
    assert payload["snapshot_conflicts"]["total"] == 2
    services = build_services(
        Settings(
            ledger={"url": sqlite_url},
            clients=[
                {
                    "key": "acme",
                    "name": "Acme",
                    "stripe_customer_id": "cus_Acme",
                    "currency": "EUR",
                    "rate": "100",
                }
            ],
            boards=[
                {
                    "key": "web",
                    "source": "github",
                    "client": "acme",
                    "done_columns": ["Done"],
                    "github": {"owner": "acme", "project_number": 3},
                }
            ],
            github={"token": "ghp_x"},
        ),
        FixedClock(),
    )
    try:
        assert ledger_hours(services) == [("ready", "3")]
    finally:
        services.close()
