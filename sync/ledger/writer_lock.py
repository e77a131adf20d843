"""SQLite's one writer, taken in turn by every thread and every process of kanvoice.

SQLite lets one transaction write at a time. A writer that finds the lock taken waits
in SQLite's busy handler, which sleeps in growing steps (up to 100 ms) and does not
queue: with `kanvoice run`'s web process and worker process both writing, the web
intake's one-row INSERT would wait behind the worker's ingest transactions in those
sleeps (the p99 of issue #15). So every write transaction of a file ledger first takes
this lock (the engine's ``begin`` event, before ``BEGIN IMMEDIATE``) and gives it back
once its COMMIT / ROLLBACK has returned:

* in the process, a `threading.Lock`;
* across processes, ``flock`` on two files beside the database: ``.turn`` and
  ``.write``. A writer takes ``.turn``, then ``.write``, then lets ``.turn`` go. A
  writer holding ``.turn`` while it waits for ``.write`` keeps everyone else from
  taking ``.write`` after the current holder: whoever waits gets the lock next, and
  no stream of transactions from the other process starves the intake.

A writer with a deadline (the intake: `INTAKE_BUSY_SECONDS`) polls for the locks and
fails with `OperationalError` past it, so a write lock held by a hung process turns
into a 503, not a hung request. Others block (their threads are not the event loop).
The kernel drops ``flock`` locks of a process that dies.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

POLL_SECONDS = 0.0005  # first poll interval of a writer with a deadline…
MAX_POLL_SECONDS = 0.005  # …growing to this for long waits


class WriterLock:
    """See the module docstring. `acquire(deadline_seconds)` / `release()`."""

    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: an in-memory database, this process only
        self._thread_lock = threading.Lock()
        self._fds: tuple[int, int] | None = None
        self._pid = 0

    def _files(self) -> tuple[int, int]:
        assert self.path is not None
        if self._fds is None or self._pid != os.getpid():  # not inherited across fork
            turn = os.open(f"{self.path}.turn", os.O_RDWR | os.O_CREAT, 0o600)
            write = os.open(f"{self.path}.write", os.O_RDWR | os.O_CREAT, 0o600)
            self._fds, self._pid = (turn, write), os.getpid()
        return self._fds

    def acquire(self, timeout: float | None = None) -> bool:
        """Take the lock; False if `timeout` seconds passed first (None: wait)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._thread_lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        if self.path is None:
            return True
        try:
            turn, write = self._files()
            if not _flock(turn, deadline):
                self._thread_lock.release()
                return False
            try:
                got = _flock(write, deadline)
            finally:
                fcntl.flock(turn, fcntl.LOCK_UN)
        except BaseException:
            self._thread_lock.release()
            raise
        if not got:
            self._thread_lock.release()
        return got

    def release(self) -> None:
        if self.path is not None and self._fds is not None:
            fcntl.flock(self._fds[1], fcntl.LOCK_UN)
        self._thread_lock.release()


def _flock(fd: int, deadline: float | None) -> bool:
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    pause = POLL_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(MAX_POLL_SECONDS, pause * 1.25)


_locks: dict[str, WriterLock] = {}
_registry = threading.Lock()


def writer_lock_for(database: str | None) -> WriterLock:
    """The one lock of this process for a SQLite database (path, or None / memory)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        key, path = f"memory:{database}", None
    else:
        resolved = Path(database).resolve()
        key, path = str(resolved), resolved
    with _registry:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = WriterLock(path)
        return lock
