"""The sink protocol as SinkRunner uses it: typed batches (``SpoolBatch`` of ``TelemetryRow``),
the prepared form as the explicit ``PreparedSink`` protocol (``write_prepared`` gets the
batches whose every entry was prepared, ``write`` the others), failures of any kind retried
with the shared ``Backoff`` (±20 %), Retry-After honoured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from collectors.embedded import EmbeddedStore
from collectors.errors import SinkError
from collectors.influx import InfluxSink
from collectors.sinks import PreparedSink, SinkRunner, TelemetrySink
from collectors.spool import Spool, SpoolBatch, StoredRow, TelemetryRow
from eqmon.backoff import Backoff
from eqmon.config import InfluxDB
from eqmon.domain import Quality, Reading


class PlainSink:
    name = "plain"

    def __init__(self) -> None:
        self.batches: list[SpoolBatch] = []
        self.fail: list[BaseException] = []  # raised by the next writes, in order
        self.calls: list[float] = []

    async def write(self, batch: SpoolBatch) -> None:
        self.calls.append(time.monotonic())
        if self.fail:
            raise self.fail.pop(0)
        self.batches.append(batch)

    def close(self) -> None:
        pass


class TextSink(PlainSink):
    """Prepares ``device:metric=value`` lines; declines device ``no``."""

    name = "text"
    prepare_key = "text-v1"

    def __init__(self) -> None:
        super().__init__()
        self.prepared_writes: list[tuple[SpoolBatch, list[str]]] = []

    def prepare(self, rows: Sequence[StoredRow]) -> str | None:
        assert all(type(r) is tuple and len(r) == 6 for r in rows)  # plain tuples, as encoded
        if any(dev == "no" for dev, *_ in rows):
            return None
        return "\n".join(f"{dev}:{metric}={value}" for dev, metric, value, *_ in rows)

    async def write_prepared(self, batch: SpoolBatch, texts: Sequence[str]) -> None:
        self.prepared_writes.append((batch, list(texts)))


def test_protocols_are_recognised(tmp_path: Path) -> None:
    influx = InfluxSink(InfluxDB(url="http://127.0.0.1:1", org="o", bucket="b"), {"d": ("k", "")})
    store = EmbeddedStore(tmp_path / "t.sqlite", retention=86400)
    try:
        assert isinstance(influx, PreparedSink) and isinstance(TextSink(), PreparedSink)
        assert not isinstance(store, PreparedSink) and not isinstance(PlainSink(), PreparedSink)
        sinks: list[TelemetrySink] = [influx, store, PlainSink()]  # (what a type checker checks)
        assert len(sinks) == 3
    finally:
        influx.close()
        store.close()


def test_prepared_batches_go_to_write_prepared_the_others_to_write(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", sinks=["text"])
    sink = TextSink()

    async def drain(runner: SinkRunner) -> None:
        runner.start()
        while spool.depth:
            await asyncio.sleep(0.01)
        await runner.stop()

    async def main() -> None:
        spool.put_sync([Reading("a", "t", 1.5, 10.0)])  # before the runner: no prepared text
        r1 = SinkRunner(sink, spool, flush_interval=0.01)
        spool.put_sync([Reading("a", "t", 2.5, 11.0), Reading("b", "door", True, 11.0)])
        await drain(r1)  # a mixed batch: write()
        assert len(sink.batches) == 1 and not sink.prepared_writes
        batch = sink.batches[0]
        assert batch.prepared == [None, "a:t=2.5\nb:door=True"]
        assert batch.rows == [("a", "t", 1.5, 10.0, "good", ""), ("a", "t", 2.5, 11.0, "good", ""),
                              ("b", "door", True, 11.0, "good", "")]
        assert all(isinstance(r, TelemetryRow) for r in batch.rows) and batch.rows[2].metric == "door"

        r2 = SinkRunner(sink, spool, flush_interval=0.01)
        spool.put_sync([Reading("a", "t", 3.5, 12.0), Reading("a", "t", None, 13.0, Quality.BAD)])
        spool.put_sync([Reading("c", "t", 4.5, 14.0)])
        await drain(r2)  # every entry prepared: write_prepared()
        assert len(sink.batches) == 1 and len(sink.prepared_writes) == 1
        batch, texts = sink.prepared_writes[0]
        assert texts == ["a:t=3.5\na:t=None", "c:t=4.5"] and batch.counts == [2, 1]
        assert batch.rows[1].quality == "bad" and batch.readings()[1].quality is Quality.BAD

        r3 = SinkRunner(sink, spool, flush_interval=0.01)
        spool.put_sync([Reading("no", "t", 5.5, 15.0)])  # declined by prepare(): write()
        await drain(r3)
        assert len(sink.batches) == 2 and sink.batches[1].prepared == [None]

    try:
        asyncio.run(main())
    finally:
        spool.close()


def test_plain_sink_reads_the_json_and_a_failure_of_any_kind_is_retried(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", sinks=["plain"])
    sink = PlainSink()
    sink.fail = [RuntimeError("a bug"), SinkError("down", retryable=True), SinkError("slow down", retryable=True, retry_after=0.3)]

    async def main() -> SinkRunner:
        runner = SinkRunner(sink, spool, flush_interval=0.01, min_backoff=0.1, max_backoff=0.15)
        spool.put_sync([Reading("a", "t", 1.5, 10.0)])
        runner.start()
        deadline = time.monotonic() + 10
        while spool.depth and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await runner.stop()
        return runner

    try:
        runner = asyncio.run(main())
    finally:
        spool.close()
    assert runner.written == 1 and runner.failures == 3 and runner.failing_since is None
    assert len(sink.batches) == 1 and sink.batches[0].prepared is None
    gaps = [b - a for a, b in zip(sink.calls, sink.calls[1:], strict=False)]
    assert len(gaps) == 3
    assert 0.08 <= gaps[0] < 0.5  # 0.1 s ± 20 %
    assert 0.12 <= gaps[1] < 0.5  # doubled, capped at 0.15 s, ± 20 %
    assert gaps[2] >= 0.3  # Retry-After


def test_backoff_delays_and_far_attempts() -> None:
    b = Backoff(0.5, 30.0, jitter=(0.8, 1.2))
    got = [b.next() for _ in range(9)]
    for d, base in zip(got, [0.5, 1, 2, 4, 8, 16, 30, 30, 30], strict=True):
        assert 0.8 * base <= d <= 1.2 * base
    b.reset()
    assert b.current == 0.5
    # the stateless form long into an outage (it raised OverflowError from 2.0**1024 on)
    assert 24.0 <= b.delay(5000) <= 36.0
    wire = Backoff(0.1, 5.0, jitter=(1.0, 1.0))  # the simulators' publisher: no jitter
    assert [wire.next() for _ in range(8)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
