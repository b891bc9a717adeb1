"""The rule kinds of issue 9 on a fake clock: range, cumulative excursion, rate of change, stuck
value, state, sensor failure; external conditions (on_condition); resolution summaries; and the
site-file errors of bad rules. Nothing here sleeps or reads the wall clock."""

from __future__ import annotations

from typing import Any

import pytest

from alerts.engine import AlertEngine
from eqmon.config import ConfigError, parse_site
from eqmon.domain import (
    Alert,
    AlertState,
    DeviceState,
    DeviceStatusEvent,
    Quality,
    Reading,
    Severity,
)

T0 = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC: 21:26 in Europe/London (BST)

SITE_HEAD = """
site: {name: Test ward, timezone: Europe/London}
devices:
  - id: fridge-1
    name: Fridge 1
    kind: medication_refrigerator
    location: Room 1
    protocol: modbus
    host: 127.0.0.1
    registers:
      - {name: temperature_c, address: 0, type: input, data_type: int16, scale: 0.1, unit: "°C", sentinels: [0x7FFF]}
      - {name: door_open, address: 2, type: input, data_type: bool, bit: 0}
      - {name: compressor_fault, address: 2, type: input, data_type: bool, bit: 3}
  - id: gen-1
    name: Generator
    kind: generator
    protocol: modbus
    host: 127.0.0.1
    unit_id: 2
    registers:
      - {name: mode, address: 0, type: input, data_type: uint16, enum: {0: "off", 1: running_on_load, 2: running_no_load}}
alerts:
  rules:
"""


def engine(*rules: str) -> tuple[AlertEngine, list[Alert]]:
    site = parse_site(SITE_HEAD + "".join(f"    - {r}\n" for r in rules), "site.yaml")
    changes: list[Alert] = []
    return AlertEngine(site, on_change=changes.append), changes


def at(minute: float) -> float:
    return T0 + minute * 60


def temp(e: AlertEngine, value: float | None, minute: float, quality: Quality = Quality.GOOD, dev: str = "fridge-1") -> None:
    e.on_readings([Reading(dev, "temperature_c", value, at(minute), quality, "°C")])


def reading(e: AlertEngine, metric: str, value: Any, minute: float, dev: str = "fridge-1") -> None:
    e.on_readings([Reading(dev, metric, value, at(minute))])


def states(changes: list[Alert]) -> list[str]:
    return [str(c.state) for c in changes]


# -- range ------------------------------------------------------------------------------------

RANGE = (
    "{id: fridge-range, kind: range, devices: [fridge-1], metric: temperature_c, low: 2, high: 8,"
    " low_for: 15m, high_for: 60m, hysteresis: 0.5, severity: critical, action: call Pharmacy}"
)


def test_range_too_warm_after_high_for_not_before_and_resolves_with_hysteresis() -> None:
    e, changes = engine(RANGE)
    for minute in range(0, 60):
        temp(e, 9.0 + minute / 100, minute)
    assert changes == []
    temp(e, 11.4, 60)
    assert states(changes) == ["active"]
    a = changes[0]
    assert a.message == (
        "CRITICAL Fridge 1 (Room 1): too warm: temperature 11.4 °C above 8 °C since 21:26 (60 min); call Pharmacy"
    )
    assert a.started_at == at(0) and a.extra["side"] == "high"
    temp(e, 9.0, 61)
    temp(e, 7.8, 62)  # inside the range, not by the hysteresis
    assert states(changes) == ["active"]
    temp(e, 7.5, 72)
    assert states(changes) == ["active", "resolved"]
    done = changes[-1]
    assert done.message.endswith(" — resolved 22:38 after 72 min, worst 11.4 °C")
    assert done.extra["resolution"] == {"resolved_at": at(72), "duration_s": 72 * 60.0, "worst": 11.4, "unit": "°C"}


