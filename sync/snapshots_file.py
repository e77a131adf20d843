"""Reading board snapshots from a JSON file (`kanvoice ingest FILE.json`).

The file is either a list of snapshots or `{"snapshots": [...]}`. Every snapshot is
validated before anything is written; the first problem is reported with its place
(`snapshots[3].hours`), the value and what was expected.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mapping.domain import BillingType, BoardItem, Source, StateCategory


class SnapshotFileError(ValueError):
    """The snapshot file cannot be used; the message says where and why."""


class SnapshotIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Source = Source.FILE
    board: Annotated[str, Field(min_length=1)]
    item_id: Annotated[str, Field(min_length=1)]
    title: str
    url: str = ""
    column: str
    state_category: StateCategory
    updated_at: datetime
    revision: int | None = Field(default=None, ge=0)
    hours: Annotated[Decimal, Field(ge=0, allow_inf_nan=False)] | None = None
    billing_type: BillingType | None = None
    labels: list[str] = []
    assignees: list[str] = []
    iteration: str | None = None
    rate: Annotated[Decimal, Field(ge=0, allow_inf_nan=False)] | None = None
    milestone_amount: Annotated[Decimal, Field(ge=0, allow_inf_nan=False)] | None = None
    done_at: datetime | None = None
    # Hours by person: {"alice": 3, "bob": 1.5} (only with [[people]] configured).
    hours_by_person: dict[str, Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]] = {}

    @field_validator("updated_at", "done_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a time zone, e.g. 2026-11-02T10:00:00Z")
        return value

    def to_domain(self) -> BoardItem:
        revision = self.revision
        if revision is None:
            revision = int(self.updated_at.timestamp() * 1000)
        return BoardItem(
            source=self.source,
            board=self.board,
            item_id=self.item_id,
            title=self.title,
            url=self.url,
            column=self.column,
            state_category=self.state_category,
            updated_at=self.updated_at,
            revision=revision,
            hours=self.hours,
            billing_type=self.billing_type,
            labels=tuple(self.labels),
            assignees=tuple(self.assignees),
            iteration=self.iteration,
            rate=self.rate,
            milestone_amount=self.milestone_amount,
            done_at=self.done_at,
            hours_by_person=tuple(self.hours_by_person.items()),
        )


def _where(loc: tuple[Any, ...]) -> str:
    out = "snapshots"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def parse_snapshots(raw: Any) -> list[BoardItem]:
    """Validated snapshots from decoded JSON; raises SnapshotFileError on the first problem."""
    if isinstance(raw, dict) and set(raw) == {"snapshots"}:
        raw = raw["snapshots"]
    if not isinstance(raw, list):
        raise SnapshotFileError('expected a JSON list of snapshots or {"snapshots": [...]}')
    items: list[BoardItem] = []
    for index, entry in enumerate(raw):
        try:
            items.append(SnapshotIn.model_validate(entry).to_domain())
        except ValidationError as exc:
            error = exc.errors()[0]
            where = _where((index, *error["loc"]))
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "missing":
                raise SnapshotFileError(f"{where}: missing (required)") from None
            if error["type"] == "extra_forbidden":
                raise SnapshotFileError(f"{where}: unknown field") from None
            raise SnapshotFileError(f"{where} = {error['input']!r}: {message}") from None
        except ValueError as exc:
            raise SnapshotFileError(f"snapshots[{index}]: {exc}") from None
    return items


def load_snapshot_file(path: Path) -> list[BoardItem]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SnapshotFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SnapshotFileError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    try:
        return parse_snapshots(raw)
    except SnapshotFileError as exc:
        raise SnapshotFileError(f"{path}: {exc}") from None
