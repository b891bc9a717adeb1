"""What every device model tells without isinstance checks: ``address`` and ``metric_units()``."""

from __future__ import annotations

from pathlib import Path

from eqmon.config import ModbusDevice, MqttDevice, Site, load_site

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "site.yaml"


def test_modbus_address_and_units() -> None:
    d = ModbusDevice.model_validate({
        "id": "f", "kind": "k", "protocol": "modbus", "host": "10.0.0.5", "port": 1502, "unit_id": 7,
        "registers": [
            {"name": "temperature_c", "address": 0, "data_type": "int16", "scale": 0.1, "unit": "°C"},
            {"name": "status", "address": 2, "bits": {0: "door_open", 3: "compressor_fault"}},
            {"name": "state", "address": 3, "enum": {0: "idle", 1: "cooling"}},
            {"name": "run_hours", "address": 10, "data_type": "float32", "unit": "h"},
        ],
    })  # fmt: skip
    assert d.address == "10.0.0.5:1502/7"
    assert d.metric_units() == {
        "temperature_c": "°C", "status": "", "door_open": "", "compressor_fault": "", "state": "", "run_hours": "h",
    }  # fmt: skip
    v6 = d.model_copy(update={"host": "fd00::5"})
    assert v6.address == "[fd00::5]:1502/7"


def test_mqtt_address_and_units_from_its_topic() -> None:
    site = load_site(EXAMPLE)
    shelf = site.device("shelf-gloves")
    assert isinstance(shelf, MqttDevice)
    assert shelf.address == "eqmon/ward4b/shelf/shelf-gloves/state"
    assert shelf.metric_units() == {"weight_g": "g", "count": "pcs", "stable": ""}  # stable: no unit
    fridge = site.device("fridge-1")
    assert fridge.address == "127.0.0.1:15021/1"
    assert fridge.metric_units()["temperature_c"] == "°C"
    # every device answers, whatever its protocol
    assert all(isinstance(d.address, str) and isinstance(d.metric_units(), dict) for d in site.devices)


def test_mqtt_device_routed_by_broker_mappings() -> None:
    site = Site.model_validate({
        "site": {"name": "x"},
        "mqtt": {"mappings": [
            {"topic": "site/{room}/env/{device_id}/{metric}", "payload": "number", "unit": "°C"},
            {"topic": "site/{room}/json/{device_id}", "fields": [{"metric": "humidity_pct", "unit": "%"}]},
        ]},
        "devices": [
            {"id": "room-3", "kind": "room", "protocol": "mqtt"},
            {"id": "room-4", "kind": "room", "protocol": "mqtt", "topic": "x/room-4", "fields": [{"metric": "t", "unit": "K"}]},
        ],
    })  # fmt: skip
    routed, own = site.devices
    assert routed.address == "site/{room}/env/room-3/{metric}, site/{room}/json/room-3"
    assert routed.metric_units() == {"humidity_pct": "%"}
    assert own.address == "x/room-4" and own.metric_units() == {"t": "K"}
    # a device on its own, outside a site, still answers
    alone = MqttDevice.model_validate({"id": "r", "kind": "room", "protocol": "mqtt"})
    assert alone.address == "(mqtt.mappings)" and alone.metric_units() == {}
