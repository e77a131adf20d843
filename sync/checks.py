"""`kanvoice check-config`: a list of independent checks, each reporting problems.

A check is a function ``(settings, say) -> list[str]``: it returns one line per problem
(naming the setting, what is wrong and how to fix it) and calls ``say`` for what is
fine. Checks never raise: a crash becomes a problem line. ``network=True`` checks are
skipped by ``--offline``. Checks are coroutines, run one after the other in the
command's one event loop. To add one, write it and list it in `CHECKS`:

    async def dashboard(settings: Settings, say: Say) -> list[str]: ...

Every problem is reported in one run: a missing GitHub token does not hide a
missing Azure DevOps PAT, a wrong Slack channel or an unknown Stripe customer.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import OperationalError

from connectors.base import ConnectorError
from sync.settings import BoardSettings, ConfigError, Settings

Say = Callable[[str], None]
CheckFn = Callable[[Settings, Say], Awaitable[list[str]]]

#: Network checks give up on a service after this long (no retries for minutes).
NETWORK_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    run: CheckFn
    network: bool = False


async def run_checks(
    settings: Settings, say: Say, *, offline: bool = False, checks: Sequence[Check] | None = None
) -> list[str]:
    """Run every check of `CHECKS` (or `checks`), network ones unless offline; all their
    problems."""
    problems: list[str] = []
    for item in CHECKS if checks is None else checks:
        if offline and item.network:
            continue
        try:
            problems.extend(await item.run(settings, say))
        except Exception as exc:  # a check that crashes must not hide the others
            problems.append(f"{item.name}: the check itself failed: {type(exc).__name__}: {exc}")
    if offline:
        say("note: network checks skipped (--offline)")
    return problems


def _boards(settings: Settings, source: str) -> list[tuple[int, BoardSettings]]:
    return [(i, b) for i, b in enumerate(settings.boards) if b.source == source]


# -- offline: credentials ------------------------------------------------------------


async def board_credentials(settings: Settings, say: Say) -> list[str]:
    """Each GitHub / Azure DevOps board has what it needs to be read."""
    from sync.boards import _azure_config, _github_config

    problems: list[str] = []
    for index, board in enumerate(settings.boards):
        try:
            if board.source == "github":
                _github_config(settings, index, board)
            elif board.source == "azure_devops":
                _azure_config(settings, index, board)
            else:
                continue
        except ConfigError as exc:
            problems.append(str(exc))
        else:
            say(f"credentials for board {board.key} ({board.source})")
    if _boards(settings, "github") and settings.github.webhook_secret is None:
        say("note: github.webhook_secret not set: GitHub webhooks are refused, polling only")
    if _boards(settings, "azure_devops") and settings.azure_devops.hook_password is None:
        say("note: azure_devops.hook_password not set: service hooks are refused, polling only")
    return list(dict.fromkeys(problems))


def stripe_key_mode(key: str) -> str | None:
    """'test' or 'live' for a Stripe secret or restricted key; None for anything else."""
    for prefix in ("sk_", "rk_"):
        for mode in ("test", "live"):
            if key.startswith(f"{prefix}{mode}_"):
                return mode
    return None


async def stripe_credentials(settings: Settings, say: Say) -> list[str]:
    stripe = settings.stripe
    if stripe.api_key is None:
        if settings.clients:
            return [
                "stripe.api_key: not set (KANVOICE_STRIPE__API_KEY or the stripe__api_key "
                "file); nothing can be invoiced"
            ]
        return []
    problems: list[str] = []
    key = stripe.api_key.get_secret_value()
    mode = stripe_key_mode(key)
    if mode is None:
        kind = "a publishable key (pk_…)" if key.startswith("pk_") else "not a Stripe secret key"
        problems.append(
            f"stripe.api_key: {kind}: expected a secret or restricted key "
            "(sk_test_…, sk_live_…, rk_test_…, rk_live_…)"
        )
    else:
        say(f"Stripe key: {mode} mode" + (" (invoices are not real)" if mode == "test" else ""))
    if stripe.webhook_secret is None:
        problems.append(
            "stripe.webhook_secret: not set (KANVOICE_STRIPE__WEBHOOK_SECRET, whsec_…): "
            "Stripe webhooks are refused, so paid and voided invoices are never followed"
        )
    return problems


def slack_configured(settings: Settings) -> bool:
    slack = settings.slack
    return bool(
        slack.bot_token or slack.signing_secret or slack.app_token or slack.approver_group
    ) or bool(slack.channel)


async def slack_credentials(settings: Settings, say: Say) -> list[str]:
    slack = settings.slack
    if not slack_configured(settings):
        say("note: Slack not configured: approvals from the dashboard and CLI only")
        return []
    problems: list[str] = []
    if slack.bot_token is None:
        problems.append(
            "slack.bot_token: not set (KANVOICE_SLACK__BOT_TOKEN, xoxb-…): drafts cannot be "
            "posted for approval"
        )
    if not slack.channel:
        problems.append("slack.channel: not set: the channel id drafts are posted to (C…)")
    if slack.socket_mode:
        if slack.app_token is None:
            problems.append(
                "slack.app_token: required by slack.socket_mode = true "
                "(KANVOICE_SLACK__APP_TOKEN, xapp-…)"
            )
    elif slack.signing_secret is None:
        problems.append(
            "slack.signing_secret: not set (KANVOICE_SLACK__SIGNING_SECRET): every button "
            "click is refused"
        )
    if not slack.approvers and not slack.approver_group:
        problems.append("slack.approvers: empty and no slack.approver_group: nobody can approve")
    return problems


# -- ledger --------------------------------------------------------------------------


async def ledger(settings: Settings, say: Say) -> list[str]:
    from sync.ledger.store import Ledger

    store = Ledger(settings.ledger.url)
    try:
        revision = store.current_revision()
        state = f"schema {revision}" if revision else "empty (run `kanvoice db upgrade`)"
        say(f"ledger reachable: {state}")
        return []
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        return [f"ledger.url: cannot open the ledger: {reason}"]
    finally:
        store.dispose()


async def people_without_a_rate(settings: Settings, say: Say) -> list[str]:
    """Board identities that name no configured person, and people with no bill or cost
    rate: listed (they are billed at the next rate in the precedence), not a failure."""
    from datetime import UTC, datetime

    from sqlalchemy.exc import SQLAlchemyError

    from mapping.rules import people_without_rate
    from sync.ledger.reports import assignees_seen
    from sync.ledger.store import Ledger

    staff = settings.staff()
    if not staff:
        say("no [[people]] configured: hours are billed per item, not per person")
        return []
    seen: dict[str, set[str]] = {}
    store = Ledger(settings.ledger.url)
    try:
        with store.engine.connect() as conn:
            seen = assignees_seen(conn)
    except SQLAlchemyError:
        say("note: people without a rate: the ledger could not be read, configured people only")
    finally:
        store.dispose()
    missing = people_without_rate(staff, seen, datetime.now(UTC).date())
    if not missing:
        say(f"every person has a rate ({len(staff.people)} configured)")
    for who, why in missing:
        say(f"note: person without a rate: {who}: {why}")
    return []


# -- network: GitHub -----------------------------------------------------------------


async def github_boards(settings: Settings, say: Say) -> list[str]:
    """The credentials can read each project, and the configured fields exist."""
    from connectors.github.connector import GitHubProjectConnector
    from connectors.github.queries import ORGANIZATION_PROJECT_FIELDS, USER_PROJECT_FIELDS
    from sync.boards import _github_config

    async def one(index: int, board: BoardSettings) -> list[str]:
        try:
            config = _github_config(settings, index, board)
        except ConfigError:
            return []  # reported by the credentials check
        config = dataclasses.replace(config, timeout_seconds=NETWORK_TIMEOUT_SECONDS)
        where = f"boards[{index}] ({board.key})"
        connector = GitHubProjectConnector(config)
        document = (
            ORGANIZATION_PROJECT_FIELDS
            if config.owner_type == "organization"
            else USER_PROJECT_FIELDS
        )
        try:
            async with asyncio.timeout(NETWORK_TIMEOUT_SECONDS * 3):
                data = await connector.client.execute(
                    document, {"login": config.owner, "number": config.project_number}
                )
        except (ConnectorError, TimeoutError) as exc:
            return [f"{where}: cannot read the GitHub project: {exc or 'timed out'}"]
        finally:
            await connector.aclose()
        owner = data.get(config.owner_type)
        project = owner.get("projectV2") if isinstance(owner, dict) else None
        if not isinstance(project, dict):
            return [
                f"{where}.github: {config.owner_type} {config.owner!r} project "
                f"{config.project_number} not found or not readable with these credentials"
            ]
        fields: dict[str, dict[str, Any]] = {}
        for node in (project.get("fields") or {}).get("nodes") or []:
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                fields[node["name"]] = node
        problems = _github_field_problems(where, board, config.status_field, fields)
        if not problems:
            say(f"GitHub board {board.key}: project {project.get('title')!r} and its fields")
        return problems

    async def every() -> list[str]:
        results = await asyncio.gather(*(one(i, b) for i, b in _boards(settings, "github")))
        return [p for r in results for p in r]

    return await every() if _boards(settings, "github") else []


def _github_field_problems(
    where: str, board: BoardSettings, status_field: str, fields: dict[str, dict[str, Any]]
) -> list[str]:
    known = sorted(fields)
    problems: list[str] = []

    def field(setting: str, name: str | None, data_type: str) -> dict[str, Any] | None:
        if name is None:
            return None
        found = fields.get(name)
        if found is None:
            problems.append(
                f"{where}.{setting} = {name!r}: no such field on the project (fields: {known})"
            )
        elif found.get("dataType") != data_type:
            problems.append(
                f"{where}.{setting} = {name!r}: a {found.get('dataType')} field, expected "
                f"{data_type}"
            )
            return None
        return found

    field("hours_field", board.hours_field or "Hours", "NUMBER")
    field("rate_field", board.rate_field, "NUMBER")
    field("milestone_field", board.milestone_field, "NUMBER")
    field("hours_by_person_field", board.hours_by_person_field, "TEXT")
    billing = field("billing_type_field", board.billing_type_field, "SINGLE_SELECT")
    if billing is not None:
        options = {o.get("name") for o in billing.get("options") or []}
        for value in board.billing_type_values:
            if value not in options:
                problems.append(
                    f"{where}.billing_type_values: {value!r} is not an option of "
                    f"{board.billing_type_field!r} (options: {sorted(options)})"
                )
    status = field("github.status_field", status_field, "SINGLE_SELECT")
    if status is not None:
        options = {o.get("name") for o in status.get("options") or []}
        for column in board.done_columns or ["Done"]:
            if column not in options:
                problems.append(
                    f"{where}.done_columns: {column!r} is not an option of {status_field!r} "
                    f"(options: {sorted(str(o) for o in options)})"
                )
    return problems


# -- network: Azure DevOps -----------------------------------------------------------


async def azure_boards(settings: Settings, say: Say) -> list[str]:
    """The PAT can run each board's WIQL, and its work item types have Done states."""
    from connectors.azure_devops.connector import AzureDevOpsConnector
    from sync.boards import _azure_config

    async def one(index: int, board: BoardSettings) -> list[str]:
        try:
            config = _azure_config(settings, index, board)
        except ConfigError:
            return []  # reported by the credentials check
        config = dataclasses.replace(config, timeout_seconds=NETWORK_TIMEOUT_SECONDS)
        where = f"boards[{index}] ({board.key})"
        connector = AzureDevOpsConnector(config)
        problems: list[str] = []
        try:
            async with asyncio.timeout(NETWORK_TIMEOUT_SECONDS * 3):
                await connector.client.query_ids(connector.wiql(None), top=1)
                for wit in config.work_item_types:
                    try:
                        states = await connector.client.get_type_states(wit)
                    except ConnectorError as exc:
                        problems.append(
                            f"{where}.azure_devops.work_item_types: {wit!r}: cannot read its "
                            f"states: {exc}"
                        )
                        continue
                    names = {str(s.get("name")) for s in states}
                    done = {str(s.get("name")) for s in states if s.get("category") == "Completed"}
                    if not config.done_board_columns and not done:
                        problems.append(
                            f"{where}.azure_devops.work_item_types: {wit!r} has no state in the "
                            f"Completed category (states: {sorted(names)}): set done_columns"
                        )
        except (ConnectorError, TimeoutError) as exc:
            return [f"{where}: cannot run the board's WIQL query: {exc or 'timed out'}"]
        finally:
            await connector.aclose()
        if not problems:
            say(f"Azure DevOps board {board.key}: WIQL query and Done states")
        return problems

    async def every() -> list[str]:
        results = await asyncio.gather(*(one(i, b) for i, b in _boards(settings, "azure_devops")))
        return [p for r in results for p in r]

    return await every() if _boards(settings, "azure_devops") else []


