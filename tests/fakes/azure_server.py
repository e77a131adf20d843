"""A fake Azure DevOps Services organization for tests and benchmarks.

An in-memory organization (projects of the Agile, Scrum, Basic or CMMI process,
work items with revisions and updates) served over real HTTP by a Starlette app:

- ``POST {org}/{project}[/{team}]/_apis/wit/wiql`` (flat queries; the
  ``[System.ChangedDate] >= '...'``, ``[System.AreaPath] UNDER '...'`` and
  ``[System.WorkItemType] IN (...)`` clauses are honoured; ``$top``, ``timePrecision``),
- ``POST {org}/{project}/_apis/wit/workitemsbatch`` (at most 200 ids, else 400),
- ``GET {org}/{project}/_apis/wit/workItems/{id}/updates`` (``$top`` / ``$skip``),
- ``GET {org}/{project}/_apis/wit/workitemtypes/{type}/states``,
- ``GET {org}/{project}/_apis/wit/workitems/{id}``,
- ``GET {org}/{project}/_apis/wit/reporting/workitemrevisions`` (every revision of the
  project's items in change order: ``fields``, ``types``, ``startDateTime`` *or*
  ``continuationToken`` (both: 400), ``$maxPageSize`` (at most
  `REPORTING_PAGE_LIMIT`); answers ``values``, ``continuationToken``, ``nextLink`` and
  ``isLastBatch``; a token the server did not issue is a 400).

Every call needs ``api-version=7.1`` and the PAT as basic auth (401 otherwise).
Requests are counted by kind (``wiql``, ``batch``, ``updates``, ``states``,
``work_item``, ``revisions``) and faults can be injected (429 with Retry-After, 503, 500, ...).

``serve_fake_azure(fake)`` runs the app with uvicorn on a free loopback port in a
thread and yields the organization URL to configure the connector with.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# (state, category, color) per work item type, per process template.
_AGILE_STORY = (
    ("New", "Proposed", "b2b2b2"),
    ("Active", "InProgress", "007acc"),
    ("Resolved", "Resolved", "ff9d00"),
    ("Closed", "Completed", "339933"),
    ("Removed", "Removed", "ffffff"),
)
_SCRUM_PBI = (
    ("New", "Proposed", "b2b2b2"),
    ("Approved", "Proposed", "5688e0"),
    ("Committed", "InProgress", "007acc"),
    ("Done", "Completed", "339933"),
    ("Removed", "Removed", "ffffff"),
)
PROCESS_TEMPLATES: Mapping[str, Mapping[str, tuple[tuple[str, str, str], ...]]] = {
    "Agile": {
        "User Story": _AGILE_STORY,
        "Bug": _AGILE_STORY,
        "Task": (
            ("New", "Proposed", "b2b2b2"),
            ("Active", "InProgress", "007acc"),
            ("Closed", "Completed", "339933"),
            ("Removed", "Removed", "ffffff"),
        ),
    },
    "Scrum": {
        "Product Backlog Item": _SCRUM_PBI,
        "Bug": _SCRUM_PBI,
        "Task": (
            ("To Do", "Proposed", "b2b2b2"),
            ("In Progress", "InProgress", "007acc"),
            ("Done", "Completed", "339933"),
            ("Removed", "Removed", "ffffff"),
        ),
    },
    "Basic": {
        "Issue": (
            ("To Do", "Proposed", "b2b2b2"),
            ("Doing", "InProgress", "007acc"),
            ("Done", "Completed", "339933"),
        ),
        "Task": (
            ("To Do", "Proposed", "b2b2b2"),
            ("Doing", "InProgress", "007acc"),
            ("Done", "Completed", "339933"),
        ),
    },
    "CMMI": {
        "Requirement": (
            ("Proposed", "Proposed", "b2b2b2"),
            ("Active", "InProgress", "007acc"),
            ("Resolved", "Resolved", "ff9d00"),
            ("Closed", "Completed", "339933"),
        ),
        "Task": (
            ("Proposed", "Proposed", "b2b2b2"),
            ("Active", "InProgress", "007acc"),
            ("Resolved", "Resolved", "ff9d00"),
            ("Closed", "Completed", "339933"),
        ),
    },
}
DEFAULT_TYPE = {
    "Agile": "User Story",
    "Scrum": "Product Backlog Item",
    "Basic": "Issue",
    "CMMI": "Requirement",
}
# The field each process tracks hours in by default (Scrum has no CompletedWork).
DEFAULT_HOURS_FIELD = {
    "Agile": "Microsoft.VSTS.Scheduling.CompletedWork",
    "Scrum": "Microsoft.VSTS.Scheduling.OriginalEstimate",
    "Basic": "Microsoft.VSTS.Scheduling.RemainingWork",
    "CMMI": "Microsoft.VSTS.Scheduling.CompletedWork",
}
SYSTEM_FIELDS = frozenset(
    {
        "System.Id",
        "System.Rev",
        "System.Title",
        "System.WorkItemType",
        "System.State",
        "System.Reason",
        "System.BoardColumn",
        "System.BoardColumnDone",
        "System.BoardLane",
        "System.ChangedDate",
        "System.ChangedBy",
        "System.CreatedDate",
        "System.CreatedBy",
        "System.AuthorizedDate",
        "System.RevisedDate",
        "System.IterationPath",
        "System.AreaPath",
        "System.TeamProject",
        "System.AssignedTo",
        "System.Tags",
        "System.Description",
        "System.CommentCount",
        "Microsoft.VSTS.Common.Priority",
        "Microsoft.VSTS.Common.ClosedDate",
        "Microsoft.VSTS.Common.StateChangeDate",
        "Microsoft.VSTS.Scheduling.CompletedWork",
        "Microsoft.VSTS.Scheduling.RemainingWork",
        "Microsoft.VSTS.Scheduling.OriginalEstimate",
        "Microsoft.VSTS.Scheduling.StoryPoints",
        "Microsoft.VSTS.Scheduling.Effort",
    }
)
FAR_FUTURE = "9999-01-01T00:00:00Z"
BATCH_LIMIT = 200
#: Revisions per reporting batch at most (the fake's cap on ``$maxPageSize``).
REPORTING_PAGE_LIMIT = 200
WIQL_LIMIT = 20_000
API_VERSION = "7.1"


def iso(moment: datetime) -> str:
    """Azure DevOps' timestamp format: UTC, milliseconds, ``Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def identity(name: str) -> dict[str, Any]:
    """An IdentityRef as work item fields carry it."""
    slug = re.sub(r"[^a-z0-9]+", ".", name.lower()).strip(".") or "user"
    unique = name if "@" in name else f"{slug}@fabrikam.example"
    guid = hashlib.sha256(unique.encode()).hexdigest()[:12]
    return {
        "displayName": name.split("@")[0] if "@" in name else name,
        "url": f"https://spsprodweu5.vssps.visualstudio.com/_apis/Identities/{guid}",
        "id": f"6f3c1b2a-0000-4000-8000-{guid}",
        "uniqueName": unique,
        "imageUrl": f"https://dev.azure.com/_apis/GraphProfile/MemberAvatars/{guid}",
        "descriptor": f"aad.{base64.b64encode(unique.encode()).decode().rstrip('=')}",
    }


