"""What every `kanvoice` command shares: the consoles, the -c/--config option, the
one-line user errors, the services of one command and its one event loop.

The command modules (`sync.cli_*`, `sync.demo`) import this module, never `sync.cli`:
`sync.cli` only gathers their commands, so nothing imports the entry point back.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from mapping.domain import EntryState
from mapping.money import Money
from sync.composition import Services, build_services
from sync.engine import UnknownBoardError
from sync.pipeline import STAGES, ClientPipeline
from sync.settings import ConfigError, Settings, load_settings
from sync.snapshots_file import SnapshotFileError

_T = TypeVar("_T")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "-c",
        "--config",
        help="TOML settings file (default: ./kanvoice.toml or $KANVOICE_CONFIG).",
        dir_okay=False,
    ),
]

EXIT_USAGE = 2


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


@contextmanager
def errors() -> Iterator[None]:
    """One clear line on stderr for every problem a user can fix; no tracebacks."""
    try:
        yield
    except (ConfigError, SnapshotFileError, UnknownBoardError, CliError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        err.print(f"[bold red]error:[/] the ledger is unreachable: {reason}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except SQLAlchemyError as exc:
        err.print(
            f"[bold red]error:[/] ledger error: {exc.__class__.__name__}: {exc}", highlight=False
        )
        raise typer.Exit(1) from None


def run_command(main: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run one command: exactly one event loop (`asyncio.run`) around its async `main`,
    user errors printed as one line. The only `asyncio.run` of the CLI
    (`tests/unit/test_layering.py` checks): every client and ledger engine a command
    opens is opened and closed inside this loop (`open_services`)."""
    with errors():
        return asyncio.run(main())


def settings_from(config: Path | None) -> Settings:
    return load_settings(config)


@asynccontextmanager
async def open_services(
    config: Path | Settings | None, *, boards: bool = True
) -> AsyncIterator[Services]:
    """The composition root's services for one command, closed (HTTP clients, then the
    ledger engine) when it ends, inside the command's event loop."""
    settings = config if isinstance(config, Settings) else settings_from(config)
    services = build_services(settings, boards=boards)
    try:
        yield services
    finally:
        await services.aclose()


def wide_console() -> Console:
    """The terminal's width (``$COLUMNS`` wins); 160 columns when piped to no terminal."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        width = int(columns)
    elif out.is_terminal:
        width = out.width
    else:
        width = 160
    return Console(width=width)


def _cell(hours: Decimal, amount: Decimal, currency: str, with_money: bool = True) -> str:
    if not with_money:
        return f"{hours} h"
    return f"{hours} h\n{Money(amount, currency).quantized().amount:,} {currency}"


def render_status(pipelines: list[ClientPipeline]) -> Table:
    """The billing pipeline per client (`kanvoice status`, `kanvoice demo --fast`)."""
    table = Table(title="Billing pipeline", show_lines=True)
    table.add_column("Client", style="bold")
    labels = {
        EntryState.IN_PROGRESS: "In progress",
        EntryState.READY: "Ready to bill",
        EntryState.DRAFTED: "Drafted",
        EntryState.APPROVED: "Approved",
        EntryState.INVOICED: "Invoiced",
        EntryState.PAID: "Paid",
        EntryState.NEEDS_REVIEW: "Needs review",
        EntryState.NON_BILLABLE: "Non-billable (cost)",
    }
    for state in STAGES:
        table.add_column(labels[state], justify="right")
    table.add_column("Unbilled gap", justify="right", style="bold yellow")
    for p in pipelines:
        cells = [
            _cell(p.stage(s).hours, p.stage(s).amount, p.currency, s is not EntryState.NON_BILLABLE)
            for s in STAGES
        ]
        table.add_row(f"{p.name}\n({p.client})", *cells, str(p.unbilled_gap))
    return table
