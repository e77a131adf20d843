"""`kanvoice status --lines CLIENT` and `kanvoice audit`: reviewing from a terminal, the
same rows as `GET /api/invoices/{id}` and `GET /api/audit` (`sync.review`)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from mapping.review import parse_since
from sync.cli_common import (
    CliError,
    ConfigOption,
    open_services,
    out,
    run_command,
    wide_console,
)
from sync.composition import Services
from sync.review import Review

commands = typer.Typer()


def _review(services: Services) -> Review:
    return Review(services.desk)


def print_draft_lines(services: Services, client: str, as_json: bool) -> None:
    """Every open draft of `client` with its lines, totals, tax and Stripe link."""
    try:
        services.settings.client(client)
    except KeyError:
        known = [c.key for c in services.settings.clients]
        raise CliError(f"unknown client {client!r}: expected one of {known}") from None
    drafts = _review(services).open_drafts(client)
    if as_json:
        print(json.dumps({"client": client, "drafts": drafts}, indent=2, default=str))
        return
    if not drafts:
        out.print(f"{client}: no open drafts", highlight=False)
        return
    console = wide_console()
    for d in drafts:
        state = f"approved by {d['approved_by']}" if d["approved_by"] else "draft"
        table = Table(
            title=f"Invoice {d['id']} · {d['client_name']} · {d['period']} · {state} · "
            f"version {d['version']}",
            show_lines=False,
        )
        for column, justify in (
            ("Line", "right"),
            ("Item", "left"),
            ("Board · sprint", "left"),
            ("Person", "left"),
            ("Hours", "right"),
            ("Rate", "right"),
            ("Amount", "right"),
            ("State", "left"),
            ("Flags", "left"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for line in d["lines"]:
            table.add_row(*_line_cells(line, d["currency"]))
        console.print(table)
        sending = "emailed on approval" if d["auto_send"] else "not emailed (auto-send off)"
        console.print(
            f"  total {_money(d['total'], d['currency'])} before tax; {d['tax']['note']}; "
            f"{sending}",
            highlight=False,
        )
        console.print(f"  Stripe: {d['stripe_url'] or 'not on Stripe yet'}", highlight=False)


def _money(amount: str, currency: str) -> str:
    from sync.web.dashboard import format_money

    return format_money(amount, currency)


def _line_cells(line: dict[str, Any], currency: str) -> list[str]:
    rate = (
        f"{_money(line['rate'], currency)}/h"
        if line["rate"] is not None and line["kind"] == "time"
        else ("fixed price" if line["kind"] == "milestone" else "-")
    )
    return [
        str(line["entry_id"]),
        f"{line['title']} ({line['item']})\n{line['url']}",
        f"{line['board']} · {line['sprint'] or 'no sprint'}",
        ", ".join(line["people"]) or "-",
        f"{line['hours']} h",
        rate,
        _money(line["amount"], currency),
        line["state"],
        ", ".join(line["flags"]) or "-",
    ]


@commands.command()
def audit(
    config: ConfigOption = None,
    client: Annotated[str | None, typer.Option(help="Only this client's rows.")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="From this date (2026-12-01, in finance.timezone) or ISO time."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (as GET /api/audit).")
    ] = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Print CSV (as the dashboard's export).")
    ] = False,
) -> None:
    """Who did what, when and why: the audit log (decisions, adjustments, Stripe)."""

    async def main() -> None:
        async with open_services(config, boards=False) as services:
            review = _review(services)
            try:
                start = parse_since(since, review.zone) if since else None
            except ValueError as exc:
                raise CliError(f"--since: {exc}") from None
            if as_csv:
                sys.stdout.write(review.audit_csv(client, start))
                return
            rows = review.audit_log(client, start)
            if as_json:
                print(json.dumps({"rows": rows}, indent=2, default=str))
                return
            table = Table(title=f"Audit log ({review.zone})")
            for column in ("When", "Who", "What", "Invoice", "Client", "Why / detail"):
                table.add_column(column)
            for row in rows:
                invoice = "" if row["invoice_id"] is None else str(row["invoice_id"])
                if row["number"]:
                    invoice += f" ({row['number']})"
                why = row["reason"] or _detail(row["detail"])
                table.add_row(
                    row["at_local"],
                    row["actor"],
                    row["action"],
                    invoice or row["subject"],
                    row["client"] or "-",
                    why,
                )
            wide_console().print(table)
            if not rows:
                out.print("no audit rows match", highlight=False)

    run_command(main)


def _detail(detail: dict[str, Any]) -> str:
    shown = {k: v for k, v in detail.items() if k not in ("changes",)}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))[:200]
