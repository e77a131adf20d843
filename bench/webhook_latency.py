"""Benchmark 3: latency and throughput of signed GitHub webhooks through kanvoice's app.

Four processes on loopback (each started by this script, each its own interpreter):

* ``github``: the fake GitHub GraphQL server holding a project of K in-progress items;
  every ``node(id:)`` re-fetch first adds 0.25 h to the item, so each webhook carries
  a real change (an item update and an entry update in the ledger);
* ``kanvoice``: `create_app(services)` under uvicorn as `kanvoice run` serves it (one
  process, asyncio, h11; JSON logs to a file), SQLite ledger seeded by a full sync;
* ``bare``: a bare ASGI endpoint under the same uvicorn settings (reads the body,
  answers a small JSON), the ceiling for any Python app on this machine;
* ``load``: an open-loop generator (asyncio, raw HTTP/1.1 keep-alive, up to 256
  connections) sending signed ``projects_v2_item`` ``edited`` deliveries, each with a
  new delivery id, at a fixed rate; latency is measured from each request's scheduled
  send time, so a server that falls behind is charged for the queue it causes.

Per webhook kanvoice verifies the HMAC, parses the body and writes the delivery to
the ledger's inbox (one INSERT, group-committed on the intake thread), then answers
202. The inbox worker runs in the same process, as on the leader of `kanvoice run`:
every second it coalesces the pending deliveries per item, re-fetches them from the
fake GitHub in `nodes(ids:)` batches and ingests them; its CPU is counted in the
kanvoice process's figure. The bare endpoint does none of that, and the fake
GitHub's own CPU is on the same 2 cores: both are reported.

``--burst N`` (default 2,000 in full mode, 0 in quick mode unless given) adds the
sprint-end case: N ``projects_v2_item`` deliveries for N / 10 items (10 each) sent as
fast as the load generator can, then the worker's re-fetch requests are counted and
the ledger compared with the board.

    .venv/bin/python bench/webhook_latency.py [--quick] [--rate 500] [--duration 30]
    .venv/bin/python bench/webhook_latency.py --quick --burst 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import Row, own_time_by_package, print_machine, print_table, write_json

HOST = "127.0.0.1"
SECRET = "bench-webhook-secret"  # noqa: S105 (the fake's, loopback only)
TOKEN = "ghp_benchbenchbenchbenchbench"  # noqa: S105 (the fake accepts any)
OWNER, NUMBER = "acme", 7
P99_LIMIT_MS = 50.0  # at the offered rate (500 req/s)
LIGHT_P99_LIMIT_MS = 20.0  # at the light rate (50 req/s)
CPU_LIMIT_MS = 2.0
BURST_REQUESTS_PER_100 = 2.0
THROUGHPUT_SHARE = 0.5
MAX_CONNECTIONS = 256


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _project(items: int) -> Any:
    """The fake project (identical in every process: node ids are deterministic)."""
    from tests.fakes.github_server import FakeGitHubProject

    class ChangingProject(FakeGitHubProject):
        """Each single-item re-fetch sees the item changed (as after a real edit)."""

        def _node(self, variables: dict[str, Any]) -> dict[str, Any]:
            node_id = variables.get("id")
            if isinstance(node_id, str) and node_id in self._items:
                item = self._items[node_id]
                self.set_hours(node_id, item.numbers.get(self.hours_field, 0.0) + 0.25)
            return super()._node(variables)

        def _nodes(self, variables: dict[str, Any]) -> dict[str, Any]:
            for node_id in variables.get("ids") or ():
                if isinstance(node_id, str) and node_id in self._items:
                    item = self._items[node_id]
                    self.set_hours(node_id, item.numbers.get(self.hours_field, 0.0) + 0.25)
            return super()._nodes(variables)

    # GitHub allows 5,000 GraphQL points an hour (one per re-fetch): far below 500 webhooks
    # a second. The fake's budget is lifted so the run measures kanvoice, not that limit.
    project = ChangingProject(owner=OWNER, number=NUMBER, rate_limit=10**9)
    project.add_issues(items, status="In Progress", hours=1.0, labels=["backend"])
    return project


# -- roles ----------------------------------------------------------------------------------


def role_github(port: int, items: int) -> None:
    import uvicorn

    project = _project(items)
    uvicorn.run(
        project.app(), host=HOST, port=port, log_level="warning", access_log=False, lifespan="off"
    )


def role_bare(port: int) -> None:
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        body = b'{"status":"ok"}'
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host=HOST, port=port, log_config=None, access_log=False, lifespan="off")


def _kanvoice_services(port: int, github_url: str, ledger: str) -> Any:
    from sync.boards import sync_board
    from sync.composition import build_services
    from sync.settings import Settings

    settings = Settings(
        ledger={"url": f"sqlite:///{ledger}"},
        server={"host": HOST, "port": port},
        clients=[
            {
                "key": "acme",
                "name": "Acme",
                "stripe_customer_id": "cus_AcmeBench01",
                "currency": "EUR",
                "rate": "100",
            }
        ],
        boards=[
            {
                "key": "gh",
                "source": "github",
                "client": "acme",
                "done_columns": ["Done"],
                "github": {"owner": OWNER, "project_number": NUMBER, "api_url": github_url},
            }
        ],
        github={"token": TOKEN, "webhook_secret": SECRET},
    )
    services = build_services(settings)
    seeded = asyncio.run(sync_board(services, "gh"))  # the ledger knows every item
    print(f"seeded {seeded.seen} items", file=sys.stderr, flush=True)
    return services


_RUN_CONFIG = """
[ledger]
url = "sqlite:///{ledger}"
[server]
host = "{host}"
port = {port}
[[clients]]
key = "acme"
name = "Acme"
stripe_customer_id = "cus_AcmeBench01"
currency = "EUR"
rate = "100"
[[boards]]
key = "gh"
source = "github"
client = "acme"
done_columns = ["Done"]
poll_interval_seconds = 86400
[boards.github]
owner = "{owner}"
project_number = {number}
api_url = "{github_url}"
"""


def role_kanvoice_run(port: int, github_url: str, ledger: str) -> None:
    """`kanvoice run` as shipped: seed the ledger, then exec the CLI (same pid), which
    serves the web process and spawns its worker process."""
    config = Path(ledger).with_suffix(".toml")
    config.write_text(
        _RUN_CONFIG.format(
            ledger=ledger, host=HOST, port=port, owner=OWNER, number=NUMBER, github_url=github_url
        )
    )
    _kanvoice_services(port, github_url, ledger).close()
    os.environ.update(
        KANVOICE_GITHUB__TOKEN=TOKEN,
        KANVOICE_GITHUB__WEBHOOK_SECRET=SECRET,
    )
    kanvoice = str(Path(sys.executable).parent / "kanvoice")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(kanvoice, [kanvoice, "run", "--without-stripe", "-c", str(config)])  # noqa: S606


def role_kanvoice(port: int, github_url: str, ledger: str, sample: str) -> None:
    """The single-process layout of before (`--layout single`): app and worker on one
    event loop."""
    import uvicorn
    from _sampler import Sampler

    from sync.intake import drain_inbox
    from sync.logs import configure_logging
    from sync.web.app import create_app

    configure_logging(json_output=True)  # as `kanvoice run` under systemd: JSON lines
    services = _kanvoice_services(port, github_url, ledger)
    config = uvicorn.Config(
        create_app(services),
        host=HOST,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    sampler = Sampler() if sample else None
    if sampler:
        sampler.start()

    async def worker() -> None:  # the leader's inbox job of `kanvoice run`, every second
        while True:
            try:
                await drain_inbox(services)
            except Exception as exc:  # the job logs and goes on, as the daemon's does
                print(f"drain failed: {exc}", file=sys.stderr, flush=True)
            await asyncio.sleep(1.0)

    async def serve() -> None:
        task = asyncio.create_task(worker())
        try:
            await uvicorn.Server(config).serve()
        finally:
            task.cancel()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    finally:
        if sampler:
            sampler.stop()
            Path(sample).write_text(sampler.report(30))


def profile_sequential(items: int, count: int, top: int) -> str:
    """cProfile of `count` webhooks handled one after the other in this process.

    cProfile sees one thread only, so `asyncio.to_thread` runs the ledger work inline
    here: every CPU cost of a webhook (HTTP app, HMAC, dedupe, re-fetch client, ingest,
    claim, logging) lands in one profile. The fake GitHub runs in its own process.
    Requests go through httpx's ASGI transport (uvicorn's HTTP parsing is not included).
    """
    import cProfile
    import io
    import pstats

    import httpx

    from sync.boards import close_connectors
    from sync.logs import configure_logging
    from sync.web.app import create_app

    async def inline(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    out = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="kanvoice-bench-") as tmp:
        work = Path(tmp)
        gh_port = _free_port()
        github = Child(
            "github",
            ["--role", "github", "--port", str(gh_port), "--items", str(items)],
            work / "github.log",
        )
        try:
            _wait_port(gh_port, github)
            log_file = (work / "kanvoice.log").open("w")
            saved, sys.stderr = sys.stderr, log_file
            try:
                configure_logging(json_output=True)  # bound to the log file
            finally:
                sys.stderr = saved
            services = _kanvoice_services(
                8765, f"http://{HOST}:{gh_port}/graphql", str(work / "ledger.db")
            )
            requests = Requests(items, 0)
            original = asyncio.to_thread
            asyncio.to_thread = inline

            async def run() -> tuple[float, float, float]:
                app = create_app(services)
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://kv") as http:

                    async def send() -> None:
                        raw = requests.next()
                        head, _, body = raw.partition(b"\r\n\r\n")
                        headers = dict(
                            line.split(": ", 1) for line in head.decode().split("\r\n")[2:]
                        )
                        response = await http.post(
                            "/webhooks/github", content=body, headers=headers
                        )
                        if response.status_code not in (200, 202):
                            raise RuntimeError(response.text)

                    for _ in range(20):  # warm up: connector, pools, caches
                        await send()
                    started, cpu = time.perf_counter(), time.process_time()
                    for _ in range(count):
                        await send()
                    plain = (time.perf_counter() - started) / count
                    cpu_each = (time.process_time() - cpu) / count
                    profiler.enable()
                    started = time.perf_counter()
                    for _ in range(count):
                        await send()
                    profiled = (time.perf_counter() - started) / count
                    profiler.disable()
                await close_connectors(services.connectors)
                return plain, cpu_each, profiled

            profiler = cProfile.Profile()
            try:
                plain, cpu_each, profiled = asyncio.run(run())
            finally:
                asyncio.to_thread = original
                services.close()
            out.write(
                f"{count} webhooks one at a time, ledger work inline: {plain * 1000:.2f} ms "
                f"each (wall, incl. the fake GitHub round trip), of which {cpu_each * 1000:.2f} "
                f"ms CPU in this process; {profiled * 1000:.2f} ms each under cProfile "
                "(times below are wall time: C calls that wait on the disk count fully)\n"
            )
            stats = pstats.Stats(profiler, stream=out)
            out.write(own_time_by_package(stats))
            stats.strip_dirs()
            out.write(f"-- top {top} by own time (tottime)\n")
            stats.sort_stats("tottime").print_stats(top)
            out.write(f"-- top {top} by cumulative time\n")
            stats.sort_stats("cumulative").print_stats(top)
        finally:
            github.stop()
    log_file.close()
    return out.getvalue()


# -- the load generator --------------------------------------------------------------------


@dataclass
class LoadResult:
    target: str
    mode: str
    sent: int = 0
    ok: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    service_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    offered_rate: float = 0.0
    unanswered: int = 0  # given up `grace` seconds after the last request was sent

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, p: float, which: str = "latency") -> float:
        """Unanswered requests count as infinitely slow."""
        values = sorted(self.latencies_ms if which == "latency" else self.service_ms)
        values += [float("inf")] * self.unanswered
        if not values:
            return float("nan")
        index = min(len(values) - 1, max(0, round(p / 100 * len(values)) - 1))
        return values[index]

    def summary(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "mode": self.mode,
            "sent": self.sent,
            "ok": self.ok,
            "statuses": self.statuses,
            "errors": self.errors,
            "seconds": self.seconds,
            "offered_rate": self.offered_rate,
            "unanswered": self.unanswered,
            "throughput": self.throughput,
            "p50_ms": self.percentile(50),
            "p90_ms": self.percentile(90),
            "p99_ms": self.percentile(99),
            "max_ms": max(self.latencies_ms, default=float("nan")),
            "service_p50_ms": self.percentile(50, "service"),
            "service_p99_ms": self.percentile(99, "service"),
        }


class Requests:
    """Signed deliveries, one body per item (the signature covers the body only)."""

    def __init__(self, items: int, port: int) -> None:
        from connectors.github.webhook import sign_body

        project = _project(items)
        self.prefix = f"POST /webhooks/github HTTP/1.1\r\nHost: {HOST}:{port}\r\n".encode()
        self.bodies: list[tuple[bytes, str]] = []
        for item in project.items:
            payload = project.webhook_payload(
                item.node_id, "edited", changes=project.status_change("In Progress", "In Progress")
            )
            body = json.dumps(payload).encode()
            self.bodies.append((body, sign_body(SECRET.encode(), body)))
        self.count = 0

    def next(self) -> bytes:
        body, signature = self.bodies[self.count % len(self.bodies)]
        self.count += 1
        headers = (
            "X-GitHub-Event: projects_v2_item\r\n"
            f"X-GitHub-Delivery: {uuid.uuid4()}\r\n"
            "X-GitHub-Hook-ID: 491234\r\n"
            f"X-Hub-Signature-256: {signature}\r\n"
            "Content-Type: application/json\r\n"
            "User-Agent: GitHub-Hookshot/bench\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        return self.prefix + headers + body


class Pool:
    """Keep-alive HTTP/1.1 connections, opened on demand up to a limit."""

    def __init__(self, port: int, limit: int) -> None:
        self.port = port
        self.limit = limit
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0
        self.freed = asyncio.Condition()

    async def acquire(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with self.freed:
            while not self.idle and self.opened >= self.limit:
                await self.freed.wait()
            if self.idle:
                return self.idle.pop()
            self.opened += 1
        try:
            return await asyncio.open_connection(HOST, self.port)
        except OSError:
            async with self.freed:
                self.opened -= 1
                self.freed.notify()
            raise

    async def release(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], reusable: bool
    ) -> None:
        async with self.freed:
            if reusable:
                self.idle.append(conn)
            else:
                self.opened -= 1
                conn[1].close()
            self.freed.notify()

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def _exchange(pool: Pool, request: bytes, wait_s: float) -> tuple[int, float]:
    """Send one request; (status, time the request hit the wire)."""
    conn = await pool.acquire()
    reader, writer = conn
    reusable = False
    try:
        sent = time.perf_counter()
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait_s)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            lowered = name.strip().lower()
            if lowered == "content-length":
                length = int(value.strip())
            elif lowered == "connection" and value.strip().lower() == "close":
                close = True
        if length:
            await asyncio.wait_for(reader.readexactly(length), wait_s)
        reusable = not close
        return status, sent
    finally:
        await pool.release(conn, reusable)


async def open_loop(
    port: int, items: int, rate: float, duration: float, target: str, grace: float
) -> LoadResult:
    requests = Requests(items, port)
    pool = Pool(port, MAX_CONNECTIONS)
    result = LoadResult(target=target, mode=f"open loop {rate:g} req/s for {duration:g} s")
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    done_times: list[float] = []
    total = int(rate * duration)
    loop_start = time.perf_counter() + 0.2

    async def one(scheduled: float, request: bytes) -> None:
        try:
            status, sent = await _exchange(pool, request, 30.0)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            errors[type(exc).__name__] += 1
            return
        finished = time.perf_counter()
        statuses[str(status)] += 1
        if 200 <= status < 300:
            result.ok += 1
            result.latencies_ms.append((finished - scheduled) * 1000)
            result.service_ms.append((finished - sent) * 1000)
            done_times.append(finished)

    tasks: list[asyncio.Task[None]] = []
    for i in range(total):
        scheduled = loop_start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, requests.next())))
    result.sent = total
    send_end = time.perf_counter()
    result.offered_rate = total / (send_end - loop_start)
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:  # still unanswered `grace` seconds after the last send
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    result.unanswered = len(pending)
    pool.close()
    result.seconds = (max(done_times) if done_times else send_end) - loop_start
    result.statuses = dict(statuses)
    result.errors = dict(errors)
    return result


async def closed_loop(
    port: int, items: int, connections: int, duration: float, target: str
) -> LoadResult:
    """`connections` clients each sending back to back: the most the server can do."""
    requests = Requests(items, port)
    pool = Pool(port, connections)
    result = LoadResult(target=target, mode=f"closed loop, {connections} connections")
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    start = time.perf_counter()
    stop = start + duration

    async def client() -> None:
        while time.perf_counter() < stop:
            scheduled = time.perf_counter()
            result.sent += 1
            try:
                status, _ = await _exchange(pool, requests.next(), 30.0)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                errors[type(exc).__name__] += 1
                continue
            statuses[str(status)] += 1
            if 200 <= status < 300:
                result.ok += 1
                elapsed = (time.perf_counter() - scheduled) * 1000
                result.latencies_ms.append(elapsed)
                result.service_ms.append(elapsed)

    await asyncio.gather(*(client() for _ in range(connections)))
    pool.close()
    result.seconds = time.perf_counter() - start
    result.statuses = dict(statuses)
    result.errors = dict(errors)
    return result


def role_load(args: argparse.Namespace) -> None:
    if args.connections:
        result = asyncio.run(
            closed_loop(args.port, args.items, args.connections, args.duration, args.target)
        )
    else:
        result = asyncio.run(
            open_loop(args.port, args.items, args.rate, args.duration, args.target, args.grace)
        )
    print(json.dumps(result.summary()))


# -- the orchestrator ------------------------------------------------------------------------


class Child:
    """A process this script started (stopped by its own pid only)."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        self.handle = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *argv], stdout=self.handle, stderr=subprocess.STDOUT
        )

    def cpu_seconds(self, tree: bool = True) -> float:
        """CPU of the process, and (`tree`) of its live children (the worker)."""
        pids = [self.proc.pid]
        if tree:
            pids += _children(self.proc.pid)
        return sum(_cpu_of(pid) for pid in pids)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.handle.close()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found + [g for c in found for g in _children(c)]


