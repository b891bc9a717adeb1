"""Live updates: the event hub behind ``GET /api/v1/events`` (Server-Sent Events).

**Events.** Each has an id (an integer, increasing by one per event), a type (``alert``,
``device``, ``stock``) and a JSON body; it is encoded once, as its SSE frame
(``id: N\\nevent: TYPE\\ndata: JSON\\n\\n``), when it is published, and the same bytes go to every
client. Ids start from the service's start time in microseconds, so an id from before a restart
is older than every id of this run: a client that reconnects with it is told to reload
(``reset``), never handed unrelated events that happen to carry the ids it expects.

**One ring buffer, one cursor per client.** The hub keeps the last ``capacity`` events (at
most ``max_age`` seconds old) in a ring indexed by id. A client holds only its cursor (the id
of the last event it was handed); a publish appends to the ring and wakes every waiting client,
which then writes what lies between its cursor and the newest id (its types only). So replay
after a reconnect and live delivery are the same loop, in id order: nothing missed, nothing
twice. A client that reads slowly costs the publisher nothing and holds no memory of its own:
the transport's bounded write buffer fills and its stream waits; if the ring has moved past its
cursor by the time it writes again, it is sent ``reset`` (reload your lists) and goes on live.

**Threads.** The ring and the clients belong to the service's event loop (``bind``). ``publish``
may be called from any thread: off the loop, the event is encoded there and appended on the
loop (``call_soon_threadsafe``), in the order the loop receives it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic_core
from pydantic import BaseModel

EVENT_TYPES: tuple[str, ...] = ("alert", "device", "stock")
CAPACITY = 10_000  # events kept for resuming
MAX_AGE_S = 3600.0  # … and at most this old
HEARTBEAT_S = 15.0  # a comment line when nothing else was written for this long (proxies)
RECHECK_S = 60.0  # an open stream's token is checked again this often (revoked, expired)
RETRY_MS = 3000  # the reconnection delay suggested to clients (SSE ``retry:``)
MAX_CLIENTS = 500  # streams open at once; beyond: 503
BATCH = 256  # events written to a client in one write at most (a long replay goes in parts)

KEEPALIVE = b": keepalive\n\n"


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    type: str
    at: float  # when it was published (the hub's monotonic clock)
    data: bytes  # its JSON body
    frame: bytes  # the SSE frame sent to every client


def encode(data: BaseModel | Mapping[str, Any]) -> bytes:
    """The JSON body of an event: compact UTF-8, one line, NaN and infinities as null."""
    return pydantic_core.to_json(data, inf_nan_mode="null")


def frame(event_id: int, event_type: str, data: bytes) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, event_type.encode(), data)


class EventHub:
    def __init__(
        self,
        *,
        capacity: int = CAPACITY,
        max_age: float = MAX_AGE_S,
        heartbeat: float = HEARTBEAT_S,
        recheck: float = RECHECK_S,
        start_id: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.max_age = max_age
        self.heartbeat = heartbeat
        self.recheck = recheck
        self.clock = clock
        self.last_id = int(time.time() * 1_000_000) if start_id is None else start_id  # no event yet
        self._oldest = self.last_id + 1  # the oldest id still in the ring (last_id + 1: none)
        self._ring: list[Event | None] = [None] * capacity
        self._waiters: set[asyncio.Future[None]] = set()  # the clients waiting for the next publish
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # counted for the self-metrics
        self.clients = 0
        self.published = 0
        self.resets = 0

    # -- the loop --------------------------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that owns the hub: publishes from other threads are handed to it."""
        self._loop = loop

    def on_loop(self) -> bool:
        """Whether the caller may touch the hub directly: on its loop, or none bound yet."""
        if self._loop is None:
            return True
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def call_on_loop(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``fn`` now if on the hub's loop, else on that loop soon (dropped if it is closed)."""
        if self.on_loop():
            fn(*args, **kwargs)
            return
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(functools.partial(fn, *args, **kwargs))
        except RuntimeError:  # the loop is closed: the service has stopped, nobody listens
            pass

    # -- publishing ------------------------------------------------------------------------------

    def publish(self, event_type: str, data: BaseModel | Mapping[str, Any]) -> None:
        """Publish an event of ``event_type`` with ``data`` (a model or a JSON-able mapping).
        From any thread; the id is given on the loop."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}")
        self.call_on_loop(self._append, event_type, encode(data))

    def _append(self, event_type: str, data: bytes) -> None:
        if self._closed:
            return
        now = self.clock()
        self.last_id += 1
        n = self.last_id
        self._ring[n % self.capacity] = Event(n, event_type, now, data, frame(n, event_type, data))
        self._oldest = max(self._oldest, n - self.capacity + 1)
        self._expire(now)
        self.published += 1
        self._wake_all()

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _expire(self, now: float) -> None:
        limit = now - self.max_age
        while self._oldest <= self.last_id:
            ev = self._ring[self._oldest % self.capacity]
            if ev is None or ev.at >= limit:
                break
            self._oldest += 1

    # -- reading ---------------------------------------------------------------------------------

    @property
    def oldest_id(self) -> int:
        """The oldest id a client can resume after: every event after it is still kept."""
        self._expire(self.clock())
        return self._oldest - 1

    def resumable(self, last_id: int) -> bool:
        return self.oldest_id <= last_id <= self.last_id

    def events_after(self, last_id: int, types: Iterable[str] = EVENT_TYPES) -> list[Event]:
        """The kept events after ``last_id`` (of ``types``), oldest first (tests, diagnostics)."""
        wanted = frozenset(types)
        first = max(last_id + 1, self.oldest_id + 1)
        out = []
        for i in range(first, self.last_id + 1):
            ev = self._ring[i % self.capacity]
            if ev is not None and ev.type in wanted:
                out.append(ev)
        return out

    def close(self) -> None:
        """End every stream (the service stops): each sends what it has and returns."""
        self._closed = True
        self._wake_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def _control(self, event_type: str, event_id: int, data: Mapping[str, Any]) -> bytes:
        return frame(event_id, event_type, encode(data))

    async def stream(
        self,
        last_id: int | None,
        types: Iterable[str] = EVENT_TYPES,
        *,
        still_allowed: Callable[[], bool] = lambda: True,
    ) -> AsyncIterator[bytes]:
        """The bytes of one client's stream: the ``retry:`` hint and ``ready`` (resuming after
        ``last_id``, or from now when None) or ``reset`` (``last_id`` is no longer kept); then
        every event of ``types`` after it, as they come; a keep-alive comment when nothing was
        written for ``heartbeat`` s. Every ``recheck`` s it asks ``still_allowed()`` (the
        token is still valid) and ends when not. Runs on the hub's loop; ends when the hub
        closes, or when the caller stops iterating (the client left)."""
        wanted = frozenset(types)
        ring, cap = self._ring, self.capacity
        self.clients += 1
        try:
            head = b"retry: %d\n" % RETRY_MS
            if last_id is None or self.resumable(last_id):
                cursor = self.last_id if last_id is None else last_id
                yield head + self._control("ready", cursor, {"last_event_id": cursor})
            else:
                cursor = self.last_id
                self.resets += 1
                yield head + self._control("reset", cursor, {
                    "last_event_id": cursor,
                    "reason": "the events after the given id are no longer kept (or it is not "
                    "an id of this service's run): reload your lists, then follow the stream",
                })  # fmt: skip
            written = self.clock()
            next_check = written + self.recheck
            while not self._closed:
                if cursor < self.last_id:
                    if cursor < self._oldest - 1:  # fell behind past what the ring keeps
                        cursor = self.last_id
                        self.resets += 1
                        yield self._control("reset", cursor, {
                            "last_event_id": cursor,
                            "reason": "this stream fell too far behind: reload your lists, then "
                            "follow the stream",
                        })  # fmt: skip
                        written = self.clock()
                        continue
                    end = min(self.last_id, cursor + BATCH)
                    chunk = []
                    for i in range(cursor + 1, end + 1):
                        ev = ring[i % cap]
                        if ev is not None and ev.type in wanted:
                            chunk.append(ev.frame)
                    cursor = end
                    if chunk:
                        yield b"".join(chunk)
                        written = self.clock()
                    continue
                now = self.clock()
                if now >= next_check:
                    if not still_allowed():
                        return
                    next_check = now + self.recheck
                wait = min(written + self.heartbeat, next_check) - now
                if wait > 0:
                    # a future of the running loop (not an asyncio.Event: those bind to the
                    # first loop that waits on them, and a hub may outlive a test's loop)
                    fut = asyncio.get_running_loop().create_future()
                    self._waiters.add(fut)
                    try:
                        async with asyncio.timeout(wait):
                            await fut
                    except TimeoutError:
                        pass
                    finally:
                        self._waiters.discard(fut)
                    continue
                yield KEEPALIVE
                written = self.clock()
        finally:
            self.clients -= 1
