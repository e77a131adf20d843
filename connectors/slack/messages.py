"""Block Kit for approvals, built with `slack_sdk.models` (pure: no I/O, no clock).

- `approval_blocks` / `approval_text`: the message finance approves from (one
  section per line, totals, the Stripe draft link, Approve / Adjust / Reject).
- `decided_blocks` / `decided_text`: what that message becomes once decided
  (who, when, outcome; no buttons).
- `adjust_modal`: the Adjust modal (`views.open`), callback id ``kanvoice_adjust``.
- `reject_modal`: the reject-reason modal, callback id ``kanvoice_reject``.
- `refusal_text`, `stale_text`, `already_decided_text`: ephemeral answers.
- `digest_blocks` / `digest_text` / `digest_plain`: the finance digest (gap per
  currency, clients waiting longest, drafts waiting, overdue invoices, "Draft all due").

Every button's ``value`` and every modal's ``private_metadata`` is a `DraftRef`
encoded as compact JSON (`encode_ref` / `decode_ref`), so a click always names the
exact draft version it was shown.

Slack limits honoured here: 50 blocks per message (at most `MAX_LINES_SHOWN` line
sections, then an "… and N more lines" context block), 100 blocks per modal,
3000 characters per section text, 150 per header / placeholder, 300 per confirm
text, 24 per modal title / button.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    CheckboxesElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    NumberInputElement,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from connectors.slack.model import DraftLine, DraftSummary, Outcome
from mapping.digest import MAX_CLIENTS_SHOWN, MAX_DRAFTS_SHOWN, MAX_OVERDUE_SHOWN, Digest
from mapping.money import Money, UnknownCurrencyError, currency_exponent, tidy_decimal
from mapping.stripe_rules import check_charge

ACTION_APPROVE = "kanvoice_approve"
ACTION_ADJUST = "kanvoice_adjust"
ACTION_REJECT = "kanvoice_reject"
# Shown only on a draft whose total is under Stripe's minimum charge.
ACTION_APPROVE_FORCE = "kanvoice_approve_force"
# "Draft all due" (any message may carry it, e.g. a digest): names no invoice.
ACTION_DRAFT_ALL = "draft_all"
DRAFT_ALL_VALUE = "all"
ACTION_IDS = frozenset(
    {ACTION_APPROVE, ACTION_APPROVE_FORCE, ACTION_ADJUST, ACTION_REJECT, ACTION_DRAFT_ALL}
)
CALLBACK_ADJUST = "kanvoice_adjust"
CALLBACK_REJECT = "kanvoice_reject"
INPUT_ACTION_ID = "value"
EXCLUDE_OPTION = "exclude"
REASON_BLOCK_ID = "reason"
ADJUST_FIELDS = ("hours", "rate", "description", "exclude")

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_LINES_SHOWN = 40
MAX_DESCRIPTION_LENGTH = 500
MAX_REASON_LENGTH = 500

_SECTION_MAX = 3000
_HEADER_MAX = 150
_PLACEHOLDER_MAX = 150
_CONFIRM_TEXT_MAX = 300
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


# --------------------------------------------------------------------------------------
# Draft references carried by buttons and modals
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DraftRef:
    """Which draft (and which version of it) a button or modal refers to."""

    invoice_id: int
    version: int
    channel_id: str | None = None
    message_ts: str | None = None


#: Invoice ids and versions are 32-bit columns in the ledger: a reference beyond them
#: names nothing (and must not reach the database).
MAX_REF = 2**31


def encode_ref(ref: DraftRef) -> str:
    """Compact JSON for a button ``value`` / view ``private_metadata``."""
    data: dict[str, int | str] = {"invoice_id": ref.invoice_id, "version": ref.version}
    if ref.channel_id:
        data["channel_id"] = ref.channel_id
    if ref.message_ts:
        data["message_ts"] = ref.message_ts
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def decode_ref(text: str) -> DraftRef:
    """Inverse of `encode_ref`; ValueError on anything else."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a draft reference: {text!r:.80}") from exc
    if not isinstance(data, dict):
        raise ValueError("a draft reference must be a JSON object")
    invoice_id, version = data.get("invoice_id"), data.get("version")
    for name, value in (("invoice_id", invoice_id), ("version", version)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_REF:
            raise ValueError(f"draft reference: {name} must be an integer from 0 to {MAX_REF - 1}")
    channel_id, message_ts = data.get("channel_id"), data.get("message_ts")
    for name, value in (("channel_id", channel_id), ("message_ts", message_ts)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"draft reference: {name} must be a string")
    assert isinstance(invoice_id, int) and isinstance(version, int)
    return DraftRef(invoice_id, version, channel_id or None, message_ts or None)


# --------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------


def _exponent(currency: str, exponent: int | None) -> int:
    if exponent is not None:
        return exponent
    try:
        return currency_exponent(currency)
    except UnknownCurrencyError:
        return 2


def format_money(amount: Decimal, currency: str, exponent: int | None = None) -> str:
    """``1,234.50 EUR``, ``12,000 JPY``, ``1.500 KWD``: the currency's decimals, half up."""
    code = currency.strip().upper()
    exp = _exponent(code, exponent)
    quantized = amount.quantize(Decimal(1).scaleb(-exp), rounding=ROUND_HALF_UP)
    if quantized.is_zero():
        quantized = abs(quantized)  # no "-0.00"
    return f"{quantized:,.{exp}f} {code}"


def format_rate(rate: Decimal, currency: str, exponent: int | None = None) -> str:
    """A rate per hour; keeps sub-unit precision (``0.125 EUR/h``) instead of rounding it."""
    code = currency.strip().upper()
    exp = _exponent(code, exponent)
    quantized = rate.quantize(Decimal(1).scaleb(-exp), rounding=ROUND_HALF_UP)
    if quantized == rate:
        return f"{quantized:,.{exp}f} {code}/h"
    return f"{tidy_decimal(rate):,f} {code}/h"


def format_hours(hours: Decimal) -> str:
    """``12.5 h``, ``3 h``, ``0.25 h``."""
    try:
        return f"{tidy_decimal(hours):f} h"
    except InvalidOperation:
        return f"{hours} h"


def escape_mrkdwn(text: str) -> str:
    """Escape the three characters Slack's mrkdwn reserves (&, <, >)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def link(url: str | None, text: str) -> str:
    """``<url|text>`` for http(s) URLs; escaped plain text otherwise."""
    label = escape_mrkdwn(text.replace("|", "-")) or escape_mrkdwn(url or "")
    if not url or not url.lower().startswith(("https://", "http://")):
        return label
    safe_url = url.replace("|", "%7C").replace("<", "%3C").replace(">", "%3E").replace(" ", "%20")
    return f"<{safe_url}|{label}>"


def mention(user: str) -> str:
    """``<@U123>`` for a Slack user id; the escaped name for anyone else (CLI, dashboard)."""
    return f"<@{user}>" if _USER_ID.match(user) else escape_mrkdwn(user)


def slack_date(at: datetime) -> str:
    """A ``<!date…>`` token Slack renders in the reader's time zone, with a UTC fallback."""
    when = at if at.tzinfo else at.replace(tzinfo=UTC)
    fallback = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(when.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def _kind_label(kind: str) -> str:
    return {"milestone": "Milestone", "adjustment": "Adjustment"}.get(kind, "")


def _line_figures(line: DraftLine, currency: str) -> str:
    amount = format_money(line.amount, currency)
    if line.kind == "milestone":
        tracked = f" · {format_hours(line.hours)} tracked" if line.hours else ""
        return f"Fixed price *{amount}*{tracked}"
    if line.rate is not None and line.hours:
        return f"{format_hours(line.hours)} × {format_rate(line.rate, currency)} = *{amount}*"
    return f"*{amount}*"


def line_who(line: DraftLine) -> str:
    """Who did the work on a per-person line: "Alice (senior)", "Alice", "(senior)";
    empty for a line of the whole item."""
    person = (line.person or "").strip()
    role = (line.role or "").strip()
    if person and role:
        return f"{person} ({role})"
    if person:
        return person
    return f"({role})" if role else ""


def _line_text(line: DraftLine, currency: str, number: int | None = None) -> str:
    label = _kind_label(line.kind)
    prefix = f"{number}. " if number is not None else ""
    head = f"*{prefix}{link(line.url, line.title)}*"
    if label:
        head = f"`{label}` {head}"
    who = line_who(line)
    if who:
        head += f" · {escape_mrkdwn(_truncate(who, 200))}"
    text = f"{head}\n{_line_figures(line, currency)}"
    if line.flags:
        text += "\n:warning: " + escape_mrkdwn(", ".join(line.flags))
    description = line.description.strip()
    if description and description != line.title.strip():
        text += "\n" + escape_mrkdwn(_truncate(description, 300))
    return _truncate(text, _SECTION_MAX)


def _total_hours(summary: DraftSummary) -> Decimal:
    return sum((line.hours for line in summary.lines if line.kind == "time"), Decimal(0))


def _header(summary: DraftSummary) -> HeaderBlock:
    text = f"Invoice draft · {summary.client_name} · {summary.period_label}"
    return HeaderBlock(text=PlainTextObject(text=_truncate(text, _HEADER_MAX), emoji=False))


def _stripe_link(summary: DraftSummary) -> str:
    if summary.stripe_url:
        return link(summary.stripe_url, "Open the draft in Stripe")
    return "No Stripe draft yet"


def _totals_block(summary: DraftSummary) -> SectionBlock:
    fields = [
        MarkdownTextObject(text=f"*Total*\n{format_money(summary.total, summary.currency)}"),
        MarkdownTextObject(text=f"*Lines*\n{len(summary.lines)}"),
        MarkdownTextObject(text=f"*Hours billed*\n{format_hours(_total_hours(summary))}"),
        MarkdownTextObject(text=f"*Stripe*\n{_stripe_link(summary)}"),
    ]
    return SectionBlock(block_id=f"kv_totals:{summary.version}", fields=fields)


def _breakdown(summary: DraftSummary) -> str | None:
    sums: dict[str, Decimal] = {}
    for line in summary.lines:
        sums[line.kind] = sums.get(line.kind, Decimal(0)) + line.amount
    if len(sums) < 2:
        return None
    names = {"time": "Time", "milestone": "Milestones", "adjustment": "Adjustments"}
    return " · ".join(
        f"{names.get(kind, kind)} {format_money(value, summary.currency)}"
        for kind, value in sums.items()
    )


# --------------------------------------------------------------------------------------
# The approval message
# --------------------------------------------------------------------------------------


def approval_text(summary: DraftSummary) -> str:
    """Notification / fallback text of the approval message."""
    return (
        f"Invoice draft for {summary.client_name} ({summary.period_label}): "
        f"{format_money(summary.total, summary.currency)} in {len(summary.lines)} lines. "
        "Approval needed." + (" Over budget: check before approving." if summary.flags else "")
    )


def _flags_block(summary: DraftSummary) -> SectionBlock:
    """The draft's warnings (over budget…), above the lines: seen before approving."""
    text = "\n".join(f"• {escape_mrkdwn(flag)}" for flag in summary.flags)
    return SectionBlock(
        block_id=f"kv_flags:{summary.version}",
        text=MarkdownTextObject(
            text=_truncate(f":warning: *Check before approving*\n{text}", _SECTION_MAX)
        ),
    )


def budget_alert_text(text: str, over: bool) -> str:
    """Notification / fallback text of a budget alert."""
    return (":rotating_light: " if over else ":warning: ") + text


def budget_alert_blocks(text: str, over: bool, client_name: str) -> list[Block]:
    """A budget threshold alert: what was reached and what happens next."""
    follow = (
        "Work past the cap still queues; its draft is flagged *over budget* for review."
        if over
        else "Nothing is held back; drafts are flagged once the cap is passed."
    )
    return [
        SectionBlock(
            text=MarkdownTextObject(
                text=_truncate(
                    f"{budget_alert_text('*' + escape_mrkdwn(text) + '*', over)}\n"
                    f"Client: {escape_mrkdwn(client_name)}",
                    _SECTION_MAX,
                )
            )
        ),
        ContextBlock(elements=[MarkdownTextObject(text=follow)]),
    ]


def _confirm_text(text: str) -> str:
    return _truncate(text, _CONFIRM_TEXT_MAX)


def _force_button(
    summary: DraftSummary, value: str, client: str, period: str, total: str
) -> list[ButtonElement]:
    """ "Approve below minimum", only when the total is under Stripe's minimum charge
    (plain Approve is then refused, and says why)."""
    try:
        charge = check_charge(Money(summary.total, summary.currency))
    except UnknownCurrencyError:
        return []
    if not charge.below_minimum:
        return []
    return [
        ButtonElement(
            text=PlainTextObject(text="Approve below minimum", emoji=False),
            action_id=ACTION_APPROVE_FORCE,
            value=value,
            style="danger",
            confirm=ConfirmObject(
                title="Finalize below the minimum?",
                text=_confirm_text(
                    f"The total for {escape_mrkdwn(client)} ({escape_mrkdwn(period)}), "
                    f"*{total}*, is under Stripe's minimum charge of {charge.minimum}: Stripe "
                    "marks the invoice paid and moves the amount to the customer's credit "
                    "balance."
                ),
                confirm="Finalize anyway",
                deny="Cancel",
                style="danger",
            ),
        )
    ]


def approval_blocks(summary: DraftSummary) -> list[Block]:
    """The message finance approves from; at most `MAX_MESSAGE_BLOCKS` blocks."""
    total = format_money(summary.total, summary.currency)
    client = _truncate(summary.client_name, 60)
    period = _truncate(summary.period_label, 40)
    blocks: list[Block] = [
        _header(summary),
        SectionBlock(
            block_id=f"kv_intro:{summary.version}",
            text=MarkdownTextObject(
                text=_truncate(
                    f"*{escape_mrkdwn(summary.client_name)}* "
                    f"(`{escape_mrkdwn(summary.client_key)}`) · "
                    f"{escape_mrkdwn(summary.period_label)}\n"
                    f"Draft #{summary.invoice_id} · version {summary.version} · "
                    f"{len(summary.lines)} lines · total *{total}*",
                    _SECTION_MAX,
                )
            ),
        ),
        DividerBlock(),
    ]
    if summary.flags:
        blocks.insert(2, _flags_block(summary))
    shown = summary.lines
    if len(summary.lines) > MAX_LINES_SHOWN:
        shown = summary.lines[:MAX_LINES_SHOWN]
    for number, line in enumerate(shown, start=1):
        blocks.append(
            SectionBlock(
                block_id=f"kv_line:{number}:{line.entry_id}:{summary.version}",
                text=MarkdownTextObject(text=_line_text(line, summary.currency, number)),
            )
        )
    hidden = summary.lines[len(shown) :]
    if hidden:
        rest = sum((line.amount for line in hidden), Decimal(0))
        blocks.append(
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text=f"… and {len(hidden)} more lines "
                        f"({format_money(rest, summary.currency)}); "
                        f"all lines are on the Stripe draft."
                    )
                ]
            )
        )
    blocks.append(DividerBlock())
    blocks.append(_totals_block(summary))
    breakdown = _breakdown(summary)
    if breakdown:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=breakdown)]))
    value = encode_ref(DraftRef(summary.invoice_id, summary.version))
    blocks.append(
        ActionsBlock(
            block_id=f"kanvoice:{summary.invoice_id}:{summary.version}",
            elements=[
                ButtonElement(
                    text=PlainTextObject(text="Approve", emoji=False),
                    action_id=ACTION_APPROVE,
                    value=value,
                    style="primary",
                    confirm=ConfirmObject(
                        title="Approve this invoice?",
                        text=_confirm_text(
                            f"Finalize the invoice for {escape_mrkdwn(client)} "
                            f"({escape_mrkdwn(period)}) with a total of *{total}*? "
                            "Stripe finalizes it, and sends it if the client is set so."
                        ),
                        confirm="Approve",
                        deny="Cancel",
                        style="primary",
                    ),
                ),
                *_force_button(summary, value, client, period, total),
                ButtonElement(
                    text=PlainTextObject(text="Adjust", emoji=False),
                    action_id=ACTION_ADJUST,
                    value=value,
                ),
                ButtonElement(
                    text=PlainTextObject(text="Reject", emoji=False),
                    action_id=ACTION_REJECT,
                    value=value,
                    style="danger",
                    confirm=ConfirmObject(
                        title="Reject this draft?",
                        text=_confirm_text(
                            f"The Stripe draft for {escape_mrkdwn(client)} ({total}) stays "
                            "unfinalized and its lines go back to ready to bill."
                        ),
                        confirm="Reject",
                        deny="Cancel",
                        style="danger",
                    ),
                ),
            ],
        )
    )
    assert len(blocks) <= MAX_MESSAGE_BLOCKS
    return blocks


