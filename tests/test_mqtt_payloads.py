"""MQTT topic routing and payload formats, table-driven (no broker needed)."""

from __future__ import annotations

import json

import pytest

from collectors.mqtt import PayloadError, TopicRouter, parse_payload, status_from_template
from eqmon.config import ConfigError, MqttBroker, MqttDevice, MqttMapping, parse_site


def dev(**kw: object) -> MqttDevice:
    return MqttDevice.model_validate({"id": "d1", "kind": "sensor", "protocol": "mqtt", **kw})


ROOM = dev(id="room-12", topic="ward/12/env", fields=[
    {"metric": "temperature_c", "path": "t", "convert": "degF_to_degC", "unit": "°C"},
    {"metric": "pressure_pa", "path": "p.dp", "convert": "inH2O_to_Pa"},
], timestamp_path="time", timestamp_unit="ms")  # fmt: skip


def test_unit_conversion_nested_paths_and_millisecond_timestamps() -> None:
    doc = {"time": 1700000000123, "t": 41.0, "p": {"dp": -0.02}}
    rs = parse_payload(ROOM, ROOM.id, json.dumps(doc).encode(), received_at=5.0)
    assert [(r.metric, r.value, r.ts) for r in rs] == [
        ("temperature_c", 5.0, 1700000000.123),
        ("pressure_pa", pytest.approx(-4.9817782), 1700000000.123),
    ]


@pytest.mark.parametrize(
    ("unit", "raw", "expected"),
    [("s", 1700000000.5, 1700000000.5), ("ms", 1700000000500, 1700000000.5),
     ("us", 1700000000500000, 1700000000.5), ("ns", 1700000000500000000, 1700000000.5),
     ("iso8601", "2023-11-14T22:13:20.5+00:00", 1700000000.5)],
)  # fmt: skip
def test_timestamp_units(unit: str, raw: object, expected: float) -> None:
    d = dev(topic="a", fields=[{"metric": "v"}], timestamp_path="ts", timestamp_unit=unit)
    (r,) = parse_payload(d, "d1", json.dumps({"ts": raw, "v": 1}).encode(), received_at=0.0)
    assert r.ts == pytest.approx(expected)


def test_iso_timestamp_without_zone_is_rejected() -> None:
    d = dev(topic="a", fields=[{"metric": "v"}], timestamp_unit="iso8601")
    with pytest.raises(PayloadError) as exc:
        parse_payload(d, "d1", b'{"ts": "2023-11-14T22:13:20", "v": 1}', 0.0)
    assert exc.value.reason == "bad_timestamp"


@pytest.mark.parametrize(
    ("spec", "payload", "expected"),
    [
        ({"payload": "number", "fields": [{"metric": "weight_g", "scale": 1000, "convert": "g_to_kg"}]}, b" 2.5 ", 2.5),
        ({"payload": "bool", "fields": [{"metric": "door_open"}]}, b"OPEN", True),
        ({"payload": "bool", "fields": [{"metric": "door_open"}]}, b"off", False),
        ({"payload": "enum", "fields": [{"metric": "mode"}], "values": {"DEFROST": "defrost", "RUN": "run"}}, b"DEFROST", "defrost"),
    ],
)  # fmt: skip
def test_plain_payloads(spec: dict, payload: bytes, expected: object) -> None:  # type: ignore[type-arg]
    d = dev(topic="a", **spec)
    (r,) = parse_payload(d, "d1", payload, received_at=7.0)
    assert (r.value, r.ts) == (expected, 7.0)


