"""`kanvoice digest`, and the totals per currency, aging and overdue tables that
`kanvoice status` prints under the pipeline."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from connectors.slack.messages import digest_plain, format_hours, format_money
from mapping.aging import BUCKETS
from sync.cli_common import CliError, ConfigOption, open_services, out, run_command
from sync.finance import FinanceView, aging_json, compose_digest, finance_json, queue_digest
from sync.pipeline import STAGES, ClientPipeline


def totals_table(view: FinanceView) -> Table:
    """One row per currency: every stage and the unbilled gap, never summed across."""
    table = Table(title="Totals per currency", show_lines=False)
    table.add_column("Currency", style="bold")
    table.add_column("Clients", justify="right")
    for state in STAGES:
        table.add_column(state.value.replace("_", " "), justify="right")
    table.add_column("Unbilled gap", justify="right", style="bold yellow")
    for total in view.totals:
        table.add_row(
            total.currency,
            str(total.clients),
            *(format_money(total.amounts[s].amount, total.currency) for s in STAGES),
            format_money(total.gap.amount, total.currency),
        )
    return table


def aging_table(pipelines: list[ClientPipeline], view: FinanceView) -> Table:
    """Ready-to-bill work per client by days since Done, and its oldest entry."""
    table = Table(title=f"Ready to bill by age (days since Done, as of {view.today})")
    table.add_column("Client", style="bold")
    table.add_column("Unbilled gap", justify="right")
    table.add_column("Oldest", justify="right")
    for bucket in BUCKETS:
        table.add_column(bucket.label, justify="right")
    for p in pipelines:
        aging = view.aging_of(p)
        oldest = "—" if aging.oldest_days is None else f"{aging.oldest_days} d"
        table.add_row(
            f"{p.name} ({p.client})",
            format_money(p.unbilled_gap.amount, p.currency),
            oldest,
            *(format_money(aging.bucket(b).amount, aging.currency) for b in BUCKETS),
        )
    return table


def overdue_table(view: FinanceView) -> Table:
    table = Table(title="Overdue invoices")
    for name in ("Invoice", "Client", "Amount", "Due", "Days overdue", "Reminders"):
        table.add_column(name, justify="right" if name in ("Amount", "Days overdue") else "left")
    for o in view.overdue:
        table.add_row(
            o.number or f"#{o.invoice_id}",
            o.client_name,
            format_money(o.amount.amount, o.amount.currency),
            o.due_date.date().isoformat() if o.due_date else "—",
            str(o.days_overdue),
            str(o.reminders),
        )
    return table


def _hours(text: str) -> str:
    return format_hours(Decimal(text))


def retainers_table(pipelines: list[ClientPipeline], plans: dict[str, dict[str, Any]]) -> Table:
    """Each retainer in its current period: hours used of those available (included
    plus rolled over), overage beyond them, and the share of the fixed line used."""
    table = Table(title="Retainers (current period)")
    for name in ("Client", "Period", "Used", "Available", "Included", "Rolled over"):
        table.add_column(name, justify="left" if name in ("Client", "Period") else "right")
    for name in ("Overage", "%", "Value used"):
        table.add_column(name, justify="right")
    for p in pipelines:
        r = plans.get(p.client, {}).get("retainer")
        if r is None:
            continue
        table.add_row(
            f"{p.name} ({p.client})",
            r["period"],
            _hours(r["used_hours"]),
            _hours(r["available_hours"]),
            _hours(r["included_hours"]),
            _hours(r["rollover_hours"]),
            _hours(r["overage_hours"]),
            f"{r['percent']} %",
            f"{format_money(Decimal(r['value_used']), p.currency)} of "
            f"{format_money(Decimal(r['amount']), p.currency)}",
        )
    return table


def budgets_table(pipelines: list[ClientPipeline], plans: dict[str, dict[str, Any]]) -> Table:
    """Each budget (a client's own, its boards') in its current period or lifetime:
    spent / cap in hours and money, percent of the cap, thresholds reached."""
    table = Table(title="Budgets (current period, or total)")
    for name in ("Client", "Scope", "Period", "Hours", "Money", "%", "Reached", "Over"):
        table.add_column(name, justify="right" if name in ("Hours", "Money", "%") else "left")
    for p in pipelines:
        for b in plans.get(p.client, {}).get("budgets", []):
            currency = b["currency"]
            hours = (
                "—" if b["hours"] is None else f"{_hours(b['spent_hours'])} of {_hours(b['hours'])}"
            )
            money = (
                "—"
                if b["amount"] is None
                else f"{format_money(Decimal(b['spent_amount']), currency)} of "
                f"{format_money(Decimal(b['amount']), currency)}"
            )
            table.add_row(
                f"{p.name} ({p.client})",
                b["scope"],
                b["period"],
                hours,
                money,
                f"{b['percent']} %",
                ", ".join(f"{t} %" for t in b["reached"]) or "—",
                "over budget" if b["over"] else "",
            )
    return table


def print_finance(
    console: Console,
    pipelines: list[ClientPipeline],
    view: FinanceView,
    plans: dict[str, dict[str, Any]] | None = None,
) -> None:
    console.print(totals_table(view))
    console.print(aging_table(pipelines, view))
    if any("retainer" in plan for plan in (plans or {}).values()):
        console.print(retainers_table(pipelines, plans or {}))
    if any("budgets" in plan for plan in (plans or {}).values()):
        console.print(budgets_table(pipelines, plans or {}))
    if view.overdue:
        console.print(overdue_table(view))
    else:
        console.print("No overdue invoices.", highlight=False)


def finance_status_json(pipelines: list[ClientPipeline], view: FinanceView) -> dict[str, Any]:
    """The keys `status --json` adds: per-client aging, totals, overdue invoices."""
    return {
        "aging": {p.client: aging_json(view.aging_of(p)) for p in pipelines},
        **finance_json(view),
    }


commands = typer.Typer()


@commands.command()
def digest(
    config: ConfigOption = None,
    print_only: Annotated[
        bool, typer.Option("--print", help="Show the digest here; post nothing to Slack.")
    ] = False,
) -> None:
    """Post the finance digest to Slack now: the unbilled gap per currency, the clients
    waiting longest, drafts waiting for approval and overdue invoices."""

    async def main() -> None:
        async with open_services(config, boards=False) as services:
            now = services.clock()
            if print_only:
                content = compose_digest(services.ledger, services.settings, now)
                out.print(digest_plain(content), highlight=False, markup=False)
                return
            desk = services.desk
            if not desk.can_post:
                raise CliError(
                    "slack.bot_token and slack.channel must be set to post the digest "
                    "(KANVOICE_SLACK__BOT_TOKEN); `kanvoice digest --print` shows it here"
                )
            queued = queue_digest(services.ledger, services.settings, now)
            report = await desk.drain_slack()
            if report.errors or report.parked:
                problems = "; ".join(report.errors) or "the post was parked (see `kanvoice outbox`)"
                raise CliError(f"the digest was not posted: {problems}")
            if report.retried:
                out.print("Slack is unavailable: the digest is queued and posted by the daemon.")
                return
            done = (
                "Digest posted to Slack." if queued else "This minute's digest was already posted."
            )
            out.print(done, highlight=False)

    run_command(main)
