"""Setting errors a user can act on: the closest key for a typo, plain URL errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.settings import ConfigError, load_settings

CLIENT = '[[clients]]\nkey = "a"\nstripe_customer_id = "cus_1"\ncurrency = "EUR"\n'


def _error(tmp_path: Path, body: str) -> str:
    path = tmp_path / "kanvoice.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            CLIENT + '[[boards]]\nkey = "b"\nsource = "file"\nclient = "a"\nhour_field = "H"\n',
            "boards[0].hour_field: unknown setting (did you mean hours_field?)",
        ),
        ('[ledgr]\nurl = "x"\n', "ledgr: unknown setting (did you mean ledger?)"),
        ("[stripe]\napi_keys = 1\n", "stripe.api_keys: unknown setting (did you mean api_key?)"),
        (
            '[slack]\nzzz = "x"\n',
            "slack.zzz: unknown setting (check the spelling against config.example.toml)",
        ),
    ],
)
def test_unknown_setting_suggests_the_closest_key(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in _error(tmp_path, body)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (
            CLIENT + '[[boards]]\nkey = "b"\nsource = "azure_devops"\nclient = "a"\n'
            '[boards.azure_devops]\norganization_url = "dev.azure.com/x"\nproject = "P"\n',
            "boards[0].azure_devops.organization_url = 'dev.azure.com/x'",
        ),
        ('[stripe]\napi_base = "api.stripe.com"\n', "stripe.api_base = 'api.stripe.com'"),
        ('[server]\npublic_url = "ftp://x"\n', "server.public_url = 'ftp://x'"),
    ],
)
def test_url_errors_say_what_is_expected(tmp_path: Path, body: str, key: str) -> None:
    message = _error(tmp_path, body)
    assert f"{key}: expected an http(s) URL" in message
    assert "pattern" not in message and "^https" not in message
