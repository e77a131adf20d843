"""Totals per currency, aging of ready work, overdue invoices and the finance digest.

The shell around `mapping.aging` and `mapping.digest`: it reads the ledger
(`sync.ledger.finance`), asks the pure functions, and queues the digest through the
Slack outbox. What `kanvoice status`, the dashboard, `/api/pipeline` and the digest
show comes from here, so they agree.

The digest is one outbox row per scheduled slot (key ``kv-<ledger>-digest-<slot>``):
two instances, a restart or a double run in the same slot post it once. `kanvoice
digest` posts it now under a key of its own (one per minute, so a double Enter posts
once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Connection

from connectors.base import FatalError
from connectors.slack.port import SlackPort
from mapping.aging import (
    BUCKETS,
    ClientAging,
    OverdueInvoice,
    SortKey,
    aging_from_sums,
    empty_aging,
    sort_rows,
    totals_by_currency,
)
from mapping.digest import (
    Digest,
    DigestClient,
    DigestDraft,
    build_digest,
    slot_due,
    slot_key,
)
from mapping.domain import EntryState
from mapping.money import Money
from sync.engine import Clock
from sync.ledger import finance as ledger_finance
from sync.ledger.ops import enqueue, ledger_id
from sync.ledger.outbox import Operation, OutboxOp
from sync.ledger.store import Ledger
from sync.pipeline import STAGES, ClientPipeline, client_pipelines
from sync.settings import Settings, stripe_dashboard_url

log = structlog.get_logger(__name__)

UNBILLED = (EntryState.READY, EntryState.DRAFTED, EntryState.APPROVED)


@dataclass(frozen=True, slots=True)
class CurrencyTotal:
    """One currency's figures summed over the clients billed in it (never mixed)."""

    currency: str
    clients: int
    amounts: Mapping[EntryState, Money]
    hours: Mapping[EntryState, Decimal]
    gap: Money

    def as_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "clients": self.clients,
            "stages": {
                s.value: {"hours": str(self.hours[s]), "amount": str(self.amounts[s].amount)}
                for s in STAGES
            },
            "unbilled_gap": str(self.gap.amount),
        }


def currency_totals(pipelines: Iterable[ClientPipeline]) -> list[CurrencyTotal]:
    """Every stage and the gap summed per currency, sorted by currency code."""
    groups: dict[str, list[ClientPipeline]] = {}
    for p in pipelines:
        groups.setdefault(Money.zero(p.currency).currency, []).append(p)
    out = []
    for code in sorted(groups):
        members = groups[code]
        amounts = {}
        hours = {}
        for state in STAGES:
            (amount,) = totals_by_currency(Money(p.stage(state).amount, code) for p in members)
            amounts[state] = amount
            hours[state] = sum((p.stage(state).hours for p in members), Decimal(0))
        (gap,) = totals_by_currency(p.unbilled_gap for p in members)
        out.append(CurrencyTotal(code, len(members), amounts, hours, gap))
    return out


@dataclass
class FinanceView:
    """Totals per currency, aging per client and overdue invoices, as of `now`."""

    now: datetime
    today: date
    aging: dict[str, ClientAging] = field(default_factory=dict)
    totals: list[CurrencyTotal] = field(default_factory=list)
    overdue: list[OverdueInvoice] = field(default_factory=list)

    def aging_of(self, pipeline: ClientPipeline) -> ClientAging:
        return self.aging.get(pipeline.client) or empty_aging(pipeline.client, pipeline.currency)


def _today(now: datetime, zone: str) -> date:
    return now.astimezone(ZoneInfo(zone)).date()


