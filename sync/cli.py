"""The `kanvoice` command line (Typer + Rich). Every command takes -c/--config."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from mapping.domain import EntryState
from mapping.money import Money
from mapping.profitability import Dimension, profit_json, profitability
from sync.composition import Services, build_services
from sync.conflicts import conflict_summary
from sync.engine import UnknownBoardError
from sync.ledger.reports import profit_entries
from sync.pipeline import STAGES, ClientPipeline, client_pipelines
from sync.settings import ConfigError, Settings, load_settings
from sync.snapshots_file import SnapshotFileError, load_snapshot_file

app = typer.Typer(
    name="kanvoice",
    help="Turns finished work on your boards into approved Stripe invoices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The ledger database.", no_args_is_help=True)
app.add_typer(db_app, name="db")

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


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("kanvoice")
        except PackageNotFoundError:
            installed = "unknown (not installed)"
        print(f"kanvoice {installed}")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version, exit."
        ),
    ] = False,
) -> None:
    """Turns finished work on your boards into approved Stripe invoices."""


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


@contextmanager
def _errors() -> Iterator[None]:
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


def _settings(config: Path | None) -> Settings:
    return load_settings(config)


@contextmanager
def _services(config: Path | None, *, boards: bool = True) -> Iterator[Services]:
    services = build_services(_settings(config), boards=boards)
    try:
        yield services
    finally:
        services.close()


def _cell(hours: Any, amount: Any, currency: str, with_money: bool = True) -> str:
    if not with_money:
        return f"{hours} h"
    return f"{hours} h\n{Money(amount, currency).quantized().amount:,} {currency}"


def render_status(pipelines: list[ClientPipeline]) -> Table:
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


@app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    lines: Annotated[
        str | None,
        typer.Option(
            "--lines",
            metavar="CLIENT",
            help="The client's open drafts line by line (as GET /api/invoices/{id}).",
        ),
    ] = None,
    sort: Annotated[
        str,
        typer.Option(
            "--sort",
            metavar="client|gap|age",
            help="Order clients by key, by unbilled gap (per currency) or by oldest ready work.",
        ),
    ] = "client",
) -> None:
    """The billing pipeline per client: in progress, ready, drafted, invoiced, paid;
    totals per currency, ready work by age, overdue invoices."""
    from mapping.aging import parse_sort
    from sync.cli_finance import finance_status_json, print_finance
    from sync.finance import finance_view, sort_pipelines

    try:
        order = parse_sort(sort)
    except ValueError as exc:
        err.print(f"[bold red]error:[/] --sort: {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    if lines is not None:
        from sync.cli_review import print_draft_lines

        with _errors(), _services(config, boards=False) as services:
            print_draft_lines(services, lines, as_json)
        return
    with _errors(), _services(config, boards=False) as services:
        with services.ledger.read(services.clock()) as uow:
            pipelines = client_pipelines(uow, services.client_names())
            view = finance_view(
                uow.conn, pipelines, services.clock(), services.settings.finance.timezone
            )
            pipelines = sort_pipelines(pipelines, view, order)
            conflicts = conflict_summary(uow.conn)
            by_client = profitability(profit_entries(uow.conn), Dimension.CLIENT)
        if as_json:
            print(
                json.dumps(
                    {
                        "clients": [p.as_dict() for p in pipelines],
                        **finance_status_json(pipelines, view),
                        "snapshot_conflicts": conflicts,
                        "profitability": [profit_json(p) for p in by_client],
                    },
                    indent=2,
                )
            )
        else:
            console = wide_console()
            console.print(render_status(pipelines))
            print_finance(console, pipelines, view)
            if by_client:
                from sync.cli_reports import profit_table

                console.print(profit_table("Profitability by client", by_client))


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="JSON file of board-item snapshots.")],
    config: ConfigOption = None,
) -> None:
    """Feed board snapshots from a file through the billing rules into the ledger."""
    with _errors():
        settings = _settings(config)
        snapshots = load_snapshot_file(file)
        with _services(config, boards=False) as services:
            services.engine.check(snapshots)
            report = services.engine.ingest(snapshots)
        for line in report.changes:
            out.print(f"  {line}", highlight=False)
        out.print(
            f"{report.seen} snapshots: {report.items_new} new items, "
            f"{report.items_updated} updated, {report.skipped} unchanged; "
            f"{report.entries_created} entries created, {report.state_changes} state changes",
            highlight=False,
        )
        for conflict in report.conflicts:
            out.print(
                f"  conflict: {conflict.item_key} revision {conflict.revision} seen twice with "
                f"different content: {conflict.resolution}",
                highlight=False,
            )
        del settings


@app.command("check-config")
def check_config(
    config: ConfigOption = None,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Skip the checks that reach GitHub, Azure, Slack, Stripe."),
    ] = False,
) -> None:
    """Validate the settings, reach each service, and explain everything that is wrong."""
    with _errors():
        settings = _settings(config)
        out.print(
            f"[green]ok[/] settings: {len(settings.clients)} clients, "
            f"{len(settings.boards)} boards",
            highlight=False,
        )
        out.print(dashboard_access_line(settings), highlight=False)
        problems = run_checks(settings, offline=offline)
        if problems:
            for problem in problems:
                err.print(f"[bold red]problem:[/] {problem}", highlight=False)
            err.print(f"{len(problems)} problem(s) found", highlight=False)
            raise typer.Exit(1)
        out.print("[green]all checks passed[/]", highlight=False)


def dashboard_access_line(settings: Settings) -> str:
    """Who can use the dashboard (nobody, this host only, credential holders), one line."""
    from sync.web.dashboard import access_note

    level, note = access_note(settings.server)
    return f"[yellow]warning:[/] {note}" if level == "warning" else f"[green]ok[/] {note}"


CheckFn = Callable[[Settings], list[str]]
#: Settings-only checks added by other modules (prefer `sync.checks.check`).
EXTRA_CHECKS: list[CheckFn] = []


def _say(line: str) -> None:
    out.print(f"[green]ok[/] {line}" if not line.startswith("note:") else line, highlight=False)


def run_checks(settings: Settings, *, offline: bool = False) -> list[str]:
    """Every check of `sync.checks` (the network ones unless offline), then EXTRA_CHECKS."""
    from sync import checks

    problems = checks.run_checks(settings, _say, offline=offline)
    for extra in EXTRA_CHECKS:
        problems.extend(extra(settings))
    return problems


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply the ledger's schema migrations (also done on every start)."""
    with _errors(), _services(config, boards=False) as services:
        out.print(f"ledger at schema {services.ledger.current_revision()}", highlight=False)


@app.command()
def demo(
    config: ConfigOption = None,
    fast: Annotated[
        bool, typer.Option(help="Play the whole story at once, print the pipeline, exit.")
    ] = False,
    port: Annotated[int, typer.Option(help="Dashboard port (loopback only).")] = 8765,
) -> None:
    """The whole flow offline: simulated boards, fake Stripe, dashboard approvals."""
    from sync.demo import run_demo

    with _errors():
        if config is not None:
            err.print("note: the demo uses its own built-in settings; --config is ignored")
        run_demo(out, fast=fast, port=port)


def main() -> None:
    app()


if __name__ == "__main__":
    main()


# Commands defined in their own modules register themselves on `app` when imported.
from sync import (  # noqa: E402,F401
    cli_boards,
    cli_finance,
    cli_invoicing,
    cli_reports,
    cli_review,
    cli_run,
)
