"""Configuration of one GitHub Projects (v2) board."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from connectors.github.auth import DEFAULT_REST_API_URL
from connectors.github.graphql import DEFAULT_GRAPHQL_URL
from connectors.github.queries import MAX_PAGE_SIZE
from mapping.domain import BillingType

OwnerType = Literal["organization", "user"]

#: Option names understood for the billing-type single select when no mapping is given
#: (keys are normalized: lower case, letters and digits only).
DEFAULT_BILLING_TYPE_VALUES: Mapping[str, BillingType] = MappingProxyType(
    {
        "tm": BillingType.TIME_AND_MATERIALS,
        "timeandmaterials": BillingType.TIME_AND_MATERIALS,
        "timeandmaterial": BillingType.TIME_AND_MATERIALS,
        "hourly": BillingType.TIME_AND_MATERIALS,
        "fixed": BillingType.FIXED_PRICE,
        "fixedprice": BillingType.FIXED_PRICE,
        "fixedfee": BillingType.FIXED_PRICE,
        "milestone": BillingType.FIXED_PRICE,
        "nonbillable": BillingType.NON_BILLABLE,
        "notbillable": BillingType.NON_BILLABLE,
        "internal": BillingType.NON_BILLABLE,
    }
)

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalize_option(name: str) -> str:
    """Option/field name for lenient comparison: case-folded, letters and digits only."""
    return _NON_ALNUM.sub("", name.casefold())


@dataclass(frozen=True, slots=True, kw_only=True)
class GitHubBoardConfig:
    """How one GitHub Projects (v2) board is read, and how to authenticate.

    The project is ``organization(login: owner) { projectV2(number) }`` or the same
    under ``user(login: owner)`` (`owner_type`).

    Columns: the `status_field` single select gives the column; its option names in
    `done_options` mean Done, those in `in_progress_options` In progress, anything else
    (or no value) Proposed. Names match case-insensitively.

    Archived items keep the category of their Status by default: GitHub's built-in
    "auto-archive" workflow archives Done items to tidy the board, and that must not
    undo billing. Set `archived_as_removed` to report archived items as Removed.

    Numbers: `hours_field` (hours tracked), `rate_field` (hourly rate for this item) and
    `milestone_field` (fixed price) name Number fields. `billing_type_field` names a
    single select whose options map to a `BillingType` through `billing_type_values`
    (option names matched ignoring case and punctuation; empty mapping: common names
    such as "T&M", "Fixed price", "Non-billable" are understood). Without a billing
    field, `billing_type` is None and the billing core decides from labels.

    Polling: a poll lists only the items updated since the last poll (the project
    filter ``-last-updated:Ndays``, day granularity, N covering the time since the
    cursor plus `incremental_overlap_seconds`); every `full_reconcile_seconds` (and
    when there is no cursor) it lists every item instead, archived ones included.
    0 makes every poll a full listing.

    Credentials: either `token` (classic PAT with `read:project` and `repo`, or a
    fine-grained token with Projects/Issues/Pull requests read), or a GitHub App
    (`app_id`, `app_private_key` PEM, `app_installation_id`). `webhook_secret` checks
    ``X-Hub-Signature-256`` on ``POST /webhooks/github``.
    """

    board_key: str
    owner: str
    project_number: int
    owner_type: OwnerType = "organization"
    status_field: str = "Status"
    done_options: tuple[str, ...] = ("Done",)
    in_progress_options: tuple[str, ...] = ("In Progress", "In Review")
    hours_field: str | None = "Hours"
    billing_type_field: str | None = None
    billing_type_values: Mapping[str, BillingType] = field(
        default_factory=lambda: MappingProxyType({})
    )
    rate_field: str | None = None
    milestone_field: str | None = None
    hours_by_person_field: str | None = None  # a Text field "login: hours, …"
    iteration_field: str | None = None
    archived_as_removed: bool = False
    api_url: str = DEFAULT_GRAPHQL_URL
    rest_api_url: str = DEFAULT_REST_API_URL
    token: str | None = field(default=None, repr=False)
    app_id: str | None = None
    app_private_key: str | None = field(default=None, repr=False)
    app_installation_id: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    page_size: int = MAX_PAGE_SIZE
    full_reconcile_seconds: float = 86_400.0
    incremental_overlap_seconds: float = 3_600.0
    max_attempts: int = 4
    low_rate_limit_remaining: int = 200
    max_rate_limit_wait: float = 300.0
    timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        where = f"github board {self.board_key!r}"
        if not self.board_key:
            raise ValueError("a GitHub board needs a board_key")
        if not self.owner.strip():
            raise ValueError(f"{where}: owner (organization or user login) is empty")
        object.__setattr__(self, "owner", self.owner.strip())
        if self.owner_type not in ("organization", "user"):
            raise ValueError(
                f"{where}: owner_type {self.owner_type!r} must be 'organization' or 'user'"
            )
        if isinstance(self.project_number, bool) or not isinstance(self.project_number, int):
            raise ValueError(f"{where}: project_number must be an integer")
        if self.project_number < 1:
            raise ValueError(f"{where}: project_number {self.project_number} must be >= 1")
        if not self.status_field.strip():
            raise ValueError(f"{where}: status_field is empty")
        object.__setattr__(self, "done_options", tuple(self.done_options))
        object.__setattr__(self, "in_progress_options", tuple(self.in_progress_options))
        if not any(o.strip() for o in self.done_options):
            raise ValueError(f"{where}: done_options needs at least one Status option name")
        overlap = {normalize_option(o) for o in self.done_options} & {
            normalize_option(o) for o in self.in_progress_options
        }
        if overlap:
            raise ValueError(
                f"{where}: options {sorted(overlap)} are in both done_options and "
                "in_progress_options"
            )
        try:
            values = {
                str(name): BillingType(billing)
                for name, billing in dict(self.billing_type_values).items()
            }
        except ValueError as exc:
            raise ValueError(
                f"{where}: billing_type_values: {exc}; expected one of "
                f"{', '.join(b.value for b in BillingType)}"
            ) from exc
        object.__setattr__(self, "billing_type_values", MappingProxyType(values))
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"{where}: page_size must be 1 to {MAX_PAGE_SIZE}")
        if self.max_attempts < 1:
            raise ValueError(f"{where}: max_attempts must be >= 1")
        if self.full_reconcile_seconds < 0:
            raise ValueError(f"{where}: full_reconcile_seconds must be >= 0 (0: always full)")
        if self.incremental_overlap_seconds < 0:
            raise ValueError(f"{where}: incremental_overlap_seconds must be >= 0")
        if not self.api_url.startswith(("https://", "http://")):
            raise ValueError(f"{where}: api_url {self.api_url!r} is not an http(s) URL")
        app_parts = (self.app_id, self.app_private_key, self.app_installation_id)
        has_app = any(p for p in app_parts)
        if self.token and has_app:
            raise ValueError(f"{where}: set either token or the GitHub App settings, not both")
        if has_app and not all(p for p in app_parts):
            raise ValueError(
                f"{where}: a GitHub App needs app_id, app_private_key and app_installation_id"
            )
        if not self.token and not has_app:
            raise ValueError(
                f"{where}: no credentials: set token (a PAT with read:project and repo) "
                "or app_id, app_private_key and app_installation_id"
            )

    @property
    def uses_app(self) -> bool:
        """True when authenticating as a GitHub App installation."""
        return not self.token

    @property
    def default_project_url(self) -> str:
        """The project's web URL, built from owner and number (used until GitHub says)."""
        kind = "orgs" if self.owner_type == "organization" else "users"
        return f"https://github.com/{kind}/{self.owner}/projects/{self.project_number}"

    def billing_type_for(self, option: str) -> BillingType | None:
        """The billing type a billing-field option means, None if not understood."""
        wanted = normalize_option(option)
        table = self.billing_type_values or DEFAULT_BILLING_TYPE_VALUES
        for name, billing in table.items():
            if normalize_option(name) == wanted:
                return billing
        return None
