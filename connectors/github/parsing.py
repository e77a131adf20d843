"""Pure parsing of GitHub GraphQL item payloads into `GitHubItem`, then `BoardItem`.

No I/O here: the connector feeds it response JSON, tests feed it captured-shape
fixtures. `parse_item` returns None for items that carry nothing to bill (REDACTED
items, items whose content the token may not read, non-item nodes) and raises
`ItemShapeError` when the payload does not have GitHub's shape at all.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from connectors.github.config import GitHubBoardConfig, normalize_option
from mapping.domain import BoardItem, Source, StateCategory
from mapping.rules import parse_hours_by_person

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ItemShapeError(ValueError):
    """A GraphQL item payload that does not have the expected shape."""


@dataclass(frozen=True, slots=True)
class Iteration:
    """An iteration (sprint) field value."""

    title: str
    start_date: str | None = None
    duration_days: int | None = None


@dataclass(frozen=True, slots=True)
class GitHubItem:
    """One ProjectV2Item as GitHub returned it, before board rules are applied.

    Field-value maps are keyed by the field's name as normalized by
    `normalize_option` (case and punctuation ignored).
    """

    node_id: str
    database_id: int | None
    item_type: str
    archived: bool
    item_updated_at: datetime
    content_type: str
    content_id: str | None
    content_updated_at: datetime | None
    title: str
    url: str | None
    number: int | None = None
    repository: str | None = None
    content_state: str | None = None
    assignees: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    single_selects: Mapping[str, str] = field(default_factory=dict)
    numbers: Mapping[str, Decimal] = field(default_factory=dict)
    texts: Mapping[str, str] = field(default_factory=dict)
    iterations: Mapping[str, Iteration] = field(default_factory=dict)
    project_id: str | None = None
    project_number: int | None = None
    project_url: str | None = None
    project_owner: str | None = None

    @property
    def updated_at(self) -> datetime:
        """The later of the item's and its content's update times."""
        if self.content_updated_at is not None and self.content_updated_at > self.item_updated_at:
            return self.content_updated_at
        return self.item_updated_at

    @property
    def revision(self) -> int:
        """`updated_at` in epoch milliseconds."""
        return (self.updated_at - _EPOCH) // timedelta(milliseconds=1)


def parse_datetime(value: Any, what: str) -> datetime:
    """A GitHub DateTime (ISO 8601, usually with Z) as an aware datetime."""
    if not isinstance(value, str):
        raise ItemShapeError(f"{what} is not a date-time string: {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ItemShapeError(f"{what} is not an ISO date-time: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def number_to_decimal(value: Any, what: str = "number") -> Decimal:
    """A GraphQL Float as an exact Decimal of its shortest repr (2.5 -> Decimal("2.5"))."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ItemShapeError(f"{what} is not a number: {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ItemShapeError(f"{what} is not finite: {value!r}")
    try:
        result = Decimal(str(value))
    except InvalidOperation as exc:  # pragma: no cover - str(float) always parses
        raise ItemShapeError(f"{what} is not a number: {value!r}") from exc
    if result == result.to_integral_value():
        try:
            return result.quantize(Decimal(1))
        except InvalidOperation:  # beyond 28 digits: keep the exponent form
            return result
    return result.normalize()


def _nodes(connection: Any, what: str) -> list[Any]:
    if connection is None:
        return []
    if not isinstance(connection, dict):
        raise ItemShapeError(f"{what} is not a connection")
    nodes = connection.get("nodes")
    if nodes is None:
        return []
    if not isinstance(nodes, list):
        raise ItemShapeError(f"{what}.nodes is not a list")
    return nodes


def _str_list(connection: Any, key: str, what: str) -> tuple[str, ...]:
    out: list[str] = []
    for node in _nodes(connection, what):
        if isinstance(node, dict) and isinstance(node.get(key), str):
            out.append(node[key])
    return tuple(out)


def _field_name(value: Mapping[str, Any]) -> str | None:
    field_obj = value.get("field")
    if isinstance(field_obj, dict) and isinstance(field_obj.get("name"), str):
        return str(field_obj["name"])
    return None


def parse_item(node: Any) -> GitHubItem | None:
    """Parse one `ProjectItemFields` node; None for REDACTED/unreadable/non-item nodes."""
    if node is None:
        return None
    if not isinstance(node, dict):
        raise ItemShapeError(f"item is not an object: {type(node).__name__}")
    typename = node.get("__typename")
    if typename is not None and typename != "ProjectV2Item":
        log.info("github node %s is a %s, not a project item: skipped", node.get("id"), typename)
        return None
    node_id = node.get("id")
    if not isinstance(node_id, str) or not node_id:
        raise ItemShapeError("item has no id")
    item_type = node.get("type")
    content = node.get("content")
    if item_type == "REDACTED" or content is None:
        log.info(
            "github item %s is %s (content not visible to this token): skipped",
            node_id,
            "REDACTED" if item_type == "REDACTED" else "without content",
        )
        return None
    if not isinstance(content, dict):
        raise ItemShapeError(f"item {node_id}: content is not an object")
    content_type = content.get("__typename")
    if content_type not in ("Issue", "PullRequest", "DraftIssue"):
        log.info("github item %s has content %r: skipped", node_id, content_type)
        return None

    item_updated = parse_datetime(node.get("updatedAt"), f"item {node_id} updatedAt")
    content_updated = (
        parse_datetime(content["updatedAt"], f"item {node_id} content.updatedAt")
        if content.get("updatedAt") is not None
        else None
    )
    title = content.get("title")
    if not isinstance(title, str):
        raise ItemShapeError(f"item {node_id}: content has no title")

    single: dict[str, str] = {}
    numbers: dict[str, Decimal] = {}
    texts: dict[str, str] = {}
    iterations: dict[str, Iteration] = {}
    for value in _nodes(node.get("fieldValues"), f"item {node_id} fieldValues"):
        if not isinstance(value, dict):
            continue
        name = _field_name(value)
        if name is None:
            continue  # a value type this document does not select (date, label, ...)
        key = normalize_option(name)
        kind = value.get("__typename")
        if kind == "ProjectV2ItemFieldSingleSelectValue" and isinstance(value.get("name"), str):
            single.setdefault(key, value["name"])
        elif kind == "ProjectV2ItemFieldNumberValue" and value.get("number") is not None:
            numbers.setdefault(
                key, number_to_decimal(value["number"], f"item {node_id} field {name!r}")
            )
        elif kind == "ProjectV2ItemFieldTextValue" and isinstance(value.get("text"), str):
            texts.setdefault(key, value["text"])
        elif kind == "ProjectV2ItemFieldIterationValue" and isinstance(value.get("title"), str):
            duration = value.get("duration")
            iterations.setdefault(
                key,
                Iteration(
                    title=value["title"],
                    start_date=value.get("startDate")
                    if isinstance(value.get("startDate"), str)
                    else None,
                    duration_days=duration if isinstance(duration, int) else None,
                ),
            )

    state = content.get("issueState") or content.get("pullRequestState")
    repository = content.get("repository")
    database_id = node.get("databaseId")
    number = content.get("number")
    project = node.get("project")
    project_id = project_number = project_url = project_owner = None
    if isinstance(project, dict):
        project_id = project.get("id") if isinstance(project.get("id"), str) else None
        project_number = project.get("number") if isinstance(project.get("number"), int) else None
        project_url = project.get("url") if isinstance(project.get("url"), str) else None
        owner = project.get("owner")
        if isinstance(owner, dict) and isinstance(owner.get("login"), str):
            project_owner = owner["login"]

    return GitHubItem(
        node_id=node_id,
        database_id=database_id if isinstance(database_id, int) else None,
        item_type=str(item_type or ""),
        archived=bool(node.get("isArchived", False)),
        item_updated_at=item_updated,
        content_type=content_type,
        content_id=content.get("id") if isinstance(content.get("id"), str) else None,
        content_updated_at=content_updated,
        title=title,
        url=content.get("url") if isinstance(content.get("url"), str) else None,
        number=number if isinstance(number, int) else None,
        repository=repository.get("nameWithOwner")
        if isinstance(repository, dict) and isinstance(repository.get("nameWithOwner"), str)
        else None,
        content_state=state if isinstance(state, str) else None,
        assignees=_str_list(content.get("assignees"), "login", f"item {node_id} assignees"),
        labels=_str_list(content.get("labels"), "name", f"item {node_id} labels"),
        single_selects=single,
        numbers=numbers,
        texts=texts,
        iterations=iterations,
        project_id=project_id,
        project_number=project_number,
        project_url=project_url,
        project_owner=project_owner,
    )


def state_category(config: GitHubBoardConfig, column: str, archived: bool) -> StateCategory:
    """Done / In progress / Proposed from the Status option (Removed: see the config)."""
    if archived and config.archived_as_removed:
        return StateCategory.REMOVED
    key = normalize_option(column) if column else ""
    if key and key in {normalize_option(o) for o in config.done_options}:
        return StateCategory.DONE
    if key and key in {normalize_option(o) for o in config.in_progress_options}:
        return StateCategory.IN_PROGRESS
    return StateCategory.PROPOSED


def _number(item: GitHubItem, field_name: str | None) -> Decimal | None:
    if not field_name:
        return None
    return item.numbers.get(normalize_option(field_name))


def to_board_item(item: GitHubItem, config: GitHubBoardConfig, project_url: str) -> BoardItem:
    """The normalized snapshot of one item under the board's rules.

    Raises ValueError (from `BoardItem`) for values the domain refuses, such as
    negative hours; the connector skips such items with a warning.
    """
    column = item.single_selects.get(normalize_option(config.status_field), "")
    billing_type = None
    if config.billing_type_field:
        option = item.single_selects.get(normalize_option(config.billing_type_field))
        if option is not None:
            billing_type = config.billing_type_for(option)
            if billing_type is None:
                log.warning(
                    "github item %s: billing option %r is not mapped; billing core decides",
                    item.node_id,
                    option,
                )
    if config.iteration_field:
        iteration = item.iterations.get(normalize_option(config.iteration_field))
    else:
        iteration = next(iter(item.iterations.values()), None)
    url = item.url
    if not url:
        base = (item.project_url or project_url).rstrip("/")
        url = f"{base}?pane=issue&itemId={item.database_id}" if item.database_id else base
    return BoardItem(
        source=Source.GITHUB,
        board=config.board_key,
        item_id=item.node_id,
        title=item.title,
        url=url,
        column=column,
        state_category=state_category(config, column, item.archived),
        updated_at=item.updated_at,
        revision=item.revision,
        hours=_number(item, config.hours_field),
        billing_type=billing_type,
        labels=item.labels,
        assignees=item.assignees,
        iteration=iteration.title if iteration is not None else None,
        rate=_number(item, config.rate_field),
        milestone_amount=_number(item, config.milestone_field),
        hours_by_person=parse_hours_by_person(
            item.texts.get(normalize_option(config.hours_by_person_field))
            if config.hours_by_person_field
            else None
        ),
    )