# --------------------------------------------------------------------------------------
# The decided message
# --------------------------------------------------------------------------------------

_OUTCOME_TEXT: dict[str, tuple[str, str]] = {
    "approved": (":white_check_mark: *Approved*", "Finalizing in Stripe."),
    "rejected": (
        ":no_entry: *Rejected*",
        "The draft stays unfinalized; its lines are back to ready to bill.",
    ),
    "adjusted": (":pencil2: *Adjusted*", "The changed draft is posted again for approval."),
}


def decided_text(summary: DraftSummary, outcome: Outcome, user: str, at: datetime) -> str:
    """Notification / fallback text of the decided message."""
    when = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    return (
        f"Invoice draft for {summary.client_name} ({summary.period_label}, "
        f"{format_money(summary.total, summary.currency)}) {outcome} by {user} "
        f"on {when:%Y-%m-%d %H:%M} UTC."
    )


def decided_blocks(
    summary: DraftSummary,
    outcome: Outcome,
    user: str,
    at: datetime,
    reason: str | None = None,
) -> list[Block]:
    """The approval message once decided: who, when, outcome; no buttons.

    `user` is a Slack user id (rendered as a mention) or any other actor name
    (``"alice (CLI)"``), shown as text.
    """
    title, follow_up = _OUTCOME_TEXT[outcome]
    text = f"{title} by {mention(user)}, {slack_date(at)}. {follow_up}"
    if reason:
        text += f"\n*Reason:* {escape_mrkdwn(_truncate(reason, MAX_REASON_LENGTH))}"
    total = format_money(summary.total, summary.currency)
    return [
        _header(summary),
        SectionBlock(
            block_id=f"kv_decided:{summary.version}:{outcome}",
            text=MarkdownTextObject(text=_truncate(text, _SECTION_MAX)),
        ),
        ContextBlock(
            elements=[
                MarkdownTextObject(
                    text=f"Draft #{summary.invoice_id} · version {summary.version} · "
                    f"{len(summary.lines)} lines · {format_hours(_total_hours(summary))} · "
                    f"total *{total}* · {_stripe_link(summary)}"
                )
            ]
        ),
    ]


