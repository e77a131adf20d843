"""Settings: a TOML file (`-c/--config`, default ./kanvoice.toml) plus `KANVOICE_…` env.

Secrets (API keys, tokens, signing secrets, passwords) belong in the environment, e.g.
`KANVOICE_STRIPE__API_KEY`, or in files: a directory named by `KANVOICE_SECRETS_DIR`
or systemd's `$CREDENTIALS_DIRECTORY` holding one file per setting
(`stripe__api_key`, `slack__signing_secret`, …). A wrong setting stops the program
at start with a message naming the key, the value and what was expected.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
import typing
from datetime import date, timedelta
from datetime import time as dt_time
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from mapping.aging import ReminderPolicy
from mapping.budgets import DEFAULT_THRESHOLDS, Budget
from mapping.digest import DigestSchedule, parse_days
from mapping.domain import (
    BillingType,
    BoardPolicy,
    Client,
    DatedRate,
    LineGrouping,
    Person,
    RateRule,
    RateScope,
    Role,
    RoundingMode,
    RoundingRule,
    Staff,
)
from mapping.money import UnknownCurrencyError, normalize_currency
from mapping.retainers import RetainerTerms

DEFAULT_CONFIG_PATH = Path("kanvoice.toml")

NonNegativeDecimal = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
Key = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")]


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("expected an http(s) URL such as https://example.com")
    return value


HttpUrlStr = Annotated[str, AfterValidator(_http_url)]


class ConfigError(Exception):
    """The configuration is wrong; the message names each key, value and expectation."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cadence(StrEnum):
    ON_DEMAND = "on_demand"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


class RoundingSettings(_Strict):
    increment_minutes: int = Field(default=15, ge=1, le=1440)
    mode: RoundingMode = RoundingMode.UP

    def to_rule(self) -> RoundingRule:
        return RoundingRule(self.increment_minutes, self.mode)


class RateRuleSettings(_Strict):
    """`label` set: a label rule; otherwise a dated rate for the board/client itself."""

    rate: NonNegativeDecimal
    label: str | None = None
    effective_from: date | None = None


def _rules(rules: list[RateRuleSettings], own_scope: RateScope) -> tuple[RateRule, ...]:
    return tuple(
        RateRule(RateScope.LABEL if r.label else own_scope, r.rate, r.label, r.effective_from)
        for r in rules
    )


class DatedRateSettings(_Strict):
    """A dated change of a person's or role's rate."""

    rate: NonNegativeDecimal
    effective_from: date | None = None


def _dated(rate: Decimal | None, changes: list[DatedRateSettings]) -> tuple[DatedRate, ...]:
    first = (DatedRate(rate),) if rate is not None else ()
    return first + tuple(DatedRate(c.rate, c.effective_from) for c in changes)


class RoleSettings(_Strict):
    """A role: bill rate and cost rate per hour (in the billed client's currency)."""

    key: Key
    name: str = ""
    rate: NonNegativeDecimal | None = None
    cost_rate: NonNegativeDecimal | None = None
    rates: list[DatedRateSettings] = []
    cost_rates: list[DatedRateSettings] = []

    def to_role(self) -> Role:
        return Role(
            self.key,
            self.name,
            _dated(self.rate, self.rates),
            _dated(self.cost_rate, self.cost_rates),
        )


class PersonSettings(_Strict):
    """Someone on the boards: identities are GitHub logins and Azure DevOps unique
    names / emails (matched without case); rates beat the role's."""

    key: Key
    name: str = ""
    identities: list[str] = []
    role: Key | None = None
    rate: NonNegativeDecimal | None = None
    cost_rate: NonNegativeDecimal | None = None
    rates: list[DatedRateSettings] = []
    cost_rates: list[DatedRateSettings] = []

    def to_person(self) -> Person:
        return Person(
            self.key,
            self.name,
            frozenset(self.identities),
            self.role,
            _dated(self.rate, self.rates),
            _dated(self.cost_rate, self.cost_rates),
        )


