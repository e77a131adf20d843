"""`kanvoice check-config` as a new operator meets it: config.example.toml's shape (a
GitHub board, an Azure DevOps board, two clients, Slack), every problem in one run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sync.checks import CHECKS, stripe_key_mode
from sync.cli import app
from tests.fakes.azure_server import FakeAzureDevOps, serve_fake_azure
from tests.fakes.github_server import FakeGitHubProject, serve_fake_github
from tests.fakes.slack_server import FakeSlack, serve_fake_slack
from tests.stripe_support import API_KEY, WEBHOOK_SECRET, fake_stripe

GITHUB_TOKEN = "ghp_checkconfig0000000000000000"
PAT = "azure-pat-check"
SLACK_TOKEN = "xoxb-check-config"

CONFIG = """
[ledger]
url = "sqlite:///{db}"
[stripe]
api_base = "{stripe}"
[slack]
api_url = "{slack}"
channel = "{channel}"
approvers = {approvers}

[[clients]]
key = "acme"
stripe_customer_id = "{acme}"
currency = "EUR"
[[clients]]
key = "globex"
stripe_customer_id = "{globex}"
currency = "{globex_currency}"

[[boards]]
key = "acme-web"
source = "github"
client = "acme"
done_columns = ["Done", "Shipped"]
hours_field = "{hours_field}"
[boards.github]
owner = "acme"
project_number = 1
api_url = "{github}"