# --------------------------------------------------------------------------------------
# Modals
# --------------------------------------------------------------------------------------


def line_block_id(entry_id: int, field: str) -> str:
    """Block id of one input of the Adjust modal (``line:42:hours``)."""
    return f"line:{entry_id}:{field}"


def _placeholder(text: str) -> PlainTextObject:
    return PlainTextObject(text=_truncate(text, _PLACEHOLDER_MAX) or " ", emoji=False)


def _line_inputs(line: DraftLine, currency: str) -> list[Block]:
    blocks: list[Block] = []
    if line.kind == "time":
        blocks.append(
            InputBlock(
                block_id=line_block_id(line.entry_id, "hours"),
                label=PlainTextObject(text="Hours", emoji=False),
                optional=True,
                element=NumberInputElement(
                    action_id=INPUT_ACTION_ID,
                    is_decimal_allowed=True,
                    min_value="0",
                    placeholder=_placeholder(f"now {format_hours(line.hours)}"),
                ),
            )
        )
        current_rate = format_rate(line.rate, currency) if line.rate is not None else "none"
        blocks.append(
            InputBlock(
                block_id=line_block_id(line.entry_id, "rate"),
                label=PlainTextObject(text=f"Rate ({currency.upper()} per hour)", emoji=False),
                optional=True,
                element=NumberInputElement(
                    action_id=INPUT_ACTION_ID,
                    is_decimal_allowed=True,
                    min_value="0",
                    placeholder=_placeholder(f"now {current_rate}"),
                ),
            )
        )
    blocks.append(
        InputBlock(
            block_id=line_block_id(line.entry_id, "description"),
            label=PlainTextObject(text="Description on the invoice", emoji=False),
            optional=True,
            element=PlainTextInputElement(
                action_id=INPUT_ACTION_ID,
                max_length=MAX_DESCRIPTION_LENGTH,
                placeholder=_placeholder(line.description.strip() or line.title),
            ),
        )
    )
    blocks.append(
        InputBlock(
            block_id=line_block_id(line.entry_id, "exclude"),
            label=PlainTextObject(text="Exclude", emoji=False),
            optional=True,
            element=CheckboxesElement(
                action_id=INPUT_ACTION_ID,
                options=[
                    Option(
                        value=EXCLUDE_OPTION,
                        text=PlainTextObject(
                            text="Leave this line off the invoice (written off: never billed)",
                            emoji=False,
                        ),
                    )
                ],
            ),
        )
    )
    return blocks


