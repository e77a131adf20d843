"""Leader election: polling, drafting and the outbox drain run on one instance at a time.

PostgreSQL: a session advisory lock held on a dedicated connection. If the leader dies,
its connection closes, the server releases the lock, and another instance takes it on
its next try. SQLite (one machine): an exclusive `flock` on a file beside the database,
released by the kernel when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import zlib
from pathlib import Path
from typing import IO

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from sync.ledger.status import advisory_unlock, ping, try_advisory_lock

log = structlog.get_logger(__name__)

LOCK_NAME = "kanvoice-leader"


class LeaderLock:
    """`try_acquire()` on a timer; `is_leader` says whether this instance may act."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url
        self.is_leader = False
        self._conn: Connection | None = None
        self._file: IO[bytes] | None = None
        self._key = zlib.crc32(LOCK_NAME.encode())

    def try_acquire(self) -> bool:
        """Take the lock if free; check it is still held if already taken."""
        try:
            if self.url.startswith("sqlite"):
                self._sqlite()
            else:
                self._postgres()
        except (SQLAlchemyError, OSError) as exc:
            if self.is_leader:
                log.error("leader.lost", reason=str(exc))
            self._drop()
        return self.is_leader

    def _postgres(self) -> None:
        if self._conn is None:
            self._conn = self.engine.connect()
            self._conn.execution_options(isolation_level="AUTOCOMMIT")
        if self.is_leader:
            # Still connected? (a broken connection means the lock is gone)
            ping(self._conn)
            return
        if try_advisory_lock(self._conn, self._key):
            self.is_leader = True
            log.info("leader.acquired", pid=os.getpid())

    def _sqlite(self) -> None:
        if self.is_leader:
            return
        database = make_url(self.url).database or "kanvoice.db"
        path = Path(database + ".leader")
        handle = path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return
        self._file = handle
        self.is_leader = True
        log.info("leader.acquired", pid=os.getpid())

    def _drop(self) -> None:
        self.is_leader = False
        if self._conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._conn.close()
            self._conn = None

    def release(self) -> None:
        if self._conn is not None and self.is_leader:
            with contextlib.suppress(SQLAlchemyError):
                advisory_unlock(self._conn, self._key)
        self._drop()
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