@dataclass
class Fault:
    """An injected failure: answer `status` to the next `times` requests of `kind`."""

    status: int
    kind: str | None = None
    times: int = 1
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeWorkItem:
    """One work item: current fields, revision number and the updates that led there."""

    id: int
    project: str
    rev: int
    fields: dict[str, Any]
    updates: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False


class FakeProject:
    """A project of one process template; builder helpers create revisions and updates."""

    def __init__(
        self,
        org: FakeAzureDevOps,
        name: str,
        process: str,
        teams: Sequence[str] = (),
        hours_field: str | None = None,
    ) -> None:
        if process not in PROCESS_TEMPLATES:
            raise ValueError(f"unknown process {process!r}: {sorted(PROCESS_TEMPLATES)}")
        self.org = org
        self.name = name
        self.process = process
        self.teams = {t.lower() for t in (*teams, f"{name} Team")}
        self.hours_field = hours_field or DEFAULT_HOURS_FIELD[process]
        self.types = {k: list(v) for k, v in PROCESS_TEMPLATES[process].items()}
        self.default_type = DEFAULT_TYPE[process]

    # -- builders ------------------------------------------------------------------

    def add_state(self, work_item_type: str, state: str, category: str) -> None:
        """Customize the process: a new state of a type (e.g. "Invoiced", Completed)."""
        self.types[work_item_type].append((state, category, "339933"))

    def states(self, work_item_type: str) -> list[tuple[str, str, str]]:
        """The (name, category, color) states of a type."""
        for name, states in self.types.items():
            if name.lower() == work_item_type.lower():
                return states
        raise KeyError(work_item_type)

    def _check_state(self, work_item_type: str, state: str) -> str:
        for name, _, _ in self.states(work_item_type):
            if name.lower() == state.lower():
                return name
        raise ValueError(f"{self.process} {work_item_type!r} has no state {state!r}")

    def add_item(
        self,
        title: str,
        *,
        work_item_type: str | None = None,
        state: str | None = None,
        hours: float | None = None,
        hours_field: str | None = None,
        tags: Sequence[str] = (),
        assigned_to: str | None = None,
        iteration: str | None = None,
        area: str | None = None,
        board_column: str | None = None,
        fields: Mapping[str, Any] | None = None,
        by: str = "Jamal Hartnett",
        at: datetime | None = None,
    ) -> int:
        """Create a work item (revision 1); returns its id."""
        wit = work_item_type or self.default_type
        states = self.states(wit)
        first_state = self._check_state(wit, state) if state else states[0][0]
        values: dict[str, Any] = {
            "System.AreaPath": area or self.name,
            "System.TeamProject": self.name,
            "System.IterationPath": iteration or self.name,
            "System.WorkItemType": wit,
            "System.State": first_state,
            "System.Reason": "New",
            "System.Title": title,
            "System.BoardColumn": board_column or first_state,
            "System.BoardColumnDone": False,
            "Microsoft.VSTS.Common.Priority": 2,
        }
        if assigned_to:
            values["System.AssignedTo"] = identity(assigned_to)
        if tags:
            values["System.Tags"] = "; ".join(tags)
        if hours is not None:
            values[hours_field or self.hours_field] = hours
        if fields:
            values.update(fields)
        return self.org._create(self, values, by=by, at=at)

    def change(
        self,
        item_id: int,
        changes: Mapping[str, Any],
        *,
        by: str = "Jamal Hartnett",
        at: datetime | None = None,
    ) -> int:
        """Set fields (None removes one) as one new revision; returns the new rev."""
        return self.org._update(item_id, dict(changes), by=by, at=at)

    def set_state(
        self,
        item_id: int,
        state: str,
        *,
        board_column: str | None = None,
        hours: float | None = None,
        by: str = "Jamal Hartnett",
        at: datetime | None = None,
    ) -> int:
        """Move a work item to a state (and its board column); returns the new rev."""
        item = self.org.items[item_id]
        name = self._check_state(str(item.fields["System.WorkItemType"]), state)
        changes: dict[str, Any] = {
            "System.State": name,
            "System.Reason": f"Moved to {name}",
            "System.BoardColumn": board_column or name,
        }
        if hours is not None:
            changes[self.hours_field] = hours
        return self.change(item_id, changes, by=by, at=at)

    def set_hours(
        self,
        item_id: int,
        hours: float | None,
        *,
        field_name: str | None = None,
        by: str = "Jamal Hartnett",
        at: datetime | None = None,
    ) -> int:
        """Set the tracked hours (in the project's hours field unless named)."""
        return self.change(item_id, {field_name or self.hours_field: hours}, by=by, at=at)

    def delete(self, item_id: int) -> None:
        """Send a work item to the recycle bin (it disappears from queries and batches)."""
        self.org.items[item_id].deleted = True

    def restore(self, item_id: int) -> None:
        """Bring a work item back from the recycle bin."""
        self.org.items[item_id].deleted = False

    def service_hook_payload(self, item_id: int, event: str = "workitem.updated") -> dict[str, Any]:
        """A service hook body shaped like Azure's, for the item's latest revision."""
        return self.org.service_hook_payload(item_id, event)


