"""Azure DevOps boards end to end: settings → connector → engine → ledger (and cursor).

Real HTTP against the fake organization (tests/fakes/azure_server.py); the
ledger on SQLite and PostgreSQL (`ledger_url`), time from a FixedClock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from typer.testing import CliRunner

from connectors.base import FatalError
from sync.boards import build_connectors, close_connectors, sync_all, sync_board
from sync.cli import app
from sync.composition import Services, build_services
from sync.ledger import schema as t
from sync.settings import ConfigError, Settings
from tests.conftest import FixedClock
from tests.fakes.azure_server import FakeAzureDevOps, serve_fake_azure
from tests.ledger_support import dump

PAT = "fake-pat-integration"
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
ORIGINAL_ESTIMATE = "Microsoft.VSTS.Scheduling.OriginalEstimate"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeAzureDevOps, str]]:
    """One real HTTP server for the module; each test starts from an empty organization."""
    shared = FakeAzureDevOps(pat=PAT, organization="fabrikam")
    with serve_fake_azure(shared) as url:
        yield shared, url


@pytest.fixture
def fake(served: tuple[FakeAzureDevOps, str]) -> FakeAzureDevOps:
    served[0].reset()
    return served[0]


@pytest.fixture
def org_url(served: tuple[FakeAzureDevOps, str]) -> str:
    return served[1]


def board(key: str, org_url: str, project: str, **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "source": "azure_devops",
        "client": "globex",
        **extra,
        "azure_devops": {"organization_url": org_url, "project": project},
    }


def make_services(ledger_url: str, *boards: dict[str, Any]) -> Services:
    data: dict[str, Any] = {
        "ledger": {"url": ledger_url},
        "clients": [
            {
                "key": "globex",
                "name": "Globex",
                "stripe_customer_id": "cus_GlobexTest01",
                "currency": "USD",
                "rate": "100",
                "rounding": {"increment_minutes": 15, "mode": "up"},
            }
        ],
        "boards": list(boards),
        "azure_devops": {"pat": PAT, "hook_username": "kanvoice", "hook_password": "hook-pw"},
    }
    return build_services(Settings(**data), FixedClock())


def ledger_rows(url: str) -> list[dict[str, Any]]:
    """Every entry with its item, in creation order."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    t.items.c.external_id,
                    t.items.c.column_name,
                    t.items.c.done_at.label("item_done_at"),
                    t.entries.c.state,
                    t.entries.c.hours,
                    t.entries.c.amount,
                    t.entries.c.done_at,
                )
                .join(t.items, t.items.c.id == t.entries.c.item_id)
                .order_by(t.entries.c.id)
            ).all()
            return [{k: _utc(v) for k, v in r._mapping.items()} for r in rows]
    finally:
        engine.dispose()


