"""`kanvoice invoice`, `approve`, `reject`, `reconcile` and `outbox`: the Stripe side."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from connectors.base import FatalError
from sync.cli_common import CliError, ConfigOption, err, open_services, out, run_command
from sync.composition import Services
from sync.invoicing import InvoicingError, NotAnApprover

commands = typer.Typer()


async def _print_drain(services: Services) -> bool:
    report = await services.invoicing.drain()
    out.print(
        f"Stripe: {report.done} calls done, {report.waiting} waiting, "
        f"{report.retried} to retry, {report.parked} parked",
        highlight=False,
    )
    for line in report.errors:
        err.print(f"  {line}", highlight=False)
    return not report.errors


@commands.command()
def invoice(
    client: Annotated[
        str | None,
        typer.Argument(metavar="CLIENT", help="Client key from the settings (or --all)."),
    ] = None,
    config: ConfigOption = None,
    no_stripe: Annotated[
        bool, typer.Option("--no-stripe", help="Only queue the Stripe calls.")
    ] = False,
    every: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Every client with ready lines: draft each and ask approval for each draft "
            "(safe to repeat: nothing is drafted or asked twice).",
        ),
    ] = False,
) -> None:
    """Create or refresh the client's draft invoice (every ready line) on Stripe; with
    --all, every client's that has ready lines, each draft sent for approval once."""

    async def main() -> None:
        if every and client is not None:
            raise CliError(
                f"give a client key or --all, not both (--all drafts every client; got {client!r})"
            )
        if every:
            await _invoice_all(config, no_stripe)
            return
        if client is None:
            raise CliError("missing CLIENT: give a client key from the settings, or --all")
        async with open_services(config) as services:
            try:
                result = services.invoicing.create_or_refresh_draft(client, actor="cli")
            except InvoicingError as exc:
                raise _user_error(exc) from None
            if result.invoice_id is None:
                out.print(
                    f"nothing to bill for {client} ({result.period}): no ready lines, "
                    "no draft created",
                    highlight=False,
                )
                return
            out.print(
                f"draft {result.invoice_id} for {client} ({result.period}): "
                f"{result.added} lines added, {result.lines} in all, total {result.total}",
                highlight=False,
            )
            if result.left:
                out.print(_did_not_fit(result.left), highlight=False)
            if not no_stripe and not await _drain_or_explain(services):
                raise typer.Exit(1)
            if result.lines and services.desk.request_approval(result.invoice_id, actor="cli"):
                await _post_to_slack(services)

    run_command(main)


def _did_not_fit(left: int) -> str:
    return (
        f"{left} ready lines did not fit (Stripe takes at most 250 lines per invoice): "
        "they stay ready for the client's next draft"
    )


async def _invoice_all(config: Path | None, no_stripe: bool) -> None:
    """`kanvoice invoice --all`: `sync.draft_all` then the Stripe and Slack drains."""
    async with open_services(config) as services:
        desk = services.desk
        report = desk.draft_all(actor="cli")
        table = Table(title="Draft all due")
        for column in ("Client", "Outcome", "Draft", "Added", "Lines", "Total", "Approval"):
            table.add_column(column)
        for c in report.clients:
            approval = "asked" if c.approval_requested else "-"
            if c.outcome in ("drafted", "unchanged") and not c.approval_requested:
                approval = "already asked" if desk.can_post else "no Slack"
            table.add_row(
                c.client,
                c.outcome if c.outcome != "failed" else f"failed: {c.message}",
                str(c.invoice_id) if c.invoice_id is not None else "-",
                str(c.added),
                str(c.lines),
                str(c.total) if c.total is not None and c.lines else "-",
                approval,
            )
        out.print(table)
        out.print(report.summary(), highlight=False)
        for c in report.clients:
            if c.left:
                out.print(f"{c.client}: {_did_not_fit(c.left)}", highlight=False)
        drafts = [c for c in report.clients if c.invoice_id is not None and c.lines]
        stripe_ok = True
        if drafts and not no_stripe:
            stripe_ok = await _drain_or_explain(services)
        if stripe_ok and drafts and desk.can_post:
            await _post_to_slack(services)
        if report.failed or not stripe_ok:
            raise typer.Exit(1)


