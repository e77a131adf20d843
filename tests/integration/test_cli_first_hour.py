"""What a user hits in the first hour: --version, a status that fits the terminal,
a required reject reason, local commands without board credentials, no config."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sync.cli import app

BOARDS = """
[ledger]
url = "sqlite:///{db}"
[[clients]]
key = "acme"
name = "Acme GmbH"
stripe_customer_id = "cus_Acme1"
currency = "EUR"
[[boards]]
key = "web"
source = "github"
client = "acme"
[boards.github]
owner = "acme"
project_number = 1
[[boards]]
key = "platform"
source = "azure_devops"
client = "acme"
[boards.azure_devops]
organization_url = "https://dev.azure.com/acme"
project = "Platform"
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("KANVOICE_GITHUB__TOKEN", "KANVOICE_AZURE_DEVOPS__PAT", "KANVOICE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("KANVOICE_LEDGER__URL", raising=False)
    path = tmp_path / "kanvoice.toml"
    path.write_text(BOARDS.format(db=tmp_path / "l.db"))
    return path


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"kanvoice {version('kanvoice')}"


def test_local_commands_need_no_board_credentials(config: Path) -> None:
    for command in (["db", "upgrade"], ["status"], ["status", "--json"]):
        result = CliRunner().invoke(app, [*command, "-c", str(config)])
        assert result.exit_code == 0, (command, result.output)


@pytest.mark.parametrize("columns", [80, 120])
def test_status_fits_the_terminal_width(
    config: Path, monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    result = CliRunner().invoke(app, ["status", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "Acme GmbH" in result.output or "Acme" in result.output
    assert max(len(line) for line in result.output.splitlines()) <= columns


def test_reject_requires_a_reason(config: Path) -> None:
    missing = CliRunner().invoke(app, ["reject", "1", "--as", "U1", "-c", str(config)])
    assert missing.exit_code == 2
    assert "--reason" in missing.output
    blank = CliRunner().invoke(
        app, ["reject", "1", "--as", "U1", "--reason", " ", "-c", str(config)]
    )
    assert blank.exit_code == 2
    assert "--reason: required and not empty" in blank.output


def test_no_config_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KANVOICE_CONFIG", raising=False)
    for command in (["run"], ["status"], ["check-config"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "no configuration: kanvoice.toml does not exist" in lines[0]
    monkeypatch.setenv("KANVOICE_CONFIG", str(tmp_path / "gone.toml"))
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 2
    assert "gone.toml does not exist (named by $KANVOICE_CONFIG)" in result.output
    assert not (tmp_path / "kanvoice.db").exists()


def test_run_without_a_stripe_key_refuses(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KANVOICE_STRIPE__API_KEY", raising=False)
    result = CliRunner().invoke(app, ["run", "-c", str(config)])
    assert result.exit_code == 2
    assert "stripe.api_key: not set" in result.output
    assert "--without-stripe" in result.output


async def test_without_stripe_every_drain_says_invoicing_is_off(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from structlog.testing import capture_logs

    from sync.composition import build_services
    from sync.daemon import Daemon
    from sync.settings import load_settings

    monkeypatch.delenv("KANVOICE_STRIPE__API_KEY", raising=False)
    services = build_services(load_settings(config), boards=False)
    try:
        daemon = Daemon(services, object())
        with capture_logs() as logs:
            await daemon._drain()
            await daemon._drain()
        off = [entry for entry in logs if entry["event"] == "invoicing.off"]
        assert len(off) == 2 and off[0]["log_level"] == "warning"
    finally:
        services.close()


def test_run_names_every_missing_board_credential_at_once(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KANVOICE_STRIPE__API_KEY", "sk_test_x")
    result = CliRunner().invoke(app, ["run", "-c", str(config)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "github.token or github.app_id" in lines[0]
    assert "azure_devops.pat: required by boards[1] (platform)" in lines[0]
    assert not (config.parent / "l.db").exists()  # stopped before touching the ledger
