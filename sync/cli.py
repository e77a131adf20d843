"""The `kanvoice` command line (Typer + Rich). Every command takes -c/--config.

This module is the entry point: it defines the few top-level commands and gathers the
others from their modules (`sync.cli_boards`, `sync.cli_invoicing`, ...), which import
what they share from `sync.cli_common`, never this module. Each command runs exactly
one event loop (`sync.cli_common.run_command`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mapping.aging import parse_sort
from mapping.profitability import Dimension, profit_json, profitability
from sync import (
    checks,
    cli_boards,
    cli_finance,
    cli_invoicing,
    cli_reports,
    cli_review,
    cli_run,
)
from sync.cli_common import (
    EXIT_USAGE,
    ConfigOption,
    err,
    open_services,
    out,
    render_status,
    run_command,
    settings_from,
    wide_console,
)
from sync.cli_finance import finance_status_json, print_finance
from sync.conflicts import conflict_summary
from sync.demo import run_demo
from sync.finance import finance_view, sort_pipelines
from sync.ledger.reports import profit_entries
from sync.pipeline import client_pipelines
from sync.plans import client_plans
from sync.settings import Settings
from sync.snapshots_file import load_snapshot_file

app = typer.Typer(
    name="kanvoice",
    help="Turns finished work on your boards into approved Stripe invoices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The ledger database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


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
    try:
        order = parse_sort(sort)
    except ValueError as exc:
        err.print(f"[bold red]error:[/] --sort: {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None

    async def main() -> None:
        async with open_services(config, boards=False) as services:
            if lines is not None:
                cli_review.print_draft_lines(services, lines, as_json)
                return
            with services.ledger.read(services.clock()) as uow:
                pipelines = client_pipelines(uow, services.client_names())
                view = finance_view(
                    uow.conn, pipelines, services.clock(), services.settings.finance.timezone
                )
                pipelines = sort_pipelines(pipelines, view, order)
                plans = client_plans(
                    uow.conn, services.settings, [p.client for p in pipelines], services.clock()
                )
                conflicts = conflict_summary(uow.conn)
                by_client = profitability(profit_entries(uow.conn), Dimension.CLIENT)
        if as_json:
            print(
                json.dumps(
                    {
                        "clients": [p.as_dict() | plans.get(p.client, {}) for p in pipelines],
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
            print_finance(console, pipelines, view, plans)
            if by_client:
                console.print(cli_reports.profit_table("Profitability by client", by_client))

    run_command(main)


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="JSON file of board-item snapshots.")],
    config: ConfigOption = None,
) -> None:
    """Feed board snapshots from a file through the billing rules into the ledger."""

    async def main() -> None:
        settings = settings_from(config)  # a settings problem first, then the file's
        snapshots = load_snapshot_file(file)
        async with open_services(settings, boards=False) as services:
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

    run_command(main)


@app.command("check-config")
def check_config(
    config: ConfigOption = None,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Skip the checks that reach GitHub, Azure, Slack, Stripe."),
    ] = False,
) -> None:
    """Validate the settings, reach each service, and explain everything that is wrong."""

    async def main() -> None:
        settings = settings_from(config)
        out.print(
            f"[green]ok[/] settings: {len(settings.clients)} clients, "
            f"{len(settings.boards)} boards",
            highlight=False,
        )
        out.print(dashboard_access_line(settings), highlight=False)
        problems = await checks.run_checks(settings, _say, offline=offline)
        if problems:
            for problem in problems:
                err.print(f"[bold red]problem:[/] {problem}", highlight=False)
            err.print(f"{len(problems)} problem(s) found", highlight=False)
            raise typer.Exit(1)
        out.print("[green]all checks passed[/]", highlight=False)

    run_command(main)


def dashboard_access_line(settings: Settings) -> str:
    """Who can use the dashboard (nobody, this host only, credential holders), one line."""
    from sync.web.dashboard import access_note  # the web stack, only when asked

    level, note = access_note(settings.server)
    return f"[yellow]warning:[/] {note}" if level == "warning" else f"[green]ok[/] {note}"


def _say(line: str) -> None:
    out.print(f"[green]ok[/] {line}" if not line.startswith("note:") else line, highlight=False)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply the ledger's schema migrations (also done on every start)."""

    async def main() -> None:
        async with open_services(config, boards=False) as services:
            out.print(f"ledger at schema {services.ledger.current_revision()}", highlight=False)

    run_command(main)


@app.command()
def demo(
    config: ConfigOption = None,
    fast: Annotated[
        bool, typer.Option(help="Play the whole story at once, print the pipeline, exit.")
    ] = False,
    port: Annotated[int, typer.Option(help="Dashboard port (loopback only).")] = 8765,
) -> None:
    """The whole flow offline: simulated boards, fake Stripe, dashboard approvals."""
    if config is not None:
        err.print("note: the demo uses its own built-in settings; --config is ignored")

    async def main() -> None:
        await run_demo(out, fast=fast, port=port)

    run_command(main)


# The commands defined in their own modules.
for _commands in (
    cli_boards.commands,
    cli_finance.commands,
    cli_invoicing.commands,
    cli_reports.commands,
    cli_review.commands,
    cli_run.commands,
):
    app.add_typer(_commands)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
