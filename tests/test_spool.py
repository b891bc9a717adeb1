"""The durable spool: order, per-sink cursors, deletion only after every sink confirmed,
reopening, the full policies and the 80 % warning alert."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from collectors.errors import SpoolFull
from collectors.spool import Spool, TelemetryRow
from eqmon.domain import Quality, Reading


def readings(start: int, n: int, device: str = "fridge-1") -> list[Reading]:
    return [Reading(device, "temperature_c", start + i + 0.25, 1_700_000_000.0 + start + i) for i in range(n)]


def values(spool: Spool, sink: str) -> list[float]:
    batch = spool.read(sink, 10**9)
    return [] if batch is None else [r[2] for r in batch.rows]


def test_order_types_and_per_sink_cursors(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", sinks=["a", "b"])
    try:
        mixed = [
            Reading("d", "f", 1.5, 10.0),
            Reading("d", "i", 3, 10.0),
            Reading("d", "b", True, 10.0),
            Reading("d", "s", "on", 10.0, unit="x"),
            Reading("d", "q", None, 10.0, Quality.BAD),
        ]
        spool.put_sync(mixed)
        for i in range(5):
            spool.put_sync(readings(i * 10, 10))
        assert spool.depth == 55
        batch = spool.read("a", 1)
        assert batch is not None and batch.readings() == mixed  # whole entries; types kept
        assert [type(r.value) for r in batch.readings()] == [float, int, bool, str, type(None)]
        spool.confirm("a", batch.last_seq)
        assert values(spool, "a") == [i + 0.25 for i in range(50)]
        assert spool.depth == 55  # b has confirmed nothing: nothing deleted
        assert spool.pending("a") == 50 and spool.pending("b") == 55
        batch_b = spool.read("b", 12)  # whole entries up to about 12 readings
        assert batch_b is not None and len(batch_b) == 15
        spool.confirm("b", batch_b.last_seq)
        assert spool.depth == 50  # entry 1 confirmed by both (a is further)
        spool.confirm("a", spool.read("a", 10**9).last_seq)  # type: ignore[union-attr]
        assert spool.depth == 40  # b still needs entries 3..6
        assert values(spool, "a") == []
        spool.confirm("b", spool.read("b", 10**9).last_seq)  # type: ignore[union-attr]
        assert spool.depth == 0 and spool.read("b", 10) is None
    finally:
        spool.close()


def test_survives_reopen_and_new_entries_follow_cursors(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, sinks=["a", "b"])
    spool.put_sync(readings(0, 10))
    spool.put_sync(readings(10, 10))
    first = spool.read("a", 5)
    assert first is not None
    spool.confirm("a", first.last_seq)
    spool.close()

    spool = Spool(path, sinks=["a", "b"])
    try:
        assert spool.depth == 20
        assert values(spool, "a") == [i + 0.25 for i in range(10, 20)]
        assert values(spool, "b") == [i + 0.25 for i in range(20)]
        for s in ("a", "b"):
            spool.confirm(s, spool.read(s, 100).last_seq)  # type: ignore[union-attr]
        assert spool.depth == 0
    finally:
        spool.close()
    # Everything was deleted: new entries must still come after the cursors.
    spool = Spool(path, sinks=["a", "b", "c"])
    try:
        spool.put_sync(readings(100, 3))
        assert values(spool, "a") == values(spool, "b") == values(spool, "c") == [100.25, 101.25, 102.25]
    finally:
        spool.close()


def test_group_commit_of_concurrent_puts(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", sinks=["a"])

    async def main() -> None:
        await asyncio.gather(*(spool.put(readings(i, 1)) for i in range(500)))

    try:
        asyncio.run(main())
        assert spool.depth == 500
        assert spool.commits < 500  # calls waiting together share a commit (one fsync)
        assert sorted(values(spool, "a")) == [i + 0.25 for i in range(500)]
    finally:
        spool.close()


def test_full_policy_reject_is_counted_logged_and_stores_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path / "spool.sqlite", sinks=["a"], max_readings=25)
    try:
        spool.put_sync(readings(0, 20))
        with caplog.at_level(logging.ERROR):
            with pytest.raises(SpoolFull):
                spool.put_sync(readings(20, 10))
            with pytest.raises(SpoolFull):
                spool.put_sync(readings(30, 10))
        assert spool.rejected_full == 20
        assert sum("spool full" in r.message for r in caplog.records) == 1  # logged once
        spool.put_sync(readings(40, 5))  # what fits is still accepted
        assert spool.depth == 25
        spool.confirm("a", spool.read("a", 100).last_seq)  # type: ignore[union-attr]
        spool.put_sync(readings(50, 10))  # room again
        assert values(spool, "a") == [50.25 + i for i in range(10)]
    finally:
        spool.close()


def test_full_policy_drop_oldest(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", sinks=["a"], max_readings=25, full_policy="drop_oldest")
    try:
        for i in range(4):
            spool.put_sync(readings(i * 10, 10))
        assert spool.depth <= 25
        assert spool.dropped_oldest == 20
        assert values(spool, "a") == [i + 0.25 for i in range(20, 40)]
    finally:
        spool.close()


def test_warning_alert_at_80_percent(tmp_path: Path) -> None:
    """The service raises "telemetry spool filling up" through the alert engine at 80 %, and
    resolves it once the sinks caught up."""
    from alerts.links import SPOOL_ALERT
    from eqmon_app.service import Service
    from tests.sitefiles import example_on_free_ports, site

    data = example_on_free_ports()
    data["devices"] = [d for d in data["devices"] if d["protocol"] == "modbus"]
    data["telemetry"] = {"spool": {"max_readings": 100}, "self_metrics_interval": 0}
    s = site(data)
    changes: list[str] = []

    async def main() -> None:
        service = Service(s, data_dir=tmp_path)
        service.engine._on_change = lambda a: changes.append(f"{a.rule_id}:{a.state}")  # type: ignore[method-assign]

        def check_spool(now: float) -> None:  # what the service's housekeeping does each second
            sp = service.spool
            service.links.check_spool(
                now, fill=sp.fill, warn_at=s.telemetry.spool.warn_at, depth=sp.depth, oldest_age=sp.oldest_age(now)
            )

        try:
            service.spool.put_sync(readings(0, 79))
            check_spool(1.0)
            assert not changes
            service.spool.put_sync(readings(79, 2))
            check_spool(2.0)
            check_spool(3.0)
            assert changes == [f"{SPOOL_ALERT}:active"]
            alert = service.engine.active()[0]
            assert "telemetry spool filling up, 81% full" in alert.message
            batch = service.spool.read("embedded", 1000)
            assert batch is not None
            service.spool.confirm("embedded", batch.last_seq)
            check_spool(4.0)
            assert changes == [f"{SPOOL_ALERT}:active", f"{SPOOL_ALERT}:resolved"]
        finally:
            service.spool.close()
            service.dead_letters.close()
            assert service.embedded is not None
            service.embedded.close()
            service.modbus.close()
            service.alert_store.close()


    asyncio.run(main())


def test_put_from_many_threads(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", sinks=["a"])
    try:
        threads = [threading.Thread(target=lambda k=k: [spool.put_sync(readings(k * 100 + j, 1)) for j in range(50)]) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert spool.depth == 400 and len(values(spool, "a")) == 400
    finally:
        spool.close()


def test_prepared_text_is_the_bytes_formatted_from_the_json(tmp_path: Path) -> None:
    """The spool stores a sink's prepared form (the InfluxDB line protocol) beside the JSON; a
    prepared entry is exactly what the JSON path formats from the same entry, and whatever the
    preparer cannot guarantee that for is left to the JSON path."""
    from collectors.influx import InfluxSink, LineFormatter
    from eqmon.config import InfluxDB

    devices = {"d": ("kind", "Room 1"), "e": ("kind", ""), "q\"x": ("k,ind", "a=b")}
    sink = InfluxSink(InfluxDB(url="http://127.0.0.1:1", org="o", bucket="b"), devices)
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, sinks=["influxdb", "embedded"])

    class F(float):
        pass

    try:
        spool.put_sync([Reading("d", "f", 1.5, 10.0)])  # before the preparer: JSON only
        assert spool.add_preparer("influxdb", sink.prepare_key, sink.prepare)
        assert not spool.add_preparer("other", "another-format", sink.prepare)
        mixed = [
            Reading("d", "f", 1.5, 10.0),
            Reading("d", "f", 0.1 + 0.2, 10.0001),
            Reading("e", "i", 3, 11),  # int value, int timestamp
            Reading("e", "b", True, 10.5),
            Reading("q\"x", "s p", 'on "x"\\', 10.0, unit="x"),
            Reading("d", "q", None, 10.0, Quality.BAD),
            Reading("d", "f", 7.25, 12.0, Quality.STALE),
            Reading("d", "n", float("nan"), 13.0),
            Reading("d", "big", 2**60 + 1, 1_700_000_000.123456),
        ]
        spool.put_sync(mixed)
        spool.put_sync([Reading("d", "f", 1.0, 10.0), Reading("gone", "f", 1.0, 10.0)])  # unknown device
        spool.put_sync([Reading("d", "f", F(2.5), 10.0)])  # JSON would turn F into float
        spool.put_sync([Reading("d", "f", 2.5, 10.0)])
        assert spool.prepared == 2
        batch = spool.read("influxdb", 10**9)
        assert batch is not None and len(batch) == 14 and batch.counts == [1, 9, 2, 1, 1]
        assert batch.prepared is not None and [p is not None for p in batch.prepared] == [False, True, False, False, True]
        fmt = LineFormatter(devices)
        for i, prep in enumerate(batch.prepared):
            lines, unknown = fmt.lines(batch.entry_rows(i))
            if prep is not None:
                assert not unknown and prep == "\n".join(lines)
        assert batch.prepared[1] is not None and batch.prepared[1].count("\n") == 8
        assert list(map(repr, batch.readings()[1:10])) == list(map(repr, mixed))  # the JSON is the record (nan != nan)
        embedded = spool.read("embedded", 10**9)
        assert embedded is not None and embedded.prepared is None and embedded.rows == batch.rows
        # typed rows: named fields, the quality as its plain string
        row = embedded.rows[5]
        assert isinstance(row, TelemetryRow) and type(row.quality) is str
        assert (row.device_id, row.metric, row.value, row.ts, row.quality, row.unit) == ("q\"x", "s p", 'on "x"\\', 10.0, "good", "x")
    finally:
        spool.close()
    # Reopened under another device map: the stored texts are not used.
    other = InfluxSink(InfluxDB(url="http://127.0.0.1:1", org="o", bucket="b"), {"d": ("kind", "Room 2")})
    assert other.prepare_key != sink.prepare_key
    spool = Spool(path, sinks=["influxdb", "embedded"])
    try:
        assert spool.add_preparer("influxdb", other.prepare_key, other.prepare)
        batch = spool.read("influxdb", 10**9)
        assert batch is not None and batch.prepared == [None] * 5
    finally:
        spool.close()


def test_spool_file_of_an_older_eqmon_is_read(tmp_path: Path) -> None:
    import json
    import sqlite3

    path = tmp_path / "spool.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE entries (seq INTEGER PRIMARY KEY, accepted_at REAL NOT NULL, n INTEGER NOT NULL, body TEXT NOT NULL);"
        "CREATE TABLE cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL);"
        "INSERT INTO cursors VALUES ('a', 0);"
    )
    db.execute("INSERT INTO entries VALUES (1, 0, 1, ?)", (json.dumps([["d", "f", 1.25, 10.0, "good", ""]]),))
    db.commit()
    db.close()
    spool = Spool(path, sinks=["a"])
    try:
        assert spool.add_preparer("a", "k", lambda rows: "x")
        spool.put_sync(readings(0, 2))
        batch = spool.read("a", 100)
        assert batch is not None and batch.prepared == [None, "x"] and values(spool, "a") == [1.25, 0.25, 1.25]
        spool.confirm("a", batch.last_seq)
        assert spool.depth == 0
    finally:
        spool.close()


def test_confirm_survives_reopen(tmp_path: Path) -> None:
    """confirm() commits without an fsync of its own (synchronous=NORMAL), puts with one."""
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, sinks=["a"])
    spool.put_sync(readings(0, 3))
    spool.put_sync(readings(3, 3))
    spool.confirm("a", spool.read("a", 1).last_seq)  # type: ignore[union-attr]
    assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again for puts
    spool.close()
    spool = Spool(path, sinks=["a"])
    try:
        assert spool.depth == 3 and values(spool, "a") == [3.25, 4.25, 5.25]
    finally:
        spool.close()
