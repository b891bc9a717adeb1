"""The MQTT collector: payload decoding (table-driven) and subscription through a real
Mosquitto started by the fixture."""

from __future__ import annotations

import asyncio
import json
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collectors.health import DeviceHealth
from collectors.mqtt import MqttCollector, PayloadError, parse_payload
from eqmon.config import MqttBroker, MqttDevice
from eqmon.domain import DeviceState, Reading
from simulators.harness import wait_until

SHELF = MqttDevice.model_validate(
    {
        "id": "shelf-gloves", "kind": "smart_shelf", "protocol": "mqtt",
        "topic": "t/shelf-gloves/state",
        "fields": [{"metric": "weight_g", "path": "weight_g", "unit": "g"},
                   {"metric": "count", "path": "count"},
                   {"metric": "battery_v", "path": "power.battery_mv", "scale": 0.001}],
    }  # fmt: skip
)


def test_json_payload_with_nested_path_scale_and_timestamp() -> None:
    payload = json.dumps({"ts": 1700000000.5, "weight_g": 2650.4, "count": 400, "power": {"battery_mv": 3300}})
    readings = parse_payload(SHELF, SHELF.id, payload.encode(), received_at=1.0)
    assert [(r.metric, r.value, r.ts, r.unit) for r in readings] == [
        ("weight_g", 2650.4, 1700000000.5, "g"),
        ("count", 400, 1700000000.5, ""),
        ("battery_v", 3.3, 1700000000.5, ""),
    ]


def test_payload_without_timestamp_uses_the_receive_time() -> None:
    payload = json.dumps({"weight_g": 1, "count": 2, "power": {"battery_mv": 3000}})
    assert {r.ts for r in parse_payload(SHELF, SHELF.id, payload.encode(), received_at=42.0)} == {42.0}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "wrong_type"),
        (b'{"weight_g": 1, "count": 2}', "missing_field"),
        (b'{"weight_g": [1], "count": 2, "power": {"battery_mv": 1}}', "wrong_type"),
        (b'{"ts": "yesterday", "weight_g": 1, "count": 2, "power": {"battery_mv": 1}}', "wrong_type"),
        (b"\xff\xfe", "not_utf8"),
        (b"x" * 70000, "oversized"),
    ],
)
def test_bad_payloads_name_their_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as exc:
        parse_payload(SHELF, SHELF.id, payload, received_at=0.0)
    assert exc.value.reason == reason


def publisher(port: int) -> paho.Client:
    c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="test-pub")
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


@pytest.mark.integration
def test_collector_receives_counts_bad_payloads_and_survives_a_broker_restart(mosquitto) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        got: list[Reading] = []
        events = []
        health = {SHELF.id: DeviceHealth(SHELF.id, stale_after=60, emit=events.append)}
        broker = MqttBroker(host="127.0.0.1", port=mosquitto.port, client_id="eqmon-test-1")

        async def accept(readings: list[Reading]) -> None:
            got.extend(readings)

        col = MqttCollector(broker, [SHELF], health.__getitem__, accept, clock=time.time)
        await col.start()
        pub = publisher(mosquitto.port)
        try:
            def wait_for(pred, timeout: float = 10.0):  # type: ignore[no-untyped-def]
                return wait_until(pred, timeout, "the collector")

            await wait_for(lambda: col.connected)
            await asyncio.sleep(0.3)  # subscription settles
            good = {"weight_g": 10.0, "count": 1, "power": {"battery_mv": 3000}}
            pub.publish(SHELF.topic, b"{broken", qos=1).wait_for_publish(5)
            pub.publish(SHELF.topic, b"{broken again", qos=1).wait_for_publish(5)
            pub.publish(SHELF.topic, json.dumps(good), qos=1).wait_for_publish(5)
            pub.publish("t/unknown/state", b"{}", qos=1).wait_for_publish(5)
            await wait_for(lambda: len(got) == 3)
            assert dict(col.bad_payloads) == {"invalid_json": 2}
            assert health[SHELF.id].state == DeviceState.ONLINE

            pub.loop_stop()
            pub.disconnect()
            mosquitto.restart()
            await wait_for(lambda: not col.connected, 5)
            await wait_for(lambda: col.connected, 40)
            pub2 = publisher(mosquitto.port)
            try:
                await asyncio.sleep(0.3)
                pub2.publish(SHELF.topic, json.dumps({**good, "count": 2}), qos=1).wait_for_publish(5)
                await wait_for(lambda: len(got) == 6)
            finally:
                pub2.loop_stop()
                pub2.disconnect()
            assert [r.value for r in got if r.metric == "count"] == [1, 2]
        finally:
            await col.stop()

    asyncio.run(main())


@pytest.mark.integration
def test_a_retained_state_counts_from_its_own_time_not_from_the_subscription(mosquitto) -> None:  # type: ignore[no-untyped-def]
    """Shelves publish their state retained (docs/simulators.md): a fresh one makes a newly
    started eqmon show the shelf at once; one from two days ago must not make a dead shelf look
    online: its readings keep their time and the device is stale."""
    old_shelf = SHELF.model_copy(update={"id": "shelf-old", "topic": "t/shelf-old/state"})
    now = time.time()

    async def main() -> None:
        got: list[Reading] = []
        health = {
            d.id: DeviceHealth(d.id, stale_after=600, emit=lambda e: None) for d in (SHELF, old_shelf)
        }

        async def accept(readings: list[Reading]) -> None:
            got.extend(readings)

        pub = publisher(mosquitto.port)
        try:
            state = {"weight_g": 10.0, "count": 1, "power": {"battery_mv": 3000}}
            pub.publish(SHELF.topic, json.dumps({**state, "ts": now - 5}), qos=1, retain=True).wait_for_publish(5)
            pub.publish(old_shelf.topic, json.dumps({**state, "ts": now - 2 * 86400}), qos=1,
                        retain=True).wait_for_publish(5)  # fmt: skip
        finally:
            pub.loop_stop()
            pub.disconnect()
        broker = MqttBroker(host="127.0.0.1", port=mosquitto.port, client_id="eqmon-test-retained")
        col = MqttCollector(broker, [SHELF, old_shelf], health.__getitem__, accept, clock=time.time)
        await col.start()
        try:
            await wait_until(lambda: len(got) == 6, 10, "both retained states")
            assert health[SHELF.id].state == DeviceState.ONLINE
            assert health[SHELF.id].last_success == pytest.approx(now - 5)
            assert health[old_shelf.id].state == DeviceState.STALE
            assert health[old_shelf.id].last_success == pytest.approx(now - 2 * 86400)
            assert [r.ts for r in got if r.device_id == old_shelf.id] == [pytest.approx(now - 2 * 86400)] * 3
        finally:
            await col.stop()

    asyncio.run(main())