class RetainerSettings(_Strict):
    """Prepaid hours per billing period (`[clients.retainer]`).

    Give `hours` and `amount` (40 h for 6000.00), or two of hours / amount / `rate`
    (40 h at 150 → 6000.00; 6000.00 at 150 → 40 h). Overage is billed at
    `overage_rate` (default: `rate`, else each entry's own rate). `rollover`: unused
    hours carry to the next period, at most `rollover_cap_hours`."""

    hours: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)] | None = None
    amount: NonNegativeDecimal | None = None
    rate: NonNegativeDecimal | None = None
    overage_rate: NonNegativeDecimal | None = None
    rollover: bool = False
    rollover_cap_hours: NonNegativeDecimal | None = None

    @model_validator(mode="after")
    def _enough(self) -> RetainerSettings:
        given = [n for n in ("hours", "amount", "rate") if getattr(self, n) is not None]
        if len(given) < 2 and not (self.hours is not None and self.overage_rate is not None):
            raise ValueError(
                'a retainer needs hours and amount (e.g. hours = 40, amount = "6000.00"), '
                "or one of them with rate"
            )
        if self.hours is None and not self.rate:
            raise ValueError("a retainer with an amount and no hours needs a rate above 0")
        if self.rollover_cap_hours is not None and not self.rollover:
            raise ValueError("rollover_cap_hours is set but rollover = false: set rollover = true")
        return self

    def terms(self, currency: str) -> RetainerTerms:
        """The billing core's terms: the fixed line's amount and the hours it covers."""
        rate = self.rate if self.rate is not None else self.overage_rate
        if self.hours is not None:
            hours = self.hours
            amount = self.amount if self.amount is not None else hours * (rate or Decimal(0))
        else:
            assert self.amount is not None and self.rate
            amount = self.amount
            hours = (amount / self.rate).quantize(Decimal("0.000001"), rounding=ROUND_FLOOR)
        return RetainerTerms(
            currency=currency,
            amount=amount,
            included_hours=hours,
            overage_rate=self.overage_rate if self.overage_rate is not None else self.rate,
            rollover=self.rollover,
            rollover_cap_hours=self.rollover_cap_hours,
        )


class BudgetSettings(_Strict):
    """A cap in hours and/or money (`[clients.budget]`, or a board's `budget = {…}`),
    alerted to Slack at `alert_thresholds` percent, once per threshold per period
    (`per = "period"`: the client's billing period; `"total"`: ever)."""

    hours: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)] | None = None
    amount: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)] | None = None
    alert_thresholds: list[Annotated[int, Field(ge=1, le=1000)]] = list(DEFAULT_THRESHOLDS)
    per: Literal["period", "total"] = "period"

    @model_validator(mode="after")
    def _cap(self) -> BudgetSettings:
        if self.hours is None and self.amount is None:
            raise ValueError('a budget needs hours or amount (e.g. hours = 200, amount = "30000")')
        if not self.alert_thresholds:
            raise ValueError("alert_thresholds is empty: give percents such as [80, 100]")
        return self

    def budget(self, scope: str, currency: str) -> Budget:
        return Budget(
            scope, currency, self.hours, self.amount, tuple(self.alert_thresholds), self.per
        )


class ClientSettings(_Strict):
    key: Key
    name: str = ""
    stripe_customer_id: str = Field(min_length=1, pattern=r"^cus_[A-Za-z0-9]+$")
    currency: str
    rate: NonNegativeDecimal | None = None
    rate_rules: list[RateRuleSettings] = []
    rounding: RoundingSettings | None = None
    cadence: Cadence = Cadence.MONTHLY
    # Period boundaries: weekly drafts close on this weekday (0 = Monday), monthly on day 1.
    week_starts_on: int = Field(default=0, ge=0, le=6)
    timezone: str = "UTC"
    auto_send: bool = False
    days_until_due: int = Field(default=30, ge=0, le=365)
    tax_rate_ids: list[str] = []
    # How time lines read on the invoice: item | item_person | role.
    line_grouping: LineGrouping = LineGrouping.ITEM
    # Prepaid hours per period, and a cap with Slack alerts (README: Retainers, budgets).
    retainer: RetainerSettings | None = None
    budget: BudgetSettings | None = None

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        try:
            return normalize_currency(value)
        except UnknownCurrencyError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _retainer_period(self) -> ClientSettings:
        if self.retainer is not None and self.cadence is Cadence.ON_DEMAND:
            raise ValueError(
                'a retainer is per billing period: set cadence = "monthly" or "weekly" '
                "(on_demand has no periods)"
            )
        return self

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: expected e.g. Europe/Berlin") from None
        return value


