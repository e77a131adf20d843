"""Change notifications for the dashboard's server-sent events.

`ChangeBroker.notify()` may be called from any thread (the engine's `on_change`
listener runs in whatever thread ingested); every subscriber, an asyncio task serving
one `/api/events` stream, wakes within milliseconds. Each subscriber holds at most one
pending notification: a burst of changes coalesces into one wake-up, so a slow client
never makes memory grow.
"""

from __future__ import annotations

import asyncio
import threading
from enum import Enum
from types import TracebackType

HEARTBEAT_SECONDS = 15.0


class Tick(Enum):
    """What a subscription yields: the ledger changed, or it is time for a heartbeat."""

    CHANGE = "change"
    HEARTBEAT = "heartbeat"


class Subscription:
    """One subscriber's view of the broker: an async iterator of `Tick`s that ends when
    the broker closes. Use as `async with broker.subscribe() as sub: async for tick in
    sub: ...`; leaving the block unsubscribes."""

    def __init__(self, broker: ChangeBroker, heartbeat_seconds: float) -> None:
        self._broker = broker
        self._heartbeat = heartbeat_seconds
        self._loop = asyncio.get_running_loop()
        # The only per-subscriber state: a flag, so pending notifications coalesce.
        self._pending = asyncio.Event()
        self._ended = False

    # Called by the broker, from any thread.
    def _wake(self) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._pending.set)
        except RuntimeError:  # the subscriber's event loop is closed
            return False
        return True

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop receiving notifications (idempotent)."""
        self._ended = True
        self._broker._remove(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Tick:
        if self._ended or self._broker.closed:
            raise StopAsyncIteration
        try:
            await asyncio.wait_for(self._pending.wait(), timeout=self._heartbeat)
        except TimeoutError:
            return Tick.HEARTBEAT
        self._pending.clear()
        if self._ended or self._broker.closed:
            raise StopAsyncIteration
        return Tick.CHANGE


class ChangeBroker:
    """Fans ledger-change notifications out to the dashboard's event streams.

    - `notify(*_)`: thread-safe, never blocks; pass it straight to
      `Engine.on_change(broker.notify)` (the report argument is ignored).
    - `subscribe()`: for an async task; see `Subscription`.
    - `close()`: ends every stream (call it when shutdown begins, before the server
      waits for open connections); later notifications are ignored.
    """

    def __init__(self, heartbeat_seconds: float = HEARTBEAT_SECONDS) -> None:
        self.heartbeat_seconds = heartbeat_seconds
        self._lock = threading.Lock()
        self._subscribers: set[Subscription] = set()
        self._closed = False
        self._version = 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def version(self) -> int:
        """How many notifications were published (for tests and diagnostics)."""
        return self._version

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def subscribe(self) -> Subscription:
        """A new subscription bound to the running event loop."""
        subscription = Subscription(self, self.heartbeat_seconds)
        with self._lock:
            if self._closed:
                subscription._ended = True
            else:
                self._subscribers.add(subscription)
        return subscription

    def notify(self, *_event: object) -> None:
        """Wake every subscriber (callable from any thread, with or without arguments)."""
        with self._lock:
            if self._closed:
                return
            self._version += 1
            subscribers = list(self._subscribers)
        dead = [s for s in subscribers if not s._wake()]
        for subscription in dead:
            self._remove(subscription)

    def close(self) -> None:
        """End every subscription; streams finish their current event and stop."""
        with self._lock:
            self._closed = True
            subscribers = list(self._subscribers)
            self._subscribers.clear()
        for subscription in subscribers:
            subscription._wake()

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)