def overdue_invoices(
    conn: Connection, now: datetime, names: Mapping[str, str]
) -> list[OverdueInvoice]:
    """Open invoices past their due date (or flagged by Stripe), most overdue first."""
    out = [
        OverdueInvoice(
            invoice_id=i.invoice_id,
            client=i.client,
            client_name=names.get(i.client, i.client),
            number=i.number,
            amount=ledger_finance.invoice_amount(i),
            due_date=i.due_date,
            days_overdue=i.days_overdue(now),
            hosted_url=i.hosted_url,
            last_reminder_at=i.last_reminder_at,
            reminders=i.reminders,
        )
        for i in ledger_finance.open_invoices(conn, overdue_only_at=now)
    ]
    return sorted(out, key=lambda o: (-o.days_overdue, o.invoice_id))


def finance_view(
    conn: Connection,
    pipelines: list[ClientPipeline],
    now: datetime,
    zone: str = "UTC",
) -> FinanceView:
    """Aging (days counted in the finance time zone `zone`), totals and overdue."""
    today = _today(now, zone)
    currencies = {p.client: p.currency for p in pipelines}
    names = {p.client: p.name for p in pipelines}
    return FinanceView(
        now=now,
        today=today,
        aging=aging_from_sums(
            ledger_finance.ready_bucket_sums(conn, today, zone), today, currencies
        ),
        totals=currency_totals(pipelines),
        overdue=overdue_invoices(conn, now, names),
    )


def sort_pipelines(
    pipelines: list[ClientPipeline], view: FinanceView, by: SortKey
) -> list[ClientPipeline]:
    """Clients by key, by gap (per currency, largest first) or by age (oldest first)."""
    return sort_rows(
        pipelines,
        by,
        client=lambda p: p.client,
        gap=lambda p: p.unbilled_gap,
        oldest_days=lambda p: view.aging_of(p).oldest_days,
    )


def aging_json(aging: ClientAging) -> dict[str, Any]:
    return {
        "oldest_days": aging.oldest_days,
        "oldest_bucket": aging.oldest_bucket.value if aging.oldest_bucket else None,
        "entries": aging.entries,
        "buckets": {b.value: str(aging.bucket(b).amount) for b in BUCKETS},
    }


def overdue_json(invoice: OverdueInvoice) -> dict[str, Any]:
    return {
        "invoice_id": invoice.invoice_id,
        "client": invoice.client,
        "client_name": invoice.client_name,
        "number": invoice.number,
        "amount": str(invoice.amount.amount),
        "currency": invoice.amount.currency,
        "due_date": invoice.due_date.isoformat() if invoice.due_date else None,
        "days_overdue": invoice.days_overdue,
        "hosted_url": invoice.hosted_url,
        "reminders": invoice.reminders,
        "last_reminder_at": (
            invoice.last_reminder_at.isoformat() if invoice.last_reminder_at else None
        ),
    }


def finance_json(view: FinanceView) -> dict[str, Any]:
    """The payload's finance keys: ``totals`` per currency, ``aging_buckets`` (their
    keys and labels), ``overdue`` invoices and ``aging_as_of`` (the day ages count to)."""
    return {
        "totals": [t.as_dict() for t in view.totals],
        "aging_buckets": [{"key": b.value, "slug": b.slug, "label": b.label} for b in BUCKETS],
        "overdue": [overdue_json(o) for o in view.overdue],
        "aging_as_of": view.today.isoformat(),
    }


# --- the digest ---------------------------------------------------------------------------


def compose_digest(ledger: Ledger, settings: Settings, now: datetime) -> Digest:
    """The digest's content as of `now`, read afresh from the ledger."""
    clients = {c.key: (c.name or c.key, c.currency) for c in settings.clients}
    zone = settings.finance.timezone
    with ledger.read(now) as uow:
        pipelines = client_pipelines(uow, clients)
        view = finance_view(uow.conn, pipelines, now, zone)
        waiting = ledger_finance.drafts_waiting(uow.conn)
    names = {p.client: p.name for p in pipelines}
    base = settings.server.public_url
    drafts = [
        DigestDraft(
            invoice_id=d.invoice_id,
            client=d.client,
            client_name=names.get(d.client, d.client),
            total=Money(d.total, d.currency).quantized(),
            waiting_days=max(0, (now - d.created_at).days),
            stripe_url=stripe_dashboard_url(settings, d.stripe_invoice_id),
        )
        for d in waiting
    ]
    return build_digest(
        as_of=now,
        timezone=zone,
        clients=[
            DigestClient(
                p.client,
                p.name,
                p.unbilled_gap,
                Money(p.stage(EntryState.READY).amount, p.currency).quantized(),
                view.aging_of(p).oldest_days,
            )
            for p in pipelines
        ],
        drafts=drafts,
        overdue=view.overdue,
        dashboard_url=(base.rstrip("/") + "/") if base else None,
    )