class GitHubBoardSettings(_Strict):
    owner: str
    owner_type: Literal["organization", "user"] = "organization"
    project_number: int = Field(ge=1)
    status_field: str = "Status"
    in_progress_options: list[str] = ["In progress", "In Progress", "In review"]
    api_url: HttpUrlStr = "https://api.github.com/graphql"
    full_reconcile_seconds: int = Field(default=86_400, ge=0)
    incremental_overlap_seconds: int = Field(default=3_600, ge=0, le=30 * 86_400)


class AzureBoardSettings(_Strict):
    organization_url: HttpUrlStr
    project: str
    team: str | None = None
    area_path: str | None = None
    work_item_types: list[str] = []
    overlap_seconds: int = Field(default=300, ge=0, le=86400)


class BoardSettings(_Strict):
    key: Key
    source: Literal["github", "azure_devops", "simulated", "file"]
    client: Key
    done_columns: list[str] = []
    hours_field: str | None = None
    billing_type_field: str | None = None
    billing_type_values: dict[str, BillingType] = {}
    non_billable_labels: list[str] = ["non-billable", "internal"]
    fixed_price_labels: list[str] = ["fixed-price"]
    default_billing_type: BillingType = BillingType.TIME_AND_MATERIALS
    rate_field: str | None = None
    milestone_field: str | None = None
    # A text field "login: hours, login: hours" that splits an item's hours by person.
    hours_by_person_field: str | None = None
    rate: NonNegativeDecimal | None = None
    rate_rules: list[RateRuleSettings] = []
    rounding: RoundingSettings | None = None
    poll_interval_seconds: int = Field(default=300, ge=1, le=86400)
    # A cap for this board's work, e.g. budget = { hours = 200 } (README: budgets).
    budget: BudgetSettings | None = None
    github: GitHubBoardSettings | None = None
    azure_devops: AzureBoardSettings | None = None

    @model_validator(mode="after")
    def _source_section(self) -> BoardSettings:
        if self.source == "github" and self.github is None:
            raise ValueError("a github board needs a [boards.github] section")
        if self.source == "azure_devops" and self.azure_devops is None:
            raise ValueError("an azure_devops board needs a [boards.azure_devops] section")
        return self


class LedgerSettings(_Strict):
    url: str = "sqlite:///kanvoice.db"
    #: Processed inbox rows (webhook deliveries) are kept this many days, so that late
    #: redeliveries still dedupe (Stripe retries for up to 3 days), then pruned.
    inbox_retention_days: int = Field(default=14, ge=1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError(
                f"unsupported ledger url {value!r}: expected sqlite:///PATH or "
                "postgresql+psycopg://USER@HOST/DB"
            )
        if value.startswith("postgresql://"):
            return "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=1, le=65535)
    public_url: HttpUrlStr | None = None
    dashboard_token: SecretStr | None = None
    dashboard_user: str | None = None
    dashboard_password: SecretStr | None = None
    max_body_bytes: int = Field(default=1_000_000, ge=1024)


class StripeSettings(_Strict):
    api_key: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    api_base: HttpUrlStr = "https://api.stripe.com"
    requests_per_second: float | None = Field(default=None, gt=0)
    webhook_tolerance_seconds: int = Field(default=300, ge=1)


class SlackSettings(_Strict):
    bot_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    app_token: SecretStr | None = None
    channel: str | None = None
    approvers: list[str] = []
    approver_group: str | None = None
    api_url: HttpUrlStr = "https://slack.com/api/"
    socket_mode: bool = False


class GitHubSettings(_Strict):
    token: SecretStr | None = None
    app_id: str | None = None
    installation_id: str | None = None
    private_key: SecretStr | None = None
    webhook_secret: SecretStr | None = None


class AzureDevOpsSettings(_Strict):
    pat: SecretStr | None = None
    hook_username: str | None = None
    hook_password: SecretStr | None = None


class FinanceSettings(_Strict):
    """How finance reads kanvoice: the time zone of every time shown (dashboard, CLI)."""

    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return ClientSettings._timezone(value)


class DigestSettings(_Strict):
    """The finance digest in Slack: when (days and local time in `finance.timezone`),
    where (default: the approvals channel `slack.channel`), and whether at all."""

    enabled: bool = True
    days: list[str] = ["mon"]
    time: str = "09:00"
    channel: str | None = None
    # A daemon that was down at the scheduled time still posts within this many hours.
    grace_hours: int = Field(default=12, ge=1, le=167)

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[str]) -> list[str]:
        parse_days(value)
        return value

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value.strip())
        if not match:
            raise ValueError(f"time {value!r}: expected HH:MM, e.g. 09:00")
        return f"{int(match.group(1)):02d}:{match.group(2)}"

    def schedule(self, timezone: str) -> DigestSchedule:
        hour, minute = (int(p) for p in self.time.split(":"))
        return DigestSchedule(parse_days(self.days), dt_time(hour, minute), timezone)


