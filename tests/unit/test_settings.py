"""Settings: the example file, the environment, secret files, and clear errors."""

from __future__ import annotations

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
