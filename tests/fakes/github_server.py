"""A fake GitHub GraphQL endpoint holding one Projects (v2) board, over real HTTP.

It is not a GraphQL engine: it recognizes the connector's documents by their root
fields (``organization``/``user`` → ``projectV2.items`` page, ``node(id:)``,
``nodes(ids:)``) and answers with the JSON GitHub gives for those documents (the
same shape as the captured fixtures in ``tests/data/github``): cursor paging with at
most 100 per page, ``rateLimit``, ``NOT_FOUND`` errors with ``null`` data,
``REDACTED`` items with ``content: null``, number fields as floats.

Build a project, mutate it, and serve it::

    project = FakeGitHubProject(owner="acme")
    item = project.add_issue("Fix login", status="In Progress", hours=2.5)
    with serve_fake_github(project) as url:      # http://127.0.0.1:PORT/graphql
        ...                                       # point GitHubBoardConfig.api_url here
    project.move(item.node_id, "Done")

Extras: `require_token` (bearer check, 401 "Bad credentials" otherwise), injected
failures (`fail_next(502)`, `secondary_limit_next(retry_after=…)`), rate-limit
numbers, per-kind request counts (`requests["items_page"]` …), GitHub App
installation tokens at ``POST /app/installations/{id}/access_tokens``, and
`webhook_payload()` which builds a real-shaped ``projects_v2_item`` delivery body.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import secrets
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ISSUE = "ISSUE"
PULL_REQUEST = "PULL_REQUEST"
DRAFT_ISSUE = "DRAFT_ISSUE"
REDACTED = "REDACTED"

_START = datetime(2025, 1, 6, 9, 0, 0, tzinfo=UTC)
_CURSOR_PREFIX = "cursor:v2:"
_SECONDARY_LIMIT_DOCS = (
    "https://docs.github.com/graphql/overview/rate-limits-and-node-limits-for-the-graphql-api"
    "#secondary-rate-limits"
)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _option_id(name: str) -> str:
    return hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:8]


@dataclass
class FakeItem:
    """One project item. Mutate it through `FakeGitHubProject` so times advance."""

    node_id: str
    database_id: int
    kind: str
    title: str
    content_id: str | None
    number: int | None = None
    repository: str | None = None
    state: str = "OPEN"
    status: str | None = None
    numbers: dict[str, float] = field(default_factory=dict)
    selects: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    iteration: tuple[str, str] | None = None
    labels: list[str] = field(default_factory=list)
    assignees: list[str] = field(default_factory=list)
    archived: bool = False
    updated_at: datetime = _START
    content_updated_at: datetime = _START
    created_at: datetime = _START


@dataclass
class _Failure:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


class FakeGitHubProject:
    """In-memory GitHub project served as a GraphQL endpoint (see the module doc).

    Field names are configurable so the connector's config can be exercised; the
    Status field is a single select, `hours_field`/`rate_field`/`milestone_field` are
    Number fields, `billing_field` a single select, `iteration_field` an iteration.
    Thread-safe: tests mutate it while the server thread reads it.
    """

    def __init__(
        self,
        *,
        owner: str = "acme",
        owner_type: str = "organization",
        number: int = 1,
        title: str = "Client work",
        status_field: str = "Status",
        hours_field: str = "Hours",
        billing_field: str = "Billing",
        rate_field: str = "Rate",
        milestone_field: str = "Milestone price",
        iteration_field: str = "Sprint",
        require_token: str | None = None,
        rate_limit: int = 5000,
        query_cost: int = 1,
        max_page_size: int = 100,
        field_edits_bump_last_updated: bool = True,
    ) -> None:
        if owner_type not in ("organization", "user"):
            raise ValueError("owner_type must be 'organization' or 'user'")
        self.owner = owner
        self.owner_type = owner_type
        self.number = number
        self.title = title
        self.project_id = f"PVT_kwDO{base64.b32encode(owner.encode()).decode()[:6]}{number:04d}"
        self.status_field = status_field
        self.hours_field = hours_field
        self.billing_field = billing_field
        self.rate_field = rate_field
        self.milestone_field = milestone_field
        self.iteration_field = iteration_field
        self.max_page_size = max_page_size
        #: Whether a project-only field edit (Status, Hours, archive) counts for the
        #: ``last-updated`` filter. GitHub documents the filter for issue/PR updates
        #: only; set False to model the pessimistic answer.
        self.field_edits_bump_last_updated = field_edits_bump_last_updated
        self.tokens: set[str] = {require_token} if require_token else set()
        self.require_auth = require_token is not None
        self.rate_limit = rate_limit
        self.rate_remaining = rate_limit
        self.query_cost = query_cost
        self.rate_reset_at = _START + timedelta(hours=1)
        self.requests: Counter[str] = Counter()
        self.received: list[dict[str, Any]] = []
        self._items: dict[str, FakeItem] = {}
        self._failures: deque[_Failure] = deque()
        self._lock = threading.RLock()
        self._clock = _START
        self._seq = 0
        self.installation_tokens_issued = 0
        #: Options of the Status and billing single-select fields (the fields query).
        self.status_options: list[str] = ["Todo", "In Progress", "In review", "Done"]
        self.billing_options: list[str] = ["T&M", "Fixed", "Internal"]

    # -- builders --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The project's web URL."""
        kind = "orgs" if self.owner_type == "organization" else "users"
        return f"https://github.com/{kind}/{self.owner}/projects/{self.number}"

    def _tick(self) -> datetime:
        self._clock += timedelta(seconds=1)
        return self._clock

    def _new_item(self, kind: str, title: str, **values: Any) -> FakeItem:
        with self._lock:
            self._seq += 1
            seq = self._seq
            now = self._tick()
            content_id = {
                ISSUE: f"I_kwDOFake{seq:06d}",
                PULL_REQUEST: f"PR_kwDOFake{seq:06d}",
                DRAFT_ISSUE: f"DI_lADOFake{seq:06d}",
            }.get(kind)
            item = FakeItem(
                node_id=f"PVTI_lADOFake{self.number:03d}zg{seq:06d}",
                database_id=90_000_000 + seq,
                kind=kind,
                title=title,
                content_id=content_id,
                updated_at=now,
                content_updated_at=now,
                created_at=now,
            )
            if kind in (ISSUE, PULL_REQUEST):
                item.number = seq
                item.repository = values.pop("repository", None) or f"{self.owner}/web"
            self._apply(item, **values)
            self._items[item.node_id] = item
            return item

    def _apply(
        self,
        item: FakeItem,
        *,
        status: str | None = None,
        hours: float | None = None,
        billing: str | None = None,
        rate: float | None = None,
        milestone: float | None = None,
        labels: Iterable[str] = (),
        assignees: Iterable[str] = (),
        iteration: str | tuple[str, str] | None = None,
        state: str | None = None,
        numbers: dict[str, float] | None = None,
        selects: dict[str, str] | None = None,
        texts: dict[str, str] | None = None,
        archived: bool = False,
    ) -> None:
        item.status = status
        if hours is not None:
            item.numbers[self.hours_field] = float(hours)
        if rate is not None:
            item.numbers[self.rate_field] = float(rate)
        if milestone is not None:
            item.numbers[self.milestone_field] = float(milestone)
        if billing is not None:
            item.selects[self.billing_field] = billing
        item.numbers.update({k: float(v) for k, v in (numbers or {}).items()})
        item.selects.update(selects or {})
        item.texts.update(texts or {})
        item.labels = list(labels)
        item.assignees = list(assignees)
        if isinstance(iteration, str):
            item.iteration = (iteration, "2025-01-06")
        else:
            item.iteration = iteration
        if state is not None:
            item.state = state
        item.archived = archived

    def add_issue(self, title: str = "Issue", **values: Any) -> FakeItem:
        """Add an Issue item. Keywords: status, hours, billing, rate, milestone, labels,
        assignees, iteration (title or (title, start date)), state, repository,
        numbers/selects/texts (other fields by name), archived."""
        return self._new_item(ISSUE, title, **values)

    def add_pull_request(self, title: str = "Pull request", **values: Any) -> FakeItem:
        """Add a PullRequest item (state OPEN, CLOSED or MERGED); keywords as add_issue."""
        return self._new_item(PULL_REQUEST, title, **values)

    def add_draft(self, title: str = "Draft", **values: Any) -> FakeItem:
        """Add a DraftIssue item (no url, number, repository or labels)."""
        values.pop("labels", None)
        return self._new_item(DRAFT_ISSUE, title, **values)

    def add_redacted(self) -> FakeItem:
        """Add an item whose content the viewer may not see (type REDACTED)."""
        return self._new_item(REDACTED, "")

    def add_issues(self, count: int, *, title: str = "Task", **values: Any) -> list[FakeItem]:
        """Add `count` issues titled "<title> 1" … with the same values."""
        return [self._new_item(ISSUE, f"{title} {n}", **dict(values)) for n in range(1, count + 1)]

    def item(self, node_id: str) -> FakeItem:
        """The item with this node id (KeyError if absent)."""
        return self._items[node_id]

    @property
    def items(self) -> list[FakeItem]:
        """All items in board order."""
        with self._lock:
            return list(self._items.values())

    def _touch(self, node_id: str, *, content: bool = False) -> FakeItem:
        item = self._items[node_id]
        now = self._tick()
        item.updated_at = now
        if content:
            item.content_updated_at = now
        return item

    def move(self, node_id: str, status: str | None) -> None:
        """Set the Status option (None clears it)."""
        with self._lock:
            self._touch(node_id).status = status

    def set_hours(self, node_id: str, hours: float | None) -> None:
        """Set or clear the hours Number field."""
        self.set_number(node_id, self.hours_field, hours)

    def set_number(self, node_id: str, field_name: str, value: float | None) -> None:
        """Set or clear any Number field."""
        with self._lock:
            item = self._touch(node_id)
            if value is None:
                item.numbers.pop(field_name, None)
            else:
                item.numbers[field_name] = float(value)

    def set_select(self, node_id: str, field_name: str, option: str | None) -> None:
        """Set or clear any single-select field (the billing type, say)."""
        with self._lock:
            item = self._touch(node_id)
            if option is None:
                item.selects.pop(field_name, None)
            else:
                item.selects[field_name] = option

    def set_labels(self, node_id: str, labels: Iterable[str]) -> None:
        """Replace the content's labels (changes the content's updatedAt only)."""
        with self._lock:
            self._touch(node_id, content=True).labels = list(labels)

    def set_title(self, node_id: str, title: str) -> None:
        """Rename the content."""
        with self._lock:
            self._touch(node_id, content=True).title = title

    def set_content_state(self, node_id: str, state: str) -> None:
        """Close / reopen / merge the issue or pull request."""
        with self._lock:
            self._touch(node_id, content=True).state = state

    def archive(self, node_id: str) -> None:
        with self._lock:
            self._touch(node_id).archived = True

    def restore(self, node_id: str) -> None:
        with self._lock:
            self._touch(node_id).archived = False

    def redact(self, node_id: str) -> None:
        """Make the item's content invisible (as when the token loses repo access)."""
        with self._lock:
            self._touch(node_id).kind = REDACTED

    def convert(self, node_id: str, repository: str | None = None) -> None:
        """Convert a draft into an issue (the `converted` webhook action)."""
        with self._lock:
            item = self._touch(node_id, content=True)
            item.kind = ISSUE
            item.content_id = f"I_kwDOFake{item.database_id % 1_000_000:06d}"
            item.number = item.database_id % 1_000_000
            item.repository = repository or f"{self.owner}/web"

    def delete(self, node_id: str) -> None:
        """Remove the item from the project (node queries then answer NOT_FOUND)."""
        with self._lock:
            del self._items[node_id]

    def reorder(self, node_id: str, to_index: int) -> None:
        """Move the item to another position (board order)."""
        with self._lock:
            item = self._items.pop(node_id)
            order = list(self._items.values())
            order.insert(to_index, item)
            self._items = {i.node_id: i for i in order}

    def advance(self, delta: timedelta) -> None:
        """Time passes on the fake with no change (the ``last-updated`` filter's now)."""
        with self._lock:
            self._clock += delta

    def last_updated(self, item: FakeItem) -> datetime:
        """The time the ``last-updated`` filter sees for an item."""
        if self.field_edits_bump_last_updated:
            return item.updated_at
        return item.content_updated_at

    # -- failures, limits ------------------------------------------------------------

    def fail_next(
        self,
        status: int = 502,
        *,
        count: int = 1,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next `count` GraphQL requests with this status."""
        with self._lock:
            for _ in range(count):
                self._failures.append(
                    _Failure(status, dict(headers or {}), body or {"message": "Server Error"})
                )

    def secondary_limit_next(
        self, *, retry_after: int | None = 60, status: int = 403, count: int = 1
    ) -> None:
        """Answer the next requests with GitHub's secondary-rate-limit refusal."""
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        self.fail_next(
            status,
            count=count,
            headers=headers,
            body={
                "documentation_url": _SECONDARY_LIMIT_DOCS,
                "message": "You have exceeded a secondary rate limit. Please wait a few "
                "minutes before you try again.",
            },
        )

    def set_rate_limit(
        self, remaining: int, *, reset_at: datetime | None = None, cost: int | None = None
    ) -> None:
        """Set the points left (and optionally the reset time and per-query cost)."""
        with self._lock:
            self.rate_remaining = remaining
            if reset_at is not None:
                self.rate_reset_at = reset_at
            if cost is not None:
                self.query_cost = cost

    # -- webhook payloads ------------------------------------------------------------

    def webhook_payload(
        self,
        node_id: str,
        action: str,
        *,
        changes: dict[str, Any] | None = None,
        sender: str = "octocat",
    ) -> dict[str, Any]:
        """A `projects_v2_item` delivery body as GitHub sends it for this item."""
        with self._lock:
            item = self._items.get(node_id)
            now = _iso(self._clock)
            content_type = {
                ISSUE: "Issue",
                PULL_REQUEST: "PullRequest",
                DRAFT_ISSUE: "DraftIssue",
            }.get(item.kind if item else ISSUE, "Issue")
            payload: dict[str, Any] = {
                "action": action,
                "projects_v2_item": {
                    "id": item.database_id if item else 0,
                    "node_id": node_id,
                    "project_node_id": self.project_id,
                    "content_node_id": (item.content_id if item else None) or "I_kwDOFake0",
                    "content_type": content_type,
                    "creator": _user(sender),
                    "created_at": _iso(item.created_at) if item else now,
                    "updated_at": _iso(item.updated_at) if item else now,
                    "archived_at": now if item and item.archived else None,
                },
                "sender": _user(sender),
            }
            if changes is not None:
                payload["changes"] = changes
            if self.owner_type == "organization":
                payload["organization"] = {
                    "login": self.owner,
                    "id": 1_000_001,
                    "node_id": "O_kgDOFake01",
                    "url": f"https://api.github.com/orgs/{self.owner}",
                }
            payload["installation"] = {
                "id": 4_200_001,
                "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNDIwMDAwMQ==",
            }
            return payload

    def status_change(
        self, old: str | None, new: str | None, *, detailed: bool = True
    ) -> dict[str, Any]:
        """`changes` for an `edited` Status change: current form, or the older one."""
        value: dict[str, Any] = {
            "field_node_id": "PVTSSF_lADOFake001zgStatus",
            "field_type": "single_select",
        }
        if detailed:
            value.update(
                {
                    "field_name": self.status_field,
                    "project_number": self.number,
                    "from": _option(old),
                    "to": _option(new),
                }
            )
        return {"field_value": value}

    # -- GraphQL rendering -----------------------------------------------------------

    def _field_values(self, item: FakeItem) -> list[dict[str, Any]]:
        if item.kind == REDACTED:
            return []
        values: list[dict[str, Any]] = [
            {
                "__typename": "ProjectV2ItemFieldTextValue",
                "text": item.title,
                "field": {"name": "Title"},
            }
        ]
        if item.kind in (ISSUE, PULL_REQUEST):
            values.append({"__typename": "ProjectV2ItemFieldRepositoryValue"})
        if item.assignees:
            values.append({"__typename": "ProjectV2ItemFieldUserValue"})
        if item.labels:
            values.append({"__typename": "ProjectV2ItemFieldLabelValue"})
        if item.status is not None:
            values.append(
                {
                    "__typename": "ProjectV2ItemFieldSingleSelectValue",
                    "name": item.status,
                    "optionId": _option_id(item.status),
                    "field": {"name": self.status_field},
                }
            )
        for name, option in item.selects.items():
            values.append(
                {
                    "__typename": "ProjectV2ItemFieldSingleSelectValue",
                    "name": option,
                    "optionId": _option_id(option),
                    "field": {"name": name},
                }
            )
        for name, number in item.numbers.items():
            values.append(
                {
                    "__typename": "ProjectV2ItemFieldNumberValue",
                    "number": number,
                    "field": {"name": name},
                }
            )
        for name, text in item.texts.items():
            values.append(
                {
                    "__typename": "ProjectV2ItemFieldTextValue",
                    "text": text,
                    "field": {"name": name},
                }
            )
        if item.iteration is not None:
            values.append(
                {
                    "__typename": "ProjectV2ItemFieldIterationValue",
                    "title": item.iteration[0],
                    "startDate": item.iteration[1],
                    "duration": 14,
                    "field": {"name": self.iteration_field},
                }
            )
        return values

    def _content(self, item: FakeItem) -> dict[str, Any] | None:
        assignees = {"nodes": [{"login": login} for login in item.assignees]}
        if item.kind == DRAFT_ISSUE:
            return {
                "__typename": "DraftIssue",
                "id": item.content_id,
                "title": item.title,
                "updatedAt": _iso(item.content_updated_at),
                "assignees": assignees,
            }
        if item.kind not in (ISSUE, PULL_REQUEST):
            return None
        is_pr = item.kind == PULL_REQUEST
        content: dict[str, Any] = {
            "__typename": "PullRequest" if is_pr else "Issue",
            "id": item.content_id,
            "title": item.title,
            "number": item.number,
            "url": f"https://github.com/{item.repository}/{'pull' if is_pr else 'issues'}/"
            f"{item.number}",
        }
        content["pullRequestState" if is_pr else "issueState"] = item.state
        content.update(
            {
                "updatedAt": _iso(item.content_updated_at),
                "repository": {"nameWithOwner": item.repository},
                "assignees": assignees,
                "labels": {"nodes": [{"name": name} for name in item.labels]},
            }
        )
        return content

    def render_item(self, item: FakeItem, *, with_project: bool = False) -> dict[str, Any]:
        """The item as the connector's `ProjectItemFields` fragment receives it."""
        node: dict[str, Any] = {
            "id": item.node_id,
            "databaseId": item.database_id,
            "type": item.kind,
            "isArchived": item.archived,
            "updatedAt": _iso(item.updated_at),
            "fieldValues": {"nodes": self._field_values(item)},
            "content": self._content(item),
        }
        if with_project:
            node = {"__typename": "ProjectV2Item", **node}
            node["project"] = {
                "id": self.project_id,
                "number": self.number,
                "url": self.url,
                "owner": {
                    "__typename": "Organization" if self.owner_type == "organization" else "User",
                    "login": self.owner,
                },
            }
        return node

    def _rate_block(self) -> dict[str, Any]:
        return {
            "cost": self.query_cost,
            "remaining": self.rate_remaining,
            "resetAt": _iso(self.rate_reset_at),
        }

    def _rate_headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(self.rate_limit),
            "x-ratelimit-remaining": str(self.rate_remaining),
            "x-ratelimit-used": str(self.rate_limit - self.rate_remaining),
            "x-ratelimit-reset": str(int(self.rate_reset_at.timestamp())),
            "x-ratelimit-resource": "graphql",
        }

    def _fields(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        """The project's field configurations (check-config reads them)."""
        root = "organization" if re.search(r"\borganization\s*\(", query) else "user"
        login = variables.get("login")
        if (
            root != self.owner_type
            or not isinstance(login, str)
            or login.lower() != (self.owner.lower())
        ):
            kind = "Organization" if root == "organization" else "User"
            return _not_found(
                {root: None}, [root], f"Could not resolve to an {kind} with the login of '{login}'."
            )
        if variables.get("number") != self.number:
            return _not_found(
                {root: {"projectV2": None}},
                [root, "projectV2"],
                f"Could not resolve to a ProjectV2 with the number {variables.get('number')}.",
            )

        def select(name: str, options: list[str]) -> dict[str, Any]:
            return {
                "__typename": "ProjectV2SingleSelectField",
                "name": name,
                "dataType": "SINGLE_SELECT",
                "options": [{"name": o} for o in options],
            }

        def plain(name: str, data_type: str) -> dict[str, Any]:
            return {"__typename": "ProjectV2Field", "name": name, "dataType": data_type}

        nodes = [
            plain("Title", "TITLE"),
            select(self.status_field, list(self.status_options)),
            plain(self.hours_field, "NUMBER"),
            select(self.billing_field, list(self.billing_options)),
            plain(self.rate_field, "NUMBER"),
            plain(self.milestone_field, "NUMBER"),
            {
                "__typename": "ProjectV2IterationField",
                "name": self.iteration_field,
                "dataType": "ITERATION",
            },
        ]
        return {
            "data": {
                "rateLimit": {"cost": 1, "remaining": self.rate_remaining, "resetAt": "x"},
                root: {
                    "projectV2": {
                        "id": self.project_id,
                        "title": self.title,
                        "fields": {"nodes": nodes},
                    }
                },
            }
        }

    def _items_page(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        root = "organization" if re.search(r"\borganization\s*\(", query) else "user"
        login = variables.get("login")
        if (
            root != self.owner_type
            or not isinstance(login, str)
            or login.lower() != self.owner.lower()
        ):
            kind = "Organization" if root == "organization" else "User"
            return _not_found(
                {root: None}, [root], f"Could not resolve to an {kind} with the login of '{login}'."
            )
        if variables.get("number") != self.number:
            return _not_found(
                {root: {"projectV2": None}},
                [root, "projectV2"],
                f"Could not resolve to a ProjectV2 with the number {variables.get('number')}.",
            )
        first = variables.get("first")
        if not isinstance(first, int) or first < 1:
            return {"data": None, "errors": [{"message": "`first` must be a positive integer"}]}
        if first > self.max_page_size:
            return {
                "data": None,
                "errors": [
                    {
                        "message": f"Requesting {first} records on the `items` connection "
                        f"exceeds the `first` limit of {self.max_page_size} records.",
                        "locations": [{"line": 5, "column": 7}],
                    }
                ],
            }
        start = 0
        after = variables.get("after")
        if after is not None:
            try:
                decoded = base64.b64decode(str(after)).decode()
                if not decoded.startswith(_CURSOR_PREFIX):
                    raise ValueError(decoded)
                start = int(decoded[len(_CURSOR_PREFIX) :])
            except ValueError:
                return {
                    "data": None,
                    "errors": [
                        {
                            "type": "INVALID_CURSOR_ARGUMENTS",
                            "path": [root, "projectV2", "items"],
                            "message": f"`{after}` does not appear to be a valid cursor.",
                        }
                    ],
                }
        order = list(self._items.values())
        query_filter = variables.get("query")
        if query_filter is not None:
            try:
                order = self._filtered(order, query_filter)
            except ValueError as exc:
                return {
                    "data": None,
                    "errors": [
                        {
                            "type": "INVALID_ARGUMENTS",
                            "path": [root, "projectV2", "items"],
                            "message": str(exc),
                        }
                    ],
                }
            self.requests["items_page_filtered"] += 1
        page = order[start : start + first]
        end = start + len(page)
        end_cursor = base64.b64encode(f"{_CURSOR_PREFIX}{end}".encode()).decode() if page else None
        return {
            "data": {
                "rateLimit": self._rate_block(),
                root: {
                    "projectV2": {
                        "id": self.project_id,
                        "title": self.title,
                        "url": self.url,
                        "items": {
                            "pageInfo": {"hasNextPage": end < len(order), "endCursor": end_cursor},
                            "nodes": [self.render_item(i) for i in page],
                        },
                    }
                },
            }
        }

    def _filtered(self, order: list[FakeItem], query: Any) -> list[FakeItem]:
        """Items matching a filter-bar query (only the qualifiers below are known).

        ``[-]last-updated:Ndays`` (updated within / not within the last N days, day
        granularity), ``[-]is:archived``. Like the project view, a filtered listing
        leaves archived items out unless ``is:archived`` asks for them (the pessimistic
        reading; the unfiltered listing has them all). Anything else is refused.
        """
        if not isinstance(query, str):
            raise ValueError("Argument 'query' on Field 'items' has an invalid value.")
        archived: bool | None = False
        keep: list[Any] = []
        for token in query.split():
            negated = token.startswith("-")
            word = token[1:] if negated else token
            match = re.fullmatch(r"last-updated:([1-9][0-9]{0,3})days?", word)
            if match:
                since = self._clock - timedelta(days=int(match.group(1)))
                if negated:
                    keep.append(lambda i, s=since: self.last_updated(i) >= s)
                else:
                    keep.append(lambda i, s=since: self.last_updated(i) < s)
                continue
            if word == "is:archived":
                archived = not negated
                continue
            raise ValueError(f"the fake GitHub does not understand the filter {token!r}")
        return [
            i
            for i in order
            if (archived is None or i.archived == archived) and all(f(i) for f in keep)
        ]

    def _node_or_error(
        self, node_id: Any, path: list[str | int]
    ) -> tuple[Any, dict[str, Any] | None]:
        item = self._items.get(node_id) if isinstance(node_id, str) else None
        if item is None:
            return None, {
                "type": "NOT_FOUND",
                "path": path,
                "locations": [{"line": 4, "column": 3}],
                "message": f"Could not resolve to a node with the global id of '{node_id}'",
            }
        return self.render_item(item, with_project=True), None

    def _nodes(self, variables: dict[str, Any]) -> dict[str, Any]:
        ids = variables.get("ids")
        if not isinstance(ids, list):
            return {
                "data": None,
                "errors": [{"message": "Variable $ids of type [ID!]! was provided invalid value"}],
            }
        if len(ids) > 100:
            return {
                "data": None,
                "errors": [{"message": "You may not request more than 100 ids at once."}],
            }
        nodes: list[Any] = []
        errors: list[dict[str, Any]] = []
        for index, node_id in enumerate(ids):
            node, error = self._node_or_error(node_id, ["nodes", index])
            nodes.append(node)
            if error:
                errors.append(error)
        body: dict[str, Any] = {"data": {"rateLimit": self._rate_block(), "nodes": nodes}}
        if errors:
            body["errors"] = errors
        return body

    def _node(self, variables: dict[str, Any]) -> dict[str, Any]:
        node, error = self._node_or_error(variables.get("id"), ["node"])
        body: dict[str, Any] = {"data": {"rateLimit": self._rate_block(), "node": node}}
        if error:
            body["errors"] = [error]
        return body

    @staticmethod
    def classify(query: str) -> str:
        """The request kind a document is counted under."""
        if re.search(r"\bnodes\s*\(\s*ids\s*:", query):
            return "nodes"
        if re.search(r"\bnode\s*\(\s*id\s*:", query):
            return "node"
        if re.search(r"\bprojectV2\s*\(\s*number\s*:", query) and "items(" in query:
            return "items_page"
        if re.search(r"\bprojectV2\s*\(\s*number\s*:", query) and "fields(" in query:
            return "fields"
        return "unknown"

    # -- HTTP ------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        if not self.require_auth:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() in ("bearer", "token") and token.strip() in self.tokens

    async def _graphql(self, request: Request) -> Response:
        raw = await request.body()
        try:
            payload = json.loads(raw)
            query = str(payload["query"])
            variables = payload.get("variables") or {}
        except (ValueError, KeyError, TypeError):
            self.requests["invalid"] += 1
            return JSONResponse({"message": "Problems parsing JSON"}, status_code=400)
        kind = self.classify(query)
        with self._lock:
            self.requests[kind] += 1
            self.requests["total"] += 1
            self.received.append({"kind": kind, "variables": variables})
            if not self._authorized(request):
                self.requests["unauthorized"] += 1
                return JSONResponse(
                    {
                        "message": "Bad credentials",
                        "documentation_url": "https://docs.github.com/graphql",
                        "status": "401",
                    },
                    status_code=401,
                )
            if self._failures:
                failure = self._failures.popleft()
                self.requests["failed"] += 1
                return JSONResponse(
                    failure.body, status_code=failure.status, headers=failure.headers
                )
            if self.rate_remaining < self.query_cost:
                return JSONResponse(
                    {
                        "errors": [
                            {
                                "type": "RATE_LIMITED",
                                "message": "API rate limit already exceeded for user ID 1.",
                            }
                        ]
                    },
                    status_code=200,
                    headers=self._rate_headers(),
                )
            self.rate_remaining -= self.query_cost
            if kind == "items_page":
                body = self._items_page(query, variables)
            elif kind == "fields":
                body = self._fields(query, variables)
            elif kind == "nodes":
                body = self._nodes(variables)
            elif kind == "node":
                body = self._node(variables)
            else:
                body = {
                    "errors": [
                        {
                            "message": "the fake GitHub server does not know this document",
                            "extensions": {"code": "unknownDocument"},
                        }
                    ]
                }
            return JSONResponse(body, headers=self._rate_headers())

    async def _installation_token(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer ") or header.count(".") != 2:
            return JSONResponse(
                {"message": "A JSON web token could not be decoded"}, status_code=401
            )
        token = "ghs_" + secrets.token_hex(18)
        with self._lock:
            self.tokens.add(token)
            self.installation_tokens_issued += 1
            self.requests["installation_token"] += 1
        expires = datetime.now(UTC) + timedelta(hours=1)
        return JSONResponse(
            {
                "token": token,
                "expires_at": _iso(expires),
                "permissions": {"organization_projects": "read", "issues": "read"},
                "repository_selection": "all",
            },
            status_code=201,
        )

    def app(self) -> Starlette:
        """The ASGI app: ``POST /graphql`` and ``POST /app/installations/{id}/access_tokens``."""
        return Starlette(
            routes=[
                Route("/graphql", self._graphql, methods=["POST"]),
                Route("/api/graphql", self._graphql, methods=["POST"]),
                Route(
                    "/app/installations/{installation_id}/access_tokens",
                    self._installation_token,
                    methods=["POST"],
                ),
            ]
        )


def _user(login: str) -> dict[str, Any]:
    return {
        "login": login,
        "id": 583231,
        "node_id": "MDQ6VXNlcjU4MzIzMQ==",
        "type": "User",
        "site_admin": False,
        "html_url": f"https://github.com/{login}",
    }


def _option(name: str | None) -> dict[str, Any] | None:
    if name is None:
        return None
    return {"id": _option_id(name), "name": name, "color": "GREEN", "description": ""}


def _not_found(data: dict[str, Any], path: list[str], message: str) -> dict[str, Any]:
    return {
        "data": data,
        "errors": [
            {
                "type": "NOT_FOUND",
                "path": path,
                "locations": [{"line": 4, "column": 3}],
                "message": message,
            }
        ],
    }


@contextlib.contextmanager
def serve_fake_github(
    project: FakeGitHubProject, *, startup_timeout: float = 10.0
) -> Iterator[str]:
    """Serve `project` with uvicorn on a free loopback port in a thread.

    Yields the GraphQL URL (``http://127.0.0.1:PORT/graphql``); the REST base for
    App tokens is the same URL without ``/graphql``. Stops the server on exit.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(project.app(), log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="fake-github", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("fake GitHub server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/graphql"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout)
        sock.close()
