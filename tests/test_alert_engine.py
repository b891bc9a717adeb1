"""Threshold rules with `for` delays and hysteresis, and device-offline alerts, on a fake clock."""

from __future__ import annotations

from pathlib import Path

from alerts.engine import AlertEngine
from eqmon.config import Alerts, load_site
from eqmon.domain import Alert, AlertState, DeviceState, DeviceStatusEvent, Quality, Reading

_EXAMPLE = load_site(Path(__file__).resolve().parent.parent / "examples" / "site.yaml")
# The example site with its threshold rules only: the other kinds (which also fire on some of
# these readings, e.g. the cumulative excursion on repeated door openings) are tested in
# tests/test_alert_rules.py.
SITE = _EXAMPLE.model_copy(
    update={"alerts": Alerts(rules=[r for r in _EXAMPLE.alerts.rules if r.kind == "threshold"])}
)
T0 = 1_780_000_000.0  # a fixed instant; nothing here reads the wall clock


def engine() -> tuple[AlertEngine, list[Alert]]:
    changes: list[Alert] = []
    return AlertEngine(SITE, on_change=changes.append), changes


def temp(device: str, value: float, minute: float) -> list[Reading]:
    return [Reading(device, "temperature_c", value, T0 + minute * 60, Quality.GOOD, "°C")]


def test_excursion_raises_only_after_the_for_delay() -> None:
    e, changes = engine()
    for minute in range(0, 60):
        e.on_readings(temp("fridge-1", 9.0, minute))
    assert changes == []  # 59 minutes above 8 °C: not yet
    e.on_readings(temp("fridge-1", 9.4, 60))
    assert len(changes) == 1
    a = changes[0]
    assert (a.rule_id, a.device_id, a.state, a.severity) == ("fridge-too-warm", "fridge-1", "active", "critical")
    assert a.started_at == T0
    assert "Medication refrigerator 1 (Ward 4B clean utility room): temperature 9.4 °C above 8 °C" in a.message
    assert "(60 min)" in a.message and "call Pharmacy" in a.message
    assert e.active() == [a]


def test_door_opening_shorter_than_the_delay_raises_nothing() -> None:
    e, changes = engine()
    for minute in range(0, 200):
        in_door_open = minute % 40 < 15  # 15 min warm, 25 min back to normal, repeatedly
        e.on_readings(temp("fridge-1", 10.0 if in_door_open else 5.0, minute))
    assert changes == []


def test_hysteresis_keeps_a_hovering_value_from_flapping() -> None:
    e, changes = engine()
    for minute in range(0, 61):
        e.on_readings(temp("fridge-1", 9.0, minute))
    assert [c.state for c in changes] == ["active"]
    for minute, value in zip(range(61, 70), [7.8, 8.2, 7.7, 8.1, 7.9, 7.6, 7.55], strict=False):
        e.on_readings(temp("fridge-1", value, minute))
    assert [c.state for c in changes] == ["active"]  # never below 8.0 - 0.5
    e.on_readings(temp("fridge-1", 7.4, 70))
    assert [c.state for c in changes] == ["active", "resolved"]
    assert changes[-1].resolved_at == T0 + 70 * 60
    assert e.active() == []


def test_cold_rule_and_other_devices_are_independent() -> None:
    e, changes = engine()
    for minute in range(0, 16):
        e.on_readings(temp("fridge-2", 1.0, minute))
        e.on_readings(temp("fridge-1", 5.0, minute))
        e.on_readings(temp("freezer-1", -25.0, minute))
    assert [(c.rule_id, c.device_id) for c in changes] == [("fridge-too-cold", "fridge-2")]
    assert "1.0 °C below 2 °C" in changes[0].message


def test_tick_raises_when_readings_stop_arriving() -> None:
    e, changes = engine()
    e.on_readings(temp("warmer-1", 60.0, 0))
    e.tick(T0 + 9 * 60)
    assert changes == []
    e.tick(T0 + 10 * 60)
    assert [c.rule_id for c in changes] == ["warmer-too-hot"]


def test_bad_quality_and_unwatched_metrics_are_ignored() -> None:
    e, changes = engine()
    for minute in range(0, 120):
        e.on_readings([Reading("fridge-1", "temperature_c", None, T0 + minute * 60, Quality.BAD)])
        e.on_readings([Reading("fridge-1", "setpoint_c", 20.0, T0 + minute * 60)])
    assert changes == []


def test_delay_scale_compresses_the_for_delay() -> None:
    changes: list[Alert] = []
    e = AlertEngine(SITE, on_change=changes.append, delay_scale=120)
    e.on_readings(temp("fridge-1", 12.0, 0))
    e.on_readings(temp("fridge-1", 12.0, 0.49))  # 29.4 s
    assert changes == []
    e.on_readings(temp("fridge-1", 12.0, 0.5))  # 30 s = 60 min / 120
    assert len(changes) == 1


