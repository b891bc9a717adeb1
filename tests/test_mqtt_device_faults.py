"""MQTT device faults from the simulators, through eqmon's full service and a real Mosquitto:
duplicates are stored once, late (out-of-order) measurements are kept at their own time, a 10×
burst is taken whole, and an environment sensor's drift shows up in the readings."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from eqmon.config import Site
from eqmon_app.service import Service
from simulators import SimulatedSite
from simulators.servers import free_port

pytestmark = pytest.mark.integration

FAST = {"heartbeat_s": 0.05, "first_publish_s": 0.05, "hold_s": 0.0}


def site(port: int) -> Site:
    return Site.model_validate({
        "site": {"name": "faults"},
        "mqtt": {"host": "127.0.0.1", "port": port, "client_id": f"eqmon-faults-{free_port()}"},
        "devices": [
            {"id": "room-1", "kind": "room_environment", "protocol": "mqtt", "topic": "t/room-1",
             "fields": [{"metric": "temperature_c", "unit": "°C"}, {"metric": "humidity_pct", "unit": "%"}],
             "simulator": {"model": "room_environment", "seed": 1, "params": FAST}},
            {"id": "iso-1", "kind": "isolation_room", "protocol": "mqtt", "topic": "t/iso-1",
             "fields": [{"metric": "pressure_pa", "unit": "Pa"}],
             "simulator": {"model": "differential_pressure", "seed": 2, "params": FAST}},
        ],
        "api": {"port": 0},
    })  # fmt: skip


def rows(data_dir: Path, device: str) -> list[tuple[float, float]]:
    db = sqlite3.connect(data_dir / "telemetry.sqlite")
    try:
        return db.execute(
            "SELECT ts, value_num FROM readings WHERE device_id=? AND metric != '' ORDER BY ts", (device,)
        ).fetchall()
    finally:
        db.close()


def test_duplicates_late_messages_bursts_and_drift(mosquitto, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = site(mosquitto.port)

    async def main() -> dict[str, float]:
        service = Service(s, data_dir=tmp_path)
        sim = SimulatedSite(s, mqtt_host="127.0.0.1", mqtt_port=mosquitto.port)
        await service.start()
        await sim.start()
        out: dict[str, float] = {}
        try:
            assert service.mqtt is not None
            await asyncio.sleep(1.0)
            base_msgs = service.mqtt.messages
            sim.inject("room-1", "duplicate")
            await asyncio.sleep(1.0)
            sim.inject("room-1", "clear")
            out["dup_msgs"] = service.mqtt.messages - base_msgs
            t_late = time.time()
            sim.inject("iso-1", "out_of_order")
            await asyncio.sleep(0.5)
            sim.inject("iso-1", "clear")
            out["t_late"] = t_late
            pub = sim.shelf("iso-1")
            n0 = pub.published
            await asyncio.sleep(1.0)
            out["normal_rate"] = pub.published - n0
            sim.inject("iso-1", "burst", {"factor": 10})
            n0, m0 = pub.published, service.mqtt.messages
            await asyncio.sleep(1.0)
            out["burst_rate"] = pub.published - n0
            sim.inject("iso-1", "clear")
            sim.inject("iso-1", "drift", {"metric": "pressure_pa", "target": 1.0, "rate_per_min": 600})
            await asyncio.sleep(1.5)
            latest = service.state.latest["iso-1"]["pressure_pa"].value
            out["latest_pressure"] = float(latest)  # type: ignore[arg-type]
            await asyncio.sleep(0.5)
        finally:
            await sim.stop()
            await service.stop()
        out["bad"] = sum(service.mqtt.bad_payloads.values())
        out["burst_handed_on"] = service.mqtt.messages - m0
        return out

    out = asyncio.run(main())
    room = rows(tmp_path, "room-1")
    iso = rows(tmp_path, "iso-1")
    # Duplicates: every message arrived twice, each reading is stored once.
    assert out["dup_msgs"] >= 10
    assert len(room) == len(set(room))
    assert len({ts for ts, _ in room}) * 2 == len(room)  # two metrics per timestamp, no more
    # Late measurements are kept at their own (older) time.
    assert any(ts < out["t_late"] - 1.0 for ts, _ in iso)
    # A 10× burst: ten times the messages, all handed on, nothing counted as bad.
    assert out["burst_rate"] >= 8 * out["normal_rate"] > 0
    assert out["burst_handed_on"] >= out["burst_rate"] * 0.9
    assert out["bad"] == 0
    # Drift of the isolation room's pressure towards positive (a failed negative-pressure room).
    assert out["latest_pressure"] > -2.5