def test_range_too_cold_has_its_own_delay() -> None:
    e, changes = engine(RANGE)
    for minute in range(0, 15):
        temp(e, 1.5, minute)
    assert changes == []
    e.tick(at(15))
    assert states(changes) == ["active"]
    assert "too cold: temperature 1.5 °C below 2 °C since 21:26 (15 min)" in changes[0].message
    temp(e, 2.3, 16)  # not back by the hysteresis
    temp(e, 0.9, 17)
    assert states(changes) == ["active"]
    temp(e, 2.5, 18)
    assert states(changes) == ["active", "resolved"]
    assert "worst 0.9 °C" in changes[-1].message


def test_range_excursion_shorter_than_its_delay_raises_nothing() -> None:
    e, changes = engine(RANGE)
    for minute in range(0, 300):
        temp(e, 10.0 if minute % 60 < 20 else 5.0, minute)  # 20 min doors, repeatedly
    assert changes == []


def test_range_ignores_stale_and_bad_readings() -> None:
    e, changes = engine(RANGE)
    for minute in range(0, 120):
        temp(e, 12.0, minute, Quality.STALE)
        temp(e, None, minute + 0.5, Quality.BAD)
    e.tick(at(121))
    assert changes == []
    # an open alert is not resolved by a bad or stale reading either
    for minute in range(200, 261):
        temp(e, 9.0, minute)
    temp(e, 5.0, 262, Quality.STALE)
    temp(e, None, 263, Quality.BAD)
    assert states(changes) == ["active"]


def test_range_alert_of_a_silent_device_stays_open_and_says_the_condition_is_unknown() -> None:
    e, changes = engine(RANGE)
    for minute in range(0, 61):
        temp(e, 9.0, minute)
    e.on_status(DeviceStatusEvent("fridge-1", DeviceState.OFFLINE, at(65), "no reply"))
    rng = next(a for a in e.active() if a.rule_id == "fridge-range")
    assert rng.state == AlertState.ACTIVE
    assert "too warm" in rng.message and "condition now unknown: the device is not answering since 22:31" in rng.message
    e.on_status(DeviceStatusEvent("fridge-1", DeviceState.ONLINE, at(70)))
    temp(e, 5.0, 71)
    resolved = [c for c in changes if c.rule_id == "fridge-range" and c.state == AlertState.RESOLVED]
    assert len(resolved) == 1 and "condition now unknown" not in resolved[0].message


# -- cumulative excursion ---------------------------------------------------------------------

CUMULATIVE = (
    "{id: fridge-excursion, kind: cumulative_excursion, devices: [fridge-1], metric: temperature_c,"
    " low: 2, high: 8, limit: 60m, window: 24h, severity: warning, action: record it in the excursion log}"
)


def test_cumulative_excursion_adds_separate_excursions_within_the_window() -> None:
    e, changes = engine(CUMULATIVE)
    temp(e, 5.0, 0)
    # three excursions of 20 min (from the first reading out to the first back in), far apart
    for start, worst in ((60, 9.5), (300, 1.2), (600, 10.5)):
        temp(e, 8.6 if worst > 8 else 1.8, start)
        temp(e, worst, start + 10)
        if start < 600:
            temp(e, 5.0, start + 20)
    assert changes == []  # 40 min so far, the third is 10 min old
    temp(e, 9.0, 619.9)
    assert changes == []
    temp(e, 9.0, 620)  # 20 + 20 + 20 min
    assert states(changes) == ["active"]
    a = changes[0]
    assert a.message.startswith(
        "WARNING Fridge 1 (Room 1): temperature out of range (2–8 °C) for 60 min in the last 24 h "
        "(3 excursions since 22:26, worst 10.5 °C): a reportable excursion; record it in the excursion log"
    )
    ex = a.extra["excursions"]
    assert [(x["start"], x["duration_s"], x["min"], x["max"], x["side"]) for x in ex] == [
        (at(60), 1200.0, 8.6, 9.5, "high"),
        (at(300), 1200.0, 1.2, 1.8, "low"),
        (at(600), 1200.0, 8.6, 10.5, "high"),
    ]
    # back in range but still 60 min within the window: stays open
    temp(e, 5.0, 630)
    assert states(changes) == ["active"]
    # the first excursion slides out of the window from 24 h after it began; the third one
    # lasted 30 min (to the reading back in range): 60 min are left in the window at 70 + 24 h
    temp(e, 5.0, 70 + 24 * 60 - 1)
    assert states(changes) == ["active"]
    temp(e, 5.0, 70 + 24 * 60 + 1)  # 9 + 20 + 30 min in the window
    assert states(changes) == ["active", "resolved"]
    done = changes[-1]
    assert done.extra["out_of_range_s"] == 59 * 60
    assert [x["start"] for x in done.extra["excursions"]] == [at(60), at(300), at(600)]
    temp(e, 5.0, 60 + 20 + 24 * 60 + 1)  # a day after it ended, the first one is dropped
    e.tick(at(600 + 24 * 60 + 10))  # the second ended at 320 min, the third at 630
    assert [x.start for x in e._evaluators[0]._tracks["fridge-1"].excursions] == [at(600)]  # type: ignore[attr-defined]
    assert "resolved" in done.message and "worst 10.5 °C" in done.message


