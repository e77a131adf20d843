"""Snapshots of one item with the same revision but different content.

Two edits in one second, or a poll racing a webhook, can hand the engine two snapshots
that carry the same revision (or the same `updated_at` second) and disagree on hours,
labels or column. Arrival order must never decide which one is billed:

- GitHub and Azure DevOps items are read again from the board, and that snapshot (the
  board's current truth) is planned with `reread=True`; until then nothing changes;
- snapshot files (and the simulated demo board) cannot be read again: the first
  snapshot stands, as the README says ("equal changes nothing").

Every conflict is logged, counted in `kanvoice_snapshot_conflicts_total` and written to
the audit log (action ``snapshot_conflict``), which `kanvoice status --json` shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from sqlalchemy import Connection

from mapping.billing import fingerprint
from mapping.domain import BoardItem, Source
from sync.ledger import status

SNAPSHOT_CONFLICTS = Counter(
    "kanvoice_snapshot_conflicts_total",
    "Snapshots with the revision already held (or seen in the same batch) but other content",
    ["board", "resolution"],
)

# Sources whose items the engine's caller can read again from the board.
REREADABLE = frozenset({Source.GITHUB, Source.AZURE_DEVOPS})
REREAD = "re-read from the board"
FIRST_STANDS = "first snapshot stands"
AUDIT_ACTION = "snapshot_conflict"


@dataclass(frozen=True)
class SnapshotConflict:
    """One item whose snapshots disagree at one revision, and what was done about it."""

    source: Source
    board: str
    item_id: str
    item_key: str
    revision: int
    resolution: str

    @classmethod
    def of(cls, item: BoardItem) -> SnapshotConflict:
        resolution = REREAD if item.source in REREADABLE else FIRST_STANDS
        return cls(item.source, item.board, item.item_id, item.key, item.revision, resolution)

    @property
    def needs_reread(self) -> bool:
        return self.resolution == REREAD

    def as_dict(self) -> dict[str, Any]:
        return {
            "item": self.item_key,
            "board": self.board,
            "item_id": self.item_id,
            "source": self.source.value,
            "revision": self.revision,
            "resolution": self.resolution,
        }


def split_batch_conflicts(
    batch: Sequence[BoardItem],
) -> tuple[list[BoardItem], list[SnapshotConflict]]:
    """Hold back, from one ingest batch, the snapshots of a re-readable item that share
    a revision but not their content: none of them is planned, the item is re-read.

    Snapshot files keep every snapshot: planned in order, the first at a revision is
    recorded and the later ones meet it as a `Conflict` (the first stands)."""
    # Only a (key, revision) that comes more than once can clash: digest just those.
    seen: set[tuple[str, int]] = set()
    repeated: set[tuple[str, int]] = set()
    for item in batch:
        if item.source in REREADABLE:
            pair = (item.key, item.revision)
            if pair in seen:
                repeated.add(pair)
            seen.add(pair)
    contents: dict[tuple[str, int], set[str]] = {}
    if repeated:
        for item in batch:
            if item.source in REREADABLE and (pair := (item.key, item.revision)) in repeated:
                contents.setdefault(pair, set()).add(fingerprint(item))
    clashing = {key for key, digests in contents.items() if len(digests) > 1}
    if not clashing:
        return list(batch), []
    kept: list[BoardItem] = []
    conflicts: dict[tuple[str, int], SnapshotConflict] = {}
    for item in batch:
        key = (item.key, item.revision)
        if key in clashing:
            conflicts.setdefault(key, SnapshotConflict.of(item))
        else:
            kept.append(item)
    return kept, list(conflicts.values())


def conflict_summary(conn: Connection, limit: int = 20) -> dict[str, Any]:
    """The audit log's snapshot conflicts: how many, and the latest (for `status --json`)."""
    total = status.count_actions(conn, AUDIT_ACTION)
    rows = status.latest_actions(conn, AUDIT_ACTION, limit)
    recent = [{**row.detail, "at": row.at.isoformat()} for row in rows]
    return {"total": total, "recent": recent}
