"""Benchmark: what the retainer and budget steps add to drafting (ledger only).

N Done T&M entries for one client are drafted (`create_or_refresh_draft`, ledger only:
no Stripe call is made) three ways in the same run, each on a fresh SQLite ledger:
no retainer or budget (the baseline), a retainer that covers about half the hours
(so about one entry in two is re-priced and one is split), and the same plus a client
budget and a board budget (spend read twice per draft). Then a second refresh with
nothing new (the steady state of the scheduler's refresh). Figures are wall-clock
milliseconds; compare within one run.

    .venv/bin/python bench/retainer_draft.py [--quick] [--lines N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Row, print_machine, print_table, quiet_logs

from sync.composition import build_services
from sync.settings import Settings
from tests.builders import snap
from tests.conftest import FixedClock


def settings(ledger: str, variant: str, lines: int) -> dict[str, Any]:
    client: dict[str, Any] = {
        "key": "acme",
        "stripe_customer_id": "cus_Bench",
        "currency": "EUR",
        "rate": "120",
        "timezone": "UTC",
    }
    board: dict[str, Any] = {"key": "acme-board", "source": "file", "client": "acme"}
    if variant != "baseline":
        client["retainer"] = {"hours": lines, "amount": "6000", "overage_rate": "175"}
    if variant == "retainer + budgets":
        client["budget"] = {"hours": lines, "alert_thresholds": [50, 80, 100]}
        board["budget"] = {"amount": "1000", "per": "total"}
    return {"ledger": {"url": ledger}, "clients": [client], "boards": [board]}


def run(variant: str, lines: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        services = build_services(Settings(**settings(url, variant, lines)), FixedClock())
        try:
            services.engine.ingest(
                [snap("Done", "2", 1, item_id=f"A{i}", board="acme-board") for i in range(lines)]
            )
            start = time.perf_counter()
            first = services.invoicing.create_or_refresh_draft("acme")
            drafted = time.perf_counter() - start
            start = time.perf_counter()
            services.invoicing.create_or_refresh_draft("acme")
            again = time.perf_counter() - start
            assert first.lines >= lines, first
            return drafted * 1000, again * 1000
        finally:
            services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--lines", type=int, default=200)
    args = parser.parse_args()
    lines = 40 if args.quick else min(args.lines, 249)  # one draft holds 250 lines
    quiet_logs()
    print_machine()
    rows = []
    base: tuple[float, float] | None = None
    for variant in ("baseline", "retainer", "retainer + budgets"):
        drafted, again = run(variant, lines)
        base = base or (drafted, again)
        rows.append(
            Row(
                f"{variant}: draft {lines} lines / refresh again",
                f"{drafted:.0f} ms / {again:.0f} ms",
                f"×{drafted / base[0]:.2f} / ×{again / base[1]:.2f} of baseline",
            )
        )
    print_table("Drafting with retainers and budgets (SQLite, same run)", rows)


if __name__ == "__main__":
    main()
