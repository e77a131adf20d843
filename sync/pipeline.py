"""The billing pipeline per client: the figures `kanvoice status`, the dashboard and
`/api/pipeline` all show, computed in one place."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from mapping.domain import EntryKind, EntryState
from mapping.money import Money
from sync.ledger.records import PipelineRow
from sync.ledger.store import UnitOfWork

# The columns shown, in pipeline order.
STAGES: tuple[EntryState, ...] = (
    EntryState.IN_PROGRESS,
    EntryState.READY,
    EntryState.DRAFTED,
    EntryState.APPROVED,
    EntryState.INVOICED,
    EntryState.PAID,
    EntryState.NEEDS_REVIEW,
    EntryState.NON_BILLABLE,
)


@dataclass
class StageFigures:
    hours: Decimal = Decimal(0)
    amount: Decimal = Decimal(0)
    entries: int = 0


@dataclass
class ClientPipeline:
    """One client's hours and money at every stage, in the client's currency."""

    client: str
    name: str
    currency: str
    stages: dict[EntryState, StageFigures] = field(default_factory=dict)
    fixed_price_hours: Decimal = Decimal(0)

    def stage(self, state: EntryState) -> StageFigures:
        return self.stages.setdefault(state, StageFigures())

    @property
    def unbilled_gap(self) -> Money:
        """Done but not yet on a finalized invoice: ready, drafted and approved."""
        total = sum(
            (
                self.stage(s).amount
                for s in (EntryState.READY, EntryState.DRAFTED, EntryState.APPROVED)
            ),
            Decimal(0),
        )
        return Money(total, self.currency).quantized()

    def as_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "name": self.name,
            "currency": self.currency,
            "stages": {
                state.value: {
                    "hours": str(self.stage(state).hours),
                    "amount": str(
                        Money(self.stage(state).amount, self.currency).quantized().amount
                    ),
                    "entries": self.stage(state).entries,
                }
                for state in STAGES
            },
            "unbilled_gap": str(self.unbilled_gap.amount),
            "fixed_price_hours": str(self.fixed_price_hours),
        }


def client_pipelines(uow: UnitOfWork, clients: dict[str, tuple[str, str]]) -> list[ClientPipeline]:
    """Figures per client. `clients` maps key -> (name, currency) for configured clients;
    clients found only in the ledger are shown too (with the ledger's currency)."""
    return pipelines_from_rows(uow.pipeline_rows(), clients)


def pipelines_from_rows(
    rows: Iterable[PipelineRow], clients: dict[str, tuple[str, str]]
) -> list[ClientPipeline]:
    """The same figures from summed entry rows (client, state, kind, currency, entries,
    hours, amount): the dashboard applies it to one board's or one sprint's rows."""
    result: dict[str, ClientPipeline] = {
        key: ClientPipeline(key, name, currency) for key, (name, currency) in clients.items()
    }
    for row in rows:
        pipeline = result.get(row.client)
        if pipeline is None:
            pipeline = result[row.client] = ClientPipeline(row.client, row.client, row.currency)
        state = row.state
        if state is EntryState.VOIDED:
            continue
        figures = pipeline.stage(state)
        figures.entries += row.entries
        figures.amount += row.amount
        # A milestone's hours are cost, not billed hours: kept apart from the stage.
        if row.kind is EntryKind.MILESTONE:
            pipeline.fixed_price_hours += row.hours
        else:
            figures.hours += row.hours
    for pipeline in result.values():
        for state in STAGES:
            pipeline.stage(state)
    return sorted(result.values(), key=lambda p: p.client)