def _utc(value: Any) -> Any:
    """SQLite gives naive datetimes back (stored as UTC); PostgreSQL aware ones."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def stored_cursor(services: Services, board_key: str) -> str | None:
    with services.ledger.unit_of_work(services.clock()) as uow:
        return uow.cursor("azure_devops", board_key)


# -- Done when: Agile (Closed) and Scrum (Done), Done time from the updates -----------------


async def test_agile_closed_story_is_billed_with_the_done_time_of_its_state_change(
    fake: FakeAzureDevOps, org_url: str, ledger_url: str
) -> None:
    shop = fake.add_project("Web Shop", "Agile")
    story = shop.add_item("Checkout", tags=("frontend",), at=T0)
    shop.set_state(story, "Active", at=T0 + timedelta(hours=1))
    shop.set_hours(story, 6.5, at=T0 + timedelta(hours=5))
    shop.set_state(story, "Resolved", at=T0 + timedelta(hours=6))
    closed_at = T0 + timedelta(days=1, hours=2, milliseconds=250)
    shop.set_state(story, "Closed", at=closed_at)
    shop.change(story, {"System.Title": "Checkout (v2)"}, at=T0 + timedelta(days=2))
    bug = shop.add_item("Crash", work_item_type="Bug", state="Active", hours=2, at=T0)
    removed = shop.add_item("Abandoned", work_item_type="Task", hours=4, at=T0)
    shop.set_state(removed, "Removed", at=T0 + timedelta(hours=3))

    services = make_services(ledger_url, board("shop", org_url, "Web Shop"))
    try:
        report = await sync_board(services, "shop")
        assert report.items_new == 3
        rows = {r["external_id"]: r for r in ledger_rows(ledger_url)}
        done = rows[str(story)]
        assert done["state"] == "ready"
        assert (done["hours"], done["amount"]) == (Decimal("6.5"), Decimal("650"))
        assert done["column_name"] == "Closed"
        assert done["done_at"] == closed_at  # StateChangeDate, not the poll or last change
        assert done["item_done_at"] == closed_at
        assert rows[str(bug)]["state"] == "in_progress"
        assert str(removed) not in rows  # Removed items are never billed
        assert stored_cursor(services, "shop") == "2024-05-03T09:00:00.000000Z"
    finally:
        await close_connectors(services.connectors)
        services.close()


async def test_scrum_done_item_is_billed_from_original_estimate(
    fake: FakeAzureDevOps, org_url: str, ledger_url: str
) -> None:
    mobile = fake.add_project("Mobile", "Scrum")
    pbi = mobile.add_item("Offline mode", hours=8, at=T0)
    mobile.set_state(pbi, "Committed", at=T0 + timedelta(minutes=10))
    mobile.set_hours(pbi, 13.25, at=T0 + timedelta(hours=3))
    done_at = T0 + timedelta(hours=4)
    mobile.set_state(pbi, "Done", at=done_at)
    todo = mobile.add_item("Push notifications", hours=1, at=T0 + timedelta(hours=5))

    services = make_services(
        ledger_url, board("mobile", org_url, "Mobile", hours_field=ORIGINAL_ESTIMATE)
    )
    try:
        await sync_board(services, "mobile")
    finally:
        await close_connectors(services.connectors)
        services.close()
    rows = {r["external_id"]: r for r in ledger_rows(ledger_url)}
    assert rows[str(pbi)]["state"] == "ready"
    assert rows[str(pbi)]["hours"] == Decimal("13.25")
    assert rows[str(pbi)]["column_name"] == "Done"
    assert rows[str(pbi)]["done_at"] == done_at
    assert rows[str(todo)]["state"] == "in_progress"


# -- Done when: 450 changed items, 1 WIQL call, 3 batch calls (through the CLI) -------------

CONFIG_TOML = """
[[clients]]
key = "globex"
name = "Globex"
stripe_customer_id = "cus_GlobexTest01"
currency = "USD"
rate = "100"

[[boards]]
key = "shop"
source = "azure_devops"
client = "globex"

