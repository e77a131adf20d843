"""GitHub Projects boards end to end: settings → connector → engine → ledger.

Real HTTP against the fake GraphQL server (tests/fakes/github_server.py); the
ledger on SQLite and PostgreSQL (`ledger_url`), time from a FixedClock.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import create_engine, select
from typer.testing import CliRunner

from connectors.base import FatalError
from sync.boards import (
    LazyBoardConnector,
    build_connectors,
    close_connectors,
    sync_all,
    sync_board,
)
from sync.cli import app
from sync.composition import Services, build_services
from sync.ledger import schema as t
from sync.settings import ConfigError, Settings
from tests.conftest import FixedClock
from tests.fakes.github_server import FakeGitHubProject, serve_fake_github
from tests.ledger_support import dump

TOKEN = "ghp_fake_integration_token"
SECRET = "hook-secret"


@pytest.fixture
def project() -> FakeGitHubProject:
    return FakeGitHubProject(owner="acme", number=3, require_token=TOKEN)


@pytest.fixture
def api_url(project: FakeGitHubProject) -> Iterator[str]:
    with serve_fake_github(project) as url:
        yield url


def settings_data(ledger_url: str, api_url: str, **github: Any) -> dict[str, Any]:
    return {
        "ledger": {"url": ledger_url},
        "clients": [
            {
                "key": "acme",
                "name": "Acme GmbH",
                "stripe_customer_id": "cus_AcmeTest01",
                "currency": "EUR",
                "rate": "100",
                "rounding": {"increment_minutes": 15, "mode": "up"},
            }
        ],
        "boards": [
            {
                "key": "acme-web",
                "source": "github",
                "client": "acme",
                "done_columns": ["Done", "Shipped"],
                "hours_field": "Hours",
                "github": {"owner": "acme", "project_number": 3, "api_url": api_url},
            }
        ],
        "github": github or {"token": TOKEN, "webhook_secret": SECRET},
    }


def make_services(ledger_url: str, api_url: str, **github: Any) -> Services:
    return build_services(Settings(**settings_data(ledger_url, api_url, **github)), FixedClock())


def entries(url: str) -> list[dict[str, Any]]:
    """Every billable entry with its item's external id, in creation order."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    t.items.c.external_id,
                    t.entries.c.kind,
                    t.entries.c.state,
                    t.entries.c.hours,
                    t.entries.c.amount,
                    t.entries.c.done_at,
                )
                .join(t.items, t.items.c.id == t.entries.c.item_id)
                .order_by(t.entries.c.id)
            ).all()
            return [dict(r._mapping) for r in rows]
    finally:
        engine.dispose()


CONFIG_TOML = """
[[clients]]
key = "acme"
name = "Acme GmbH"
stripe_customer_id = "cus_AcmeTest01"
currency = "EUR"
rate = "100"
rounding = {{ increment_minutes = 15, mode = "up" }}

[[boards]]
key = "acme-web"
source = "github"
client = "acme"
done_columns = ["Done"]

[boards.github]
owner = "acme"
project_number = 3
api_url = "{api_url}"
"""


