"""Embedded store rollups and history queries, and the telemetry API routes (/metrics,
history, history/aggregate, dead letters) of a running service."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from collectors.embedded import EmbeddedStore
from collectors.spool import SpoolBatch
from eqmon.domain import Reading
from eqmon_app.service import Service
from tests.sitefiles import example_on_free_ports, site

T0 = 1_700_000_000.0  # a multiple of 3600 minus 800 s: windows are cut below


def rows(readings: list[Reading]) -> list[list[object]]:
    return [[r.device_id, r.metric, r.value, r.ts, str(r.quality), r.unit] for r in readings]


def test_rollups_are_incremental_and_idempotent(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "t.sqlite", retention=86400 * 365)
    rs = [Reading("fridge-1", "temperature_c", float(i % 7), T0 + i * 10) for i in range(720)]  # 2 h
    rs.append(Reading("fridge-1", "temperature_c", None, T0 + 3.0, quality="bad"))  # type: ignore[arg-type]

    async def main() -> None:
        for i in range(0, len(rs), 50):  # many small batches: rollups updated incrementally
            await store.write(SpoolBatch(i, i, rows(rs[i : i + 50])))  # type: ignore[arg-type]
        await store.write(SpoolBatch(0, 0, rows(rs[100:300])))  # re-sent: no double counting  # type: ignore[arg-type]

    asyncio.run(main())
    try:
        assert store.count() == 721 and store.duplicates == 200
        good = [r for r in rs if r.value is not None]
        for window, secs in (("1m", 60), ("1h", 3600)):
            got = store.aggregate("fridge-1", "temperature_c", T0, T0 + 7200, window)
            expect: dict[float, list[float]] = {}
            for r in good:
                expect.setdefault(float(int(r.ts // secs) * secs), []).append(float(r.value))  # type: ignore[arg-type]
            assert [g["ts"] for g in got] == sorted(expect)
            for g in got:
                vals = expect[g["ts"]]
                assert (g["min"], g["max"], g["count"]) == (min(vals), max(vals), len(vals))
                assert abs(g["mean"] - sum(vals) / len(vals)) < 1e-9
        raw = store.history("fridge-1", "temperature_c", T0, T0 + 25)
        assert raw == [(T0, 0.0, "good"), (T0 + 3.0, None, "bad"), (T0 + 10, 1.0, "good"), (T0 + 20, 2.0, "good")]
        # retention: raw readings go, rollups stay (longer retention)
        store.retention = 3600
        asyncio.run(store.prune(T0 + 7200))
        assert store.history("fridge-1", "temperature_c", T0, T0 + 3599) == []
        assert store.aggregate("fridge-1", "temperature_c", T0, T0 + 3599, "1m")
    finally:
        store.close()


def test_api_history_aggregate_metrics_and_dead_letters(tmp_path: Path) -> None:
    data = example_on_free_ports()
    data["devices"] = [d for d in data["devices"] if d["protocol"] == "modbus"]  # no simulators: offline
    s = site(data)

    async def main() -> tuple[dict, dict, str, dict]:  # type: ignore[type-arg]
        service = Service(s, data_dir=tmp_path)
        await service.start()
        try:
            now = time.time()
            readings = [Reading("fridge-1", "temperature_c", 4.0 + i % 3, now - 300 + i) for i in range(240)]
            for i in range(0, 240, 10):
                await service.accept(readings[i : i + 10])
            deadline = time.monotonic() + 10
            while service.sinks[0].written < 240 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=service.api_url) as api:
                q = {"metric": "temperature_c", "since": now - 400, "until": now}
                hist = (await api.get("/api/v1/devices/fridge-1/history", params=q)).json()
                agg = (await api.get("/api/v1/devices/fridge-1/history/aggregate", params={**q, "window": "1m"})).json()
                metrics = (await api.get("/metrics")).text
                dead = (await api.get("/api/v1/telemetry/dead-letters")).json()
                assert (await api.get("/api/v1/devices/nope/history/aggregate", params=q)).status_code == 404
                bad = await api.get("/api/v1/devices/fridge-1/history/aggregate", params={**q, "window": "5m"})
                assert bad.status_code == 422
        finally:
            await service.stop()
        return hist, agg, metrics, dead

    hist, agg, metrics, dead = asyncio.run(main())
    assert len(hist["points"]) == 240
    assert sum(p["count"] for p in agg["points"]) == 240
    assert all(p["min"] >= 4.0 and p["max"] <= 6.0 for p in agg["points"])
    assert "# TYPE eqmon_readings_accepted_total counter" in metrics
    assert "eqmon_readings_accepted_total 240.0" in metrics
    assert 'eqmon_readings_written_total{sink="embedded"} 240.0' in metrics
    for name in ("eqmon_spool_depth_readings", "eqmon_spool_oldest_age_seconds", "eqmon_readings_dead_lettered_total",
                 "eqmon_sink_write_seconds_sum", "eqmon_accept_seconds_count"):
        assert name in metrics
    assert dead == {"count": 0, "items": []}
