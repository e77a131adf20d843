"""The small protocols every board connector implements, and the one error taxonomy.

Connectors talk to the outside world and return domain types (`BoardItem`); they
never touch the ledger or each other. Anything that goes wrong at that boundary is
either `RetriableError` (try again later: timeouts, 5xx, rate limits) or
`FatalError` (a person must fix something: bad credentials, missing project).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from mapping.domain import BoardItem


class ConnectorError(Exception):
    """Base of the connector error taxonomy."""


class RetriableError(ConnectorError):
    """Transient: the same call may succeed later. `retry_after` in seconds if known."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(ConnectorError):
    """Permanent until a person acts (credentials, permissions, configuration)."""


#: Told ``(service, outcome)`` after every HTTP call to an outside service (each retry
#: is a call): the shell counts them (``kanvoice_external_calls_total``) and /readyz
#: shows each service's latest outcome. See `call_outcome` for the outcomes.
CallObserver = Callable[[str, str], None]


def call_outcome(error: BaseException | None) -> str:
    """The outcome of one call: ``ok``; ``retriable`` (may succeed later: a time-out, a
    connection error, 5xx, a rate limit); ``fatal`` (a person must act: credentials,
    permissions, configuration); ``rejected`` (the service refused this request)."""
    if error is None:
        return "ok"
    if isinstance(error, FatalError):
        return "fatal"
    if isinstance(error, RetriableError) or not isinstance(error, ConnectorError):
        return "retriable"  # also each client's private "try again" signal
    return "rejected"


class WebhookRejected(ConnectorError):
    """A webhook request that must not be acted on; `status` is the HTTP answer to give."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def has_nul(value: object) -> bool:
    """True if a decoded JSON value holds a NUL character in any string (key or value).

    No sender kanvoice listens to puts one in a payload, and PostgreSQL's text columns
    refuse them: a payload with one is malformed (400), never a database error.
    """
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


@dataclass(frozen=True, slots=True)
class WebhookTrigger:
    """A verified webhook reduced to what to re-fetch.

    `delivery_id` is what dedupe keys on; `item_ids` are the board's own ids to
    fetch again (webhooks are triggers, never the source of billing data).
    `ignored_reason` is set for events that are valid but not acted on (ping,
    unknown action); such triggers carry no item ids. `owner` is the account the event
    belongs to when the sender names it (GitHub: ``organization.login``), so events of
    projects no board reads are dropped without a call; `revision` is the item
    revision the event reports (Azure DevOps ``rev``), for the stale check.
    """

    source: str
    delivery_id: str
    event: str
    action: str
    board_hint: str | None
    item_ids: tuple[str, ...]
    ignored_reason: str | None = None
    owner: str | None = None
    revision: int | None = None


@dataclass(frozen=True, slots=True)
class PollResult:
    """Snapshots from one poll, the number of requests made, and the new cursor.

    `complete` is True when `items` is the board's whole listing (a full sync or a
    periodic reconcile), False for an incremental window.
    """

    items: tuple[BoardItem, ...]
    requests_made: int
    cursor: str | None = None
    complete: bool = False


@dataclass(frozen=True, slots=True)
class QuotaObservation:
    """What the board API last said about this token's quota (None: not said).

    GitHub: GraphQL points (`remaining`, `limit`, `reset_at` in epoch seconds). Azure
    DevOps: TSTUs of the sliding 5-minute window, sent only when a request was
    delayed or is near the limit (``X-RateLimit-Remaining`` / ``-Limit`` /
    ``-Delay``), and ``Retry-After`` on 429/503 or even on a 200.
    """

    resource: str
    remaining: float | None = None
    limit: float | None = None
    reset_at: float | None = None
    retry_after: float | None = None
    delay: float | None = None
    observed_at: float = 0.0


class BoardConnector(Protocol):
    """One configured board. Implementations: GitHub Projects v2, Azure DevOps Boards."""

    board_key: str

    async def poll(self, cursor: str | None) -> PollResult:
        """Every item changed since `cursor` (None: all items), as snapshots.

        Raises RetriableError or FatalError; never returns partial pages silently.
        """
        ...

    async def fetch(self, item_ids: tuple[str, ...]) -> tuple[BoardItem, ...]:
        """Fresh snapshots of the given items (the re-fetch after a webhook).

        Items that no longer exist are omitted.
        """
        ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookTrigger:
        """Verify authenticity first, then parse. Raises WebhookRejected on bad input."""
        ...
