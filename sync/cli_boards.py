"""`kanvoice sync --once`: one poll of every board (or one), printing what changed."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import structlog
import typer

from connectors.base import ConnectorError, FatalError
from sync.boards import BoardSyncReport, sync_all
from sync.cli_common import (
    EXIT_USAGE,
    CliError,
    ConfigOption,
    err,
    open_services,
    out,
    run_command,
)
from sync.composition import Services

commands = typer.Typer()


class _StderrLogger:
    """Writes each rendered line to the current stderr (looked up at every call)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """Unless logging is configured: no structlog lines in the report (the command prints
    each board's error itself); only critical ones, on stderr."""
    if structlog.is_configured():
        yield
        return

    def factory(*_args: Any) -> _StderrLogger:
        return _StderrLogger()

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.reset_defaults()


def _boards_to_poll(services: Services, board: str | None) -> list[str]:
    if board is None:
        return list(services.connectors)
    configured = {b.key: b.source for b in services.settings.boards}
    if board not in configured:
        raise CliError(
            f"--board {board!r}: no such board (configured: {sorted(configured) or 'none'})"
        )
    if board not in services.connectors:
        raise CliError(
            f"--board {board!r}: a {configured[board]} board has nothing to poll "
            "(only github and azure_devops boards are polled)"
        )
    return [board]


def _summary(report: BoardSyncReport) -> str:
    return (
        f"{report.board}: {report.seen} items seen in {report.requests_made} requests: "
        f"{report.items_new} new, {report.items_updated} updated, {report.skipped} unchanged; "
        f"{report.entries_created} entries created, {report.state_changes} state changes"
    )


@commands.command("sync")
def sync_command(
    once: Annotated[
        bool, typer.Option("--once", help="Poll every board once, print what changed, exit.")
    ] = False,
    board: Annotated[
        str | None, typer.Option("--board", help="Poll only this board (its key).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """One poll of every GitHub / Azure DevOps board; prints what changed."""
    if not once:
        err.print(
            "[bold red]error:[/] continuous polling is `kanvoice run`; "
            "use `kanvoice sync --once` for a single poll",
            highlight=False,
        )
        raise typer.Exit(EXIT_USAGE)

    async def main() -> int:
        failed = 0
        async with open_services(config) as services:
            keys = _boards_to_poll(services, board)
            if not keys:
                out.print("no github or azure_devops boards are configured: nothing to poll")
                return 0
            with _quiet_logs():
                results = await sync_all(services, keys)
        for key, result in results.items():
            if isinstance(result, ConnectorError):
                failed += 1
                kind = "fatal" if isinstance(result, FatalError) else "retry later"
                err.print(f"[bold red]{key}: failed ({kind}):[/] {result}", highlight=False)
                continue
            for line in result.changes:
                out.print(f"  {line}", highlight=False)
            out.print(_summary(result), highlight=False)
        out.print(
            f"{len(results) - failed} of {len(results)} boards synced"
            + (f", {failed} failed" if failed else ""),
            highlight=False,
        )
        return failed

    if run_command(main):
        raise typer.Exit(1)
