"""Logs an operator can read: whole lines flushed at once, journald priorities, and one
short `job.failed` line for a board that is down (its traceback only at debug)."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import structlog

from connectors.base import RetriableError
from sync.logs import PriorityFormatter, configure_logging, journal_prefix_wanted, short_error


class RecordingStream(io.StringIO):
    """Remembers what had been written at each flush."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[str] = []

    def flush(self) -> None:
        self.flushed.append(self.getvalue())
        super().flush()

    def isatty(self) -> bool:
        return False


@pytest.fixture(autouse=True)
def _reset_structlog() -> Any:
    yield
    structlog.reset_defaults()


def test_each_json_line_is_flushed_as_it_is_written() -> None:
    stream = RecordingStream()
    configure_logging(stream=stream, priority_prefix=False)
    log = structlog.get_logger("t")
    log.info("first", n=1)
    log.warning("second", n=2)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["first", "second"]
    # After each event its whole line had been flushed, before the next one was written.
    assert stream.flushed[0].count("\n") == 1 and stream.flushed[0].endswith("\n")
    assert stream.flushed[1].count("\n") == 2


def test_journald_priority_prefixes_for_structlog_and_stdlib_lines() -> None:
    stream = RecordingStream()
    configure_logging(stream=stream, priority_prefix=True)
    log = structlog.get_logger("t")
    log.debug("hidden")  # below the default level
    log.info("i")
    log.warning("w")
    log.error("e")
    lines = stream.getvalue().splitlines()
    assert [line[:3] for line in lines] == ["<6>", "<4>", "<3>"]
    assert json.loads(lines[2][3:])["event"] == "e"
    record = logging.LogRecord("uvicorn.error", logging.ERROR, "x", 1, "boom", None, None)
    assert PriorityFormatter(True).format(record) == "<3>ERROR uvicorn.error boom"
    assert PriorityFormatter(False).format(record) == "ERROR uvicorn.error boom"


def test_prefix_only_on_journald_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KANVOICE_LOG_PRIORITY_PREFIX", raising=False)
    with (tmp_path / "stream").open("w") as stream:
        info = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        assert journal_prefix_wanted(stream) is True
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino + 1}")
        assert journal_prefix_wanted(stream) is False  # e.g. inherited, stderr redirected
        monkeypatch.delenv("JOURNAL_STREAM")
        assert journal_prefix_wanted(stream) is False  # docker logs, a terminal
        monkeypatch.setenv("KANVOICE_LOG_PRIORITY_PREFIX", "1")
        assert journal_prefix_wanted(stream) is True


def _board_down() -> Exception:
    try:
        try:
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except OSError as exc:
                raise OSError("All connection attempts failed") from exc
        except OSError as exc:
            raise RetriableError(
                "github board 'acme-web': GitHub unreachable: All connection attempts failed"
            ) from exc
    except RetriableError as exc:
        return exc


def test_short_error_is_one_line_without_the_chain() -> None:
    assert short_error(_board_down()) == (
        "RetriableError: github board 'acme-web': GitHub unreachable: All connection "
        "attempts failed"
    )
    group = ExceptionGroup("unhandled errors in a TaskGroup", [ValueError("bad\nsecond")])
    assert short_error(group) == (
        "ExceptionGroup: unhandled errors in a TaskGroup (1 sub-exception): ValueError: bad"
    )
    assert len(short_error(ValueError("x" * 5000))) == 300


async def test_a_board_that_is_down_logs_one_short_line(tmp_path: Path) -> None:
    from sync.composition import build_services
    from sync.daemon import Daemon
    from sync.settings import load_settings

    config = tmp_path / "kanvoice.toml"
    config.write_text(f'[ledger]\nurl = "sqlite:///{tmp_path / "l.db"}"\n')
    services = build_services(load_settings(config), boards=False)
    try:
        daemon = Daemon(services, object())
        daemon.leader.is_leader = True  # type: ignore[misc]

        async def poll() -> None:
            raise _board_down()

        stream = RecordingStream()
        configure_logging(stream=stream, priority_prefix=False)
        job = daemon._job("poll:acme-web", poll)
        await job()
        await job()
        lines = stream.getvalue().splitlines()
        assert len(lines) == 2
        event = json.loads(lines[0])
        assert event["event"] == "job.failed" and event["level"] == "error"
        assert event["board"] == "acme-web" and event["job"] == "poll:acme-web"
        assert event["error"].startswith("RetriableError: github board 'acme-web'")
        assert "exception" not in event and len(lines[0]) < 500

        stream = RecordingStream()
        configure_logging(stream=stream, level=logging.DEBUG, priority_prefix=False)
        await job()
        debug = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [e["event"] for e in debug] == ["job.failed", "job.failed.traceback"]
        assert "ConnectionRefusedError" in debug[1]["exception"]
    finally:
        services.close()
