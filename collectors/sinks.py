"""The runner in front of every telemetry sink: it reads the durable spool in order from the
sink's own cursor, hands batches to the sink, and confirms them in the spool only once the sink
has written them. Retry with capped, jittered backoff (honouring Retry-After) lives here, once,
so that sinks stay simple (``write(batch)`` raising ``SinkError``).

The sink protocol: a :class:`TelemetrySink` has a ``name`` (its spool cursor), ``write(batch)``
of a :class:`~collectors.spool.SpoolBatch` (typed rows: :class:`~collectors.spool.TelemetryRow`)
and ``close()``. A sink that can make its wire form of an entry once, when the readings are
accepted, is also a :class:`PreparedSink` (``prepare_key``, ``prepare(rows)``,
``write_prepared(batch, texts)``): the runner registers its ``prepare`` with the spool, whose
writer thread then stores each entry's text beside its JSON (collectors/spool.py "Prepared
form"), and hands it batches whose every entry has its text through ``write_prepared``; any other
batch (older entries, declined ones) goes through ``write``.

Nothing is dropped here: a batch that fails is retried until it is written. The only way points
leave the path without reaching a sink is the sink's own dead-letter store (points the server
rejects as malformed, see collectors/influx.py), and those are counted and listable.

Stopping: ``stop()`` wakes a runner waiting in back-off (or after a Retry-After) at once, gives
what is pending one attempt (batch after batch while the sink takes them; the first failure
ends it), and returns; what was not written stays in the spool for the next start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol, cast, runtime_checkable

from eqmon.backoff import Backoff

from .errors import SinkError
from .spool import Spool, SpoolBatch, StoredRow

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 300.0  # a server asking for more than 5 min is asked again after 5 min
JITTER = (0.8, 1.2)  # ±20 % on the retry back-off


class TelemetrySink(Protocol):
    name: str

    async def write(self, batch: SpoolBatch) -> None:
        """Write the whole batch (or dead-letter what the server rejects as bad) or raise
        SinkError(retryable=...). Must be idempotent: the same batch may come again."""

    def close(self) -> None: ...


@runtime_checkable
class PreparedSink(TelemetrySink, Protocol):
    """A sink whose form of a spool entry is made when the readings are accepted (in the spool's
    writer thread), so that writing is sending stored texts (collectors/spool.py "Prepared
    form"). ``SinkRunner`` recognises one with ``isinstance``."""

    prepare_key: str
    """Identity of the preparer's output (format version, configuration): texts stored under
    another key are not given to ``write_prepared``."""

    def prepare(self, rows: Sequence[StoredRow]) -> str | None:
        """The text of one entry, from its rows as the spool encodes them (plain tuples in
        ``TelemetryRow``'s order); runs in the spool's writer thread (no shared mutable state
        with ``write``). Exactly what ``write`` would make of the same rows decoded from the
        JSON; None to decline (the entry is then written with ``write``)."""

    async def write_prepared(self, batch: SpoolBatch, texts: Sequence[str]) -> None:
        """Like ``write(batch)``, for a batch whose every entry has its prepared text
        (``texts[i]`` for entry ``i``, the same as ``batch.prepared``)."""


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
        self._prepared: PreparedSink | None = None
        if isinstance(sink, PreparedSink) and spool.add_preparer(sink.name, sink.prepare_key, sink.prepare):
            self._prepared = sink
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_backoff = max_backoff
        self.min_backoff = min_backoff
        self._backoff = Backoff(min_backoff, max_backoff, jitter=JITTER)
        self._wake = asyncio.Event()  # new readings (a full batch) or stop()
        self._stop = asyncio.Event()  # stop(): also ends a back-off wait
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
    def running(self) -> bool:
        """Started and its loop has not ended (stop(), or a bug: logged)."""
        return self._task is not None and not self._task.done()

    @property
    def depth(self) -> int:
        """Readings this sink has not confirmed yet."""
        return self.spool.pending(self.sink.name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"sink:{self.sink.name}")

    async def stop(self, *, flush_timeout: float = 10.0) -> None:
        """Write what is pending, one attempt (bounded by ``flush_timeout``; the rest stays in the
        spool for the next start), then stop. A back-off or Retry-After wait ends at once."""
        self._stopping = True
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, flush_timeout)
            except TimeoutError:
                log.warning("%s sink: not up to date at shutdown; the spool keeps the rest", self.sink.name)
            except Exception:
                log.exception("%s sink runner failed; the spool keeps what it did not write", self.sink.name)
        # (off the loop: a sink may wait for a write still in its thread, up to a request timeout)
        await asyncio.to_thread(self.sink.close)

    async def _wait(self, event: asyncio.Event, timeout: float) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass

    async def _write(self, batch: SpoolBatch) -> None:
        texts = batch.prepared
        if self._prepared is not None and texts is not None and None not in texts:
            await self._prepared.write_prepared(batch, cast("list[str]", texts))
        else:
            await self.sink.write(batch)

    async def _run(self) -> None:
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
                await self._wait(self._wake, self.flush_interval)
                continue
            t0 = time.perf_counter()
            if len(batch) >= self.batch_size:  # more is likely waiting: read it meanwhile
                ahead = asyncio.ensure_future(asyncio.to_thread(self.spool.read, name, self.batch_size, batch.last_seq))
            try:
                await self._write(batch)
            except Exception as exc:
                if ahead is not None:  # the failed batch comes again first
                    await asyncio.gather(ahead, return_exceptions=True)
                    ahead = None
                self.failures += 1
                # not a SinkError: a bug, a local disk full…: retried too
                err = exc if isinstance(exc, SinkError) else SinkError(f"{type(exc).__name__}: {exc}", retryable=True)
                unexpected = err is not exc
                if self.failing_since is None:
                    self.failing_since = time.time()
                    msg = "%s write failed, retrying until it succeeds (the spool keeps the data): %s"
                    if unexpected:
                        log.exception(msg, name, err)  # with the traceback
                    else:
                        (log.warning if err.retryable else log.error)(msg, name, err)
                self.last_error = str(err)
                if self._stopping:  # that was the attempt stop() allows
                    return
                if err.retry_after is not None:
                    delay = min(err.retry_after, MAX_RETRY_AFTER)
                else:
                    delay = self._backoff.next()
                await self._wait(self._stop, delay)  # stop() ends the wait: one more attempt
                continue
            self.write_seconds += time.perf_counter() - t0
            await asyncio.to_thread(self.spool.confirm, name, batch.last_seq)
            self.written += len(batch)
            self.batches += 1
            if self.failing_since is not None:
                log.info("%s writes recovered after %.0f s", name, time.time() - self.failing_since)
                self.failing_since = None
                self.last_error = None
            self._backoff.reset()
            if len(batch) < self.batch_size and not self._stopping:
                await self._wait(self._wake, self.flush_interval)
