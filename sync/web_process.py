"""`kanvoice run`'s process layout: a web process that supervises one worker process.

The **web process** (the one `kanvoice run` starts, the one systemd / Docker signal)
serves the ASGI app under uvicorn and nothing else: a webhook is verified, written to
the inbox in one short INSERT and answered; the dashboard reads the ledger. The
**worker process** (`kanvoice run --role worker`, spawned by the web process) runs
the scheduler: leader election, the inbox worker, polling, drafting, the outbox
drains, reconciliation, Slack Socket Mode. Keeping them apart keeps the worker's CPU
(re-fetch clients, ingest, Stripe calls) and its ledger transactions off the event
loop and the GIL that answer webhooks (issue #15: p99 at 500 req/s).

Lifecycle: SIGTERM / SIGINT to the web process stops taking requests, forwards SIGTERM
to the worker (which lets running jobs finish within its grace) and exits 0 once both
are done. The two share their fate: a worker that dies unexpectedly stops the web
process too, which then exits the way the worker did (same signal, or its exit
status), so systemd's ``Restart=on-failure`` or Docker's restart policy restart the
pair (and a crash is never hidden behind a web process that still answers). If the
web process is killed, the kernel kills the worker (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from sync.composition import Services

log = structlog.get_logger(__name__)

STATUS_FD_ENV = "KANVOICE_WORKER_STATUS_FD"
PARENT_ENV = "KANVOICE_WORKER_PARENT"
CHANGE_POLL_SECONDS = 1.0
#: How long the web process waits for the worker after forwarding SIGTERM (the
#: worker's own job grace is 30 s).
WORKER_STOP_SECONDS = 40.0
GIL_SWITCH_SECONDS = 0.0005


class WorkerStatus:
    """What the web process knows of its worker (read by `/healthz`)."""

    def __init__(self) -> None:
        self.is_leader = False


class WorkerProcess:
    """The spawned worker: started, watched, told to stop."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.status = WorkerStatus()
        self.process: asyncio.subprocess.Process | None = None
        self._read_fd: int | None = None

    async def start(self) -> None:
        read_fd, write_fd = os.pipe()
        env = {**os.environ, STATUS_FD_ENV: str(write_fd), PARENT_ENV: str(os.getpid())}
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, env=env, pass_fds=(write_fd,)
            )
        finally:
            os.close(write_fd)
        self._read_fd = read_fd
        os.set_blocking(read_fd, False)
        asyncio.get_running_loop().add_reader(read_fd, self._on_status)
        log.info("worker.spawned", pid=self.process.pid)

    def _on_status(self) -> None:
        assert self._read_fd is not None
        try:
            data = os.read(self._read_fd, 64)
        except BlockingIOError:
            return
        if not data:  # the worker closed its end (it is exiting)
            self._close_reader()
            self.status.is_leader = False
            return
        self.status.is_leader = data[-1:] == b"L"

    def _close_reader(self) -> None:
        if self._read_fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._read_fd)
            os.close(self._read_fd)
            self._read_fd = None

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    async def stop(self, grace: float = WORKER_STOP_SECONDS) -> int | None:
        """SIGTERM, then wait; SIGKILL past `grace`. The worker's exit status."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                log.error("worker.killed", reason=f"still running {grace:g} s after SIGTERM")
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        self._close_reader()
        return process.returncode


def worker_argv(config: str | None, without_stripe: bool) -> list[str]:
    """The command line of the worker process (the same interpreter and config)."""
    argv = [sys.executable, "-m", "sync", "run", "--role", "worker"]
    if config is not None:
        argv += ["-c", config]
    if without_stripe:
        argv.append("--without-stripe")
    return argv


def become_worker() -> Callable[[bool], None] | None:
    """In the worker process: die with the web process, and return the callback that
    tells it whether this instance leads (None when not spawned by `kanvoice run`)."""
    parent = os.environ.pop(PARENT_ENV, None)
    fd_text = os.environ.pop(STATUS_FD_ENV, None)
    if parent is not None and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != int(parent):  # the web process died before prctl
            os._exit(1)
    if fd_text is None:
        return None
    fd = int(fd_text)

    def tell(leading: bool) -> None:
        with contextlib.suppress(OSError):
            os.write(fd, b"L" if leading else b"F")

    return tell


async def watch_changes(
    services: Services, notify: Callable[[], None], stopping: asyncio.Event
) -> None:
    """Tell the dashboard's event streams when any process changed the ledger."""
    from sync.daemon import ledger_fingerprint
    from sync.ledger.status import LedgerMarks

    last: LedgerMarks | None = None
    probe: asyncio.Future[LedgerMarks] | None = None
    while not stopping.is_set():
        try:
            if probe is None or probe.done():  # a hung ledger holds one thread, not more
                probe = asyncio.ensure_future(asyncio.to_thread(ledger_fingerprint, services))
            current = await asyncio.wait_for(asyncio.shield(probe), timeout=10)
            if last is not None and current != last:
                notify()
            last = current
        except (SQLAlchemyError, TimeoutError):
            pass
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), CHANGE_POLL_SECONDS)


async def serve_web(
    services: Services,
    app: Any,
    worker: WorkerProcess | None,
    on_stop: Sequence[Callable[[], None]] = (),
) -> int:
    """Serve `app` (and supervise `worker`) until SIGTERM / SIGINT or the worker dies.

    Returns the worker's exit status when it died on its own (negative: the signal
    that killed it), else 0 (or the worker's non-zero status after a clean stop).
    """
    from sync.daemon import quiet_server

    settings = services.settings
    # The intake thread holds the SQLite write lock while it runs Python between its
    # driver calls; each time it gives up the GIL it waits up to the switch interval
    # (5 ms by default) for the event loop thread to hand it back. A shorter interval
    # keeps the intake's transaction (and everyone queued behind it) short.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    server = quiet_server(app, settings)
    stopping = asyncio.Event()
    worker_died: list[int] = []

    def request_exit() -> None:
        if stopping.is_set():
            return
        log.info("daemon.stopping")
        stopping.set()
        server.should_exit = True
        for callback in on_stop:
            callback()  # e.g. end the dashboard's event streams, or uvicorn waits on them

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_exit)
    if worker is not None:
        app.state.leader = worker.status
        await worker.start()

        async def supervise() -> None:
            code = await worker.wait()
            if not stopping.is_set():
                log.error("worker.died", status=code)
                worker_died.append(code)
                request_exit()

        supervisor: asyncio.Task[None] | None = asyncio.create_task(supervise())
    else:
        supervisor = None
    watcher = asyncio.create_task(watch_changes(services, app.state.notify, stopping))
    log.info(
        "daemon.started",
        host=settings.server.host,
        port=settings.server.port,
        boards=len(settings.boards),
        clients=len(settings.clients),
        worker=worker.process.pid if worker and worker.process else None,
    )
    code = 0
    try:
        await server.serve()  # returns after SIGTERM / SIGINT (or the worker's death)
    finally:
        stopping.set()
        watcher.cancel()
        if worker is not None:
            status = await worker.stop()
            if supervisor is not None:
                supervisor.cancel()
            if worker_died:
                code = worker_died[0]
            elif status:
                log.error("worker.stopped_badly", status=status)
                code = status
        log.info("daemon.stopped")
    return code


def exit_like(code: int) -> None:
    """Leave the way the worker did: by the same signal (negative), else its status."""
    if code < 0:
        signum = -code
        with contextlib.suppress(OSError, ValueError):
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    if code:
        sys.exit(code)