def test_cumulative_excursion_counts_on_tick_and_waits_for_the_value_to_be_back_in_range() -> None:
    e, changes = engine(CUMULATIVE)
    temp(e, 9.0, 0)
    e.tick(at(59))
    assert changes == []
    e.tick(at(60))
    assert states(changes) == ["active"]
    # readings stop being out of range only when a good reading in range comes
    temp(e, None, 61, Quality.BAD)
    temp(e, 9.0, 25 * 60)  # a day later: the old excursion left the window, this one is new
    assert states(changes) == ["active"]  # the value is still out of range
    temp(e, 5.0, 25 * 60 + 1)
    assert states(changes) == ["active", "resolved"]


def test_cumulative_excursion_does_not_count_unknown_time() -> None:
    e, changes = engine(CUMULATIVE)
    temp(e, 9.0, 0)
    temp(e, 9.0, 30)
    temp(e, 9.0, 31, Quality.STALE)  # ends the excursion at 30 min
    temp(e, 9.0, 200)  # a new one starts here
    temp(e, 9.0, 229)
    assert changes == []
    e.on_status(DeviceStatusEvent("fridge-1", DeviceState.OFFLINE, at(229.5), "no reply"))
    e.on_status(DeviceStatusEvent("fridge-1", DeviceState.ONLINE, at(399)))
    e.tick(at(400))
    assert [c for c in changes if c.rule_id == "fridge-excursion"] == []
    temp(e, 9.0, 400)
    temp(e, 9.0, 401)  # 30 + 29 + 1 min
    raised = [c for c in changes if c.rule_id == "fridge-excursion"]
    assert states(raised) == ["active"]
    assert [x["duration_s"] for x in raised[0].extra["excursions"]] == [1800.0, 1740.0, 60.0]


# -- rate of change ---------------------------------------------------------------------------

RATE = (
    "{id: fridge-warming-fast, kind: rate_of_change, devices: [fridge-1], metric: temperature_c,"
    " max_change: 2, per: 10m, direction: rise}"
)


def test_rate_of_change_fires_on_a_fast_rise_not_a_slow_one() -> None:
    e, changes = engine(RATE)
    for minute in range(0, 60):
        temp(e, 4.0 + minute * 0.1, minute)  # 1 °C per 10 min: slow
    assert changes == []
    temp(e, 12.0, 61)
    assert states(changes) == ["active"]
    assert changes[0].message == (
        "WARNING Fridge 1 (Room 1): temperature rose 2.9 °C in 10 min (from 9.1 to 12.0 °C since 22:17; "
        "limit 2 °C per 10 min)"
    )
    temp(e, 12.3, 62)
    # a plateau: resolved once the readings of the last 10 min are within 2 °C of one another
    for minute in range(63, 70):
        temp(e, 12.2, minute)
    assert states(changes) == ["active"]
    temp(e, 12.2, 70)  # the readings of 61–70 (none at 60)
    assert states(changes) == ["active", "resolved"]
    assert changes[-1].message.endswith("— resolved 22:36 after 19 min, largest change 3.1 °C")


