"""Benchmark 5: Stripe calls per invoice line, and the client-side rate limiter.

Against the fake Stripe (tests/fakes/stripe_server.py, served on loopback):

1. N Done entries for one client are drafted (`create_or_refresh_draft` + outbox
   `drain`), approved, and finalized. Expected: N invoice item creates + 1 invoice
   create to draft, then the finalize call (kanvoice first retrieves the draft to
   check Stripe's total against the approved one). A second drain must make no call.
2. `StripeGateway`'s limiter at a configured rate (20 req/s, the test-mode default,
   and 80 req/s, the live-mode default): `calls` requests issued at once, timed on
   the fake's side (when each request arrived). Reported: achieved rate over the run,
   the most requests in any one-second window, and the rate after the first second.

    .venv/bin/python bench/stripe_calls.py [--quick] [--lines N] [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import Row, print_machine, print_table, quiet_logs, write_json

from tests.builders import snap
from tests.conftest import FixedClock
from tests.stripe_support import (
    API_KEY,
    APPROVER,
    StripeWorld,
    drain,
    fake_stripe,
    services_for,
    world_settings,
)

_ID = re.compile(r"/(in|ii|cus)_[A-Za-z0-9]+")


def _kind(method: str, path: str) -> str:
    return f"{method} {_ID.sub(lambda m: f'/{{{m.group(1)}}}', path)}"


def _calls_since(world: StripeWorld, mark: int) -> Counter[str]:
    return Counter(_kind(r.method, r.path) for r in world.fake.requests[mark:])


def calls_per_line(world: StripeWorld, lines: int, workdir: Path) -> dict[str, Any]:
    services = services_for(
        world_settings(world, f"sqlite:///{workdir / 'ledger.db'}"), FixedClock()
    )
    try:
        services.engine.ingest(
            [
                snap("Done", f"{1 + n % 8}.5", 1, item_id=f"A{n}", board="acme-board")
                for n in range(lines)
            ]
        )
        mark = len(world.fake.requests)
        started = time.perf_counter()
        draft = services.invoicing.create_or_refresh_draft("acme")
        report = drain(services)
        draft_seconds = time.perf_counter() - started
        drafting = _calls_since(world, mark)
        errors = list(report.errors)

        mark = len(world.fake.requests)
        redrain = drain(services)
        again = _calls_since(world, mark)
        errors += redrain.errors

        services.invoicing.approve(draft.invoice_id, APPROVER, "cli")
        mark = len(world.fake.requests)
        final = drain(services)
        finalizing = _calls_since(world, mark)
        errors += final.errors
        invoices = world.fake.list_objects("invoice")
        status = next(
            (i["status"] for i in invoices if i["customer"] == world.customers["acme"]), None
        )
    finally:
        services.close()
    return {
        "lines": lines,
        "entries_drafted": draft.added,
        "drafting": dict(drafting),
        "draft_seconds": draft_seconds,
        "redrain": dict(again),
        "finalizing": dict(finalizing),
        "invoice_status": status,
        "errors": errors,
    }


async def _burst(base_url: str, rate: float, calls: int, customer: str) -> None:
    from connectors.stripe.gateway import StripeGateway

    gateway = StripeGateway(API_KEY, api_base=base_url, requests_per_second=rate)
    try:
        await gateway.retrieve_customer(customer)  # warm the connection pool
        gateway.limiter.tokens = gateway.limiter.capacity  # start from a full bucket
        gateway.limiter.updated = gateway.limiter.clock()
        await asyncio.gather(*(gateway.retrieve_customer(customer) for _ in range(calls)))
    finally:
        await gateway.close()


def limiter(world: StripeWorld, rate: float, calls: int) -> dict[str, Any]:
    customer = world.customers["acme"]
    mark = len(world.fake.requests) + 1  # after the warm-up call
    started = time.perf_counter()
    asyncio.run(_burst(world.base_url, rate, calls, customer))
    wall = time.perf_counter() - started
    stamps = sorted(r.at for r in world.fake.requests[mark:])
    span = stamps[-1] - stamps[0] if len(stamps) > 1 else float("nan")
    most, j = 0, 0
    for i, t in enumerate(stamps):
        while stamps[j] <= t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    after_first = [t for t in stamps if t >= stamps[0] + 1.0]
    steady = (
        (len(after_first) - 1) / (after_first[-1] - after_first[0])
        if len(after_first) > 1
        else float("nan")
    )
    return {
        "rate": rate,
        "calls": len(stamps),
        "wall_seconds": wall,
        "achieved_rate": len(stamps) / span if span else float("nan"),
        "max_in_one_second": most,
        "rate_after_first_second": steady,
    }


def _rows(per_line: dict[str, Any], limits: list[dict[str, Any]]) -> list[Row]:
    n = per_line["lines"]
    drafting = per_line["drafting"]
    items = drafting.get("POST /v1/invoiceitems", 0)
    invoices = drafting.get("POST /v1/invoices", 0)
    total = sum(drafting.values())
    finalizing = per_line["finalizing"]
    finalize = finalizing.get("POST /v1/invoices/{in}/finalize", 0)
    rows = [
        Row(
            f"drafting {n} lines: Stripe calls",
            f"{total} = {items} item creates + {invoices} invoice create"
            + (f" + {total - items - invoices} other" if total - items - invoices else "")
            + f" ({total / n:.2f} per line, {per_line['draft_seconds']:.1f} s)",
            f"{n + 1} (N + 1)",
            total == n + 1 and items == n and invoices == 1,
        ),
        Row(
            "second drain (nothing to do): Stripe calls",
            str(sum(per_line["redrain"].values())),
            "0",
            sum(per_line["redrain"].values()) == 0,
        ),
        Row(
            "approve + drain: finalize calls",
            f"{finalize} finalize; all calls {dict(sorted(finalizing.items()))}; "
            f"invoice {per_line['invoice_status']}",
            "1 finalize",
            finalize == 1,
        ),
    ]
    if per_line["errors"]:
        rows.append(Row("outbox errors", "; ".join(per_line["errors"])[:300], "none", False))
    for r in limits:
        rate = r["rate"]
        rows.append(
            Row(
                f"limiter at {rate:g} req/s: achieved rate over {r['calls']} calls",
                f"{r['achieved_rate']:.1f} req/s ({r['wall_seconds']:.1f} s)",
                f"<= {rate:g} req/s",
                r["achieved_rate"] <= rate * 1.001,
            )
        )
        rows.append(
            Row(
                f"limiter at {rate:g} req/s: most calls in any 1 s window",
                f"{r['max_in_one_second']} (after the first second: "
                f"{r['rate_after_first_second']:.1f} req/s)",
                f"<= {rate:g}",
                r["max_in_one_second"] <= rate,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 lines, 60 calls")
    parser.add_argument("--lines", type=int, default=None)
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    lines = args.lines or (20 if args.quick else 100)
    calls = args.calls or (60 if args.quick else 200)
    quiet_logs()
    print_machine()
    print(f"mode: {'quick' if args.quick else 'full'}; {lines} lines; {calls} limiter calls")
    with fake_stripe() as world, tempfile.TemporaryDirectory(prefix="kanvoice-bench-") as tmp:
        per_line = calls_per_line(world, lines, Path(tmp))
        limits = [limiter(world, rate, calls) for rate in (20.0, 80.0)]
    print_table("Stripe calls per invoice line, and the rate limiter", _rows(per_line, limits))
    write_json(args.json, {"benchmark": "stripe_calls", "per_line": per_line, "limiter": limits})


if __name__ == "__main__":
    main()
