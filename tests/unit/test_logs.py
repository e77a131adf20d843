"""Logs never carry secrets."""

from __future__ import annotations

import json

import structlog

from sync.logs import configure_logging, redact_secrets


def test_secret_keys_and_secret_shaped_values_are_redacted() -> None:
    event = redact_secrets(
        None,
        "info",
        {
            "event": "call failed",
            "api_key": "anything",
            "webhook_secret": "x",
            "error": "Invalid API Key provided: sk_live_abcdef123456 (whsec_abc123)",
            "slack": "token xoxb-1234-5678-abcd",
            "board": "acme-web",
        },
    )
    assert event["api_key"] == "[redacted]" and event["webhook_secret"] == "[redacted]"
    assert "sk_live_" not in event["error"] and "whsec_" not in event["error"]
    assert "xoxb-" not in event["slack"]
    assert event["board"] == "acme-web"


def test_json_lines(capsys: object) -> None:
    configure_logging(json_output=True)
    try:
        structlog.get_logger("t").info("hello", token="ghp_secretsecretsecretsecret00", n=1)
        err = capsys.readouterr().err  # type: ignore[attr-defined]
    finally:
        structlog.reset_defaults()
    line = json.loads(err.strip().splitlines()[-1])
    assert line["event"] == "hello" and line["n"] == 1 and line["token"] == "[redacted]"
