"""The whole path, against real servers: simulated devices → collectors → InfluxDB write API
(VictoriaMetrics) and the embedded store; alerts and API on top."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from eqmon_app.service import Service
from simulators import SimulatedSite
from simulators.harness import wait_until as wait_for
from tests.sitefiles import example_on_free_ports, site
from tests.test_api_support import api_client


@pytest.mark.integration
def test_modbus_and_mqtt_readings_arrive_in_influx_and_embedded_store(
    mosquitto, victoria, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    s = site(example_on_free_ports(mqtt_port=mosquitto.port, influx_url=victoria.url))

    async def main() -> tuple[list[tuple[float, float]], list[tuple[float, float]], dict]:  # type: ignore[type-arg]
        sim = SimulatedSite(s, mqtt_host="127.0.0.1", mqtt_port=mosquitto.port)
        await sim.start()
        service = Service(s, data_dir=tmp_path)
        try:
            await service.start()
            await wait_for(lambda: all(h.state == "online" for h in service.health.values()), 30, "all devices online")
            async with api_client(service) as api:
                devices = (await api.get("/api/v1/devices")).json()["items"]
            await asyncio.sleep(3)  # a few more polls
        finally:
            await service.stop()  # flushes the sinks
            await sim.stop()
        assert service.embedded is not None
        fridge = service.embedded.history("fridge-1", "temperature_c", 0, time.time() + 1)
        gloves = service.embedded.history("shelf-gloves", "count", 0, time.time() + 1)
        return [(t, v) for t, v, _ in fridge], [(t, v) for t, v, _ in gloves], {d["id"]: d for d in devices}

    fridge, gloves, devices = asyncio.run(main())
    assert len(devices) == 7 and all(d["status"] == "online" for d in devices.values())
    assert 2.0 <= devices["fridge-1"]["readings"]["temperature_c"]["value"] <= 8.0
    assert len(fridge) >= 3 and len(gloves) >= 1

    def exported(name: str, device_id: str) -> list[tuple[float, float]]:
        series = [
            s for s in victoria.export(f'{{__name__="{name}",device_id="{device_id}"}}')
            if s["metric"].get("device_id") == device_id
        ]
        assert len(series) == 1, series
        assert series[0]["metric"]["location"]
        return [(ts / 1000, v) for ts, v in zip(series[0]["timestamps"], series[0]["values"], strict=True)]

    # Every reading in the embedded store arrived in the server, value by value, exactly once.
    got_fridge = exported("medication_refrigerator_temperature_c", "fridge-1")
    assert [(round(t, 3), v) for t, v in fridge] == [(round(t, 3), v) for t, v in got_fridge]
    got_gloves = exported("smart_shelf_count", "shelf-gloves")
    assert [(round(t, 3), v) for t, v in gloves] == [(round(t, 3), v) for t, v in got_gloves]