[[boards]]
key = "globex-platform"
source = "azure_devops"
client = "globex"
[boards.azure_devops]
organization_url = "{azure}"
project = "Platform"
work_item_types = ["User Story", "{wit}"]
"""

ALL_ENV = (
    "KANVOICE_GITHUB__TOKEN",
    "KANVOICE_AZURE_DEVOPS__PAT",
    "KANVOICE_SLACK__BOT_TOKEN",
    "KANVOICE_SLACK__SIGNING_SECRET",
    "KANVOICE_STRIPE__API_KEY",
    "KANVOICE_STRIPE__WEBHOOK_SECRET",
    "KANVOICE_LEDGER__URL",
    "KANVOICE_CONFIG",
    "KANVOICE_SECRETS_DIR",
    "CREDENTIALS_DIRECTORY",
)


class World:
    def __init__(self, tmp_path: Path, urls: dict[str, str], fakes: dict[str, object]) -> None:
        self.tmp_path = tmp_path
        self.urls = urls
        self.fakes = fakes

    def config(self, **overrides: str) -> Path:
        values = {
            "db": str(self.tmp_path / "l.db"),
            "channel": "C0FINANCE",
            "hours_field": "Hours",
            "wit": "Bug",
            "approvers": '["U0ALICE"]',
            "globex_currency": "USD",
            **self.urls,
            **overrides,
        }
        path = self.tmp_path / "kanvoice.toml"
        path.write_text(CONFIG.format(**values))
        return path


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name in ALL_ENV:
        monkeypatch.delenv(name, raising=False)
    github = FakeGitHubProject(owner="acme", number=1, require_token=GITHUB_TOKEN)
    azure = FakeAzureDevOps(pat=PAT, organization="globex")
    azure.add_project("Platform")
    slack = FakeSlack(SLACK_TOKEN, users={"U0ALICE": "alice"})
    with (
        fake_stripe({"acme": "eur", "globex": "usd"}) as stripe,
        serve_fake_github(github) as github_url,
        serve_fake_azure(azure) as azure_url,
        serve_fake_slack(slack) as slack_url,
    ):
        urls = {
            "stripe": stripe.base_url,
            "github": github_url,
            "azure": azure_url,
            "slack": slack_url,
            "acme": stripe.customers["acme"],
            "globex": stripe.customers["globex"],
        }
        yield World(tmp_path, urls, {"github": github, "slack": slack, "azure": azure})


def _run(config: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["check-config", "-c", str(config), *extra])
    return result.exit_code, result.output


def _set_all_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANVOICE_GITHUB__TOKEN", GITHUB_TOKEN)
    monkeypatch.setenv("KANVOICE_AZURE_DEVOPS__PAT", PAT)
    monkeypatch.setenv("KANVOICE_SLACK__BOT_TOKEN", SLACK_TOKEN)
    monkeypatch.setenv("KANVOICE_SLACK__SIGNING_SECRET", "slack-signing")
    monkeypatch.setenv("KANVOICE_STRIPE__API_KEY", API_KEY)
    monkeypatch.setenv("KANVOICE_STRIPE__WEBHOOK_SECRET", WEBHOOK_SECRET)


def test_every_missing_credential_is_named_in_one_run(world: World) -> None:
    code, output = _run(world.config(), "--offline")
    assert code == 1, output
    for expected in (
        "github.token or github.app_id/installation_id/private_key: required by boards[0]",
        "azure_devops.pat: required by boards[1] (globex-platform)",
        "slack.bot_token: not set",
        "slack.signing_secret: not set",
        "stripe.api_key: not set",
    ):
        assert expected in output, (expected, output)
    assert "network checks skipped (--offline)" in output
    assert "ledger reachable" in output


def test_a_good_setup_passes_with_the_network(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_all_credentials(monkeypatch)
    code, output = _run(world.config(hours_field="Hours"), "--offline")
    assert code == 0, output
    github = world.fakes["github"]
    assert isinstance(github, FakeGitHubProject)
    github.status_options.append("Shipped")
    world.tmp_path.joinpath("l.db").unlink(missing_ok=True)
    code, output = _run(world.config())
    assert code == 0, output
    assert "GitHub board acme-web: project" in output
    assert "Azure DevOps board globex-platform: WIQL query and Done states" in output
    assert "Slack auth.test: bot kanvoice" in output
    assert "Slack channel #finance-approvals: the bot is a member" in output
    assert "Stripe key: test mode" in output
    assert "all checks passed" in output


def test_every_service_problem_is_named_in_one_run(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_all_credentials(monkeypatch)
    slack = world.fakes["slack"]
    assert isinstance(slack, FakeSlack)
    slack.outside_channels.add("C0FINANCE")
    config = world.config(
        hours_field="Hourz",
        wit="Epicc",
        approvers='["U0ALICE", "U0NOBODY"]',
        globex_currency="GBP",
    )
    code, output = _run(config)
    assert code == 1, output
    for expected in (
        "boards[0] (acme-web).hours_field = 'Hourz': no such field on the project",
        "boards[0] (acme-web).done_columns: 'Shipped' is not an option of 'Status'",
        "boards[1] (globex-platform).azure_devops.work_item_types: 'Epicc': cannot read",
        "slack.channel = 'C0FINANCE': the bot is not a member of #finance-approvals",
        "slack.approvers[1] = 'U0NOBODY': Slack says user_not_found",
        "Stripe bills this customer in USD, the settings say GBP",
    ):
        assert expected in output, (expected, output)
    assert "slack.approvers[0]" not in output


def test_unreadable_boards_and_wrong_tokens(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _set_all_credentials(monkeypatch)
    monkeypatch.setenv("KANVOICE_GITHUB__TOKEN", "ghp_wrong000000000000000000000")
    monkeypatch.setenv("KANVOICE_AZURE_DEVOPS__PAT", "wrong-pat")
    monkeypatch.setenv("KANVOICE_SLACK__BOT_TOKEN", "xoxb-wrong")
    monkeypatch.setenv("KANVOICE_STRIPE__API_KEY", "pk_test_publishable")
    code, output = _run(world.config())
    assert code == 1, output
    assert "boards[0] (acme-web): cannot read the GitHub project" in output
    assert "boards[1] (globex-platform): cannot run the board's WIQL query" in output
    assert "slack.bot_token: Slack auth.test failed: invalid_auth" in output
    assert "stripe.api_key: a publishable key (pk_…)" in output


def test_checks_are_independent_and_registered_in_one_list() -> None:
    names = [c.name for c in CHECKS]
    assert {"board credentials", "ledger", "github boards", "slack", "stripe"} <= set(names)
    assert {c.name for c in CHECKS if c.network} == {
        "github boards",
        "azure devops boards",
        "slack",
        "stripe",
    }
    assert stripe_key_mode("rk_live_x") == "live" and stripe_key_mode("pk_test_x") is None