def test_rate_of_change_direction_and_bad_readings() -> None:
    e, changes = engine(RATE)
    temp(e, 9.0, 0)
    temp(e, 5.0, 1)  # a fall: not watched
    temp(e, None, 2, Quality.BAD)
    temp(e, 30.0, 3, Quality.STALE)
    assert changes == []
    e2, changes2 = engine(RATE.replace("rise", "either"))
    temp(e2, 9.0, 0)
    temp(e2, 5.0, 1)
    assert states(changes2) == ["active"] and "fell 4.0 °C in 1 min" in changes2[0].message


# -- stuck value ------------------------------------------------------------------------------

STUCK = "{id: fridge-probe-stuck, kind: stuck, devices: [fridge-1], metric: temperature_c, for: 2h, tolerance: 0.05}"


def test_stuck_value_after_for_and_resolved_by_a_change() -> None:
    e, changes = engine(STUCK)
    for minute in range(0, 120, 5):
        temp(e, 5.2, minute)
    assert changes == []
    temp(e, 5.23, 120)  # within the tolerance
    assert states(changes) == ["active"]
    assert changes[0].message == "WARNING Fridge 1 (Room 1): temperature sensor may be stuck at 5.2 °C since 21:26 (no change for 2 h)"
    temp(e, 5.3, 125)
    assert states(changes) == ["active", "resolved"]


def test_stuck_watch_starts_over_after_an_outage_and_ticks_do_not_count() -> None:
    e, changes = engine(STUCK)
    temp(e, 5.2, 0)
    e.tick(at(200))
    assert changes == []
    temp(e, 5.2, 100)
    e.on_status(DeviceStatusEvent("fridge-1", DeviceState.OFFLINE, at(101), "no reply"))
    e.on_status(DeviceStatusEvent("fridge-1", DeviceState.ONLINE, at(110)))
    temp(e, 5.2, 111)
    temp(e, 5.2, 230)
    # a 9-s outage raises nothing (a device-offline alert waits incident_wait for its group)
    assert changes == []
    temp(e, 5.2, 231)
    assert [(c.rule_id, str(c.state)) for c in changes] == [("fridge-probe-stuck", "active")]


# -- state ------------------------------------------------------------------------------------

DOOR = "{id: fridge-door-open, kind: state, devices: [fridge-1], metric: door_open, equals: true, for: 20m}"
FAULT = "{id: fridge-compressor-fault, kind: state, devices: [fridge-1], metric: compressor_fault, equals: true, for: 0, severity: critical}"
GENERATOR = "{id: generator-on-load, kind: state, devices: [gen-1], metric: mode, in: [running_on_load], severity: info}"


def test_door_open_longer_than_for_raises_shorter_does_not() -> None:
    e, changes = engine(DOOR)
    reading(e, "door_open", True, 0)
    reading(e, "door_open", False, 19)
    reading(e, "door_open", True, 30)
    e.tick(at(49))
    assert changes == []
    e.tick(at(50))
    assert states(changes) == ["active"]
    assert changes[0].message == "WARNING Fridge 1 (Room 1): door open since 21:56 (20 min)"
    reading(e, "door_open", 1, 51)  # a number is not the state true
    assert states(changes) == ["active", "resolved"]
    assert changes[-1].message.endswith("— resolved 22:17 after 21 min")


def test_state_at_once_and_enum_states() -> None:
    e, changes = engine(FAULT, GENERATOR)
    reading(e, "compressor_fault", False, 0)
    reading(e, "compressor_fault", True, 1)
    assert [(c.rule_id, str(c.state)) for c in changes] == [("fridge-compressor-fault", "active")]
    assert "compressor fault since 21:27" in changes[0].message
    reading(e, "mode", "running_no_load", 2, dev="gen-1")
    reading(e, "mode", "running_on_load", 3, dev="gen-1")
    assert changes[-1].rule_id == "generator-on-load"
    assert changes[-1].message == "INFO Generator: mode running on load since 21:29"  # at once: no "(0 s)"
    reading(e, "mode", "off", 40, dev="gen-1")
    assert str(changes[-1].state) == "resolved"
    e.on_readings([Reading("fridge-1", "compressor_fault", None, at(41), Quality.BAD)])
    assert [a.rule_id for a in e.active()] == ["fridge-compressor-fault"]


