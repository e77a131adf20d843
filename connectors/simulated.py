"""A simulated board for the offline demo: tickets that move and log hours over time.

Deterministic: the same step always yields the same snapshots, so the demo and its
tests see the same story (work starts, hours are logged, tickets reach Done, one is
reopened and done again with more hours, one is internal, one is a fixed-price
milestone).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from mapping.domain import BillingType, BoardItem, Source, StateCategory

_CATEGORY = {
    "Todo": StateCategory.PROPOSED,
    "In progress": StateCategory.IN_PROGRESS,
    "In review": StateCategory.IN_PROGRESS,
    "Done": StateCategory.DONE,
}


@dataclass(frozen=True, slots=True)
class Ticket:
    item_id: str
    title: str
    labels: tuple[str, ...] = ()
    billing_type: BillingType | None = None
    milestone_amount: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Move:
    """At `step`, ticket `item_id` is in `column` with `hours` logged in total."""

    step: int
    item_id: str
    column: str
    hours: Decimal


@dataclass(frozen=True, slots=True)
class Script:
    board: str
    tickets: tuple[Ticket, ...]
    moves: tuple[Move, ...]

    @property
    def last_step(self) -> int:
        return max(m.step for m in self.moves)


class SimulatedBoard:
    """Replays a script: `snapshots_at(step)` gives every ticket that changed at `step`."""

    def __init__(self, script: Script, start: datetime, step_length: timedelta) -> None:
        self.script = script
        self.start = start
        self.step_length = step_length
        self._tickets = {t.item_id: t for t in script.tickets}

    @property
    def board_key(self) -> str:
        return self.script.board

    def snapshots_at(self, step: int) -> tuple[BoardItem, ...]:
        at = self.start + self.step_length * step
        out = []
        for move in self.script.moves:
            if move.step != step:
                continue
            ticket = self._tickets[move.item_id]
            out.append(
                BoardItem(
                    source=Source.SIMULATED,
                    board=self.script.board,
                    item_id=ticket.item_id,
                    title=ticket.title,
                    url=f"https://boards.example/{self.script.board}/{ticket.item_id}",
                    column=move.column,
                    state_category=_CATEGORY[move.column],
                    updated_at=at,
                    revision=step + 1,
                    hours=move.hours,
                    billing_type=ticket.billing_type,
                    labels=ticket.labels,
                    assignees=("sam",),
                    iteration=f"Sprint {1 + step // 20}",
                    milestone_amount=ticket.milestone_amount,
                    done_at=at if move.column == "Done" else None,
                )
            )
        return tuple(out)


def _moves(*rows: tuple[int, str, str, str]) -> tuple[Move, ...]:
    return tuple(Move(step, item, column, Decimal(hours)) for step, item, column, hours in rows)


def demo_scripts() -> tuple[Script, ...]:
    """Three clients' boards (EUR, USD, JPY) for `kanvoice demo`."""
    acme = Script(
        board="acme-web",
        tickets=(
            Ticket("ACME-1", "Login page"),
            Ticket("ACME-2", "Checkout redesign", labels=("senior",)),
            Ticket("ACME-3", "Team retrospective", labels=("internal",)),
            Ticket(
                "ACME-4",
                "Launch milestone",
                labels=("fixed-price",),
                milestone_amount=Decimal("2500"),
            ),
            Ticket("ACME-5", "Search filters"),
        ),
        moves=_moves(
            (0, "ACME-1", "In progress", "1"),
            (1, "ACME-2", "In progress", "2"),
            (2, "ACME-3", "In progress", "1.5"),
            (3, "ACME-1", "Done", "3"),
            (4, "ACME-4", "In progress", "6"),
            (5, "ACME-2", "In review", "5.2"),
            (6, "ACME-5", "In progress", "0.5"),
            (7, "ACME-2", "Done", "6"),
            (8, "ACME-1", "In progress", "3"),
            (9, "ACME-4", "Done", "14"),
            (10, "ACME-1", "Done", "5"),
            (11, "ACME-3", "Done", "2"),
            (12, "ACME-5", "In progress", "4.25"),
        ),
    )
    globex = Script(
        board="globex-platform",
        tickets=(
            Ticket("GLX-10", "API rate limiting"),
            Ticket("GLX-11", "Billing export"),
            Ticket("GLX-12", "On-call handbook", labels=("non-billable",)),
        ),
        moves=_moves(
            (0, "GLX-10", "In progress", "2"),
            (2, "GLX-11", "In progress", "1"),
            (4, "GLX-10", "Done", "7.5"),
            (6, "GLX-12", "In progress", "3"),
            (9, "GLX-11", "In review", "4"),
            (12, "GLX-11", "Done", "4.4"),
        ),
    )
    kaiju = Script(
        board="kaiju-app",
        tickets=(
            Ticket("KJ-1", "Onboarding flow"),
            Ticket("KJ-2", "Push notifications"),
        ),
        moves=_moves(
            (1, "KJ-1", "In progress", "3"),
            (3, "KJ-2", "In progress", "1"),
            (6, "KJ-1", "Done", "8"),
            (11, "KJ-2", "In review", "2.75"),
        ),
    )
    return (acme, globex, kaiju)
