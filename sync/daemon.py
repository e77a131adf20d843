"""`kanvoice run`: the ASGI app under uvicorn plus the scheduler, in one process.

Webhooks and the dashboard are served by every instance (a webhook is stored in the
ledger's inbox and answered). Draining the inbox, polling, drafting, the outbox drain
and reconciliation run only on the leader (see sync/leader.py). SIGTERM
stops taking requests, lets running jobs finish (each ledger write is one transaction,
so anything cut short rolls back whole), and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from functools import partial
from typing import Any

import structlog
import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.exc import SQLAlchemyError

from sync.composition import Services
from sync.leader import LeaderLock
from sync.ledger import invoices as ledger_invoices
from sync.ledger.status import LedgerMarks, ledger_marks
from sync.logs import short_error
from sync.settings import Cadence, Settings

log = structlog.get_logger(__name__)

DRAIN_SECONDS = 10
LEADER_SECONDS = 5
DRAFT_SECONDS = 60
RECONCILE_SECONDS = 3600
DIGEST_SECONDS = 60  # how often the leader looks whether a digest slot is due
REMINDER_SECONDS = 3600
CHANGE_POLL_SECONDS = 1.0
INBOX_SECONDS = 1.0
PRUNE_SECONDS = 3600
SHUTDOWN_GRACE_SECONDS = 30


def ledger_fingerprint(services: Services) -> LedgerMarks:
    """Cheap marker that moves whenever any instance changes the ledger."""
    with services.ledger.engine.connect() as conn:
        return ledger_marks(conn)


class Daemon:
    """The scheduler's jobs; `run()` serves the app and runs them until told to stop."""

    def __init__(
        self,
        services: Services,
        app: Any,
        notify: Callable[[], None] | None = None,
        request_approval: Callable[[int], Awaitable[None]] | None = None,
        on_stop: list[Callable[[], None]] | None = None,
        drain_seconds: float = DRAIN_SECONDS,
        grace_seconds: float = SHUTDOWN_GRACE_SECONDS,
        extra_jobs: list[tuple[str, Callable[[], Awaitable[Any]], float]] | None = None,
        background: list[Callable[[asyncio.Event], Coroutine[Any, Any, Any]]] | None = None,
        desk: Any = None,
    ) -> None:
        self.services = services
        self.app = app
        self.notify = notify
        self.request_approval = request_approval
        self.on_stop = on_stop or []
        self.drain_seconds = drain_seconds
        self.grace_seconds = grace_seconds
        self.extra_jobs = extra_jobs or []  # (name, work, seconds): leader-only jobs
        self.background = background or []  # long-running tasks on every instance
        self.desk = desk  # the ApprovalDesk that applies Slack decisions from the inbox
        self._stop_event = asyncio.Event()
        self.leader = LeaderLock(services.ledger.engine, services.settings.ledger.url)
        if hasattr(app, "state"):
            app.state.leader = self.leader
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self._running: set[asyncio.Task[Any]] = set()
        self._stopping = False
        #: Told whether this instance leads, on every change (the worker process tells
        #: the web process through it, for `/healthz`).
        self.on_leader: Callable[[bool], None] | None = None

    def _job(
        self, name: str, work: Callable[[], Awaitable[Any]], leader_only: bool = True
    ) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            if self._stopping or (leader_only and not self.leader.is_leader):
                return
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                await work()
            except SQLAlchemyError as exc:
                log.error("job.ledger_unavailable", job=name, error=str(exc))
            except Exception as exc:
                # One short line an operator can read; the traceback only at debug.
                board = name.removeprefix("poll:") if name.startswith("poll:") else None
                fields = {"board": board} if board else {}
                log.error("job.failed", job=name, error=short_error(exc), **fields)
                log.debug("job.failed.traceback", job=name, exc_info=exc)
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
                # Still running when the shutdown grace ran out: its transaction rolls
                # back whole; the next start does the work again.
                log.warning("job.cut_short", job=name, grace_seconds=self.grace_seconds)
            finally:
                if task is not None:
                    self._running.discard(task)

        return job

    async def _leader_tick(self) -> None:
        was = self.leader.is_leader
        now = await asyncio.to_thread(self.leader.try_acquire)
        if now != was and self.on_leader is not None:
            self.on_leader(now)
        if now and not was:
            log.info("daemon.leading")
            self._run_leader_jobs_now()

    def _run_leader_jobs_now(self) -> None:
        """A new leader (at start-up or after a failover) polls every board and drains
        the outbox at once, instead of one interval later."""
        if self._stopping:
            return
        for job in self.scheduler.get_jobs():
            if job.id == "drain" or job.id.startswith("poll:"):
                job.modify(next_run_time=_now())

    async def _drain(self) -> None:
        if self.services.invoicing.gateway_factory is None:
            # `kanvoice run --without-stripe`: said on every drain, never silently idle.
            log.warning("invoicing.off", reason="stripe.api_key is not set: nothing is invoiced")
            return
        # A stop request ends the drain after the call in flight (each call and its
        # record are one unit); the rest waits in the outbox for the next start.
        report = await self.services.invoicing.drain(should_stop=lambda: self._stopping)
        if report.done or report.parked:
            log.info(
                "outbox.drained", done=report.done, parked=report.parked, retried=report.retried
            )

    async def _draft(self, client: str) -> None:
        result = await asyncio.to_thread(
            self.services.invoicing.create_or_refresh_draft, client, "scheduler"
        )
        if result.added:
            log.info(
                "draft.refreshed", client=client, invoice=result.invoice_id, added=result.added
            )

    async def _due(self, client: str) -> None:
        """The client's period closed: ask finance to approve its open drafts."""
        if self.request_approval is None:
            return

        def open_drafts() -> list[int]:
            with self.services.ledger.engine.connect() as conn:
                return ledger_invoices.open_draft_ids(conn, client)

        drafts = await asyncio.to_thread(open_drafts)  # never a ledger wait on the loop
        for invoice_id in drafts:
            await self.request_approval(invoice_id)

    async def _inbox(self) -> None:
        """Drain the webhook inbox: Stripe events and Slack decisions applied in order;
        board deliveries coalesced per item, re-fetched in batches, ingested."""
        from sync.intake import drain_inbox

        await drain_inbox(self.services, desk=self.desk)

    async def _prune_inbox(self) -> None:
        """Delete inbox rows processed more than `ledger.inbox_retention_days` ago."""
        from sync.intake import prune_inbox

        await prune_inbox(self.services)

    async def _poll(self, board: str) -> None:
        from sync.boards import sync_board

        report = await sync_board(self.services, board)
        if report.changes:
            log.info("board.synced", board=board, changes=len(report.changes))

    async def _reconcile(self) -> None:
        drifts = await self.services.invoicing.reconcile()
        for drift in drifts:
            log.warning(
                "reconcile.drift",
                client=drift.client,
                invoice=drift.invoice_id,
                problem=drift.problem,
                repair=drift.repair,
            )

    async def _digest(self) -> None:
        """The finance digest of the current slot, queued once per slot (the key names
        the slot, so instances and restarts agree); the Slack drain posts it."""
        from sync.finance import queue_scheduled_digest

        services = self.services
        await asyncio.to_thread(
            queue_scheduled_digest, services.ledger, services.settings, services.clock()
        )

    async def _reminders(self) -> None:
        """Queue Stripe reminders for overdue invoices (at most one per interval)."""
        queued = await asyncio.to_thread(self.services.invoicing.queue_reminders)
        if queued:
            log.info("overdue.reminders_queued", invoices=queued)

    async def _watch_changes(self) -> None:
        last: LedgerMarks | None = None
        while not self._stopping:
            try:
                current = await asyncio.to_thread(ledger_fingerprint, self.services)
                if last is not None and current != last and self.notify:
                    self.notify()
                last = current
            except SQLAlchemyError:
                pass
            await asyncio.sleep(CHANGE_POLL_SECONDS)

    def schedule(self) -> None:
        settings = self.services.settings
        add = self.scheduler.add_job
        common: dict[str, Any] = {"max_instances": 1, "coalesce": True}
        add(
            self._job("leader", self._leader_tick, leader_only=False),
            "interval",
            seconds=LEADER_SECONDS,
            id="leader",
            next_run_time=_now(),
            **common,
        )
        if self.services.invoicing.gateway_factory is not None:  # Stripe is reachable
            add(
                self._job("drain", self._drain),
                "interval",
                seconds=self.drain_seconds,
                id="drain",
                **common,
            )
            add(
                self._job("reconcile", self._reconcile),
                "interval",
                seconds=RECONCILE_SECONDS,
                id="reconcile",
                **common,
            )
            if settings.overdue.remind:
                add(
                    self._job("reminders", self._reminders),
                    "interval",
                    seconds=REMINDER_SECONDS,
                    id="reminders",
                    **common,
                )
        if settings.digest.enabled and self.services.desk.can_post:
            add(
                self._job("digest", self._digest),
                "interval",
                seconds=DIGEST_SECONDS,
                id="digest",
                next_run_time=_now(),
                **common,
            )
        # Every instance's webhooks land in the inbox (boards, Stripe, Slack): the leader
        # drains it, and prunes what was processed long ago.
        add(
            self._job("inbox", self._inbox),
            "interval",
            seconds=INBOX_SECONDS,
            id="inbox",
            **common,
        )
        add(
            self._job("inbox_prune", self._prune_inbox),
            "interval",
            seconds=PRUNE_SECONDS,
            id="inbox_prune",
            **common,
        )
        for board in settings.boards:
            if board.key in self.services.connectors:
                add(
                    self._job(f"poll:{board.key}", partial(self._poll, board.key)),
                    "interval",
                    seconds=board.poll_interval_seconds,
                    id=f"poll:{board.key}",
                    **common,
                )
        for client in settings.clients:
            if client.cadence is Cadence.ON_DEMAND:
                continue
            add(
                self._job(f"draft:{client.key}", partial(self._draft, client.key)),
                "interval",
                seconds=DRAFT_SECONDS,
                id=f"draft:{client.key}",
                **common,
            )
            trigger = (
                CronTrigger(day=1, hour=0, minute=5, timezone=client.timezone)
                if client.cadence is Cadence.MONTHLY
                else CronTrigger(
                    day_of_week=client.week_starts_on, hour=0, minute=5, timezone=client.timezone
                )
            )
            add(
                self._job(f"due:{client.key}", partial(self._due, client.key)),
                trigger,
                id=f"due:{client.key}",
                **common,
            )

    def _schedule_extra(self) -> None:
        for name, work, seconds in self.extra_jobs:
            self.scheduler.add_job(
                self._job(name, work),
                "interval",
                seconds=seconds,
                id=name,
                max_instances=1,
                coalesce=True,
            )

    async def run(self) -> None:
        settings = self.services.settings
        server = quiet_server(self.app, settings)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._request_exit, server)
        self.schedule()
        self._schedule_extra()
        self.scheduler.start()
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(start(self._stop_event)) for start in self.background
        ]
        watcher = asyncio.create_task(self._watch_changes())
        log.info(
            "daemon.started",
            host=settings.server.host,
            port=settings.server.port,
            boards=len(settings.boards),
            clients=len(settings.clients),
        )
        try:
            await server.serve()  # returns after SIGTERM / SIGINT
        finally:
            self._stop_event.set()
            for task in tasks:
                task.cancel()
            await self.stop(watcher)

    async def run_worker(self) -> None:
        """The worker process of `kanvoice run`: the scheduled jobs (leader election,
        inbox, polling, drafting, outbox drains, reconciliation) and the background
        tasks, without the web server, until SIGTERM / SIGINT; then `stop()`."""
        settings = self.services.settings
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._request_stop)
        self.schedule()
        self._schedule_extra()
        self.scheduler.start()
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(start(self._stop_event)) for start in self.background
        ]
        log.info(
            "worker.started", boards=len(settings.boards), clients=len(settings.clients)
        )
        try:
            await self._stop_event.wait()
        finally:
            self._stop_event.set()
            for task in tasks:
                task.cancel()
            await self.stop()

    def _request_stop(self) -> None:
        log.info("worker.stopping")
        self._stopping = True
        self._stop_event.set()

    def _request_exit(self, server: uvicorn.Server) -> None:
        log.info("daemon.stopping")
        self._stopping = True
        server.should_exit = True
        for callback in self.on_stop:
            callback()  # e.g. end the dashboard's event streams, or uvicorn waits on them

    async def stop(self, watcher: asyncio.Task[Any] | None = None) -> None:
        """Start no more jobs, let the running ones finish within the grace, then stop.

        APScheduler's `shutdown()` cancels running coroutine jobs at once (whatever
        `wait` says), so the scheduler is only paused while they finish; what is still
        running when the grace runs out is cancelled by the shutdown.
        """
        self._stopping = True
        started = self.scheduler.running
        if started:
            self.scheduler.pause()
        if watcher is not None:
            watcher.cancel()
        running = [task for task in self._running if not task.done()]
        if running:
            log.info("daemon.finishing_jobs", jobs=len(running))
            await asyncio.wait(running, timeout=self.grace_seconds)
        if started:
            self.scheduler.shutdown(wait=False)  # cancels what outlived the grace
        leftovers = [task for task in self._running if not task.done()]
        if leftovers:
            await asyncio.wait(leftovers, timeout=5)  # let their cancellation run
        await self.services.invoicing.close()
        self.leader.release()
        log.info("daemon.stopped")


def quiet_server(app: Any, settings: Settings) -> uvicorn.Server:
    """The uvicorn server for `app` on `[server] host:port`, with no logging of its own
    (structlog logs) and no signal handling of its own (the caller stops it)."""
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    return _QuietServer(config)


class _QuietServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM after serving, which would kill the process before the
    running jobs finish; the daemon handles the signals itself instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