def adjust_modal(
    summary: DraftSummary, channel_id: str | None = None, message_ts: str | None = None
) -> View:
    """The Adjust modal: per line hours, rate (time lines), description and exclude.

    Inputs start blank (the current value is the placeholder): a blank field keeps
    the current value. Lines that do not fit Slack's 100-block limit are listed as
    a count; they can be adjusted from the dashboard or CLI.
    """
    total = format_money(summary.total, summary.currency)
    blocks: list[Block] = [
        SectionBlock(
            block_id="kv_adjust_intro",
            text=MarkdownTextObject(
                text=_truncate(
                    f"*{escape_mrkdwn(summary.client_name)}* · "
                    f"{escape_mrkdwn(summary.period_label)} · draft #{summary.invoice_id} · "
                    f"total *{total}*\nLeave a field blank to keep it. Saving updates the "
                    "draft and posts it again for approval.",
                    _SECTION_MAX,
                )
            ),
        )
    ]
    budget = MAX_VIEW_BLOCKS - 2  # the intro, and the "more lines" context
    shown = 0
    for number, line in enumerate(summary.lines, start=1):
        chunk: list[Block] = [
            SectionBlock(
                block_id=f"kv_adjust_line:{line.entry_id}",
                text=MarkdownTextObject(text=_line_text(line, summary.currency, number)),
            ),
            *_line_inputs(line, summary.currency),
        ]
        if len(blocks) - 1 + len(chunk) > budget:
            break
        blocks.extend(chunk)
        shown += 1
    hidden = len(summary.lines) - shown
    if hidden:
        blocks.append(
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text=f"… and {hidden} more lines, not shown here: adjust them from "
                        "the kanvoice dashboard or CLI."
                    )
                ]
            )
        )
    ref = DraftRef(summary.invoice_id, summary.version, channel_id, message_ts)
    return View(
        type="modal",
        callback_id=CALLBACK_ADJUST,
        title=PlainTextObject(text="Adjust invoice draft", emoji=False),
        submit=PlainTextObject(text="Save and re-post", emoji=False),
        close=PlainTextObject(text="Cancel", emoji=False),
        private_metadata=encode_ref(ref),
        blocks=blocks,
    )


