"""The CLI as a user runs it: ingest a mixed board, read the status, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sync.cli import app
from tests.conftest import DATA_DIR, REPO_ROOT
from tests.ledger_support import dump

CONFIG = DATA_DIR / "kanvoice.test.toml"
MIXED = DATA_DIR / "mixed_board.json"


@pytest.fixture
def cli(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("KANVOICE_LEDGER__URL", ledger_url)
    return CliRunner()


def invoke(runner: CliRunner, *args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_ingest_then_status_shows_the_right_figures(cli: CliRunner, ledger_url: str) -> None:
    result = invoke(cli, "ingest", str(MIXED), "-c", str(CONFIG))
    assert result.exit_code == 0, result.output
    assert "13 snapshots: 8 new items" in result.output

    status = invoke(cli, "status", "-c", str(CONFIG), "--json")
    assert status.exit_code == 0, status.output
    figures = {c["client"]: c for c in json.loads(status.output)["clients"]}
    acme = figures["acme"]["stages"]
    # A1 2.1 h -> 2.25 h x 120; A2 3 h then reopened to 4.5 h (1.5 more) x 120;
    # A3 fixed price 1500 once; A6 2 h x 150 (senior label). A4 internal: cost only.
    assert acme["ready"] == {"hours": "8.75", "amount": "2610.00", "entries": 5}
    assert acme["in_progress"] == {"hours": "1.25", "amount": "150.00", "entries": 1}
    assert acme["non_billable"] == {"hours": "3.5", "amount": "0.00", "entries": 1}
    assert figures["acme"]["unbilled_gap"] == "2610.00"
    assert figures["acme"]["fixed_price_hours"] == "9"
    globex = figures["globex"]["stages"]
    # G1 1.33 h -> nearest 6 minutes = 1.3 h x 100 USD.
    assert globex["ready"] == {"hours": "1.3", "amount": "130.00", "entries": 1}
    assert globex["in_progress"] == {"hours": "0.5", "amount": "50.00", "entries": 1}

    table = invoke(cli, "status", "-c", str(CONFIG))
    assert "Acme GmbH" in table.output and "2,610.00 EUR" in table.output

    before = dump(ledger_url)
    again = invoke(cli, "ingest", str(MIXED), "-c", str(CONFIG))
    assert "13 unchanged" in again.output
    assert dump(ledger_url) == before


def _write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


BAD_SNAPSHOTS = {
    "malformed json": ("{not json", "not valid JSON"),
    "negative hours": (
        json.dumps(
            [
                {
                    "board": "acme-web",
                    "item_id": "X",
                    "title": "t",
                    "column": "Done",
                    "state_category": "done",
                    "updated_at": "2026-11-02T10:00:00Z",
                    "hours": -2,
                }
            ]
        ),
        "snapshots[0].hours = -2",
    ),
    "missing field": (
        json.dumps(
            [
                {
                    "board": "acme-web",
                    "item_id": "X",
                    "column": "Done",
                    "state_category": "done",
                    "updated_at": "2026-11-02T10:00:00Z",
                }
            ]
        ),
        "snapshots[0].title: missing",
    ),
    "unknown board": (
        json.dumps(
            [
                {
                    "board": "nope",
                    "item_id": "X",
                    "title": "t",
                    "column": "Done",
                    "state_category": "done",
                    "updated_at": "2026-11-02T10:00:00Z",
                    "hours": 1,
                }
            ]
        ),
        "board 'nope', which is not configured",
    ),
    "naive time": (
        json.dumps(
            [
                {
                    "board": "acme-web",
                    "item_id": "X",
                    "title": "t",
                    "column": "Done",
                    "state_category": "done",
                    "updated_at": "2026-11-02T10:00:00",
                    "hours": 1,
                }
            ]
        ),
        "needs a time zone",
    ),
    "not a list": (json.dumps({"items": []}), "expected a JSON list of snapshots"),
}


@pytest.mark.parametrize("case", sorted(BAD_SNAPSHOTS))
def test_bad_snapshot_file_is_one_clear_line_and_changes_nothing(
    case: str, cli: CliRunner, ledger_url: str, tmp_path: Path
) -> None:
    invoke(cli, "ingest", str(MIXED), "-c", str(CONFIG))
    before = dump(ledger_url)
    content, expected = BAD_SNAPSHOTS[case]
    # A good snapshot first: the whole file is refused, not just the bad line.
    path = _write(tmp_path, "bad.json", content)
    result = invoke(cli, "ingest", str(path), "-c", str(CONFIG))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert expected in lines[0]
    assert dump(ledger_url) == before


BAD_CONFIGS = {
    "unknown currency": (
        '[[clients]]\nkey = "acme"\nstripe_customer_id = "cus_A1"\ncurrency = "EUX"\n',
        "clients[0].currency = 'EUX': unknown currency 'EUX'",
    ),
    "missing stripe customer": (
        '[[clients]]\nkey = "acme"\ncurrency = "EUR"\n',
        "clients[0].stripe_customer_id: missing (required)",
    ),
    "board of an unknown client": (
        '[[clients]]\nkey = "acme"\nstripe_customer_id = "cus_A1"\ncurrency = "EUR"\n'
        '[[boards]]\nkey = "web"\nsource = "file"\nclient = "acne"\n',
        "boards[0].client = 'acne': expected one of the configured clients ['acme']",
    ),
    "negative rate": (
        '[[clients]]\nkey = "acme"\nstripe_customer_id = "cus_A1"\ncurrency = "EUR"\nrate = "-5"\n',
        "clients[0].rate = '-5'",
    ),
    "bad rounding mode": (
        '[defaults.rounding]\nmode = "sideways"\n',
        "defaults.rounding.mode = 'sideways'",
    ),
    "misspelt key": ('[ledgr]\nurl = "x"\n', "ledgr: unknown setting"),
    "not toml": ("[[clients]\n", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_one_clear_line_naming_the_key_and_changes_nothing(
    case: str, cli: CliRunner, ledger_url: str, tmp_path: Path
) -> None:
    invoke(cli, "ingest", str(MIXED), "-c", str(CONFIG))
    before = dump(ledger_url)
    content, expected = BAD_CONFIGS[case]
    config = _write(tmp_path, "bad.toml", content)
    for command in (["ingest", str(MIXED)], ["status"], ["check-config"]):
        result = invoke(cli, *command, "-c", str(config))
        assert result.exit_code == 2, (command, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (command, result.output)
    assert dump(ledger_url) == before


def test_missing_config_file_named_explicitly(cli: CliRunner, tmp_path: Path) -> None:
    result = invoke(cli, "status", "-c", str(tmp_path / "nope.toml"))
    assert result.exit_code == 2
    assert "nope.toml does not exist" in result.output


def test_check_config_reaches_the_ledger_and_names_what_is_missing(cli: CliRunner) -> None:
    invoke(cli, "db", "upgrade", "-c", str(CONFIG))
    result = invoke(cli, "check-config", "-c", str(CONFIG))
    assert "ledger reachable: schema 0012_approval_forced" in result.output
    # No Stripe key in this configuration: said plainly, and the check fails.
    assert result.exit_code == 1, result.output
    assert "stripe.api_key: not set (KANVOICE_STRIPE__API_KEY" in result.output


def test_unreachable_ledger_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANVOICE_LEDGER__URL", "sqlite:////nonexistent-dir/x/ledger.db")
    result = CliRunner().invoke(app, ["status", "-c", str(CONFIG)])
    assert result.exit_code == 2
    assert "the ledger is unreachable" in result.output


def test_console_script_is_installed_and_lists_every_command(tmp_path: Path) -> None:
    env = {**os.environ, "KANVOICE_LEDGER__URL": f"sqlite:///{tmp_path / 'l.db'}"}
    exe = Path(sys.executable).parent / "kanvoice"
    result = subprocess.run(
        [str(exe), "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    for command in ("status", "ingest", "check-config", "db", "demo"):
        assert command in result.stdout
