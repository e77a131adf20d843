"""`kanvoice check-config` reaches Stripe: customers exist, currencies match."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sync.cli import app
from tests.stripe_support import API_KEY, fake_stripe


def test_check_config_confirms_customers_and_currencies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fake_stripe({"acme": "eur", "globex": "usd"}) as world:
        config = tmp_path / "kanvoice.toml"
        config.write_text(
            f"""
[ledger]
url = "sqlite:///{tmp_path / "l.db"}"
[stripe]
api_base = "{world.base_url}"
[[clients]]
key = "acme"
stripe_customer_id = "{world.customers["acme"]}"
currency = "EUR"
[[clients]]
key = "globex"
stripe_customer_id = "{world.customers["globex"]}"
currency = "GBP"
[[clients]]
key = "ghost"
stripe_customer_id = "cus_DoesNotExist1"
currency = "EUR"
"""
        )
        monkeypatch.setenv("KANVOICE_STRIPE__API_KEY", API_KEY)
        result = CliRunner().invoke(app, ["check-config", "-c", str(config)])
        assert result.exit_code == 1, result.output
        assert f"ok Stripe customer {world.customers['acme']} (acme)" in result.output
        assert "clients[1].stripe_customer_id" in result.output
        assert "Stripe bills this customer in USD, the settings say GBP" in result.output
        assert "clients[2].stripe_customer_id = 'cus_DoesNotExist1'" in result.output
        assert "No such customer" in result.output

        monkeypatch.setenv("KANVOICE_STRIPE__API_KEY", "sk_test_wrong")
        result = CliRunner().invoke(app, ["check-config", "-c", str(config)])
        assert result.exit_code == 1
        assert "stripe.api_key: Stripe refused the API key" in result.output
