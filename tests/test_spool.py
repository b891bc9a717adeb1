"""The durable spool: order, per-sink cursors, deletion only after every sink confirmed,
reopening, the full policies and the 80 % warning alert."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from collectors.errors import SpoolFull
from collectors.spool import Spool
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
    from eqmon.service import SPOOL_ALERT, Service
    from tests.sitefiles import example_on_free_ports, site

    data = example_on_free_ports()
    data["devices"] = [d for d in data["devices"] if d["protocol"] == "modbus"]
    data["telemetry"] = {"spool": {"max_readings": 100}, "self_metrics_interval": 0}
    s = site(data)
    changes: list[str] = []

    async def main() -> None:
        service = Service(s, data_dir=tmp_path)
        service.engine._on_change = lambda a: changes.append(f"{a.rule_id}:{a.state}")  # type: ignore[method-assign]
        try:
            service.spool.put_sync(readings(0, 79))
            service._check_spool(1.0)
            assert not changes
            service.spool.put_sync(readings(79, 2))
            service._check_spool(2.0)
            service._check_spool(3.0)
            assert changes == [f"{SPOOL_ALERT}:active"]
            alert = service.engine.active()[0]
            assert "telemetry spool filling up, 81% full" in alert.message
            batch = service.spool.read("embedded", 1000)
            assert batch is not None
            service.spool.confirm("embedded", batch.last_seq)
            service._check_spool(4.0)
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