def reject_modal(
    summary: DraftSummary, channel_id: str | None = None, message_ts: str | None = None
) -> View:
    """The reject-reason modal (callback id ``kanvoice_reject``); the reason is required."""
    total = format_money(summary.total, summary.currency)
    ref = DraftRef(summary.invoice_id, summary.version, channel_id, message_ts)
    return View(
        type="modal",
        callback_id=CALLBACK_REJECT,
        title=PlainTextObject(text="Reject invoice draft", emoji=False),
        submit=PlainTextObject(text="Reject", emoji=False),
        close=PlainTextObject(text="Cancel", emoji=False),
        private_metadata=encode_ref(ref),
        blocks=[
            SectionBlock(
                block_id="kv_reject_intro",
                text=MarkdownTextObject(
                    text=_truncate(
                        f"Reject the draft for *{escape_mrkdwn(summary.client_name)}* "
                        f"({escape_mrkdwn(summary.period_label)}, *{total}*)? It stays "
                        "unfinalized in Stripe and its lines go back to ready to bill.",
                        _SECTION_MAX,
                    )
                ),
            ),
            InputBlock(
                block_id=REASON_BLOCK_ID,
                label=PlainTextObject(text="Reason", emoji=False),
                element=PlainTextInputElement(
                    action_id=INPUT_ACTION_ID,
                    multiline=True,
                    min_length=1,
                    max_length=MAX_REASON_LENGTH,
                    placeholder=_placeholder("What is wrong with this draft?"),
                ),
            ),
        ],
    )