# -- network: Slack ------------------------------------------------------------------


async def slack(settings: Settings, say: Say) -> list[str]:
    """auth.test, the bot is in the channel, every approver (and the group) exists."""
    cfg = settings.slack
    if cfg.bot_token is None:
        return []  # reported by the credentials check (or Slack is not used)
    from connectors.slack.client import RetryPolicy, SlackApprovals

    client = SlackApprovals(
        cfg.bot_token.get_secret_value(),
        base_url=cfg.api_url,
        retry=RetryPolicy(deadline=NETWORK_TIMEOUT_SECONDS),
    )

    async def probe() -> list[str]:
        problems: list[str] = []
        try:
            identity = await client.auth_test()
        except ConnectorError as exc:
            return [f"slack.bot_token: {exc}"]
        say(f"Slack auth.test: bot {identity.user} in workspace {identity.team}")
        web = client.web
        if cfg.channel:
            try:
                info = await web.conversations_info(channel=cfg.channel)
                channel = info.get("channel") or {}
                if not channel.get("is_member"):
                    problems.append(
                        f"slack.channel = {cfg.channel!r}: the bot is not a member of "
                        f"#{channel.get('name', cfg.channel)}: invite it (/invite @kanvoice)"
                    )
                else:
                    say(f"Slack channel #{channel.get('name', cfg.channel)}: the bot is a member")
            except Exception as exc:
                problems.append(f"slack.channel = {cfg.channel!r}: {_slack_error(exc)}")
        for index, user in enumerate(cfg.approvers):
            try:
                found = await web.users_info(user=user)
                if (found.get("user") or {}).get("deleted"):
                    problems.append(f"slack.approvers[{index}] = {user!r}: the user is deactivated")
            except Exception as exc:
                problems.append(f"slack.approvers[{index}] = {user!r}: {_slack_error(exc)}")
        if cfg.approver_group:
            try:
                await client.group_members(cfg.approver_group)
            except Exception as exc:
                problems.append(
                    f"slack.approver_group = {cfg.approver_group!r}: {_slack_error(exc)}"
                )
        if cfg.approvers and not any(p.startswith("slack.approvers") for p in problems):
            say(f"Slack approvers: {len(cfg.approvers)} found")
        return problems

    async def run() -> list[str]:
        try:
            async with asyncio.timeout(NETWORK_TIMEOUT_SECONDS * 3):
                return await probe()
        except TimeoutError:
            return [f"slack.api_url = {cfg.api_url!r}: Slack did not answer in time"]

    return await run()