# -- sensor failure ---------------------------------------------------------------------------

SENSOR = "{id: fridge-probe-failed, kind: sensor_failure, devices: [fridge-1], metric: temperature_c, for: 5m, severity: warning}"


def test_sensor_failure_after_for_says_sensor_failed_and_resolves_on_good_readings() -> None:
    e, changes = engine(SENSOR, RANGE)
    for minute in range(0, 5):
        temp(e, None, minute, Quality.BAD)
    temp(e, 4.0, 5, Quality.STALE)  # says nothing about the sensor
    assert changes == []
    e.tick(at(5))
    assert states(changes) == ["active"]
    msg = changes[0].message
    assert msg.startswith("WARNING Fridge 1 (Room 1): temperature sensor failed") and "since 21:26 (5 min)" in msg
    assert "too warm" not in msg and "too cold" not in msg
    for minute in range(6, 100):
        temp(e, None, minute, Quality.BAD)
    assert states(changes) == ["active"]  # and the range rule saw nothing
    temp(e, 5.0, 100)
    assert states(changes) == ["active", "resolved"]
    assert changes[-1].message.endswith("— resolved 23:06 after 100 min")


# -- external conditions, delay scale, restart --------------------------------------------------


def test_on_condition_raises_updates_and_resolves_one_alert_per_key_and_subject() -> None:
    e, changes = engine(RANGE)
    e.on_condition("supply-4b/gloves-m", "below-minimum", True, "WARNING Exam gloves M: 40 left, below minimum 100",
                   severity=Severity.WARNING, ts=at(0))  # fmt: skip
    e.on_condition("supply-4b/gloves-m", "below-minimum", True, "WARNING Exam gloves M: 40 left, below minimum 100",
                   severity=Severity.WARNING, ts=at(1))  # fmt: skip
    e.on_condition("supply-4b/masks", "below-minimum", True, "WARNING Masks: 10 left", severity=Severity.WARNING, ts=at(1))
    assert [(c.rule_id, c.device_id) for c in changes] == [
        ("below-minimum", "supply-4b/gloves-m"), ("below-minimum", "supply-4b/masks")]
    e.on_condition("supply-4b/gloves-m", "below-minimum", True, "CRITICAL Exam gloves M: out of stock",
                   severity=Severity.CRITICAL, ts=at(2))  # fmt: skip
    assert (changes[-1].message, changes[-1].severity, changes[-1].id) == (
        "CRITICAL Exam gloves M: out of stock", "critical", changes[0].id)
    e.on_condition("supply-4b/gloves-m", "below-minimum", False, "", severity=Severity.WARNING, ts=at(30))
    e.on_condition("supply-4b/gloves-m", "below-minimum", False, "", severity=Severity.WARNING, ts=at(31))
    assert states(changes) == ["active", "active", "active", "resolved"]
    assert changes[-1].message == "CRITICAL Exam gloves M: out of stock — resolved 21:56 after 30 min"
    assert [a.device_id for a in e.active()] == ["supply-4b/masks"]


def test_delay_scale_compresses_for_delays_of_the_new_kinds() -> None:
    site = parse_site(SITE_HEAD + f"    - {RANGE}\n    - {DOOR}\n", "site.yaml")
    changes: list[Alert] = []
    e = AlertEngine(site, on_change=changes.append, delay_scale=120)
    reading(e, "door_open", True, 0)
    e.tick(at(0.16))
    assert changes == []
    e.tick(at(1 / 6))  # 10 s = 20 min / 120
    assert [c.rule_id for c in changes] == ["fridge-door-open"]


