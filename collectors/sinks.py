"""The runner in front of every telemetry sink: it reads the durable spool in order from the
sink's own cursor, hands batches to the sink, and confirms them in the spool only once the sink
has written them. Retry with capped, jittered backoff (honouring Retry-After) lives here, once,
so that sinks stay simple (``write(batch)`` raising ``SinkError``).

Nothing is dropped here: a batch that fails is retried until it is written. The only way points
leave the path without reaching a sink is the sink's own dead-letter store (points the server
rejects as malformed, see collectors/influx.py), and those are counted and listable.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Protocol

from .errors import SinkError
from .spool import Spool, SpoolBatch

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 300.0  # a server asking for more than 5 min is asked again after 5 min


class TelemetrySink(Protocol):
    name: str

    async def write(self, batch: SpoolBatch) -> None:
        """Write the whole batch (or dead-letter what the server rejects as bad) or raise
        SinkError(retryable=...). Must be idempotent: the same batch may come again."""

    def close(self) -> None: ...


class SinkRunner:
    """Feeds one sink from the spool: batches of about ``batch_size`` readings, at least every
    ``flush_interval`` seconds when there is anything; failures are retried with capped,
    jittered exponential backoff, or after the server's Retry-After."""

    def __init__(
        self,
        sink: TelemetrySink,
        spool: Spool,
        *,
        batch_size: int = 5000,
        flush_interval: float = 1.0,
        max_backoff: float = 30.0,
        min_backoff: float = 0.5,
    ) -> None:
        self.sink = sink
        self.spool = spool
        # A sink that can prepare its form at accept time (collectors/spool.py "Prepared form").
        prepare = getattr(sink, "prepare", None)
        key = getattr(sink, "prepare_key", None)
        if prepare is not None and key is not None:
            spool.add_preparer(sink.name, key, prepare)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_backoff = max_backoff
        self.min_backoff = min_backoff
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._new = 0
        self.written = 0
        self.batches = 0
        self.failures = 0
        self.write_seconds = 0.0  # sum of successful write latencies
        self.failing_since: float | None = None
        self.last_error: str | None = None

    @property
    def name(self) -> str:
        return self.sink.name

    def notify(self, n: int) -> None:
        """``n`` new readings are in the spool: wake up early when a batch is full."""
        self._new += n
        if self._new >= self.batch_size:
            self._wake.set()

    @property
    def depth(self) -> int:
        """Readings this sink has not confirmed yet."""
        return self.spool.pending(self.sink.name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"sink:{self.sink.name}")

    async def stop(self, *, flush_timeout: float = 10.0) -> None:
        """Write what is pending (bounded by ``flush_timeout``; the rest stays in the spool for
        the next start), then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, flush_timeout)
            except TimeoutError:
                log.warning("%s sink: not up to date at shutdown; the spool keeps the rest", self.sink.name)
        self.sink.close()

    async def _wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

    async def _run(self) -> None:
        backoff = self.min_backoff
        name = self.sink.name
        ahead: asyncio.Future[SpoolBatch | None] | None = None
        while True:
            self._new = 0
            self._wake.clear()
            stopping = self._stopping  # as of before the read: a later stop() reads once more
            batch = None
            if ahead is not None:
                batch = await ahead  # read while the previous batch was being written
                ahead = None
            if batch is None:  # (an empty read-ahead may predate the last commits: read again)
                batch = await asyncio.to_thread(self.spool.read, name, self.batch_size)
            if batch is None:
                if stopping:
                    return
                await self._wait(self.flush_interval)
                continue
            t0 = time.perf_counter()
            if len(batch) >= self.batch_size:  # more is likely waiting: read it meanwhile
                ahead = asyncio.ensure_future(asyncio.to_thread(self.spool.read, name, self.batch_size, batch.last_seq))
            try:
                await self.sink.write(batch)
            except SinkError as exc:
                if ahead is not None:  # the failed batch comes again first
                    await asyncio.gather(ahead, return_exceptions=True)
                    ahead = None
                self.failures += 1
                if self.failing_since is None:
                    self.failing_since = time.time()
                    (log.warning if exc.retryable else log.error)(
                        "%s write failed, retrying until it succeeds (the spool keeps the data): %s", name, exc
                    )
                self.last_error = str(exc)
                if self._stopping:
                    return
                if exc.retry_after is not None:
                    delay = min(exc.retry_after, MAX_RETRY_AFTER)
                else:
                    delay = backoff * random.uniform(0.8, 1.2)
                    backoff = min(backoff * 2, self.max_backoff)
                await asyncio.sleep(delay)
                continue
            self.write_seconds += time.perf_counter() - t0
            await asyncio.to_thread(self.spool.confirm, name, batch.last_seq)
            self.written += len(batch)
            self.batches += 1
            if self.failing_since is not None:
                log.info("%s writes recovered after %.0f s", name, time.time() - self.failing_since)
                self.failing_since = None
                self.last_error = None
            backoff = self.min_backoff
            if len(batch) < self.batch_size and not self._stopping:
                await self._wait(self.flush_interval)