_EVENT_CODES = {
    "workitem.updated": 0,
    "workitem.created": 1,
    "workitem.deleted": 2,
    "workitem.restored": 3,
    "workitem.commented": 4,
}


class FakeAzureDevOps:
    """An in-memory Azure DevOps organization (or on-premises collection) over HTTP.

    `base_path` is the organization's path on the server: ``/fabrikam`` for
    dev.azure.com style URLs, ``/tfs/DefaultCollection`` for Azure DevOps Server.
    """

    def __init__(
        self,
        *,
        pat: str = "fake-pat",
        organization: str = "fabrikam",
        base_path: str | None = None,
        start: datetime = datetime(2024, 5, 1, 9, 0, tzinfo=UTC),
        step: timedelta = timedelta(minutes=1),
    ) -> None:
        self.pat = pat
        self.organization = organization
        self.base_path = "/" + (base_path if base_path is not None else organization).strip("/")
        self.projects: dict[str, FakeProject] = {}
        self.items: dict[int, FakeWorkItem] = {}
        self.custom_fields: set[str] = set()
        self.request_counts: Counter[str] = Counter()
        self.requests: list[tuple[str, str, str]] = []  # (kind, method, path?query)
        self.faults: list[Fault] = []
        self.success_headers: dict[str, str] = {}
        self.public_url = "http://testserver" + self.base_path
        self._start = start
        self._clock = start
        self._step = step
        self._next_id = 1
        self._lock = threading.RLock()
        self._app: Starlette | None = None
        #: Every revision in change order (the reporting stream): (item id, rev, fields).
        self.revision_log: list[tuple[int, int, dict[str, Any]]] = []

    # -- organization builders -----------------------------------------------------

    def add_project(
        self,
        name: str,
        process: str = "Agile",
        *,
        teams: Sequence[str] = (),
        hours_field: str | None = None,
    ) -> FakeProject:
        """A new project of a process template ("Agile", "Scrum", "Basic", "CMMI")."""
        project = FakeProject(self, name, process, teams, hours_field)
        self.projects[name.lower()] = project
        return project

    def add_field(self, reference_name: str) -> None:
        """Declare a custom field (e.g. ``Custom.BillableHours``) in the organization."""
        self.custom_fields.add(reference_name)

    def inject_fault(
        self,
        status: int,
        *,
        kind: str | None = None,
        times: int = 1,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer `status` to the next `times` requests (of `kind`, or any kind)."""
        with self._lock:
            self.faults.append(Fault(status, kind, times, retry_after, dict(headers or {})))

    def reset(self) -> None:
        """Forget every project, item, fault and count (keeps PAT, URL and clock start)."""
        with self._lock:
            self.projects.clear()
            self.items.clear()
            self.custom_fields.clear()
            self.faults.clear()
            self.success_headers = {}
            self.request_counts.clear()
            self.requests.clear()
            self._clock = self._start
            self._next_id = 1
            self.revision_log.clear()

    def reset_counts(self) -> None:
        """Forget the request counts and log."""
        with self._lock:
            self.request_counts.clear()
            self.requests.clear()

    def now(self) -> datetime:
        """The fake clock (advanced by every change made without an explicit time)."""
        return self._clock

    def advance(self, delta: timedelta) -> None:
        """Time passes on the server with no change (WIQL's `asOf` moves on)."""
        with self._lock:
            self._clock = self._clock + delta

    def known_field(self, reference_name: str) -> bool:
        """Whether a field reference name exists in the organization."""
        name = reference_name.lower()
        return any(f.lower() == name for f in (*SYSTEM_FIELDS, *self.custom_fields))

    # -- revisions -----------------------------------------------------------------

    def _tick(self, at: datetime | None) -> datetime:
        if at is None:
            self._clock = self._clock + self._step
            return self._clock
        at = at.astimezone(UTC)
        self._clock = max(self._clock, at)
        return at

    def _create(
        self, project: FakeProject, values: dict[str, Any], *, by: str, at: datetime | None
    ) -> int:
        with self._lock:
            for name in values:
                if not self.known_field(name):
                    raise ValueError(f"TF51535: Cannot find field {name}.")
            moment = self._tick(at)
            item_id = self._next_id
            self._next_id += 1
            who = identity(by)
            stamp = iso(moment)
            values = {
                **values,
                "System.CreatedDate": stamp,
                "System.CreatedBy": who,
                "System.ChangedDate": stamp,
                "System.ChangedBy": who,
                "System.AuthorizedDate": stamp,
                "System.RevisedDate": FAR_FUTURE,
                "System.CommentCount": 0,
                "Microsoft.VSTS.Common.StateChangeDate": stamp,
            }
            if self._completed(project, values):
                values["Microsoft.VSTS.Common.ClosedDate"] = stamp
            item = FakeWorkItem(id=item_id, project=project.name, rev=1, fields=values)
            update_fields: dict[str, Any] = {"System.Rev": {"newValue": 1}}
            for name, value in values.items():
                update_fields[name] = {"newValue": value}
            item.updates.append(self._update_record(item, 1, moment, who, update_fields))
            self.items[item_id] = item
            self.revision_log.append((item_id, 1, dict(item.fields)))
            return item_id

    def _update(
        self, item_id: int, changes: dict[str, Any], *, by: str, at: datetime | None
    ) -> int:
        with self._lock:
            item = self.items[item_id]
            for name in changes:
                if not self.known_field(name):
                    raise ValueError(f"TF51535: Cannot find field {name}.")
            moment = self._tick(at)
            who = identity(by)
            stamp = iso(moment)
            old = dict(item.fields)
            new_rev = item.rev + 1
            if "System.State" in changes and changes["System.State"] != old.get("System.State"):
                changes.setdefault("Microsoft.VSTS.Common.StateChangeDate", stamp)
                # Like the processes' rules: ClosedDate is set on entering a Completed
                # state and cleared on leaving one.
                project = self.projects[item.project.lower()]
                was = self._completed(project, old)
                now_done = self._completed(project, {**old, **changes})
                if now_done and not was:
                    changes.setdefault("Microsoft.VSTS.Common.ClosedDate", stamp)
                elif was and not now_done:
                    changes.setdefault("Microsoft.VSTS.Common.ClosedDate", None)
            changes = {
                **changes,
                "System.ChangedDate": stamp,
                "System.ChangedBy": who,
                "System.AuthorizedDate": stamp,
            }
            update_fields: dict[str, Any] = {
                "System.Rev": {"oldValue": item.rev, "newValue": new_rev},
                "System.RevisedDate": {"oldValue": stamp, "newValue": FAR_FUTURE},
            }
            for name, value in changes.items():
                before = old.get(name)
                if before == value:
                    continue
                delta: dict[str, Any] = {}
                if before is not None:
                    delta["oldValue"] = before
                if value is not None:
                    delta["newValue"] = value
                update_fields[name] = delta
                if value is None:
                    item.fields.pop(name, None)
                else:
                    item.fields[name] = value
            item.rev = new_rev
            item.updates.append(self._update_record(item, new_rev, moment, who, update_fields))
            self.revision_log.append((item.id, new_rev, dict(item.fields)))
            return new_rev

    @staticmethod
    def _completed(project: FakeProject, values: Mapping[str, Any]) -> bool:
        try:
            states = project.states(str(values.get("System.WorkItemType")))
        except KeyError:
            return False
        state = str(values.get("System.State", "")).lower()
        return any(n.lower() == state and c == "Completed" for n, c, _ in states)

    def _update_record(
        self,
        item: FakeWorkItem,
        rev: int,
        moment: datetime,
        who: dict[str, Any],
        fields: dict[str, Any],
    ) -> dict[str, Any]:
        return {
            "id": rev,
            "workItemId": item.id,
            "rev": rev,
            "revisedBy": {k: who[k] for k in ("id", "displayName", "uniqueName", "url")},
            "revisedDate": iso(moment),
            "fields": fields,
            "url": f"{self._project_api(item.project)}/wit/workItems/{item.id}/updates/{rev}",
        }

    # -- payload shapes ------------------------------------------------------------

    def _project_api(self, project: str) -> str:
        return f"{self.public_url}/{quote(project, safe='')}/_apis"

    def _item_json(self, item: FakeWorkItem, names: Sequence[str] | None) -> dict[str, Any]:
        if names is None:
            fields = dict(item.fields)
        else:
            lowered = {k.lower(): k for k in item.fields}
            fields = {}
            for name in names:
                if name.lower() == "system.id":
                    fields["System.Id"] = item.id
                elif name.lower() == "system.rev":
                    fields["System.Rev"] = item.rev
                elif name.lower() in lowered:
                    key = lowered[name.lower()]
                    fields[key] = item.fields[key]
        api = self._project_api(item.project)
        return {
            "id": item.id,
            "rev": item.rev,
            "fields": fields,
            "url": f"{api}/wit/workItems/{item.id}",
        }

    def service_hook_payload(self, item_id: int, event: str = "workitem.updated") -> dict[str, Any]:
        """A service hook body shaped like Azure's, for the item's latest revision."""
        with self._lock:
            item = self.items[item_id]
            api = self._project_api(item.project)
            wit = item.fields.get("System.WorkItemType", "Work item")
            title = item.fields.get("System.Title", "")
            who = item.updates[-1]["revisedBy"]["displayName"]
            verb = event.split(".", 1)[-1]
            text = f"{wit} #{item.id} ({title}) {verb} by {who}"
            links = {
                "self": {"href": f"{api}/wit/workItems/{item.id}"},
                "workItemUpdates": {"href": f"{api}/wit/workItems/{item.id}/updates"},
                "workItemRevisions": {"href": f"{api}/wit/workItems/{item.id}/revisions"},
                "workItemType": {"href": f"{api}/wit/workItemTypes/{quote(str(wit))}"},
                "fields": {"href": f"{self.public_url}/_apis/wit/fields"},
            }
            if event == "workitem.updated":
                last = item.updates[-1]
                resource: dict[str, Any] = {
                    "id": last["id"],
                    "workItemId": item.id,
                    "rev": item.rev,
                    "revisedBy": last["revisedBy"],
                    "revisedDate": FAR_FUTURE,
                    "fields": last["fields"],
                    "_links": {
                        "self": {"href": last["url"]},
                        "workItemUpdates": links["workItemUpdates"],
                        "parent": links["self"],
                    },
                    "url": last["url"],
                    "revision": {
                        "id": item.id,
                        "rev": item.rev,
                        "fields": dict(item.fields),
                        "url": f"{api}/wit/workItems/{item.id}/revisions/{item.rev}",
                    },
                }
            else:
                resource = {
                    "id": item.id,
                    "rev": item.rev,
                    "fields": dict(item.fields),
                    "_links": links,
                    "url": f"{api}/wit/workItems/{item.id}",
                }
            return {
                "subscriptionId": "00000000-0000-4000-8000-00000000cafe",
                "notificationId": item.rev,
                # One id per notification (as Azure DevOps gives): created, deleted and
                # restored of one item at one revision are three notifications.
                "id": f"5e1c0d2e-{_EVENT_CODES.get(event, 9):04d}-4000-8000-"
                f"{item.id:06d}{item.rev:06d}",
                "eventType": event,
                "publisherId": "tfs",
                "message": {"text": text, "html": text, "markdown": text},
                "detailedMessage": {"text": text, "html": text, "markdown": text},
                "resource": resource,
                "resourceVersion": "1.0",
                "resourceContainers": {
                    "collection": {"id": "c12d0eb8-e382-443b-9f9c-c52cba5014c2"},
                    "account": {"id": "f844ec47-a9db-4511-8281-8b63f4eaf94e"},
                    "project": {"id": "be9b3917-87e6-42a4-a549-2bc06a7a878f"},
                },
                "createdDate": iso(self._clock),
            }

    # -- HTTP ----------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        """The Starlette app serving the REST endpoints."""
        if self._app is None:
            self._app = Starlette(
                routes=[Route("/{path:path}", self._dispatch, methods=["GET", "POST"])]
            )
        return self._app

    @staticmethod
    def _error(status: int, message: str, type_key: str = "VssServiceException") -> JSONResponse:
        return JSONResponse(
            {
                "$id": "1",
                "innerException": None,
                "message": message,
                "typeName": f"Microsoft.VisualStudio.Services.WebApi.{type_key}",
                "typeKey": type_key,
                "errorCode": 0,
                "eventId": 3000,
            },
            status_code=status,
        )

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        _, sep, password = decoded.partition(b":")
        return bool(sep) and hmac.compare_digest(password, self.pat.encode())

    @staticmethod
    def _route(segments: list[str]) -> tuple[str, str, str | None, list[str]] | None:
        """(kind, project, team, rest) for ``{project}[/{team}]/_apis/wit/...`` paths."""
        lowered = [s.lower() for s in segments]
        if "_apis" not in lowered:
            return None
        at = lowered.index("_apis")
        scope = segments[:at]
        rest = segments[at + 1 :]
        low = [s.lower() for s in rest]
        if not 1 <= len(scope) <= 2 or not low or low[0] != "wit":
            return None
        project, team = scope[0], (scope[1] if len(scope) == 2 else None)
        if low[1:] == ["wiql"]:
            return "wiql", project, team, rest
        if team is not None:
            return None
        if low[1:] == ["workitemsbatch"]:
            return "batch", project, None, rest
        if len(low) == 3 and low[1] == "workitems":
            return "work_item", project, None, rest
        if len(low) == 4 and low[1] == "workitems" and low[3] == "updates":
            return "updates", project, None, rest
        if len(low) == 4 and low[1] == "workitemtypes" and low[3] == "states":
            return "states", project, None, rest
        if low[1:] == ["reporting", "workitemrevisions"]:
            return "revisions", project, None, rest
        return None

    async def _dispatch(self, request: Request) -> Response:
        path = request.url.path
        if not path.lower().startswith(self.base_path.lower() + "/"):
            return self._error(404, f"no organization at {path}")
        segments = [unquote(s) for s in path[len(self.base_path) + 1 :].split("/") if s]
        route = self._route(segments)
        if route is None:
            return self._error(404, f"The resource {path} does not exist.")
        kind, project_name, team, rest = route
        with self._lock:
            self.request_counts[kind] += 1
            self.requests.append(
                (kind, request.method, str(request.url.path) + "?" + str(request.url.query))
            )
            fault = next((f for f in self.faults if f.kind in (None, kind) and f.times > 0), None)
            if fault is not None:
                fault.times -= 1
                self.faults = [f for f in self.faults if f.times > 0]
        if fault is not None:
            headers = dict(fault.headers)
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            failure = self._error(fault.status, f"injected fault {fault.status}")
            failure.headers.update(headers)
            return failure
        if not self._authorized(request):
            return Response(
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="https://dev.azure.com/"'},
            )
        if request.query_params.get("api-version") != API_VERSION:
            return self._error(
                400,
                "VS800006: The api-version query parameter is missing or not 7.1.",
                "VssVersionNotSpecifiedException",
            )
        project = self.projects.get(project_name.lower())
        if project is None:
            return self._error(
                404,
                f"TF200016: The following project does not exist: {project_name}.",
                "ProjectDoesNotExistWithNameException",
            )
        if team is not None and team.lower() not in project.teams:
            return self._error(404, f"The team with id {team} does not exist.", "TeamNotFound")
        body: Any = None
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                return self._error(400, "The request body is not valid JSON.")
        response: Response
        with self._lock:
            if kind == "wiql":
                response = self._wiql(project, request, body)
            elif kind == "batch":
                response = self._batch(body)
            elif kind == "work_item":
                response = self._work_item(rest[2], request)
            elif kind == "updates":
                response = self._updates(rest[2], request)
            elif kind == "revisions":
                response = self._revisions(project, request)
            else:
                response = self._states(project, rest[2])
        if response.status_code < 400:
            response.headers.update(self.success_headers)
        return response

    def _wiql(self, project: FakeProject, request: Request, body: Any) -> Response:
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, str) or not query.strip():
            return self._error(400, "VS402336: The WIQL query is empty.")
        if not re.search(r"\bFROM\s+WorkItems\b", query, re.IGNORECASE):
            return self._error(400, "VS402329: Expecting FROM WorkItems.")
        time_precision = request.query_params.get("timePrecision", "").lower() == "true"
        since: datetime | None = None
        match = re.search(r"\[System\.ChangedDate\]\s*>=\s*'([^']*)'", query, re.IGNORECASE)
        if match:
            literal = match.group(1)
            if "T" in literal and not time_precision:
                return self._error(
                    400,
                    "VS402625: Dates in WIQL queries must be without time unless "
                    "timePrecision is set.",
                )
            try:
                since = datetime.fromisoformat(literal)
            except ValueError:
                return self._error(400, f"VS402611: The date {literal!r} is not valid.")
            if since.tzinfo is None:
                since = since.replace(tzinfo=UTC)
        area: str | None = None
        match = re.search(r"\[System\.AreaPath\]\s+UNDER\s+'((?:[^']|'')*)'", query, re.IGNORECASE)
        if match:
            area = match.group(1).replace("''", "'")
        types: set[str] | None = None
        match = re.search(r"\[System\.WorkItemType\]\s+IN\s*\(([^)]*)\)", query, re.IGNORECASE)
        if match:
            types = {
                t.replace("''", "'").lower()
                for t in re.findall(r"'((?:[^']|'')*)'", match.group(1))
            }
        selected: list[FakeWorkItem] = []
        for item in self.items.values():
            if item.deleted or item.project.lower() != project.name.lower():
                continue
            changed = datetime.fromisoformat(str(item.fields["System.ChangedDate"]))
            if since is not None and changed < since:
                continue
            item_area = str(item.fields.get("System.AreaPath", "")).lower()
            if area is not None and not (
                item_area == area.lower() or item_area.startswith(area.lower() + "\\")
            ):
                continue
            if types is not None and str(item.fields["System.WorkItemType"]).lower() not in types:
                continue
            selected.append(item)
        top_param = request.query_params.get("$top")
        if top_param is not None and (not top_param.isdigit() or int(top_param) > WIQL_LIMIT):
            return self._error(
                400, f"VS402337: $top must be a number no larger than {WIQL_LIMIT}."
            )
        if len(selected) > WIQL_LIMIT and "$top" not in request.query_params:
            return self._error(
                400,
                f"VS402337: The number of work items returned exceeds the size limit of "
                f"{WIQL_LIMIT}. Change the query to return fewer items.",
            )
        selected.sort(key=lambda i: (str(i.fields["System.ChangedDate"]), i.id))
        top = request.query_params.get("$top")
        if top is not None and top.isdigit():
            selected = selected[: int(top)]
        api = self._project_api(project.name)
        return JSONResponse(
            {
                "queryType": "flat",
                "queryResultType": "workItem",
                "asOf": iso(self._clock),
                "columns": [
                    {
                        "referenceName": "System.Id",
                        "name": "ID",
                        "url": f"{self.public_url}/_apis/wit/fields/System.Id",
                    }
                ],
                "sortColumns": [
                    {
                        "field": {
                            "referenceName": "System.ChangedDate",
                            "name": "Changed Date",
                            "url": f"{self.public_url}/_apis/wit/fields/System.ChangedDate",
                        },
                        "descending": False,
                    }
                ],
                "workItems": [{"id": i.id, "url": f"{api}/wit/workItems/{i.id}"} for i in selected],
            }
        )

    def _batch(self, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("ids"), list):
            return self._error(400, "VS403498: The request must specify 'ids'.")
        ids = body["ids"]
        if not ids:
            return self._error(400, "VS403498: The request must specify at least one id.")
        if len(ids) > BATCH_LIMIT:
            return self._error(
                400,
                f"VS403474: The maximum number of work items in a batch request is "
                f"{BATCH_LIMIT}; {len(ids)} were requested.",
            )
        names = body.get("fields")
        if names is not None:
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                return self._error(400, "'fields' must be a list of field reference names.")
            for name in names:
                if not self.known_field(name):
                    return self._error(400, f"TF51535: Cannot find field {name}.")
        omit = str(body.get("errorPolicy", "fail")).lower() == "omit"
        value: list[dict[str, Any] | None] = []
        for raw_id in ids:
            item = self.items.get(raw_id) if isinstance(raw_id, int) else None
            if item is None or item.deleted:
                if not omit:
                    return self._error(
                        404,
                        f"TF401232: Work item {raw_id} does not exist, or you do not have "
                        "permissions to read it.",
                        "WorkItemUnauthorizedAccessException",
                    )
                value.append(None)
                continue
            value.append(self._item_json(item, names))
        return JSONResponse({"count": len(value), "value": value})

    def _find(self, raw_id: str) -> FakeWorkItem | None:
        item = self.items.get(int(raw_id)) if raw_id.isdigit() else None
        return None if item is None or item.deleted else item

    def _missing(self, raw_id: str) -> Response:
        return self._error(
            404,
            f"TF401232: Work item {raw_id} does not exist, or you do not have permissions "
            "to read it.",
            "WorkItemUnauthorizedAccessException",
        )

    def _work_item(self, raw_id: str, request: Request) -> Response:
        item = self._find(raw_id)
        if item is None:
            return self._missing(raw_id)
        names_param = request.query_params.get("fields")
        names = [n for n in names_param.split(",") if n] if names_param else None
        for name in names or ():
            if not self.known_field(name):
                return self._error(400, f"TF51535: Cannot find field {name}.")
        return JSONResponse(self._item_json(item, names))

    def _updates(self, raw_id: str, request: Request) -> Response:
        item = self._find(raw_id)
        if item is None:
            return self._missing(raw_id)
        try:
            top = int(request.query_params.get("$top", "200"))
            skip = int(request.query_params.get("$skip", "0"))
        except ValueError:
            return self._error(400, "$top and $skip must be integers.")
        top = max(0, min(top, 200))
        page = item.updates[skip : skip + top]
        return JSONResponse({"count": len(page), "value": page})

    def _revisions(self, project: FakeProject, request: Request) -> Response:
        """One batch of the reporting revisions stream (Read Reporting Revisions Get).

        The continuation token is the position in `revision_log` after the batch; the
        real service's token is opaque too, and it cannot be combined with
        ``startDateTime``. ``isLastBatch`` is true once the batch reaches the end of the
        log (the token then waits there for revisions still to come)."""
        query = request.query_params
        token = query.get("continuationToken")
        start = query.get("startDateTime")
        if token is not None and start is not None:
            return self._error(
                400,
                "VS403591: startDateTime cannot be used together with continuationToken.",
            )
        position = 0
        if token is not None:
            match = re.fullmatch(r"wm-(\d+)", token)
            if match is None or int(match.group(1)) > len(self.revision_log):
                return self._error(400, f"VS403592: The continuation token {token!r} is invalid.")
            position = int(match.group(1))
        since: datetime | None = None
        if start is not None:
            try:
                since = datetime.fromisoformat(start)
            except ValueError:
                return self._error(400, f"VS402611: The date {start!r} is not valid.")
            if since.tzinfo is None:
                since = since.replace(tzinfo=UTC)
        names_param = query.get("fields")
        names = [n.strip() for n in names_param.split(",") if n.strip()] if names_param else None
        for name in names or ():
            if not self.known_field(name):
                return self._error(400, f"TF51535: Cannot find field {name}.")
        types_param = query.get("types")
        types = (
            {t.strip().lower() for t in types_param.split(",") if t.strip()}
            if types_param
            else None
        )
        size_param = query.get("$maxPageSize", str(REPORTING_PAGE_LIMIT))
        if not size_param.isdigit() or int(size_param) < 1:
            return self._error(400, "$maxPageSize must be a positive integer.")
        size = min(int(size_param), REPORTING_PAGE_LIMIT)
        values: list[dict[str, Any]] = []
        while position < len(self.revision_log) and len(values) < size:
            item_id, rev, fields = self.revision_log[position]
            position += 1
            if str(fields.get("System.TeamProject", "")).lower() != project.name.lower():
                continue
            wit = str(fields.get("System.WorkItemType", "")).lower()
            if types is not None and wit not in types:
                continue
            if since is not None:
                changed = datetime.fromisoformat(str(fields["System.ChangedDate"]))
                if changed <= since:
                    continue
            snapshot = FakeWorkItem(id=item_id, project=project.name, rev=rev, fields=fields)
            values.append(self._item_json(snapshot, names))
        next_token = f"wm-{position}"
        api = self._project_api(project.name)
        return JSONResponse(
            {
                "values": values,
                "nextLink": (
                    f"{api}/wit/reporting/workitemrevisions?continuationToken={next_token}"
                    f"&api-version={API_VERSION}"
                ),
                "continuationToken": next_token,
                "isLastBatch": position >= len(self.revision_log),
            }
        )

    def _states(self, project: FakeProject, work_item_type: str) -> Response:
        try:
            states = project.states(work_item_type)
        except KeyError:
            return self._error(
                404,
                f"VS402323: Work item type {work_item_type} does not exist.",
                "WorkItemTypeNotFoundException",
            )
        value = [{"name": n, "color": c, "category": cat} for n, cat, c in states]
        return JSONResponse({"count": len(value), "value": value})


@contextlib.contextmanager
def serve_fake_azure(fake: FakeAzureDevOps, host: str = "127.0.0.1") -> Iterator[str]:
    """Run the fake with uvicorn on a free loopback port; yields the organization URL."""
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP
    # (without it every keep-alive request waits ~40 ms for a delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        fake.app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="fake-azure-devops", daemon=True
    )
    url = f"http://{host}:{port}{fake.base_path}"
    previous_public = fake.public_url
    fake.public_url = url
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake Azure DevOps server did not start")
            time.sleep(0.01)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        fake.public_url = previous_public
