"""`kanvoice report profitability`: revenue, cost, margin and effective hourly rate per
client, board, sprint and person, and what each fixed-price milestone made or lost."""

from __future__ import annotations

import csv
import io
import sys
from datetime import date, datetime
from typing import Annotated

import typer
from rich.table import Table

from mapping.profitability import (
    CSV_HEADER,
    Dimension,
    MilestoneResult,
    Profit,
    ProfitEntry,
    ProfitFilter,
    csv_row,
    milestones,
    profitability,
)
from sync.cli_common import CliError, ConfigOption, open_services, run_command, wide_console
from sync.ledger.reports import profit_entries

report_app = typer.Typer(help="Reports on what the ledger holds.", no_args_is_help=True)
commands = typer.Typer()
commands.add_typer(report_app, name="report")


def _date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise CliError(f"{option} {value!r}: expected a date such as 2026-11-30") from None


def profit_csv(entries: list[ProfitEntry], dimensions: list[Dimension], where: ProfitFilter) -> str:
    """The report as CSV: one row per group (and one per milestone, dimension
    `milestone`, key the item)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for dimension in dimensions:
        for profit in profitability(entries, dimension, where):
            writer.writerow(csv_row(profit))
    for result in milestones(entries, where):
        writer.writerow(csv_row(_keyed(result), "milestone"))
    return buffer.getvalue()


def _keyed(result: MilestoneResult) -> Profit:
    from dataclasses import replace

    return replace(result.profit, key=f"{result.board} {result.title}")


def profit_table(title: str, rows: list[Profit]) -> Table:
    table = Table(title=title)
    for name in ("", "Hours", "Revenue", "Cost", "Margin", "Margin %", "Effective rate"):
        table.add_column(name, justify="left" if not name else "right")
    for p in rows:
        rate = p.effective_rate
        pct = p.margin_percent
        hours = f"{p.hours}" + (f" ({p.uncosted_hours} uncosted)" if p.uncosted_hours else "")
        table.add_row(
            p.key,
            hours,
            f"{p.revenue.amount:,} {p.currency}",
            f"{p.cost.amount:,} {p.currency}",
            f"{p.margin.amount:,} {p.currency}",
            f"{pct}%" if pct is not None else "-",
            f"{rate.amount:,} {p.currency}/h" if rate is not None else "-",
        )
    return table


def milestone_table(results: list[MilestoneResult]) -> Table:
    table = Table(title="Fixed-price milestones")
    for name in ("Milestone", "Hours", "Price", "Cost", "Margin", "Result"):
        table.add_column(name, justify="left" if name in ("Milestone", "Result") else "right")
    for m in results:
        p = m.profit
        table.add_row(
            f"{m.board} {m.title}",
            str(p.hours),
            f"{p.revenue.amount:,} {p.currency}",
            f"{p.cost.amount:,} {p.currency}",
            f"{p.margin.amount:,} {p.currency}",
            "made money" if p.made_money else "[bold red]lost money[/]",
        )
    return table


@report_app.command("profitability")
def profitability_report(
    config: ConfigOption = None,
    client: Annotated[str | None, typer.Option("--client", help="Only this client.")] = None,
    board: Annotated[str | None, typer.Option("--board", help="Only this board.")] = None,
    sprint: Annotated[
        str | None, typer.Option("--sprint", help="Only this sprint (iteration path/title).")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="Done on or after this day (YYYY-MM-DD).")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Done on or before this day (YYYY-MM-DD).")
    ] = None,
    by: Annotated[
        list[Dimension] | None,
        typer.Option("--by", help="Group by client, board, sprint or person (repeatable)."),
    ] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of tables.")] = False,
) -> None:
    """Revenue, cost, margin and effective hourly rate (revenue / every hour counted)."""

    async def main() -> None:
        where = ProfitFilter(client, board, sprint, _date(start, "--from"), _date(end, "--to"))
        if where.start and where.end and where.start > where.end:
            raise CliError(f"--from {start} is after --to {end}")
        dimensions = list(dict.fromkeys(by or list(Dimension)))
        async with open_services(config, boards=False) as services:
            clients = [c.key for c in services.settings.clients]
            if client is not None and client not in clients:
                _unknown("--client", client, clients)
            boards = [b.key for b in services.settings.boards]
            if board is not None and board not in boards:
                _unknown("--board", board, boards)
            with services.ledger.read(services.clock()) as uow:
                entries = profit_entries(uow.conn, client)
        if as_csv:
            sys.stdout.write(profit_csv(entries, dimensions, where))
            return
        console = wide_console()
        for dimension in dimensions:
            console.print(
                profit_table(
                    f"Profitability by {dimension.value}", profitability(entries, dimension, where)
                )
            )
        results = milestones(entries, where)
        if results:
            console.print(milestone_table(results))

    run_command(main)


def _unknown(option: str, value: str, known: list[str]) -> None:
    raise CliError(f"{option} {value!r}: expected one of {known or '(none configured)'}")
