"""One alert per outage of a link eqmon depends on — the MQTT broker, a telemetry sink — instead
of one per device, resolved when the link is back. Real Mosquitto and VictoriaMetrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import eqmon_app.service
from eqmon.config import Site
from eqmon_app.service import Service
from simulators import SimulatedSite
from simulators.harness import wait_until
from simulators.servers import MosquittoServer, VictoriaMetricsServer, free_port

pytestmark = pytest.mark.integration


def open_rules(service: Service) -> list[tuple[str, str]]:
    return sorted((a.rule_id, a.device_id) for a in service.engine.active())


def test_broker_outage_is_one_alert_not_one_per_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eqmon_app.service, "BROKER_GRACE", 1.0)
    broker = MosquittoServer().start()
    shelf = {"item": "gloves", "unit_weight_g": 5.6, "capacity": 600, "par": 500, "heartbeat_s": 0.3,
             "first_publish_s": 0.1}  # fmt: skip
    site = Site.model_validate({
        "site": {"name": "links"},
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": f"eqmon-links-{free_port()}"},
        "devices": [
            {"id": f"shelf-{i}", "kind": "smart_shelf", "protocol": "mqtt", "topic": f"t/shelf-{i}",
             "fields": [{"metric": "count"}], "stale_after": "2s",
             "simulator": {"model": "smart_shelf", "seed": i, "params": shelf}}
            for i in range(3)
        ],
        "api": {"port": 0},
    })  # fmt: skip

    async def main() -> list[list[tuple[str, str]]]:
        service = Service(site, data_dir=tmp_path)
        sim = SimulatedSite(site, mqtt_host="127.0.0.1", mqtt_port=broker.port)
        await service.start()
        await sim.start()
        seen = []
        try:
            await wait_until(lambda: all(h.state == "online" for h in service.health.values()), 15, "online")
            broker.stop()
            await asyncio.sleep(4)  # past the grace and past every shelf's stale_after
            seen.append(open_rules(service))
            (link,) = service.engine.active()
            assert "(3 devices: shelf-0, shelf-1, shelf-2) — check the broker" in link.message, link.message
            broker.start()
            assert service.mqtt is not None
            await wait_until(lambda: service.mqtt.connected, 40, "reconnected")  # type: ignore[union-attr]
            await asyncio.sleep(1.5)
            seen.append(open_rules(service))
        finally:
            await sim.stop()
            await service.stop()
        return seen

    try:
        during, after = asyncio.run(main())
    finally:
        broker.close()
    assert during == [("mqtt-broker-unreachable", "eqmon")]  # and no "device offline" per shelf
    assert after == []


def test_sink_outage_raises_one_alert_resolved_when_writes_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eqmon_app.service, "SINK_FAILING_GRACE", 1.0)
    port = free_port()
    site = Site.model_validate({
        "site": {"name": "links"},
        "devices": [{"id": "fridge-1", "kind": "medication_refrigerator", "protocol": "modbus",
                     "host": "127.0.0.1", "port": free_port(), "interval": "1s",
                     "registers": [{"name": "temperature_c", "address": 0, "type": "input", "data_type": "int16", "scale": 0.1}],
                     "simulator": {"model": "medication_refrigerator", "seed": 1}}],
        "telemetry": {"influxdb": {"url": f"http://127.0.0.1:{port}", "org": "o", "bucket": "b",
                                   "flush_interval": "200ms"}},
        "api": {"port": 0},
    })  # fmt: skip
    vm = VictoriaMetricsServer(port=port, dedup=True)

    async def main() -> list[list[tuple[str, str]]]:
        service = Service(site, data_dir=tmp_path)
        sim = SimulatedSite(site, mqtt_host=None, mqtt_port=None)
        await sim.start()
        await service.start()
        seen = []
        try:
            await asyncio.sleep(3)  # nothing listens on the InfluxDB port
            seen.append(open_rules(service))
            await asyncio.to_thread(vm.start)
            influx = next(s for s in service.sinks if s.name == "influxdb")
            await wait_until(lambda: influx.failing_since is None, 60, "writes recovered")
            await asyncio.sleep(1.5)
            seen.append(open_rules(service))
        finally:
            await service.stop()
            await sim.stop()
        return seen

    try:
        during, after = asyncio.run(main())
        exported = vm.export('{__name__="medication_refrigerator_temperature_c"}')
    finally:
        vm.close()
    assert during == [("telemetry-sink-influxdb-failing", "eqmon")]
    assert after == []
    assert exported and len(exported[0]["values"]) >= 3  # the readings waited in the spool