def _slack_error(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    error = response.get("error") if response is not None else None
    if error:
        return f"Slack says {error}"
    return str(exc)


# -- network: Stripe -----------------------------------------------------------------


async def stripe(settings: Settings, say: Say) -> list[str]:
    """Each client's Stripe customer exists, bills in its currency, in the key's mode."""
    from connectors.stripe.gateway import StripeRejected
    from sync.composition import stripe_gateway_factory

    factory = stripe_gateway_factory(settings)
    if factory is None or not settings.clients:
        return []  # reported by the credentials check
    gateway = factory()
    assert settings.stripe.api_key is not None
    mode = stripe_key_mode(settings.stripe.api_key.get_secret_value())

    async def probe() -> list[str]:
        problems: list[str] = []
        try:
            for index, client in enumerate(settings.clients):
                key = f"clients[{index}].stripe_customer_id = {client.stripe_customer_id!r}"
                try:
                    customer = await gateway.retrieve_customer(client.stripe_customer_id)
                except StripeRejected as exc:
                    problems.append(f"{key}: {exc}")
                    continue
                if customer.get("deleted"):
                    problems.append(f"{key}: the customer is deleted in Stripe")
                    continue
                livemode = customer.get("livemode")
                if mode is not None and isinstance(livemode, bool) and livemode != (mode == "live"):
                    problems.append(
                        f"{key}: a {'live' if livemode else 'test'} mode customer, but the "
                        f"key is a {mode} key"
                    )
                    continue
                currency = (customer.get("currency") or "").upper()
                if currency and currency != client.currency:
                    problems.append(
                        f"{key}: Stripe bills this customer in {currency}, the settings say "
                        f"{client.currency}"
                    )
                else:
                    say(f"Stripe customer {client.stripe_customer_id} ({client.key})")
        except ConnectorError as exc:
            problems.append(f"stripe.api_key: {exc}")
        except Exception as exc:
            problems.append(
                f"stripe.api_base = {settings.stripe.api_base!r}: cannot reach Stripe: {exc}"
            )
        finally:
            await gateway.close()
        return problems

    return await probe()


#: Every check of `kanvoice check-config`, in the order they run.
CHECKS: tuple[Check, ...] = (
    Check("board credentials", board_credentials),
    Check("stripe credentials", stripe_credentials),
    Check("slack credentials", slack_credentials),
    Check("ledger", ledger),
    Check("people without a rate", people_without_a_rate),
    Check("github boards", github_boards, network=True),
    Check("azure devops boards", azure_boards, network=True),
    Check("slack", slack, network=True),
    Check("stripe", stripe, network=True),
)
