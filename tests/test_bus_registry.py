"""The fan-out bus and the collector registry: what a new subscriber or protocol relies on."""

from __future__ import annotations

import logging

import pytest

from collectors.registry import device_health, kind_of, kinds
from eqmon.bus import Bus
from eqmon.domain import DeviceState, DeviceStatusEvent, Reading
from tests.sitefiles import example_on_free_ports, site


def test_a_failing_subscriber_is_counted_logged_once_and_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = Bus()
    got: list[str] = []

    def broken(readings: object) -> None:
        raise RuntimeError("boom")

    bus.subscribe_readings("broken", broken)
    bus.subscribe_readings("latest", lambda rs: got.extend(r.metric for r in rs))
    statuses: list[DeviceStatusEvent] = []
    bus.subscribe_status("broken", lambda e: 1 / 0)  # type: ignore[func-returns-value]
    bus.subscribe_status("engine", statuses.append)
    with caplog.at_level(logging.ERROR, logger="eqmon.bus"):
        for i in range(5):
            bus.publish_readings([Reading("d", f"m{i}", 1.0, 0.0)])
            bus.publish_status(DeviceStatusEvent("d", DeviceState.ONLINE, float(i)))
    assert got == [f"m{i}" for i in range(5)]
    assert len(statuses) == 5
    assert bus.failures == {"broken": 10}
    assert len([r for r in caplog.records if r.name == "eqmon.bus"]) == 1  # once per subscriber name


def test_registry_knows_every_protocol_of_the_site_models_and_its_health_settings() -> None:
    s = site(example_on_free_ports(mqtt_port=1883))
    assert {k.protocol for k in kinds()} == {"modbus", "mqtt"}
    events: list[DeviceStatusEvent] = []
    for d in s.devices:
        h = device_health(d, events.append)
        if d.protocol == "modbus":
            assert h.offline_after == d.offline_after and h.stale_after is None
        else:
            assert h.stale_after == d.stale_after
    assert kind_of("mqtt").redeliverable and not kind_of("modbus").redeliverable
    with pytest.raises(ValueError, match="no collector for protocol 'bacnet'"):
        kind_of("bacnet")