def digest_channel(settings: Settings) -> str | None:
    """`[digest] channel`, else the approvals channel."""
    return settings.digest.channel or settings.slack.channel


def queue_digest(
    ledger: Ledger, settings: Settings, now: datetime, slot: datetime | None = None
) -> bool:
    """Queue one digest post: for the scheduled `slot` (once per slot, whoever asks),
    or on demand (one per minute). Returns whether a new post was queued."""
    with ledger.engine.begin() as conn:
        lid = ledger_id(conn)
        if slot is not None:
            key = f"kv-{lid}-digest-{slot_key(slot)}"
        else:
            key = f"kv-{lid}-digest-now-{slot_key(now.replace(second=0, microsecond=0))}"
        return enqueue(
            conn,
            Operation.SLACK_POST_DIGEST.value,
            key,
            now,
            payload={
                "channel": digest_channel(settings),
                "slot": slot.isoformat() if slot else None,
            },
        )


def queue_scheduled_digest(ledger: Ledger, settings: Settings, now: datetime) -> bool:
    """The scheduler's tick: queue the digest of the current slot if it is due (within
    `[digest] grace_hours` of the scheduled time) and not queued yet."""
    if not settings.digest.enabled:
        return False
    schedule = settings.digest.schedule(settings.finance.timezone)
    slot = slot_due(schedule, now, timedelta(hours=settings.digest.grace_hours))
    if slot is None:
        return False
    queued = queue_digest(ledger, settings, now, slot)
    if queued:
        log.info("digest.queued", slot=slot.isoformat())
    return queued


async def perform_digest(
    slack: SlackPort, ledger: Ledger, settings: Settings, clock: Clock, op: OutboxOp
) -> tuple[str, dict[str, Any]]:
    """The outbox handler's work: compose the digest now and post it. A scheduled slot
    whose post was delayed by more than a week (Slack down for days) is dropped: the
    next one says the same, and fresher."""
    now = clock()
    slot = op.payload.get("slot")
    if slot and now - datetime.fromisoformat(str(slot)) > timedelta(days=7):
        return "cancelled", {"reason": "a newer digest supersedes this slot"}
    channel = op.payload.get("channel") or digest_channel(settings)
    if not channel:
        raise FatalError("slack.channel is not set: nowhere to post the digest")
    digest = await asyncio.to_thread(compose_digest, ledger, settings, now)
    cid, ts = await slack.post_digest(str(channel), digest)
    log.info("slack.digest_posted", channel=cid, ts=ts, slot=slot)
    return "done", {"channel": cid, "ts": ts}


def sort_payload_clients(payload: dict[str, Any], by: SortKey) -> dict[str, Any]:
    """The dashboard payload with its clients in the requested order (the same order
    as `sort_pipelines`, applied to the JSON rows); `payload["sort"]` names it."""
    clients = list(payload.get("clients", []))
    ordered = sort_rows(
        clients,
        by,
        client=lambda c: str(c["client"]),
        gap=lambda c: Money(Decimal(str(c["unbilled_gap"])), str(c["currency"])),
        oldest_days=lambda c: (c.get("aging") or {}).get("oldest_days"),
    )
    return {**payload, "clients": ordered, "sort": by}
