"""Configuration of one Azure DevOps board (a project, optionally a team and area path)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from mapping.domain import BillingType

DEFAULT_HOURS_FIELD = "Microsoft.VSTS.Scheduling.CompletedWork"


@dataclass(frozen=True)
class AzureBoardConfig:
    """How one Azure DevOps Boards project is read.

    `organization_url` is the collection URL: ``https://dev.azure.com/{org}`` (or the
    legacy ``https://{org}.visualstudio.com``) for Azure DevOps Services, or
    ``https://server/tfs/{collection}`` for Azure DevOps Server.

    `hours_field` is any field reference name (Scrum has no CompletedWork: use
    ``Microsoft.VSTS.Scheduling.OriginalEstimate`` or a custom field such as
    ``Custom.BillableHours``). `billing_type_field` is an optional picklist field whose
    values map to a `BillingType` through `billing_type_values` (matched case- and
    punctuation-insensitively; without a mapping, values such as "Fixed price",
    "T&M", "Time and materials" and "Non-billable" are understood).

    `done_board_columns`, when set, makes Done mean "``System.BoardColumn`` is one of
    these" instead of the Completed state category (Removed stays Removed).

    `hook_username` / `hook_password` are the basic-auth credentials the service hook
    subscription sends to ``POST /webhooks/azure-devops`` (empty password: hooks refused).
    """

    board_key: str
    organization_url: str
    project: str
    pat: str = field(repr=False)
    team: str | None = None
    area_path: str | None = None
    hours_field: str = DEFAULT_HOURS_FIELD
    billing_type_field: str | None = None
    billing_type_values: Mapping[str, BillingType] = field(default_factory=dict)
    done_board_columns: frozenset[str] = frozenset()
    rate_field: str | None = None
    milestone_field: str | None = None
    hours_by_person_field: str | None = None  # a text field "unique name: hours, …"
    overlap_seconds: int = 300
    work_item_types: tuple[str, ...] = ()
    max_items_per_poll: int = 19_999
    timeout_seconds: float = 30.0
    hook_username: str = ""
    hook_password: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        url = self.organization_url.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"board {self.board_key!r}: organization_url {self.organization_url!r} must be "
                "like https://dev.azure.com/ORG or https://server/tfs/COLLECTION"
            )
        if parts.query or parts.fragment:
            raise ValueError(
                f"board {self.board_key!r}: organization_url must not carry a query or fragment"
            )
        object.__setattr__(self, "organization_url", url)
        if not self.board_key:
            raise ValueError("an Azure DevOps board needs a board_key")
        if not self.project.strip():
            raise ValueError(f"board {self.board_key!r}: project is empty")
        if not self.pat:
            raise ValueError(
                f"board {self.board_key!r}: no personal access token (scope Work Items: Read)"
            )
        if not self.hours_field.strip():
            raise ValueError(f"board {self.board_key!r}: hours_field is empty")
        if self.overlap_seconds < 0:
            raise ValueError(f"board {self.board_key!r}: overlap_seconds must be >= 0")
        if not 1 <= self.max_items_per_poll <= 20_000:
            raise ValueError(f"board {self.board_key!r}: max_items_per_poll must be 1 to 20000")
        object.__setattr__(self, "done_board_columns", frozenset(self.done_board_columns))
        object.__setattr__(self, "work_item_types", tuple(self.work_item_types))
        object.__setattr__(self, "billing_type_values", dict(self.billing_type_values))

    @property
    def project_url(self) -> str:
        """The project's base URL (for REST calls and web links)."""
        return f"{self.organization_url}/{quote(self.project, safe='')}"

    def web_url(self, item_id: int | str) -> str:
        """The browser URL of a work item."""
        return f"{self.project_url}/_workitems/edit/{item_id}"