def _cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_port(port: int, child: Child, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited: {child.log.read_text()[-2000:]}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not listen on {port} within {timeout:.0f} s")


def _load(
    port: int,
    items: int,
    target: str,
    *,
    rate: float,
    duration: float,
    connections: int = 0,
    grace: float = 30.0,
) -> dict[str, Any]:
    argv = [
        sys.executable,
        __file__,
        "--role",
        "load",
        "--port",
        str(port),
        "--items",
        str(items),
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        "--connections",
        str(connections),
        "--target",
        target,
        "--grace",
        str(grace),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 180, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _settle(child: Child, quiet_s: float = 1.0, limit_s: float = 60.0) -> None:
    """Wait until the process has used (almost) no CPU for `quiet_s` seconds."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = child.cpu_seconds()
        time.sleep(quiet_s)
        if child.cpu_seconds() - before < 0.05 * quiet_s:
            return


def _measured(
    child: Child | None, others: list[Child], run: Any
) -> tuple[dict[str, Any], dict[str, float]]:
    before = {c.name: c.cpu_seconds() for c in [*([child] if child else []), *others]}
    web_before = child.cpu_seconds(tree=False) if child else 0.0
    processed = _processed(child) if child else 0
    figures = run()
    cpu = {
        f"{c.name}_cpu_s": c.cpu_seconds() - before[c.name]
        for c in [*([child] if child else []), *others]
    }
    if child:
        cpu[f"{child.name}_web_cpu_s"] = child.cpu_seconds(tree=False) - web_before
    # Webhooks the server finished (abandoned ones included), from its own log.
    cpu["processed"] = (_processed(child) - processed) if child else 0
    return figures, cpu


def _processed(child: Child) -> int:
    if child.name != "kanvoice":
        return 0
    child.handle.flush()
    return child.log.read_text(errors="replace").count('"event": "webhook.processed"')


def orchestrate(args: argparse.Namespace) -> None:
    print_machine()
    duration = args.duration or (5.0 if args.quick else 30.0)
    saturate = args.saturate if args.saturate is not None else (3.0 if args.quick else 10.0)
    burst = args.burst if args.burst is not None else (0 if args.quick else 2000)
    print(
        f"mode: {'quick' if args.quick else 'full'}; {args.rate:g} req/s for {duration:g} s; "
        f"{args.items} items; closed-loop {args.connections_saturate} connections for "
        f"{saturate:g} s; layout: "
        + (
            "single process (app and worker on one event loop)"
            if args.layout == "single"
            else "kanvoice run (web process + worker process)"
        )
    )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kanvoice-bench-") as tmp:
        work = Path(tmp)
        gh_port, kv_port, bare_port = _free_port(), _free_port(), _free_port()
        github = Child(
            "github",
            ["--role", "github", "--port", str(gh_port), "--items", str(args.items)],
            work / "github.log",
        )
        bare = Child("bare", ["--role", "bare", "--port", str(bare_port)], work / "bare.log")
        children = [github, bare]
        try:
            _wait_port(gh_port, github)
            kanvoice = Child(
                "kanvoice",
                [
                    "--role",
                    "kanvoice" if args.layout == "single" else "kanvoice-run",
                    "--port",
                    str(kv_port),
                    "--github-url",
                    f"http://{HOST}:{gh_port}/graphql",
                    "--ledger",
                    str(work / "ledger.db"),
                    *(
                        ["--sample", str(work / "sample.txt")]
                        if args.profile and args.layout == "single"
                        else []
                    ),
                ],
                work / "kanvoice.log",
            )
            children.append(kanvoice)
            _wait_port(bare_port, bare)
            _wait_port(kv_port, kanvoice)
            # `kanvoice run`'s new leader polls every board at start-up: let it finish.
            time.sleep(2.0)
            _settle(kanvoice)

            def run_bare() -> dict[str, Any]:
                return _load(
                    bare_port,
                    args.items,
                    "bare",
                    rate=args.rate,
                    duration=duration,
                    grace=args.grace,
                )

            def run_kv() -> dict[str, Any]:
                figures = _load(
                    kv_port,
                    args.items,
                    "kanvoice",
                    rate=args.rate,
                    duration=duration,
                    grace=args.grace,
                )
                _settle(kanvoice)  # let it finish the requests it was abandoned on
                return figures

            results["bare"], results["bare_cpu"] = _measured(bare, [], run_bare)
            histogram = _inbox_write_histogram(kv_port)
            results["kanvoice"], results["kanvoice_cpu"] = _measured(kanvoice, [github], run_kv)
            results["inbox_write"] = _histogram_quantiles(
                histogram, _inbox_write_histogram(kv_port)
            )
            if args.light_rate > 0:
                light = min(duration, 10.0)
                results["kanvoice_light"], results["kanvoice_light_cpu"] = _measured(
                    kanvoice,
                    [github],
                    lambda: _load(
                        kv_port, args.items, "kanvoice", rate=args.light_rate, duration=light
                    ),
                )
            if saturate > 0:
                conns = args.connections_saturate
                results["bare_max"], results["bare_max_cpu"] = _measured(
                    bare,
                    [],
                    lambda: _load(
                        bare_port, args.items, "bare", rate=0, duration=saturate, connections=conns
                    ),
                )
                results["kanvoice_max"], results["kanvoice_max_cpu"] = _measured(
                    kanvoice,
                    [github],
                    lambda: _load(
                        kv_port,
                        args.items,
                        "kanvoice",
                        rate=0,
                        duration=saturate,
                        connections=conns,
                    ),
                )
            if burst > 0:
                results["burst"] = _burst(args, kanvoice, kv_port, gh_port, work, burst)
            results["kanvoice_peak_rss_mb"] = kanvoice.rss_mb()
            log_lines = (work / "kanvoice.log").read_text(errors="replace").splitlines()
            results["kanvoice_log_tail"] = log_lines[-3:]
            results["kanvoice_log_errors"] = sum(
                1 for line in log_lines if '"level": "error"' in line or "Traceback" in line
            )
        finally:
            for child in reversed(children):
                child.stop()
            if args.logs:
                import shutil

                Path(args.logs).mkdir(parents=True, exist_ok=True)
                for child in children:
                    shutil.copy(child.log, Path(args.logs) / child.log.name)
        if args.profile and (work / "sample.txt").exists():
            results["kanvoice_profile"] = (work / "sample.txt").read_text()
    rows = _rows(results)
    print_table("GitHub webhook latency and throughput (loopback, SQLite ledger)", rows)
    if "kanvoice_profile" in results:
        print("-- kanvoice process under load, sampled stacks (all threads, busy samples only;")
        print("   a thread waiting inside SQLite for the write lock counts as busy)")
        print(results["kanvoice_profile"])
    if args.profile:
        results["sequential_profile"] = profile_sequential(args.items, 300, 30)
        print(results["sequential_profile"])
    write_json(args.json, {"benchmark": "webhook_latency", **results})


def _inbox_write_histogram(port: int) -> dict[float, float]:
    """Cumulative bucket counts of `kanvoice_inbox_write_seconds` from /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("kanvoice_inbox_write_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(le)] = float(line.rsplit(" ", 1)[1])
    return buckets


def _histogram_quantiles(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """p50 / p99 upper bounds of the inbox commit wait over one run (bucket edges)."""
    counts = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in sorted(after)}
    total = counts.get(float("inf"), 0.0)
    out: dict[str, Any] = {"count": total}
    for name, q in (("p50_le_s", 0.5), ("p99_le_s", 0.99)):
        out[name] = next((le for le, c in counts.items() if total and c >= q * total), None)
    return out


def _drained(child: Child) -> tuple[int, int]:
    """(deliveries, board requests) the inbox worker reported so far, from its log."""
    child.handle.flush()
    deliveries = requests = 0
    for line in child.log.read_text(errors="replace").splitlines():
        if '"inbox.drained"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        deliveries += int(record.get("deliveries", 0))
        requests += int(record.get("requests", 0))
    return deliveries, requests


def _board_equals_ledger(gh_port: int, ledger: Path) -> tuple[int, int]:
    """(items whose hours differ between board and ledger, items compared)."""
    import sqlite3
    from decimal import Decimal

    from connectors.github.config import GitHubBoardConfig
    from connectors.github.connector import GitHubProjectConnector

    config = GitHubBoardConfig(
        board_key="gh",
        owner=OWNER,
        project_number=NUMBER,
        api_url=f"http://{HOST}:{gh_port}/graphql",
        token=TOKEN,
        done_options=("Done",),
    )

    async def poll() -> dict[str, Decimal]:
        async with GitHubProjectConnector(config) as connector:
            result = await connector.poll(None)  # pages: the fake changes nothing on them
        return {i.item_id: Decimal(str(i.hours or 0)) for i in result.items}

    board = asyncio.run(poll())
    with sqlite3.connect(ledger) as conn:
        held = {
            external: Decimal(hours).scaleb(-6)
            for external, hours in conn.execute("SELECT external_id, hours FROM items")
        }
    differ = sum(1 for key, hours in board.items() if held.get(key) != hours)
    return differ, len(board)


def _burst(
    args: argparse.Namespace, kanvoice: Child, kv_port: int, gh_port: int, work: Path, n: int
) -> dict[str, Any]:
    """N deliveries for N / 10 items, as fast as offered; then what the worker fetched."""
    _settle(kanvoice)
    time.sleep(2.5)  # the worker has taken in everything sent before
    before = _drained(kanvoice)
    items = max(1, n // 10)
    figures = _load(kv_port, items, "kanvoice", rate=args.burst_rate, duration=n / args.burst_rate)
    deadline = time.monotonic() + 120
    after = _drained(kanvoice)
    while time.monotonic() < deadline and after[0] - before[0] < figures["ok"]:
        time.sleep(0.5)
        after = _drained(kanvoice)
    differ, compared = _board_equals_ledger(gh_port, work / "ledger.db")
    return {
        **figures,
        "items": items,
        "drained": after[0] - before[0],
        "refetch_requests": after[1] - before[1],
        "ledger_items_differing": differ,
        "ledger_items_compared": compared,
    }


def _edge(value: float | None) -> str:
    return "?" if value is None else f"{value * 1000:g} ms"


def _ms(value: float) -> str:
    return "unanswered (> grace)" if value == float("inf") else f"{value:.1f} ms"


def _rows(r: dict[str, Any]) -> list[Row]:
    bare, kv = r["bare"], r["kanvoice"]
    processed = r["kanvoice_cpu"]["processed"] or kv["ok"]
    share = kv["throughput"] / bare["throughput"] if bare["throughput"] else 0.0
    cpu_ms = 1000 * r["kanvoice_cpu"]["kanvoice_cpu_s"] / max(1, processed)
    rows = [
        Row(
            "kanvoice p50 latency (from scheduled send)",
            f"{_ms(kv['p50_ms'])} (bare {_ms(bare['p50_ms'])})",
        ),
        Row(
            "kanvoice p99 latency (from scheduled send)",
            f"{_ms(kv['p99_ms'])} (p90 {_ms(kv['p90_ms'])}, max answered {kv['max_ms']:.0f} ms; "
            f"bare p99 {_ms(bare['p99_ms'])})",
            f"< {P99_LIMIT_MS:.0f} ms",
            kv["p99_ms"] < P99_LIMIT_MS,
        ),
        Row(
            f"throughput at {kv['offered_rate']:.0f} req/s offered",
            f"kanvoice {kv['throughput']:.0f}/s vs bare {bare['throughput']:.0f}/s = {share:.0%}",
            f">= {THROUGHPUT_SHARE:.0%} of bare",
            share >= THROUGHPUT_SHARE,
        ),
        Row(
            "of which waiting for the inbox commit (web side; histogram bucket edges)",
            f"p50 <= {_edge(r.get('inbox_write', {}).get('p50_le_s'))}, "
            f"p99 <= {_edge(r.get('inbox_write', {}).get('p99_le_s'))} "
            f"({r.get('inbox_write', {}).get('count', 0):.0f} writes)",
        ),
        Row(
            "answers (kanvoice / bare)",
            f"{kv['statuses']} errors {kv['errors']} unanswered {kv['unanswered']} / "
            f"{bare['statuses']} errors {bare['errors']} unanswered {bare['unanswered']}",
        ),
        Row(
            "CPU per webhook in the web process (kanvoice run layout; single: everything)",
            f"{1000 * r['kanvoice_cpu']['kanvoice_web_cpu_s'] / max(1, processed):.2f} ms",
            f"<= {CPU_LIMIT_MS:g} ms",
            1000 * r["kanvoice_cpu"]["kanvoice_web_cpu_s"] / max(1, processed) <= CPU_LIMIT_MS,
        ),
        Row(
            "CPU per webhook (kanvoice incl. its worker / fake GitHub / bare)",
            f"{cpu_ms:.2f} ms / "
            f"{1000 * r['kanvoice_cpu']['github_cpu_s'] / max(1, processed):.2f} ms / "
            f"{1000 * r['bare_cpu']['bare_cpu_s'] / max(1, bare['ok']):.2f} ms "
            f"({processed} webhooks answered 2xx by kanvoice)",
        ),
    ]
    if "kanvoice_light" in r:
        light = r["kanvoice_light"]
        rows.append(
            Row(
                f"kanvoice p99 at {light['offered_rate']:.0f} req/s offered (light load)",
                f"p50 {_ms(light['p50_ms'])}, p99 {_ms(light['p99_ms'])}, "
                f"{light['throughput']:.0f}/s; CPU "
                f"{1000 * r['kanvoice_light_cpu']['kanvoice_cpu_s'] / max(1, light['ok']):.2f} "
                "ms/webhook (worker included)",
                f"< {LIGHT_P99_LIMIT_MS:.0f} ms",
                light["p99_ms"] < LIGHT_P99_LIMIT_MS,
            )
        )
    if "kanvoice_max" in r:
        kmax, bmax = r["kanvoice_max"], r["bare_max"]
        rows.append(
            Row(
                f"max throughput ({kmax['mode']})",
                f"kanvoice {kmax['throughput']:.0f}/s (p50 {_ms(kmax['p50_ms'])}) vs bare "
                f"{bmax['throughput']:.0f}/s = {kmax['throughput'] / bmax['throughput']:.0%}",
            )
        )
    if "burst" in r:
        b = r["burst"]
        per_100 = 100 * b["refetch_requests"] / max(1, b["items"])
        rows.append(
            Row(
                f"burst: {b['sent']} deliveries for {b['items']} items at "
                f"{b['offered_rate']:.0f} req/s offered",
                f"{b['statuses']} unanswered {b['unanswered']}; p99 {_ms(b['p99_ms'])}; "
                f"worker took in {b['drained']} with {b['refetch_requests']} re-fetch requests "
                f"= {per_100:.2f} per 100 items",
                f"<= {BURST_REQUESTS_PER_100:g} per 100 items",
                per_100 <= BURST_REQUESTS_PER_100 and b["drained"] >= b["ok"],
            )
        )
        rows.append(
            Row(
                "ledger equals the board afterwards (hours of every item)",
                f"{b['ledger_items_differing']} of {b['ledger_items_compared']} items differ",
                "0",
                b["ledger_items_differing"] == 0,
            )
        )
    rows.append(
        Row(
            "kanvoice process peak RSS; error log lines",
            f"{r['kanvoice_peak_rss_mb']:.0f} MiB; {r['kanvoice_log_errors']}",
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 s instead of 30 s")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument(
        "--saturate", type=float, default=None, help="closed-loop seconds (0: skip)"
    )
    parser.add_argument("--connections-saturate", type=int, default=16)
    parser.add_argument(
        "--profile", action="store_true", help="sample the kanvoice process's stacks"
    )
    parser.add_argument("--light-rate", type=float, default=50.0)
    parser.add_argument(
        "--layout",
        choices=("run", "single"),
        default="run",
        help="run: `kanvoice run` as shipped (web + worker processes); single: the app and "
        "the inbox worker on one event loop (the layout before issue 15)",
    )
    parser.add_argument(
        "--burst", type=int, default=None, help="bulk-move deliveries (0: skip; quick: 0)"
    )
    parser.add_argument("--burst-rate", type=float, default=1000.0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--logs", default=None, help="copy the servers' logs to this folder")
    # internal: the child processes
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--github-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--ledger", default="", help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--target", default="", help=argparse.SUPPRESS)
    parser.add_argument("--sample", default="", help=argparse.SUPPRESS)
    parser.add_argument(
        "--grace", type=float, default=30.0, help="seconds to wait for answers after sending"
    )
    args = parser.parse_args()
    if args.role == "github":
        role_github(args.port, args.items)
    elif args.role == "bare":
        role_bare(args.port)
    elif args.role == "kanvoice-run":
        role_kanvoice_run(args.port, args.github_url, args.ledger)
    elif args.role == "kanvoice":
        role_kanvoice(args.port, args.github_url, args.ledger, args.sample)
    elif args.role == "load":
        role_load(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