# --------------------------------------------------------------------------------------
# Ephemeral answers
# --------------------------------------------------------------------------------------


def refusal_text(user_id: str) -> str:
    """What a non-approver who clicked a button sees (only them)."""
    return (
        f"Sorry {mention(user_id)}, only finance approvers can approve, adjust or reject "
        "invoice drafts. Nothing was changed, and the attempt was recorded."
    )


def stale_text(summary: DraftSummary, clicked_version: int) -> str:
    """The click came from an older version of the draft than the current one."""
    return (
        f"This message shows version {clicked_version} of invoice draft "
        f"#{summary.invoice_id}, but the draft has changed since (now version "
        f"{summary.version}). Nothing was changed; use the latest message."
    )


def already_decided_text(invoice_id: int, outcome: str) -> str:
    """A second click after the decision (double click, two approvers at once)."""
    return f"Invoice draft #{invoice_id} was already {outcome}. Nothing more was done."


def blocks_as_dicts(blocks: Sequence[Block]) -> list[dict[str, Any]]:
    """Validated JSON-ready dicts (raises `SlackObjectFormationError` on a limit breach)."""
    return [dict(block.to_dict()) for block in blocks]


def draft_all_button(clients: int | None = None) -> ButtonElement:
    """The *Draft all due* button (for a digest or any message that lists what is due):
    drafts every client with ready work and asks approval for each draft, once.
    `clients`: how many clients have ready work, named in the confirmation when known."""
    who = (
        f"each of the {_plural(clients, 'client')} with ready work"
        if clients is not None
        else "every client with ready work"
    )
    return ButtonElement(
        text=PlainTextObject(text="Draft all due", emoji=False),
        action_id=ACTION_DRAFT_ALL,
        value=DRAFT_ALL_VALUE,
        style="primary",
        confirm=ConfirmObject(
            title="Draft every client?",
            text=_confirm_text(
                f"Create or refresh the draft of {who} on Stripe, and ask for approval of "
                "each here. Nothing is finalized without an approval."
            ),
            confirm="Draft all",
            deny="Cancel",
        ),
    )