@pytest.mark.parametrize(
    ("spec", "payload", "reason"),
    [
        ({"payload": "number", "fields": [{"metric": "w"}]}, b"heavy", "not_a_number"),
        ({"payload": "bool", "fields": [{"metric": "b"}]}, b"maybe", "not_a_bool"),
        ({"payload": "enum", "fields": [{"metric": "m"}], "values": {"A": 1}}, b"B", "unknown_enum"),
        ({"fields": [{"metric": "v"}], "unknown_fields": "reject"}, b'{"v": 1, "x": 2}', "unknown_field"),
        ({"fields": [{"metric": "v"}]}, b'{"v": {"deep": 1}}', "wrong_type"),
    ],
)  # fmt: skip
def test_plain_payload_errors(spec: dict, payload: bytes, reason: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(PayloadError) as exc:
        parse_payload(dev(topic="a", **spec), "d1", payload, 0.0)
    assert exc.value.reason == reason


def test_unknown_fields_can_be_stored() -> None:
    d = dev(topic="a", fields=[{"metric": "v"}], unknown_fields="store")
    rs = parse_payload(d, "d1", b'{"ts": 1, "v": 1, "battery_v": 3.1, "fw": "1.2", "nested": {"x": 1}}', 0.0)
    assert sorted((r.metric, r.value) for r in rs) == [("battery_v", 3.1), ("fw", "1.2"), ("v", 1)]


def test_null_field_is_a_bad_quality_reading() -> None:
    (r,) = parse_payload(dev(topic="a", fields=[{"metric": "v"}]), "d1", b'{"v": null}', 0.0)
    assert (r.value, r.quality) == (None, "bad")


def test_router_exact_templates_wildcards_and_mappings() -> None:
    shelf = dev(id="shelf-1", topic="site/4b/shelf/shelf-1/state", fields=[{"metric": "count"}])
    per_metric = dev(id="probe-7", topic="probes/probe-7/{metric}", payload="number", unit="°C")
    wild = dev(id="legacy", topic="legacy/+/data/#", fields=[{"metric": "v"}])
    env1 = dev(id="env-1", topic=None, payload="number")
    env2 = dev(id="env-2", topic=None, payload="number")
    mapping = MqttMapping.model_validate({"topic": "site/{room}/env/{device_id}/{metric}", "payload": "number"})
    r = TopicRouter([shelf, per_metric, wild, env1, env2], [mapping])
    assert sorted(r.filters()) == sorted(["site/4b/shelf/shelf-1/state", "probes/probe-7/+",
                                          "legacy/+/data/#", "site/+/env/+/+"])  # fmt: skip
    got = r.route("site/4b/shelf/shelf-1/state")
    assert got is not None and (got.device_id, got.metric) == ("shelf-1", None)
    got = r.route("probes/probe-7/temperature_c")
    assert got is not None and (got.device_id, got.metric) == ("probe-7", "temperature_c")
    got = r.route("legacy/x/data/a/b/c")
    assert got is not None and got.device_id == "legacy"
    got = r.route("site/12/env/env-2/humidity_pct")
    assert got is not None and (got.device_id, got.metric, got.spec) == ("env-2", "humidity_pct", mapping)
    assert r.route("site/12/env/env-9/humidity_pct") is None  # no such device
    assert r.route("probes/probe-7/a/b") is None
    assert r.route("elsewhere") is None
    (reading,) = parse_payload(got.spec, got.device_id, b"40.5", 1.0, topic_metric=got.metric)
    assert (reading.device_id, reading.metric, reading.value) == ("env-2", "humidity_pct", 40.5)


def test_status_topic_template() -> None:
    assert status_from_template("eqmon/status/{device_id}", "eqmon/status/shelf-1") == "shelf-1"
    assert status_from_template("eqmon/status/{device_id}", "eqmon/other/shelf-1") is None


@pytest.mark.parametrize(
    ("topic", "message"),
    [("a/{x}y/b", "a named part fills a whole level"), ("a/#/b", "'#' may only be the last"),
     ("a/b+/c", "wildcards fill a whole level"), ("a/{device_id}", "a device topic may only name {metric}")],
)  # fmt: skip
def test_bad_topic_templates_are_config_errors(topic: str, message: str) -> None:
    text = f"""
site: {{name: x}}
mqtt: {{host: 127.0.0.1}}
devices:
  - {{id: d, kind: k, protocol: mqtt, topic: "{topic}", fields: [{{metric: v}}]}}
"""
    with pytest.raises(ConfigError) as exc:
        parse_site(text, "s.yaml")
    assert message in str(exc.value) and "devices[0]" in str(exc.value)


def test_mapping_needs_device_id_and_a_topicless_device_needs_a_mapping() -> None:
    with pytest.raises(ValueError, match=r"needs a \{device_id\} part"):
        MqttBroker.model_validate({"mappings": [{"topic": "a/{metric}", "payload": "number"}]})
    text = """
site: {name: x}
mqtt: {host: 127.0.0.1}
devices:
  - {id: d, kind: k, protocol: mqtt, payload: number, fields: [{metric: v}]}
"""
    with pytest.raises(ConfigError) as exc:
        parse_site(text, "s.yaml")
    assert "s.yaml: devices[0].topic: required key is missing" in str(exc.value)