@pytest.fixture
def cli_config(
    tmp_path: Path, api_url: str, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("KANVOICE_LEDGER__URL", ledger_url)
    monkeypatch.setenv("KANVOICE_GITHUB__TOKEN", TOKEN)
    path = tmp_path / "kanvoice.toml"
    path.write_text(CONFIG_TOML.format(api_url=api_url), encoding="utf-8")
    return path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


# -- Done when: 250 items in 3 pages; a second sync writes nothing ------------------------


def test_sync_once_reads_250_items_with_3_page_requests_and_a_second_sync_writes_nothing(
    project: FakeGitHubProject, cli_config: Path, ledger_url: str
) -> None:
    project.add_issues(247, title="Task", status="In Progress", hours=1)
    for n in range(3):
        project.add_issue(f"Shipped {n}", status="Done", hours=2)

    first = invoke("sync", "--once", "-c", str(cli_config))
    assert first.exit_code == 0, first.output
    assert project.requests["items_page"] == 3
    assert "acme-web: 250 items seen in 3 requests: 250 new, 0 updated, 0 unchanged" in (
        first.output
    )
    assert "'Shipped 0': ready 2 h = 200" in first.output
    assert "1 of 1 boards synced" in first.output
    assert len(entries(ledger_url)) == 250  # 247 in progress + 3 ready

    before = dump(ledger_url)
    second = invoke("sync", "--once", "-c", str(cli_config))
    assert second.exit_code == 0, second.output
    assert project.requests["items_page"] == 6  # three more pages, nothing else
    # the second poll is incremental: every item was updated "today" on the fake
    assert project.requests["items_page_filtered"] == 3
    assert "250 items seen in 3 requests: 0 new, 0 updated, 250 unchanged" in second.output
    assert dump(ledger_url) == before  # the cursor too: a poll soon after keeps it


# -- Done when: Done → In progress → Done with hours 3 → 5 bills 3 then 2 -----------------


async def test_done_in_progress_done_with_hours_3_then_5_bills_3_then_2(
    project: FakeGitHubProject, api_url: str, ledger_url: str
) -> None:
    item = project.add_issue("Checkout", status="In Progress", hours=1)
    services = make_services(ledger_url, api_url)
    try:
        await sync_board(services, "acme-web")
        project.set_hours(item.node_id, 3)
        project.move(item.node_id, "Done")
        first = await sync_board(services, "acme-web")
        assert first.entries_created + first.state_changes >= 1
        ready = [e for e in entries(ledger_url) if e["state"] == "ready"]
        assert [(e["hours"], e["amount"]) for e in ready] == [(Decimal(3), Decimal(300))]

        project.move(item.node_id, "In Progress")
        await sync_board(services, "acme-web")
        project.set_hours(item.node_id, 5)
        project.move(item.node_id, "Done")
        await sync_board(services, "acme-web")

        billed = [e for e in entries(ledger_url) if e["state"] == "ready"]
        assert [(e["hours"], e["amount"]) for e in billed] == [
            (Decimal(3), Decimal(300)),
            (Decimal(2), Decimal(200)),
        ]
        assert {e["external_id"] for e in billed} == {item.node_id}

        before = dump(ledger_url)
        again = await sync_board(services, "acme-web")
        assert again.changes == [] and again.skipped == 1
        assert dump(ledger_url) == before
    finally:
        await close_connectors(services.connectors)
        services.close()


# -- settings → connectors -----------------------------------------------------------------


def test_build_connectors_maps_board_settings_without_touching_the_network(
    sqlite_url: str,
) -> None:
    data = settings_data(sqlite_url, "https://ghe.example.com/api/graphql")
    data["boards"][0]["billing_type_field"] = "Billing"
    data["boards"][0]["billing_type_values"] = {"T&M": "time_and_materials"}
    connectors = build_connectors(Settings(**data))
    connector = connectors["acme-web"]
    assert isinstance(connector, LazyBoardConnector)
    assert connector.built is None  # no HTTP client until first used
    config = connector.config
    assert config.owner == "acme" and config.project_number == 3
    assert config.done_options == ("Done", "Shipped")
    assert config.billing_type_field == "Billing"
    assert config.rest_api_url == "https://ghe.example.com/api/v3"
    assert config.webhook_secret == SECRET
    assert TOKEN not in repr(connector) and TOKEN not in repr(config)


@pytest.mark.parametrize(
    ("github", "expected"),
    [
        (
            {},
            "github.token or github.app_id/installation_id/private_key: "
            "required by boards[0] (acme-web)",
        ),
        ({"app_id": "12"}, "github.installation_id, github.private_key: required by boards[0]"),
        (
            {"token": TOKEN, "app_id": "12"},
            "github.token and github.app_id/installation_id/private_key are both set",
        ),
    ],
)
def test_missing_or_conflicting_credentials_name_the_setting(
    sqlite_url: str, github: dict[str, str], expected: str
) -> None:
    data = settings_data(sqlite_url, "https://api.github.com/graphql")
    data["github"] = github
    with pytest.raises(ConfigError, match="^" + re.escape(expected)):
        build_connectors(Settings(**data))


def test_sync_once_without_a_token_is_one_line_naming_the_setting(
    cli_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KANVOICE_GITHUB__TOKEN")
    result = invoke("sync", "--once", "-c", str(cli_config))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "github.token or github.app_id/installation_id/private_key" in lines[0]
    assert "boards[0] (acme-web)" in lines[0]


async def test_github_app_credentials_fetch_an_installation_token(
    project: FakeGitHubProject, api_url: str, sqlite_url: str
) -> None:
    project.add_issue("Via the App", status="Done", hours=1.5)
    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    services = make_services(
        sqlite_url, api_url, app_id="123", installation_id="456", private_key=pem
    )
    try:
        report = await sync_board(services, "acme-web")
    finally:
        await close_connectors(services.connectors)
        services.close()
    assert report.items_new == 1 and report.entries_created == 1
    assert project.installation_tokens_issued == 1


# -- the CLI ---------------------------------------------------------------------------


def test_sync_without_once_points_at_kanvoice_run(cli_config: Path) -> None:
    result = invoke("sync", "-c", str(cli_config))
    assert result.exit_code == 2
    assert "kanvoice run" in result.output


def test_sync_once_unknown_board_is_one_line(cli_config: Path) -> None:
    result = invoke("sync", "--once", "--board", "nope", "-c", str(cli_config))
    assert result.exit_code == 2
    assert "--board 'nope': no such board" in result.output


def test_a_failing_board_is_reported_and_the_others_go_on(
    project: FakeGitHubProject, cli_config: Path, ledger_url: str
) -> None:
    project.add_issue("Good", status="Done", hours=1)
    text = cli_config.read_text(encoding="utf-8")
    broken = text.split("[[boards]]")[1].replace('"acme-web"', '"acme-old"')
    broken = broken.replace("project_number = 3", "project_number = 99")
    cli_config.write_text(text + "\n[[boards]]" + broken, encoding="utf-8")

    result = invoke("sync", "--once", "-c", str(cli_config))
    assert result.exit_code == 1, result.output
    assert "acme-old: failed (fatal):" in result.output
    assert "Could not resolve to a ProjectV2 with the number 99" in result.output
    assert "acme-web: 1 items seen in 1 requests: 1 new" in result.output
    assert "1 of 2 boards synced, 1 failed" in result.output
    assert len(entries(ledger_url)) == 1

    only = invoke("sync", "--once", "--board", "acme-web", "-c", str(cli_config))
    assert only.exit_code == 0, only.output
    assert "acme-old" not in only.output


async def test_sync_all_reports_errors_per_board(
    project: FakeGitHubProject, api_url: str, sqlite_url: str
) -> None:
    data = settings_data(sqlite_url, api_url)
    data["boards"].append(
        {**data["boards"][0], "key": "acme-old", "github": {"owner": "acme", "project_number": 9}}
    )
    data["boards"][1]["github"]["api_url"] = api_url
    services = build_services(Settings(**data), FixedClock())
    project.add_issue("Good", status="Done", hours=1)
    try:
        results = await sync_all(services)
    finally:
        await close_connectors(services.connectors)
        services.close()
    assert isinstance(results["acme-old"], FatalError)
    good = results["acme-web"]
    assert not isinstance(good, Exception) and good.items_new == 1


# -- the full reconcile reports items the board no longer lists ---------------------------


async def test_the_reconcile_reports_items_gone_from_the_board_and_unbills_nothing(
    project: FakeGitHubProject, api_url: str, ledger_url: str
) -> None:
    kept = project.add_issue("Kept", status="Done", hours=1)
    gone = project.add_issue("Gone", status="Done", hours=2)
    data = settings_data(ledger_url, api_url)
    data["boards"][0]["github"]["full_reconcile_seconds"] = 0  # every poll is a reconcile
    services = build_services(Settings(**data), FixedClock())
    try:
        first = await sync_board(services, "acme-web")
        assert first.missing == ()
        project.delete(gone.node_id)
        second = await sync_board(services, "acme-web")
        assert second.missing == (gone.node_id,)
        assert {e["external_id"] for e in entries(ledger_url)} == {kept.node_id, gone.node_id}
    finally:
        await close_connectors(services.connectors)
        services.close()