class OverdueSettings(_Strict):
    """Overdue invoices: optional reminders through Stripe's own ``send`` again, at
    most once per `remind_interval_days` per invoice. Off by default."""

    remind: bool = False
    remind_interval_days: int = Field(default=7, ge=1, le=365)

    def policy(self) -> ReminderPolicy:
        return ReminderPolicy(self.remind, timedelta(days=self.remind_interval_days))


class DefaultsSettings(_Strict):
    rate: NonNegativeDecimal | None = None
    # Cost of an hour of someone with no cost rate of their own or of their role.
    cost_rate: NonNegativeDecimal | None = None
    rounding: RoundingSettings = RoundingSettings()


class Settings(BaseSettings):
    """Everything kanvoice is told. See config.example.toml for every key, commented."""

    model_config = SettingsConfigDict(
        env_prefix="KANVOICE_",
        env_nested_delimiter="__",
        secrets_nested_delimiter="__",
        secrets_dir_missing="ok",
        extra="forbid",
        frozen=True,
    )

    ledger: LedgerSettings = LedgerSettings()
    server: ServerSettings = ServerSettings()
    defaults: DefaultsSettings = DefaultsSettings()
    finance: FinanceSettings = FinanceSettings()
    digest: DigestSettings = DigestSettings()
    overdue: OverdueSettings = OverdueSettings()
    stripe: StripeSettings = StripeSettings()
    slack: SlackSettings = SlackSettings()
    github: GitHubSettings = GitHubSettings()
    azure_devops: AzureDevOpsSettings = AzureDevOpsSettings()
    clients: list[ClientSettings] = []
    boards: list[BoardSettings] = []
    roles: list[RoleSettings] = []
    people: list[PersonSettings] = []

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file; secret files fill what neither sets.
        secrets = NestedSecretsSettingsSource(file_secret_settings, secrets_prefix="")
        return (env_settings, init_settings, secrets)

    @model_validator(mode="after")
    def _references(self) -> Settings:
        keys = [c.key for c in self.clients]
        for index, key in enumerate(keys):
            if keys.index(key) != index:
                raise ValueError(f"clients[{index}].key = {key!r} is used twice")
        board_keys = [b.key for b in self.boards]
        for index, board in enumerate(self.boards):
            if board_keys.index(board.key) != index:
                raise ValueError(f"boards[{index}].key = {board.key!r} is used twice")
            if board.client not in keys:
                raise ValueError(
                    f"boards[{index}].client = {board.client!r}: expected one of the "
                    f"configured clients {keys or '(none configured)'}"
                )
        role_keys = [r.key for r in self.roles]
        for index, role in enumerate(self.roles):
            if role_keys.index(role.key) != index:
                raise ValueError(f"roles[{index}].key = {role.key!r} is used twice")
        seen: dict[str, str] = {}
        person_keys = [p.key for p in self.people]
        for index, person in enumerate(self.people):
            if person_keys.index(person.key) != index:
                raise ValueError(f"people[{index}].key = {person.key!r} is used twice")
            if person.role is not None and person.role not in role_keys:
                raise ValueError(
                    f"people[{index}].role = {person.role!r}: expected one of the "
                    f"configured roles {role_keys or '(none configured)'}"
                )
            for identity in (person.key, *person.identities):
                folded = identity.strip().casefold()
                if seen.get(folded, person.key) != person.key:
                    raise ValueError(
                        f"people[{index}].identities: {identity!r} also names "
                        f"{seen[folded]!r}; each board identity names one person"
                    )
                seen[folded] = person.key
        return self

    def staff(self) -> Staff:
        """Everyone configured (empty: billing per item, as before people existed)."""
        return Staff(
            tuple(p.to_person() for p in self.people),
            tuple(r.to_role() for r in self.roles),
            self.defaults.cost_rate,
        )

    def client(self, key: str) -> ClientSettings:
        for client in self.clients:
            if client.key == key:
                return client
        raise KeyError(key)

    def retainer_terms(self, client_key: str) -> RetainerTerms | None:
        """The client's retainer in the billing core's terms (None: no retainer)."""
        client = self.client(client_key)
        return client.retainer.terms(client.currency) if client.retainer else None

    def budgets(self, client_key: str) -> list[Budget]:
        """The client's budget and those of its boards (scopes `client:KEY`, `board:KEY`)."""
        client = self.client(client_key)
        found = []
        if client.budget is not None:
            found.append(client.budget.budget(f"client:{client.key}", client.currency))
        for board in self.boards:
            if board.client == client.key and board.budget is not None:
                found.append(board.budget.budget(f"board:{board.key}", client.currency))
        return found

    def board_policies(self) -> dict[str, BoardPolicy]:
        """The billing core's view of every board, keyed by board key."""
        clients = {c.key: self._client_domain(c) for c in self.clients}
        staff = self.staff()
        return {
            b.key: BoardPolicy(
                key=b.key,
                client=clients[b.client],
                done_columns=frozenset(b.done_columns),
                non_billable_labels=frozenset(b.non_billable_labels),
                fixed_price_labels=frozenset(b.fixed_price_labels),
                default_billing_type=b.default_billing_type,
                rate=b.rate,
                rate_rules=_rules(b.rate_rules, RateScope.BOARD),
                default_rate=self.defaults.rate,
                rounding=b.rounding.to_rule() if b.rounding else None,
                staff=staff,
                line_grouping=self.client(b.client).line_grouping,
            )
            for b in self.boards
        }

    def _client_domain(self, c: ClientSettings) -> Client:
        rounding = c.rounding or self.defaults.rounding
        return Client(
            key=c.key,
            name=c.name or c.key,
            currency=c.currency,
            stripe_customer_id=c.stripe_customer_id,
            rate=c.rate,
            rounding=rounding.to_rule(),
            rate_rules=_rules(c.rate_rules, RateScope.CLIENT),
        )