# --------------------------------------------------------------------------------------
# The finance digest
# --------------------------------------------------------------------------------------



def _money_list(amounts: Sequence[Money]) -> str:
    return " · ".join(f"*{format_money(m.amount, m.currency)}*" for m in amounts) or "nothing"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _local(at: datetime, timezone: str) -> datetime:
    from zoneinfo import ZoneInfo

    when = at if at.tzinfo else at.replace(tzinfo=UTC)
    return when.astimezone(ZoneInfo(timezone))


def digest_text(digest: Digest) -> str:
    """Notification / fallback text of the digest."""
    gap = " + ".join(format_money(m.amount, m.currency) for m in digest.gap_by_currency)
    parts = [f"unbilled {gap}" if gap else "nothing unbilled"]
    if digest.drafts:
        parts.append(_plural(len(digest.drafts), "draft") + " waiting for approval")
    if digest.overdue:
        parts.append(_plural(len(digest.overdue), "invoice") + " overdue")
    return "Finance digest: " + ", ".join(parts)


def digest_blocks(digest: Digest) -> list[Block]:
    """The finance digest: the unbilled gap per currency (never summed across
    currencies), the clients waiting longest, drafts waiting for approval, overdue
    invoices, and the "Draft all due" button (``draft_all`` / ``"all"``) when some client
    has ready work. At most `MAX_MESSAGE_BLOCKS` blocks."""
    local = _local(digest.as_of, digest.timezone)
    blocks: list[Block] = [
        HeaderBlock(
            text=PlainTextObject(text=f"Finance digest · {local:%a %d %b %Y}", emoji=False),
            block_id="kv_digest_header",
        ),
    ]
    gap_fields = [
        MarkdownTextObject(text=f"*Unbilled ({m.currency})*\n{format_money(m.amount, m.currency)}")
        for m in digest.gap_by_currency[:10]
    ]
    blocks.append(
        SectionBlock(
            block_id="kv_digest_gap",
            text=MarkdownTextObject(
                text=(
                    f"*Unbilled gap* (done, not yet invoiced) across "
                    f"{_plural(digest.clients_waiting, 'client')}"
                    if digest.gap_by_currency
                    else "*Unbilled gap*: nothing is waiting to be billed."
                )
            ),
            fields=gap_fields or None,
        )
    )
    if digest.waiting_longest:
        shown = digest.waiting_longest[:MAX_CLIENTS_SHOWN]
        lines = [
            f"• *{escape_mrkdwn(_truncate(c.name, 80))}* "
            f"{format_money(c.gap.amount, c.gap.currency)} · oldest "
            f"{_plural(c.oldest_days or 0, 'day')}"
            for c in shown
        ]
        more = len(digest.waiting_longest) - len(shown)
        if more:
            lines.append(f"… and {_plural(more, 'more client')}")
        blocks.append(
            SectionBlock(
                block_id="kv_digest_waiting",
                text=MarkdownTextObject(
                    text=_truncate("*Waiting longest*\n" + "\n".join(lines), _SECTION_MAX)
                ),
            )
        )
    blocks.append(DividerBlock())
    if digest.drafts:
        shown_drafts = digest.drafts[:MAX_DRAFTS_SHOWN]
        lines = [
            f"• {link(d.stripe_url, f'#{d.invoice_id}')} "
            f"*{escape_mrkdwn(_truncate(d.client_name, 80))}* "
            f"{format_money(d.total.amount, d.total.currency)} · "
            f"waiting {_plural(d.waiting_days, 'day')}"
            for d in shown_drafts
        ]
        more = len(digest.drafts) - len(shown_drafts)
        if more:
            lines.append(f"… and {_plural(more, 'more draft')}")
        head = (
            f"*Drafts waiting for approval* ({len(digest.drafts)}, "
            f"{_money_list(digest.drafts_total)})"
        )
        text = head + "\n" + "\n".join(lines)
    else:
        text = "*Drafts waiting for approval*: none."
    blocks.append(
        SectionBlock(
            block_id="kv_digest_drafts",
            text=MarkdownTextObject(text=_truncate(text, _SECTION_MAX)),
        )
    )
    if digest.overdue:
        shown_overdue = digest.overdue[:MAX_OVERDUE_SHOWN]
        lines = [
            f"• {link(o.hosted_url, o.number or f'#{o.invoice_id}')} "
            f"*{escape_mrkdwn(_truncate(o.client_name, 80))}* "
            f"{format_money(o.amount.amount, o.amount.currency)} · "
            f"{_plural(o.days_overdue, 'day')} overdue"
            + (f" · reminded {_plural(o.reminders, 'time')}" if o.reminders else "")
            for o in shown_overdue
        ]
        more = len(digest.overdue) - len(shown_overdue)
        if more:
            lines.append(f"… and {_plural(more, 'more invoice')}")
        text = (
            f"*Overdue invoices* ({len(digest.overdue)}, {_money_list(digest.overdue_total)})\n"
            + "\n".join(lines)
        )
    else:
        text = "*Overdue invoices*: none."
    blocks.append(
        SectionBlock(
            block_id="kv_digest_overdue",
            text=MarkdownTextObject(text=_truncate(text, _SECTION_MAX)),
        )
    )
    buttons: list[ButtonElement] = []
    if digest.clients_ready:
        buttons.append(draft_all_button(digest.clients_ready))
    if digest.dashboard_url and digest.dashboard_url.startswith(("https://", "http://")):
        buttons.append(
            ButtonElement(
                text=PlainTextObject(text="Open the dashboard", emoji=False),
                action_id="kanvoice_open_dashboard",
                url=digest.dashboard_url,
            )
        )
    if buttons:
        blocks.append(ActionsBlock(block_id="kv_digest_actions", elements=buttons))
    blocks.append(
        ContextBlock(
            block_id="kv_digest_context",
            elements=[
                MarkdownTextObject(
                    text=f"As of {slack_date(digest.as_of)} · kanvoice · times in "
                    f"{escape_mrkdwn(digest.timezone)}"
                )
            ],
        )
    )
    assert len(blocks) <= MAX_MESSAGE_BLOCKS
    return blocks