def test_device_offline_raises_once_and_resolves_when_back() -> None:
    e, changes = engine()
    e.on_status(DeviceStatusEvent("freezer-1", DeviceState.OFFLINE, T0, "cannot connect"))
    e.on_status(DeviceStatusEvent("freezer-1", DeviceState.OFFLINE, T0 + 60, "cannot connect"))
    assert len(changes) == 1 and changes[0].rule_id == "device-offline"
    assert "Vaccine freezer" in changes[0].message and "not responding" in changes[0].message
    e.on_status(DeviceStatusEvent("freezer-1", DeviceState.ONLINE, T0 + 120))
    assert [c.state for c in changes] == [AlertState.ACTIVE, AlertState.RESOLVED]
    assert e.active() == []


def test_acknowledge() -> None:
    e, changes = engine()
    for minute in range(0, 61):
        e.on_readings(temp("fridge-1", 9.0, minute))
    a = e.active()[0]
    assert e.acknowledge(a.id, "Sam (coordinator)", T0 + 3700, "moving stock") is a
    assert changes[-1].state == AlertState.ACKNOWLEDGED and changes[-1] is not a
    assert a.state == AlertState.ACKNOWLEDGED and a.acknowledged_by == "Sam (coordinator)"
    assert e.acknowledge("nope", "x", T0) is None


def test_open_alerts_survive_a_restart() -> None:
    e, changes = engine()
    for minute in range(0, 61):
        e.on_readings(temp("fridge-1", 9.0, minute))
    restarted = AlertEngine(SITE, active=e.active())
    assert [a.id for a in restarted.active()] == [changes[0].id]


def test_misconfigured_and_stale_devices_raise_and_resolve() -> None:
    e, changes = engine()
    e.on_status(DeviceStatusEvent("fridge-2", DeviceState.MISCONFIGURED, T0, "exception 0x02 (illegal data address)"))
    e.on_status(DeviceStatusEvent("shelf-gloves", DeviceState.STALE, T0, "nothing received for 700 s"))
    # the shelf shares its location with other devices: its own alert waits incident_wait (60 s)
    # for them; a misconfiguration is the device's own: at once
    assert [(c.rule_id, c.device_id) for c in changes] == [("device-misconfigured", "fridge-2")]
    e.tick(T0 + 60)
    assert [(c.rule_id, c.device_id) for c in changes] == [
        ("device-misconfigured", "fridge-2"), ("device-offline", "shelf-gloves")]
    assert "register map" in changes[0].message and "silent (no data)" in changes[1].message
    e.on_status(DeviceStatusEvent("fridge-2", DeviceState.ONLINE, T0 + 60))
    e.on_status(DeviceStatusEvent("shelf-gloves", DeviceState.ONLINE, T0 + 60))
    assert [c.state for c in changes[2:]] == [AlertState.RESOLVED, AlertState.RESOLVED]
    assert e.active() == []


def test_offline_device_keeps_its_threshold_alert_open_and_says_the_condition_is_unknown() -> None:
    e, changes = engine()
    for minute in range(0, 61):
        e.on_readings(temp("fridge-1", 9.0, minute))
    assert [c.state for c in changes] == ["active"]
    e.on_status(DeviceStatusEvent("fridge-1", DeviceState.OFFLINE, T0 + 62 * 60, "no reply"))
    threshold = [a for a in e.active() if a.rule_id == "fridge-too-warm"]
    assert len(threshold) == 1 and threshold[0].state == AlertState.ACTIVE  # not resolved
    assert "condition now unknown: the device is not answering since" in threshold[0].message
    assert "temperature 9.0 °C above 8 °C" in threshold[0].message  # what was known stays
    assert any(c.rule_id == "fridge-too-warm" and "condition now unknown" in c.message for c in changes)
    # back online and still warm: the note goes, the alert is the same one
    e.on_status(DeviceStatusEvent("fridge-1", DeviceState.ONLINE, T0 + 70 * 60))
    e.on_readings(temp("fridge-1", 9.2, 70))
    again = [a for a in e.active() if a.rule_id == "fridge-too-warm"]
    assert [a.id for a in again] == [threshold[0].id]
    assert "condition now unknown" not in again[0].message
    # and it resolves on a reading back in range, not on the outage
    e.on_readings(temp("fridge-1", 5.0, 71))
    assert not [a for a in e.active() if a.rule_id == "fridge-too-warm"]


def test_an_excursion_interrupted_by_an_outage_starts_over() -> None:
    """A reading that does not come is neither in nor out of range: the `for` timer does not run
    through the outage (it would raise on the first reading after it)."""
    e, changes = engine()
    for minute in range(0, 50):
        e.on_readings(temp("fridge-1", 9.0, minute))
    e.on_status(DeviceStatusEvent("fridge-1", DeviceState.OFFLINE, T0 + 51 * 60, "no reply"))
    e.on_status(DeviceStatusEvent("fridge-1", DeviceState.ONLINE, T0 + 100 * 60))
    e.on_readings(temp("fridge-1", 9.0, 100))
    e.tick(T0 + 101 * 60)
    assert [c.rule_id for c in changes if c.rule_id == "fridge-too-warm"] == []


def test_stale_readings_never_count_as_in_or_out_of_range() -> None:
    e, changes = engine()
    for minute in range(0, 61):
        e.on_readings([Reading("fridge-1", "temperature_c", 12.0, T0 + minute * 60, Quality.STALE, "°C")])
    e.tick(T0 + 61 * 60)
    assert changes == []
