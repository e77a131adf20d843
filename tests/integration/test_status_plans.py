"""`kanvoice status` shows each client's retainer (used / included hours, rollover,
overage) and budgets (spent / cap, percent, thresholds reached), as a table and in
`--json` (the same shapes as the dashboard's `GET /api/pipeline`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sync.cli import app
from tests.conftest import DATA_DIR

MIXED = DATA_DIR / "mixed_board.json"
ROUNDING = 'rounding = { increment_minutes = 15, mode = "up" }\n'


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The CLI tests' config, with a retainer and a budget on acme and a lifetime money
    budget on globex's board."""
    text = (DATA_DIR / "kanvoice.test.toml").read_text()
    assert ROUNDING in text
    text = text.replace(
        ROUNDING,
        ROUNDING
        + 'retainer = { hours = 20, amount = "2000.00", rollover = true }\n'
        + 'budget = { hours = 10, amount = "2500", alert_thresholds = [50, 80, 100] }\n',
        1,
    )
    text += 'budget = { amount = "100", per = "total" }\n'  # the last board: globex-ops
    path = tmp_path / "kanvoice.toml"
    path.write_text(text)
    return path


@pytest.fixture
def cli(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("KANVOICE_LEDGER__URL", ledger_url)
    return CliRunner()


def invoke(runner: CliRunner, *args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_status_shows_retainers_and_budgets(cli: CliRunner, config: Path) -> None:
    assert invoke(cli, "ingest", str(MIXED), "-c", str(config)).exit_code == 0

    result = invoke(cli, "status", "-c", str(config), "--json")
    assert result.exit_code == 0, result.output
    clients = {c["client"]: c for c in json.loads(result.output)["clients"]}
    acme = clients["acme"]
    # Nothing drafted yet: the retainer is untouched, its hours all available.
    retainer = acme["retainer"]
    assert retainer["used_hours"] == "0"
    assert retainer["included_hours"] == "20"
    assert retainer["available_hours"] == "20"
    assert (retainer["rollover_hours"], retainer["overage_hours"]) == ("0", "0")
    assert retainer["amount"] == "2000.00"
    # Ready work counts against the period's budget: 8.75 h of T&M plus the 9 h of the
    # fixed-price item, 2,610.00 EUR (the 1,500.00 milestone included).
    (budget,) = acme["budgets"]
    assert budget["spent_hours"] == "17.75" and budget["hours_percent"] == "177.5"
    assert budget["scope"] == "client:acme"
    assert (budget["hours"], budget["amount"]) == ("10", "2500.00")
    assert budget["spent_amount"] == "2610.00"
    assert budget["amount_percent"] == "104.4"
    assert budget["reached"] == [50, 80, 100]
    assert budget["over"] is True
    assert budget["percent"] == max((budget["hours_percent"], budget["amount_percent"]), key=float)
    # globex: no retainer, a lifetime budget on its board (130.00 of 100.00 USD).
    globex = clients["globex"]
    assert "retainer" not in globex
    (board,) = globex["budgets"]
    assert board["scope"] == "board:globex-ops"
    assert (board["per"], board["period"], board["hours"]) == ("total", "total", None)
    assert (board["spent_amount"], board["amount"], board["percent"]) == (
        "130.00",
        "100.00",
        "130.0",
    )
    assert board["reached"] == [80, 100] and board["over"] is True

    table = invoke(cli, "status", "-c", str(config))
    assert table.exit_code == 0, table.output
    text = table.output
    assert "Retainers (current period)" in text and "Budgets" in text
    assert "0.00 EUR of 2,000.00 EUR" in text
    assert "17.75 h of 10 h" in text
    assert "2,610.00 EUR of 2,500.00 EUR" in text
    assert "130.00 USD of 100.00 USD" in text
    assert "50 %, 80 %, 100 %" in text and "over budget" in text


def test_status_without_plans_has_no_plan_keys(cli: CliRunner) -> None:
    config = DATA_DIR / "kanvoice.test.toml"
    assert invoke(cli, "ingest", str(MIXED), "-c", str(config)).exit_code == 0
    result = invoke(cli, "status", "-c", str(config), "--json")
    for client in json.loads(result.output)["clients"]:
        assert "retainer" not in client and "budgets" not in client
    table = invoke(cli, "status", "-c", str(config))
    assert "Retainers (current period)" not in table.output
    assert "Budgets (current" not in table.output