def digest_plain(digest: Digest) -> str:
    """The digest as terminal text (`kanvoice digest --print`)."""
    local = _local(digest.as_of, digest.timezone)
    out = [f"Finance digest · {local:%a %d %b %Y %H:%M} ({digest.timezone})", ""]
    if digest.gap_by_currency:
        out.append(
            "Unbilled gap: "
            + " · ".join(format_money(m.amount, m.currency) for m in digest.gap_by_currency)
            + f" across {_plural(digest.clients_waiting, 'client')}"
        )
    else:
        out.append("Unbilled gap: nothing is waiting to be billed.")
    if digest.waiting_longest:
        out.append("Waiting longest:")
        for c in digest.waiting_longest[:MAX_CLIENTS_SHOWN]:
            out.append(
                f"  {c.name}: {format_money(c.gap.amount, c.gap.currency)}, oldest "
                f"{_plural(c.oldest_days or 0, 'day')}"
            )
    out.append(f"Drafts waiting for approval: {len(digest.drafts)}")
    for d in digest.drafts[:MAX_DRAFTS_SHOWN]:
        out.append(
            f"  #{d.invoice_id} {d.client_name}: {format_money(d.total.amount, d.total.currency)}"
            f", waiting {_plural(d.waiting_days, 'day')}"
        )
    out.append(f"Overdue invoices: {len(digest.overdue)}")
    for o in digest.overdue[:MAX_OVERDUE_SHOWN]:
        out.append(
            f"  {o.number or '#' + str(o.invoice_id)} {o.client_name}: "
            f"{format_money(o.amount.amount, o.amount.currency)}, "
            f"{_plural(o.days_overdue, 'day')} overdue"
        )
    return "\n".join(out)
