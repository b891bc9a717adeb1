"""Embedded store rollups and history queries, and the telemetry API routes (/metrics,
history, history/aggregate, dead letters) of a running service; the notification dispatcher's
and the alert engine's series in /metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from collectors.embedded import EmbeddedStore
from collectors.spool import SpoolBatch
from eqmon.domain import Reading, Severity
from eqmon_app.service import Service
from simulators.harness import wait_until
from simulators.receivers import WebhookReceiver
from simulators.servers import free_port
from tests.sitefiles import example_on_free_ports, site
from tests.test_api_support import api_client

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
    # no eqmon_internal points: the first housekeeping pass (1 s after start) would write them
    # to the same sink, and the counts below are of this test's 240 readings only
    data["telemetry"]["self_metrics_interval"] = 0
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
            async with api_client(service) as api:
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


def test_metrics_count_notifications_per_channel_and_open_alerts_by_severity(tmp_path: Path) -> None:
    """Four channels that end differently (accepted, refused for good, unreachable, a log line)
    and alerts of every severity, one of them resolved, on a fake clock."""
    now = [T0]
    hook, gone = WebhookReceiver(), WebhookReceiver(statuses=[404])
    data = {
        "site": {"name": "St Test"},
        "devices": [{"id": "fridge-1", "kind": "medication_fridge", "protocol": "modbus", "host": "127.0.0.1",
                     "port": free_port(), "interval": "1h", "registers": [{"name": "temperature_c", "address": 0}]}],
        "api": {"host": "127.0.0.1", "port": 0},
        "notifications": {
            "channels": [
                {"id": "hook", "type": "webhook", "url": hook.url, "timeout": "2s"},
                {"id": "down", "type": "webhook", "url": f"http://127.0.0.1:{free_port()}/nobody", "timeout": "2s"},
                {"id": "gone", "type": "webhook", "url": gone.url, "timeout": "2s"},
                {"id": "log", "type": "log"},
            ],
            "routes": [
                {"severity": ["critical"], "channels": ["hook", "log"]},
                {"severity": ["warning"], "channels": ["down"], "resolved": False},
                {"severity": ["info"], "channels": ["gone"]},
            ],
            # a failed row is tried again only in an hour: it stays pending during the test
            "retry": {"initial": "1h", "max": "2h", "permanent_attempts": 1},
            "poll_interval": "0.1s",
        },
    }  # fmt: skip

    async def main() -> str:
        service = Service(site(data), data_dir=tmp_path, clock=lambda: now[0])
        service.dispatcher.stats_every = 0.0  # count the outbox's pending rows every round
        await service.start()
        try:
            e, d = service.engine, service.dispatcher
            e.raise_system("test-critical", Severity.CRITICAL, "CRITICAL test", now[0])
            e.raise_system("test-warning-1", Severity.WARNING, "WARNING one", now[0])
            e.raise_system("test-warning-2", Severity.WARNING, "WARNING two", now[0])
            e.raise_system("test-info", Severity.INFO, "INFO test", now[0])
            e.resolve_system("test-warning-2", now[0])  # no longer open (its notice is not routed)
            await wait_until(lambda: d.sent == 2 and d.failed_attempts == 3 and d.given_up == 1, 10, "every row tried")
            now[0] += 100.0  # the warnings' rows were queued 100 s ago and wait for their retry
            await wait_until(lambda: d.pending == 2, 5, "the pending rows counted")
            async with api_client(service) as api:
                return (await api.get("/metrics")).text
        finally:
            await service.stop()

    with hook, gone:
        metrics = asyncio.run(main())
    expected = {
        "eqmon_notifications_sent_total": {"hook": 1, "log": 1, "down": 0, "gone": 0},
        "eqmon_notification_attempts_failed_total": {"hook": 0, "log": 0, "down": 2, "gone": 1},
        "eqmon_notifications_given_up_total": {"hook": 0, "log": 0, "down": 0, "gone": 1},
    }
    for name, per_channel in expected.items():
        for channel, n in per_channel.items():
            assert f'{name}{{channel="{channel}"}} {float(n)!r}' in metrics, (name, channel)
    assert "\neqmon_notification_outbox_pending 2.0\n" in metrics
    assert "\neqmon_notification_outbox_oldest_pending_age_seconds 100.0\n" in metrics
    for severity in ("critical", "warning", "info"):
        assert f'eqmon_alerts_open{{severity="{severity}"}} 1.0' in metrics, severity