async def _drain_or_explain(services: Services) -> bool:
    try:
        return await _print_drain(services)
    except InvoicingError as exc:
        raise _user_error(exc) from None
    except FatalError as exc:
        raise _user_error(exc) from None


def _user_error(exc: Exception) -> Exception:
    return CliError(str(exc))


async def _post_to_slack(services: Services) -> None:
    report = await services.desk.drain_slack()
    out.print(f"Slack: {report}", highlight=False)


@commands.command()
def approve(
    invoice_id: Annotated[int, typer.Argument(metavar="INVOICE", help="Ledger invoice id.")],
    approver: Annotated[str, typer.Option("--as", help="Your approver id (slack.approvers).")],
    config: ConfigOption = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Finalize even if the total is under Stripe's minimum charge (Stripe then "
            "marks it paid and moves the amount to the customer's credit balance).",
        ),
    ] = False,
) -> None:
    """Approve a draft: it is finalized on Stripe (and sent if the client is set so)."""
    _decide(
        config,
        invoice_id,
        "approved",
        approver,
        None,
        lambda s: s.invoicing.approve(invoice_id, approver, "cli", force=force),
    )


@commands.command()
def reject(
    invoice_id: Annotated[int, typer.Argument(metavar="INVOICE", help="Ledger invoice id.")],
    approver: Annotated[str, typer.Option("--as", help="Your approver id (slack.approvers).")],
    reason: Annotated[str, typer.Option(help="Why (required): recorded with the decision.")],
    config: ConfigOption = None,
) -> None:
    """Reject a draft: its lines go back to ready, nothing is finalized."""
    reason = reason.strip()
    _decide(
        config,
        invoice_id,
        "rejected",
        approver,
        reason,  # empty: refused before the ledger is opened
        lambda s: s.invoicing.reject(invoice_id, approver, "cli", reason),
    )


def _decide(
    config: Path | None,
    invoice_id: int,
    outcome: Literal["approved", "rejected"],
    who: str,
    reason: str | None,
    decide: Callable[[Services], dict[str, Any]],
) -> None:
    async def main() -> None:
        if outcome == "rejected" and not reason:
            raise CliError("--reason: required and not empty (it is recorded with the decision)")
        async with open_services(config) as services:
            desk = services.desk
            try:
                # Read before deciding: a rejection takes the lines off the draft.
                summary = desk.summary(invoice_id)
                outcome_detail = decide(services)
            except (NotAnApprover, LookupError, InvoicingError) as exc:
                raise _user_error(exc) from None
            out.print(json.dumps(outcome_detail), highlight=False)
            if desk.announce_decision(summary, outcome, who, reason):
                await _post_to_slack(services)
            if services.settings.stripe.api_key is not None and not await _drain_or_explain(
                services
            ):
                raise typer.Exit(1)

    run_command(main)


@commands.command()
def reconcile(
    config: ConfigOption = None,
    client: Annotated[str | None, typer.Option(help="Only this client.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report, repair nothing.")] = False,
) -> None:
    """Compare the ledger with Stripe; print drift and repair what is safe to repair."""

    async def main() -> None:
        async with open_services(config) as services:
            try:
                drifts = await services.invoicing.reconcile(client, not dry_run)
            except (InvoicingError, FatalError) as exc:
                raise _user_error(exc) from None
        if not drifts:
            out.print("ledger and Stripe agree", highlight=False)
            return
        table = Table(title="Drift between ledger and Stripe")
        for column in ("Client", "Invoice", "Stripe", "Problem", "Repair"):
            table.add_column(column)
        for d in drifts:
            table.add_row(
                d.client, str(d.invoice_id), d.stripe_invoice_id or "-", d.problem, d.repair
            )
        out.print(table)

    run_command(main)


outbox_app = typer.Typer(help="The queue of pending external calls.", no_args_is_help=True)
commands.add_typer(outbox_app, name="outbox")


@outbox_app.command("drain")
def outbox_drain(config: ConfigOption = None) -> None:
    """Perform every pending Stripe call now."""

    async def main() -> bool:
        async with open_services(config) as services:
            return await _drain_or_explain(services)

    if not run_command(main):
        raise typer.Exit(1)