[boards.azure_devops]
organization_url = "{org_url}"
project = "Web Shop"
"""


def test_sync_once_fetches_450_changed_items_with_1_wiql_and_3_batch_calls(
    fake: FakeAzureDevOps,
    org_url: str,
    ledger_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shop = fake.add_project("Web Shop", "Agile")
    for n in range(450):
        shop.add_item(f"Story {n}", hours=1, state="Active")
    monkeypatch.setenv("KANVOICE_LEDGER__URL", ledger_url)
    monkeypatch.setenv("KANVOICE_AZURE_DEVOPS__PAT", PAT)
    config = tmp_path / "kanvoice.toml"
    config.write_text(CONFIG_TOML.format(org_url=org_url), encoding="utf-8")

    result = CliRunner().invoke(app, ["sync", "--once", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert fake.request_counts["wiql"] == 1
    assert fake.request_counts["batch"] == 3
    assert "shop: 450 items seen in 5 requests: 450 new" in result.output  # + 1 states call

    # Nothing changed since: the overlap window re-reads the newest items, writes nothing.
    fake.reset_counts()
    before = dump(ledger_url)
    again = CliRunner().invoke(app, ["sync", "--once", "-c", str(config)])
    assert again.exit_code == 0, again.output
    assert "0 new, 0 updated" in again.output
    assert fake.request_counts["wiql"] == 1
    assert fake.request_counts["states"] == 0  # the type states were kept in the ledger
    assert fake.request_counts["updates"] == 0
    assert dump(ledger_url) == before


# -- the cursor advances only after the ingest committed ----------------------------------


async def test_the_cursor_advances_only_after_the_ingest_committed(
    fake: FakeAzureDevOps,
    org_url: str,
    ledger_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shop = fake.add_project("Web Shop", "Agile")
    story = shop.add_item("Checkout", state="Active", hours=1, at=T0)
    services = make_services(ledger_url, board("shop", org_url, "Web Shop"))
    try:
        await sync_board(services, "shop")
        first_cursor = stored_cursor(services, "shop")
        assert first_cursor == "2024-05-01T09:00:00.000000Z"

        closed_at = T0 + timedelta(hours=3)
        shop.set_state(story, "Closed", hours=3, at=closed_at)
        seen_cursors: list[str | None] = []
        real_ingest = services.engine.ingest

        def failing_ingest(snapshots: Any) -> Any:
            seen_cursors.append(stored_cursor(services, "shop"))
            raise RuntimeError("disk full")

        monkeypatch.setattr(services.engine, "ingest", failing_ingest)
        before = dump(ledger_url)
        with pytest.raises(RuntimeError, match="disk full"):
            await sync_board(services, "shop")
        assert seen_cursors == [first_cursor]  # not moved before the ingest
        assert stored_cursor(services, "shop") == first_cursor  # nor after it failed
        assert dump(ledger_url) == before

        monkeypatch.setattr(services.engine, "ingest", real_ingest)
        report = await sync_board(services, "shop")  # the same window again
        assert report.items_updated == 1
        assert stored_cursor(services, "shop") == "2024-05-01T12:00:00.000000Z"
        (entry,) = [r for r in ledger_rows(ledger_url) if r["state"] == "ready"]
        assert entry["hours"] == Decimal(3) and entry["done_at"] == closed_at
    finally:
        await close_connectors(services.connectors)
        services.close()


# -- errors per board, settings ------------------------------------------------------------


async def test_a_401_stops_that_board_with_a_clear_message_and_the_others_go_on(
    fake: FakeAzureDevOps, org_url: str, sqlite_url: str
) -> None:
    fake.add_project("Web Shop", "Agile").add_item("A", state="Closed", hours=1, at=T0)
    fake.add_project("Mobile", "Scrum").add_item("B", state="Done", hours=2, at=T0)
    services = make_services(
        sqlite_url,
        board("shop", org_url, "Web Shop"),
        board("mobile", org_url, "Mobile", hours_field=ORIGINAL_ESTIMATE),
    )
    fake.inject_fault(401, kind="wiql", times=1)  # the first board's query
    try:
        results = await sync_all(services)
    finally:
        await close_connectors(services.connectors)
        services.close()
    failed = results["shop"]
    assert isinstance(failed, FatalError)
    assert "shop" in str(failed) and "401" in str(failed)
    mobile = results["mobile"]
    assert not isinstance(mobile, Exception)
    assert mobile.items_new == 1 and mobile.entries_created == 1


def test_missing_pat_names_the_setting(sqlite_url: str) -> None:
    data: dict[str, Any] = {
        "ledger": {"url": sqlite_url},
        "clients": [
            {"key": "globex", "stripe_customer_id": "cus_G1", "currency": "USD", "rate": "1"}
        ],
        "boards": [board("shop", "https://dev.azure.com/fabrikam", "Web Shop")],
    }
    with pytest.raises(ConfigError, match=r"^azure_devops\.pat: required by boards\[0\] \(shop\)"):
        build_connectors(Settings(**data))


def test_board_settings_reach_the_azure_config(sqlite_url: str) -> None:
    services = make_services(
        sqlite_url,
        board(
            "shop",
            "https://dev.azure.com/fabrikam/",
            "Web Shop",
            done_columns=["Shipped"],
            hours_field=ORIGINAL_ESTIMATE,
            billing_type_field="Custom.Billing",
        ),
    )
    try:
        config = services.connectors["shop"].config  # type: ignore[attr-defined]
    finally:
        services.close()
    assert config.organization_url == "https://dev.azure.com/fabrikam"
    assert config.done_board_columns == frozenset({"Shipped"})
    assert config.hours_field == ORIGINAL_ESTIMATE
    assert config.billing_type_field == "Custom.Billing"
    assert (config.hook_username, config.hook_password) == ("kanvoice", "hook-pw")
    assert PAT not in repr(config)