def test_open_alerts_of_new_kinds_survive_a_restart() -> None:
    e, changes = engine(RANGE)
    for minute in range(0, 61):
        temp(e, 9.0, minute)
    site = parse_site(SITE_HEAD + f"    - {RANGE}\n", "site.yaml")
    after: list[Alert] = []
    restarted = AlertEngine(site, on_change=after.append, active=e.active())
    temp(restarted, 7.8, 62)  # inside the range, not by the hysteresis: the stored side counts
    assert after == []
    temp(restarted, 7.0, 63)
    assert [(c.id, str(c.state)) for c in after] == [(changes[0].id, "resolved")]
    assert "worst 9.0 °C" in after[0].message


# -- site-file errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "path", "message"),
    [
        ("{id: r, kind: range, devices: [fridge-1], metric: temperature_c, low: 8, high: 2}",
         "alerts.rules[0].high", "high (2) must be above low (8)"),
        ("{id: r, kind: range, devices: [fridge-1], metric: temperature_c, high: 8, low_for: 5m}",
         "alerts.rules[0].low_for", "low_for without low"),
        ("{id: r, kind: range, devices: [fridge-1], metric: temperature_c, low: 2, high: 3, hysteresis: 1}",
         "alerts.rules[0].hysteresis", "hysteresis (1) must be smaller than high − low (1)"),
        ("{id: r, kind: range, devices: [fridge-1], metric: temperature_c}",
         "alerts.rules[0]", "a range rule needs low, high or both"),
        ("{id: r, kind: cumulative_excursion, devices: [fridge-1], metric: temperature_c, high: 8, limit: 25h}",
         "alerts.rules[0].limit", "limit (90000 s) is longer than the window (86400 s)"),
        ("{id: r, kind: cumulative_excursion, devices: [fridge-1], metric: temperature_c, high: 8}",
         "alerts.rules[0].limit", "required key is missing"),
        ("{id: r, kind: rate_of_change, devices: [fridge-1], metric: temperature_c, max_change: -2, per: 10m}",
         "alerts.rules[0].max_change", "expected greater than 0"),
        ("{id: r, kind: rate_of_change, devices: [fridge-1], metric: temperature_c, max_change: 2, per: 0}",
         "alerts.rules[0].per", "per must be longer than 0 s"),
        ("{id: r, kind: stuck, devices: [fridge-1], metric: temperature_c}",
         "alerts.rules[0].for", "required key is missing"),
        ("{id: r, kind: state, devices: [fridge-1], metric: door_open, equals: true, in: [true]}",
         "alerts.rules[0].in", "give equals or in, not both"),
        ("{id: r, kind: state, devices: [fridge-1], metric: door_open, for: 5m}",
         "alerts.rules[0]", "a state rule needs equals or in"),
        ("{id: r, kind: sensor_failure, metric: temperature_c}",
         "alerts.rules[0]", "a rule needs devices or device_kind"),
        ("{id: r, kind: sensor_failure, devices: [fridge-9], metric: temperature_c}",
         "alerts.rules[0].devices[0]", "no device with id 'fridge-9'"),
        ("{id: r, kind: frozen, devices: [fridge-1], metric: temperature_c}",
         "alerts.rules[0].kind", "expected one of 'threshold', 'range', 'cumulative_excursion', 'rate_of_change', 'stuck', 'state', 'sensor_failure'"),
        ("{id: r, kind: range, devices: [fridge-1], metric: temperature_c, high: 8, for: 5m}",
         "alerts.rules[0].for", "unknown key"),
    ],
)  # fmt: skip
def test_bad_rules_are_site_file_errors_naming_the_field(rule: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_site(SITE_HEAD + f"    - {rule}\n", "site.yaml")
    issues = exc.value.issues
    assert [i.path for i in issues] == [path], str(exc.value)
    assert issues[0].message.startswith(message), issues[0].message
    assert issues[0].line == 24
    assert str(exc.value).startswith(f"site.yaml: {path}: {message}")
