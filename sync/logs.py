"""Structured logs: one JSON object a line (or readable lines in a terminal), with
anything that looks like a secret redacted before it is written."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

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


#: syslog priorities (sd-daemon(3)): what journald reads from a ``<N>`` line prefix.
PRIORITIES = {
    "debug": 7,
    "info": 6,
    "warning": 4,
    "warn": 4,
    "error": 3,
    "exception": 3,
    "critical": 2,
}


def journal_prefix_wanted(stream: TextIO | None = None) -> bool:
    """Whether lines should carry ``<N>`` priority prefixes.

    True when the stream is journald's: systemd sets ``$JOURNAL_STREAM`` to the
    ``device:inode`` of the journal stream it connected to stdout/stderr, and journald
    (``SyslogLevelPrefix=yes``, the default) turns the prefix into the entry's priority
    and strips it, so ``journalctl -p err`` finds errors and ``-o cat`` shows bare JSON.
    ``KANVOICE_LOG_PRIORITY_PREFIX=1`` / ``0`` forces it on / off. Elsewhere (a terminal,
    ``docker logs``) lines stay plain JSON.
    """
    forced = os.environ.get("KANVOICE_LOG_PRIORITY_PREFIX")
    if forced is not None:
        return forced.strip().lower() in ("1", "true", "yes", "on")
    journal = os.environ.get("JOURNAL_STREAM", "")
    stream = stream if stream is not None else sys.stderr
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return journal == f"{info.st_dev}:{info.st_ino}"


class LineLogger:
    """Writes one whole line per event and flushes it at once (journald and
    ``docker logs`` see each event live, never a block-buffered batch)."""

    def __init__(self, stream: TextIO, prefix: bool) -> None:
        self._stream = stream
        self._prefix = prefix
        self._lock = threading.Lock()

    def _write(self, level: str, message: str) -> None:
        line = f"<{PRIORITIES.get(level, 6)}>{message}" if self._prefix else message
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def __getattr__(self, level: str) -> Callable[[str], None]:
        if level.startswith("_"):
            raise AttributeError(level)
        return lambda message: self._write(level, message)


class PriorityFormatter(logging.Formatter):
    """The standard library's lines (uvicorn, apscheduler) get the same prefixes."""

    def __init__(self, prefix: bool) -> None:
        super().__init__("%(levelname)s %(name)s %(message)s")
        self._prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self._prefix:
            return text
        return f"<{PRIORITIES.get(record.levelname.lower(), 6)}>{text}"


def configure_logging(
    json_output: bool | None = None,
    level: int | None = None,
    *,
    stream: TextIO | None = None,
    priority_prefix: bool | None = None,
) -> None:
    """JSON lines on stderr when not on a terminal (systemd, containers); readable
    otherwise. Each line is flushed as written; under journald it carries a ``<N>``
    priority prefix (see `journal_prefix_wanted`)."""
    stream = stream if stream is not None else sys.stderr
    if level is None:
        # KANVOICE_LOG_LEVEL=debug shows tracebacks of failed jobs (default: info).
        name = os.environ.get("KANVOICE_LOG_LEVEL", "info").strip().upper()
        level = logging.getLevelNamesMapping().get(name, logging.INFO)
    if json_output is None:
        json_output = not stream.isatty()
    if priority_prefix is None:
        priority_prefix = journal_prefix_wanted(stream)
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    )
    line_logger = LineLogger(stream, priority_prefix)
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
        logger_factory=lambda *_args: line_logger,
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard logging module (uvicorn, apscheduler) write plain
    # lines at WARNING and above; their secrets never reach them.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(PriorityFormatter(priority_prefix))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def short_error(exc: BaseException, limit: int = 300) -> str:
    """One line for a log's ``error`` field: the exception's type and first message
    line, without the chain of causes (the traceback is logged at debug level)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        inner = short_error(exc.exceptions[0], limit)
        text = f"{text}: {inner}" if text else inner
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    line = redact_value(line)
    return line if len(line) <= limit else line[: limit - 1] + "…"
