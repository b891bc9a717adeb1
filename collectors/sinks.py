"""The shared runner in front of every telemetry sink: buffering, batching and retry live here,
once, so that sinks stay simple (``write(batch)`` raising ``SinkError``)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from eqmon.domain import Reading

from .errors import SinkError

log = logging.getLogger(__name__)


class TelemetrySink(Protocol):
    name: str

    async def write(self, batch: Sequence[Reading]) -> None:
        """Write the whole batch or raise SinkError(retryable=...)."""

    def close(self) -> None: ...


class SinkRunner:
    """Feeds one sink from an in-memory buffer: batches of up to ``batch_size``, flushed at
    least every ``flush_interval`` seconds; retryable failures are retried with capped,
    jittered backoff (honouring Retry-After); the buffer is bounded, and what does not fit is
    counted and logged, never dropped silently."""

    def __init__(
        self,
        sink: TelemetrySink,
        *,
        batch_size: int = 5000,
        flush_interval: float = 1.0,
        max_buffer: int = 1_000_000,
        max_backoff: float = 30.0,
    ) -> None:
        self.sink = sink
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.max_backoff = max_backoff
        self._buffer: deque[Reading] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.written = 0
        self.rejected = 0
        self.overflowed = 0
        self.failing_since: float | None = None
        self.last_error: str | None = None

    def submit(self, readings: Sequence[Reading]) -> None:
        room = self.max_buffer - len(self._buffer)
        if len(readings) > room:
            lost = len(readings) - max(room, 0)
            if self.overflowed == 0:
                log.error("%s sink buffer is full (%d readings): dropping the newest", self.sink.name, self.max_buffer)
            self.overflowed += lost
            readings = readings[: max(room, 0)]
        self._buffer.extend(readings)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    @property
    def depth(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"sink:{self.sink.name}")

    async def stop(self, *, flush_timeout: float = 10.0) -> None:
        """Flush what is buffered (bounded by ``flush_timeout``), then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, flush_timeout)
            except TimeoutError:
                log.error("%s sink: %d readings not written at shutdown", self.sink.name, len(self._buffer))
        self.sink.close()

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            if not self._buffer:
                if self._stopping:
                    return
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                except TimeoutError:
                    pass
                continue
            n = min(self.batch_size, len(self._buffer))
            batch = [self._buffer[i] for i in range(n)]
            try:
                await self.sink.write(batch)
            except SinkError as exc:
                if not exc.retryable:
                    self.rejected += n
                    log.error("%s rejected %d readings: %s", self.sink.name, n, exc)
                    for _ in range(n):
                        self._buffer.popleft()
                    continue
                if self.last_error is None:
                    log.warning("%s write failed, retrying: %s", self.sink.name, exc)
                self.last_error = str(exc)
                if self._stopping:
                    return
                delay = exc.retry_after if exc.retry_after is not None else backoff * random.uniform(0.8, 1.2)
                backoff = min(backoff * 2, self.max_backoff)
                await asyncio.sleep(delay)
                continue
            for _ in range(n):
                self._buffer.popleft()
            self.written += n
            if self.last_error is not None:
                log.info("%s writes recovered", self.sink.name)
                self.last_error = None
            backoff = 0.5
            if len(self._buffer) < self.batch_size and not self._stopping:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                except TimeoutError:
                    pass