def _secrets_dir() -> str | None:
    """`$KANVOICE_SECRETS_DIR`, else systemd's `$CREDENTIALS_DIRECTORY`: a directory named
    there must exist and each file in it must be readable (`ConfigError` otherwise)."""
    for name in ("KANVOICE_SECRETS_DIR", "CREDENTIALS_DIRECTORY"):
        value = os.environ.get(name)
        if not value:
            continue
        directory = Path(value)
        if not directory.is_dir():
            what = "does not exist" if not directory.exists() else "is not a directory"
            raise ConfigError(f"${name} = {value!r}: {what} (expected a directory of secret files)")
        _check_readable(name, directory)
        return value
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The settings model an annotation holds (through Optional and list), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _closest_key(location: tuple[Any, ...]) -> str | None:
    """'did you mean hours_field?' for a misspelt key, from the section's known keys."""
    model: type[BaseModel] | None = Settings
    for part in location[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part)) if model is not None else None
        model = _model_in(field.annotation) if field is not None else None
        if model is None:
            return None
    assert model is not None
    close = difflib.get_close_matches(str(location[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else None


def _check_readable(name: str, directory: Path) -> None:
    """Every file in the secrets directory can be read by this process, or one line
    naming the file and the reason (wrong owner or mode under `LoadCredential=` or
    compose secrets is the usual one)."""
    try:
        files = sorted(directory.iterdir())
    except OSError as exc:
        raise ConfigError(f"${name} = {str(directory)!r}: cannot list it: {_reason(exc)}") from None
    for file in files:
        try:
            if file.is_dir():
                continue
            with file.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise ConfigError(f"secret file {file}: cannot read it: {_reason(exc)}") from None


def _reason(exc: OSError) -> str:
    reason = exc.strerror or exc.__class__.__name__
    if isinstance(exc, PermissionError):
        reason += (
            f" (kanvoice runs as uid {os.getuid()}; give the file to that user, "
            "e.g. chown/chmod 0400, or use LoadCredential=)"
        )
    return reason


def secret_settings() -> list[tuple[str, str]]:
    """(section, key) of every secret setting: each `SecretStr` field of a section."""
    found = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if not isinstance(model, type) or not issubclass(model, BaseModel):
            continue
        for key, inner in model.model_fields.items():
            if "SecretStr" in str(inner.annotation):
                found.append((section, key))
    return found


def _secrets_in_file(data: dict[str, Any], config_path: Path) -> None:
    """Refuse a secret written in the TOML file: it names the key and where it goes."""
    for section, key in secret_settings():
        table = data.get(section)
        if isinstance(table, dict) and key in table:
            raise ConfigError(
                f"{config_path}: {section}.{key}: secrets never go in the settings file; "
                f"remove it and set KANVOICE_{section.upper()}__{key.upper()} (or the file "
                f"{section}__{key} in $KANVOICE_SECRETS_DIR / $CREDENTIALS_DIRECTORY)"
            )
    ledger = data.get("ledger")
    url = ledger.get("url") if isinstance(ledger, dict) else None
    if isinstance(url, str):
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            raise ConfigError(
                f"{config_path}: ledger.url holds a password; secrets never go in the "
                "settings file: set KANVOICE_LEDGER__URL, or PGPASSWORD, instead"
            )


def _describe(error: dict[str, Any], data: dict[str, Any]) -> str:
    location = error.get("loc", ())
    key = ""
    for part in location:
        if isinstance(part, int):
            key += f"[{part}]"
        elif part in ("function-after", "function-before") or "[" in str(part):
            continue
        else:
            key += f".{part}" if key else str(part)
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "missing":
        return f"{key}: missing (required)"
    if error.get("type") == "extra_forbidden":
        hint = _closest_key(tuple(location)) or "check the spelling against config.example.toml"
        return f"{key}: unknown setting ({hint})"
    value = error.get("input")
    if isinstance(value, dict | list) or value is None or not key:
        return f"{key or 'config'}: {message}"
    return f"{key} = {value!r}: {message}"


def load_settings(path: Path | None = None) -> Settings:
    """Read the TOML file and the environment.

    The file must exist, wherever it was named: `-c FILE`, `$KANVOICE_CONFIG`, or the
    default ``./kanvoice.toml``. A missing file is an error, never an empty service.
    """
    env_path = os.environ.get("KANVOICE_CONFIG")
    if path is not None:
        config_path, named_by = path, "--config"
    elif env_path:
        config_path, named_by = Path(env_path), "$KANVOICE_CONFIG"
    else:
        config_path, named_by = DEFAULT_CONFIG_PATH, ""
    if not config_path.is_file():
        if named_by:
            raise ConfigError(f"config file {config_path} does not exist (named by {named_by})")
        raise ConfigError(
            f"no configuration: {config_path} does not exist in {Path.cwd()}; pass "
            "-c FILE or set KANVOICE_CONFIG (start from config.example.toml)"
        )
    try:
        data: dict[str, Any] = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = _reason(exc) if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{config_path}: cannot read it: {reason}") from None
    _secrets_in_file(data, config_path)
    secrets_dir = _secrets_dir()
    try:
        return Settings(_secrets_dir=secrets_dir, **data)
    except OSError as exc:  # a secret file that vanished or changed mode since the check
        where = exc.filename or secrets_dir
        raise ConfigError(f"secret file {where}: cannot read it: {_reason(exc)}") from None
    except ValidationError as exc:
        problems = "; ".join(_describe(dict(e), data) for e in exc.errors())
        raise ConfigError(f"{config_path}: {problems}") from None


def stripe_dashboard_url(settings: Settings, stripe_invoice_id: str | None) -> str | None:
    """The draft in Stripe's dashboard (``/test/`` for test-mode keys)."""
    if not stripe_invoice_id:
        return None
    key = settings.stripe.api_key.get_secret_value() if settings.stripe.api_key else ""
    mode = "test/" if key.startswith(("sk_test", "rk_test")) else ""
    return f"https://dashboard.stripe.com/{mode}invoices/{stripe_invoice_id}"
