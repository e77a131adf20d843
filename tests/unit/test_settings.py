"""Settings: the example file, the environment, secret files, and clear errors."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from mapping.domain import RateScope
from sync.settings import ConfigError, load_settings
from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "config.example.toml"


def test_the_example_config_loads_and_validates() -> None:
    settings = load_settings(EXAMPLE)
    assert [c.key for c in settings.clients] == ["acme", "globex"]
    assert [b.key for b in settings.boards] == ["acme-web", "globex-platform"]
    policies = settings.board_policies()
    acme = policies["acme-web"]
    assert acme.client.currency == "EUR"
    assert acme.done_columns == frozenset({"Done", "Shipped"})
    assert {r.scope for r in acme.client.rate_rules} == {RateScope.LABEL, RateScope.CLIENT}
    assert policies["globex-platform"].client.currency == "USD"
    # No secret is in the example file.
    assert settings.stripe.api_key is None and settings.slack.bot_token is None


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANVOICE_STRIPE__API_KEY", "sk_test_env")
    monkeypatch.setenv("KANVOICE_LEDGER__URL", "postgresql://kv@db/kv")
    settings = load_settings(EXAMPLE)
    assert settings.stripe.api_key is not None
    assert settings.stripe.api_key.get_secret_value() == "sk_test_env"
    assert "sk_test_env" not in repr(settings)
    assert settings.ledger.url == "postgresql+psycopg://kv@db/kv"
    assert settings.slack.channel == "C0123456789"  # the file still applies


def test_secrets_come_from_credential_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "slack__signing_secret").write_text("s3cret")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = load_settings(EXAMPLE)
    assert settings.slack.signing_secret is not None
    assert settings.slack.signing_secret.get_secret_value() == "s3cret"


def test_no_config_file_is_an_error_not_an_empty_service(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KANVOICE_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"no configuration: kanvoice.toml does not exist"):
        load_settings()
    monkeypatch.setenv("KANVOICE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"missing.toml does not exist \(named by \$KANVOICE"):
        load_settings()
    (tmp_path / "kanvoice.toml").write_text("")
    monkeypatch.delenv("KANVOICE_CONFIG")
    assert load_settings().clients == []


def test_errors_name_key_value_and_expectation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[server]\nport = 70000\n[[clients]]\nkey = "a"\nstripe_customer_id = "cus_1"\n'
        'currency = "EUR"\ntimezone = "Mars/Olympus"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings(bad)
    message = str(info.value)
    assert "server.port = 70000: Input should be less than or equal to 65535" in message
    assert "clients[0].timezone = 'Mars/Olympus': unknown time zone" in message


def test_board_sections_must_match_their_source(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[clients]]\nkey = "a"\nstripe_customer_id = "cus_1"\ncurrency = "EUR"\n'
        '[[boards]]\nkey = "b"\nsource = "github"\nclient = "a"\n'
    )
    with pytest.raises(ConfigError, match=r"boards\[0\]: a github board needs a \[boards.github\]"):
        load_settings(bad)


def test_rates_are_decimals(tmp_path: Path) -> None:
    assert load_settings(EXAMPLE).client("acme").rate == Decimal("120.00")


def test_the_example_retainer_and_budgets() -> None:
    settings = load_settings(EXAMPLE)
    terms = settings.retainer_terms("acme")
    assert terms is not None
    assert (terms.amount, terms.included_hours, terms.overage_rate) == (
        Decimal("6000.00"),
        Decimal(40),
        Decimal(175),
    )
    assert terms.rollover and terms.rollover_cap_hours == Decimal(20)
    assert settings.retainer_terms("globex") is None
    budgets = {b.scope: b for b in settings.budgets("acme")}
    assert set(budgets) == {"client:acme", "board:acme-web"}
    assert budgets["client:acme"].thresholds == (80, 100)
    assert budgets["board:acme-web"].per == "total"


@pytest.mark.parametrize(
    ("retainer", "hours", "amount"),
    [
        ('hours = 40\namount = "6000"', "40", "6000"),
        ('hours = 40\nrate = "150"', "40", "6000"),  # the line: hours × rate
        ('amount = "6000"\nrate = "160"', "37.5", "6000"),  # hours: amount / rate
    ],
)
def test_retainer_terms_from_two_of_hours_amount_rate(
    tmp_path: Path, retainer: str, hours: str, amount: str
) -> None:
    path = _client_config(tmp_path, f"[clients.retainer]\n{retainer}\n")
    terms = load_settings(path).retainer_terms("acme")
    assert terms is not None
    assert (terms.included_hours, terms.amount) == (Decimal(hours), Decimal(amount))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("[clients.retainer]\nhours = 40\n", "a retainer needs hours and amount"),
        ('[clients.retainer]\namount = "6000"\n', "a retainer needs hours and amount"),
        (
            '[clients.retainer]\nhours = 40\namount = "1"\nrollover_cap_hours = 5\n',
            "rollover_cap_hours is set but rollover = false",
        ),
        ("[clients.retainer]\nhours = -1\namount = \"1\"\n", "clients[0].retainer.hours = -1"),
        ("[clients.budget]\nalert_thresholds = [80]\n", "a budget needs hours or amount"),
        ("[clients.budget]\nhours = 10\nalert_thresholds = []\n", "alert_thresholds is empty"),
        ("[clients.budget]\nhours = 10\nalert_thresholds = [0]\n", "alert_thresholds[0] = 0"),
        ('[clients.budget]\nhours = 10\nper = "year"\n', "clients[0].budget.per = 'year'"),
        ("[clients.budget]\nhour = 10\n", "did you mean hours?"),
        (
            'cadence = "on_demand"\n[clients.retainer]\nhours = 4\namount = "1"\n',
            "a retainer is per billing period",
        ),
    ],
)
def test_retainer_and_budget_errors_name_the_setting(
    tmp_path: Path, section: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(_client_config(tmp_path, section))


def _client_config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "kanvoice.toml"
    path.write_text(
        '[[clients]]\nkey = "acme"\nstripe_customer_id = "cus_A"\ncurrency = "EUR"\n' + extra,
        encoding="utf-8",
    )
    return path
