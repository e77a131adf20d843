"""Structured logs: one JSON object a line (or readable lines in a terminal), with
anything that looks like a secret redacted before it is written."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = re.compile(r"(secret|token|password|api_key|authorization|signature|pat)$", re.I)
_SECRET_VALUES = re.compile(
    r"\b(sk|rk)_(test|live)_[A-Za-z0-9]+|\bwhsec_[A-Za-z0-9]+|\bxox[abposr]-[A-Za-z0-9-]+"
    r"|\bxapp-[A-Za-z0-9-]+|\bgh[pousr]_[A-Za-z0-9]{20,}"
)


def redact_value(value: str) -> str:
    return _SECRET_VALUES.sub("[redacted]", value)


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Drop values of secret-named keys and mask secret-shaped strings anywhere."""
    for key, value in list(event_dict.items()):
        if _SECRET_KEYS.search(key):
            event_dict[key] = "[redacted]"
        elif isinstance(value, str):
            event_dict[key] = redact_value(value)
    return event_dict


def configure_logging(json_output: bool | None = None, level: int = logging.INFO) -> None:
    """JSON lines when not on a terminal (systemd, containers); readable otherwise."""
    if json_output is None:
        json_output = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard logging module (uvicorn, apscheduler) write plain
    # lines at WARNING and above; their secrets never reach them.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
