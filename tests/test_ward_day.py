"""Issue 9: the bundled simulators run a ward for 24 simulated hours. Their normal behaviour —
door openings, defrost cycles, thermostat cycling, sensor noise, shelf use and restocking —
raises no alert; the same day with one fault of each kind raises exactly the expected alerts,
each within its delay, and resolves them when the fault ends.

The ward is the example site (examples/site.yaml) plus two Modbus gateways, each with units
behind one host:port (different unit ids): 127.0.0.1:15030 in the treatment room (fridge-3,
freezer-2) and 127.0.0.1:15031 in the medication room (fridge-4, fridge-5, freezer-3). The
example's rules apply: those by kind as they are, those listing devices (door left open,
compressor fault, failed and stuck probe, freezer warming fast) extended to the new units of
the kinds they list. Every Modbus unit is polled every 10 s (the example's 2 s is the demo's;
"PLCs are polled every 1–10 s"), which keeps the three days of this file to seconds.

The smart shelves (MQTT) run too — taken from by day and night, restocked — through their real
publisher and DeviceHealth. They have no alert rule yet (stock rules come with the inventory,
issue 10): they are here for device health, and one of them goes silent.

Everything runs on a fake clock (tests/simulated_day.py): the models are stepped on simulated
time, registers decoded and MQTT messages parsed as the collectors do, and device silence goes
through the real DeviceHealth (a failed poll is ``failure``: offline after ``offline_after``;
a silent shelf is found by ``check_stale`` after ``stale_after``) into ``engine.on_status``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from eqmon.config import Site
from eqmon.domain import Alert, AlertState, DeviceState
from simulators.modbus_server import word_to_int16
from tests.simulated_day import Change, SimulatedDay, polled_every
from tests.sitefiles import example_dict

TZ = ZoneInfo("Europe/London")
MIDNIGHT = datetime(2026, 6, 1, tzinfo=TZ).timestamp()  # the day runs from 00:00 local time
H, MIN = 3600.0, 60.0
POLL = 10.0  # every unit's poll interval, and the engine's tick
NOISE = 0.1  # ± °C of sensor noise on the reported value, which has 0.1 °C resolution
GATEWAY = ("127.0.0.1", 15030)  # the treatment room's gateway

# New units: (template device, id, name, location, port, unit id, seed)
NEW_UNITS = [
    ("fridge-1", "fridge-3", "Medication refrigerator 3", "Ward 4B treatment room", 15030, 1, 11),
    ("freezer-1", "freezer-2", "Vaccine freezer 2", "Ward 4B treatment room", 15030, 2, 12),
    ("fridge-1", "fridge-4", "Medication refrigerator 4", "Ward 4B medication room", 15031, 1, 13),
    ("fridge-1", "fridge-5", "Medication refrigerator 5", "Ward 4B medication room", 15031, 2, 14),
    ("freezer-1", "freezer-3", "Vaccine freezer 3", "Ward 4B medication room", 15031, 3, 15),
]


def ward() -> Site:
    data = polled_every(example_dict(), "10s")
    data["scenario"] = []
    by_id = {d["id"]: d for d in data["devices"]}
    new = []
    for template, dev_id, name, location, port, unit_id, seed in NEW_UNITS:
        t = by_id[template]
        new.append(dict(t, id=dev_id, name=name, location=location, port=port, unit_id=unit_id,
                        simulator={"model": t["simulator"]["model"], "seed": seed}))  # fmt: skip
    data["devices"] += new
    kind = {d["id"]: d["kind"] for d in data["devices"]}
    for rule in data["alerts"]["rules"]:
        if "devices" in rule:
            kinds = {kind[d] for d in rule["devices"]}
            rule["devices"] += [d["id"] for d in new if d["kind"] in kinds]
    return Site.model_validate(data)


def hm(ts: float) -> str:
    return datetime.fromtimestamp(ts, TZ).strftime("%H:%M")


def at(clock: str) -> float:
    """Seconds since midnight of "HH:MM"."""
    h, m = clock.split(":")
    return int(h) * H + int(m) * MIN


def leaves(start: float, limit: float, rate: float) -> tuple[float, float]:
    """When readings of a temperature moving from ``start`` at ``rate`` °C/s leave ``limit``
    for good: the first reading beyond it comes once the temperature is within the noise of
    it, the last reading back inside before it is past it by the noise and the rounding (the
    threshold's timer restarts at each); the next reading, at most one poll later, starts the
    timer that raises. Seconds after the start: (earliest, latest)."""
    first = (limit - (NOISE - 0.05) - start) / rate
    last_inside = (limit + NOISE + 0.05 - start) / rate
    return first, last_inside + POLL


# -- a normal day ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed_offset", [0, 100])
def test_a_ward_day_of_normal_behaviour_raises_no_alert(seed_offset: int) -> None:
    site = ward()
    day = SimulatedDay(site, seed_offset=seed_offset, t0=MIDNIGHT)
    day.run(24 * H)
    assert [a.message for a in day.changes] == []
    # every device answered all day, shelves included (they published on change and heartbeat)
    assert {(e.device_id, e.state) for e in day.events} == {(d.id, DeviceState.ONLINE) for d in site.devices}
    # and the day had what the rules must not mistake for a fault
    cabinets = [d.id for d in site.devices if d.kind in ("medication_refrigerator", "vaccine_freezer")]
    shelves = [d.id for d in site.devices if d.kind == "smart_shelf"]
    expected = {(d, "door") for d in [*cabinets, "warmer-1"]} | {(d, "defrost") for d in cabinets}
    expected |= {(s, what) for s in shelves for what in ("use", "restock")}
    assert expected <= day.seen


# -- a day with one fault of each kind ---------------------------------------------------------------


def test_a_ward_day_with_one_fault_of_each_kind_raises_exactly_the_expected_alerts() -> None:
    site = ward()
    day = SimulatedDay(site, t0=MIDNIGHT)
    onset: dict[str, Any] = {}  # what each fault started from, read from the models at onset

    def fault(device: str, name: str, params: dict[str, Any] | None = None) -> Callable[[], None]:
        def act() -> None:
            if name != "clear" and device in day.modbus:
                model = day.modbus[device].model
                assert not model.active_faults  # one fault per device
                onset[device] = model.temperature
            elif name == "silence" and device in day.mqtt:
                onset[device] = day.mqtt[device].health.last_success  # heard last then
            day.inject(device, name, params)
            if name == "stuck":
                onset["stuck_at"] = word_to_int16(day.modbus[device].model.temperature_word()) / 10

        return act

    def gateway(down: bool) -> Callable[[], None]:
        return lambda: day.gateway(*GATEWAY, down=down)

    def fridge_5_when_its_door_shuts() -> None:  # (the fault shuts it itself after its 30 min)
        onset["fridge-5 at 15:30"] = day.modbus["fridge-5"].model.temperature

    plan = [
        (at("02:00"), fault("fridge-2", "drift", {"target": 12.0, "rate_per_min": 0.1})),  # thermostat failing
        (at("05:00"), fault("fridge-2", "clear")),
        (at("04:00"), fault("freezer-1", "fault_bit", {"bit": 3})),  # compressor failure
        (at("08:00"), fault("freezer-1", "clear")),  # repaired
        (at("06:00"), fault("warmer-1", "drift", {"target": 65.0, "rate_per_min": 0.5})),  # heater relay stuck
        (at("07:00"), fault("warmer-1", "clear")),
        (at("09:00"), fault("fridge-4", "sentinel")),  # probe failed
        (at("10:00"), fault("fridge-4", "clear")),
        (at("11:00"), fault("fridge-1", "silence")),  # the unit stops answering
        (at("12:00"), fault("fridge-1", "clear")),
        (at("13:00"), gateway(down=True)),  # the treatment room's gateway loses power
        (at("14:00"), gateway(down=False)),
        (at("15:00"), fault("fridge-5", "door_open", {"minutes": 30})),  # door left open half an hour
        (at("15:30"), fridge_5_when_its_door_shuts),
        (at("16:00"), fault("freezer-3", "stuck")),  # probe stuck
        (at("20:00"), fault("freezer-3", "clear")),
        (at("21:00"), fault("shelf-linens", "silence")),  # a shelf drops out (MQTT)
        (at("22:00"), fault("shelf-linens", "clear")),
    ]
    day.run(24 * H, plan)

    raised = day.raised()
    assert [(c.alert.rule_id, c.alert.device_id) for c in raised] == [
        # the excursion counts from the first reading out of range; the threshold's timer
        # restarts at each reading back inside while the readings chatter across 8 °C
        ("fridge-excursion", "fridge-2"),
        ("fridge-too-warm", "fridge-2"),
        ("compressor-fault", "freezer-1"),
        ("warmer-too-hot", "warmer-1"),
        ("freezer-too-warm", "freezer-1"),
        ("probe-failed", "fridge-4"),
        ("device-offline", "fridge-1"),
        ("incident-gateway", "gateway:127.0.0.1:15030"),
        ("door-left-open", "fridge-5"),
        ("probe-stuck", "freezer-3"),
        ("device-offline", "shelf-linens"),
    ]
    alerts = {(c.alert.rule_id, c.alert.device_id): c for c in raised}
    resolved = day.resolved()

    def check(rule: str, device: str, earliest: float, latest: float, text: str) -> tuple[Alert, Change | None]:
        """Raised within [earliest, latest] (seconds since midnight), with ``text``."""
        c = alerts[(rule, device)]
        assert earliest <= c.at - MIDNIGHT <= latest, (rule, device, hm(c.at), c.at - MIDNIGHT, earliest, latest)
        assert c.alert.message == text
        return c.alert, resolved.get(c.alert.id)

    # fridge-2 drifts from its temperature at 02:00 at 0.1 °C/min toward 12 °C: it crosses 8 °C
    # after (8 - T)/rate (±2 min of noise at that slope, + a poll), then 60 min above 8 °C.
    # The reportable excursion counts the same 60 min from the first reading out of range (the
    # readings chatter across 8.0 °C for a minute or two: several short excursions, then one).
    rate = 0.1 / MIN
    early, late = leaves(onset["fridge-2"], 8.0, rate)
    warm = alerts[("fridge-too-warm", "fridge-2")].alert
    a, end = check(
        "fridge-too-warm", "fridge-2", at("02:00") + early + H, at("02:00") + late + H,
        f"CRITICAL Medication refrigerator 2 (Ward 4B nurses' station): temperature {warm.value:.1f} °C above 8 °C "
        f"since {hm(warm.started_at)} (60 min); keep the door shut, move stock to a working fridge and call "
        "Pharmacy (ext 4410)",
    )  # fmt: skip
    assert 12.0 - NOISE <= float(a.value) <= 12.0 + NOISE  # at its target by then
    assert end is not None and at("05:00") + 10 * MIN <= end.at - MIDNIGHT <= at("05:00") + 45 * MIN  # cooled below 7.5 °C
    assert re.fullmatch(r".* — resolved 05:\d\d after \d h \d+ min, worst 12\.[01] °C", end.alert.message)
    exc = alerts[("fridge-excursion", "fridge-2")]
    assert at("02:00") + early + H <= exc.at - MIDNIGHT <= at("02:00") + late + H
    assert re.fullmatch(
        r"WARNING Medication refrigerator 2 \(Ward 4B nurses' station\): temperature out of range \(2–8 °C\) for "
        r"60 min in the last 24 h \(\d excursions? since 02:\d\d, worst 1[12]\.\d °C\): a reportable excursion; "
        r"record a reportable excursion and ask Pharmacy \(ext 4410\) whether the stock can be used",
        exc.alert.message,
    )
    assert exc.alert.id not in resolved  # on record while its 60 min are within the last 24 h

    # freezer-1's compressor fails at 04:00: the fault bit is read at the next poll; with the
    # compressor stopped only the heat leak (and door openings, defrost: they only warm it)
    # moves it, so it passes -15 °C at most tau·ln((ambient - T)/(ambient + 14.85)) later.
    a, end = check(
        "compressor-fault", "freezer-1", at("04:00"), at("04:00") + POLL,
        "CRITICAL Vaccine freezer (Ward 4B clean utility room): compressor fault since 04:00; "
        "move the stock to a working unit and call Facilities (ext 2200)",
    )
    assert end is not None and end.at - MIDNIGHT <= at("08:00") + POLL
    assert end.alert.message.endswith(" — resolved 08:00 after 4 h")
    spec = day.modbus["freezer-1"].model.spec
    passes = spec.tau_s * math.log((spec.ambient - onset["freezer-1"]) / (spec.ambient - (-15.0 + NOISE + 0.05)))
    warm = alerts[("freezer-too-warm", "freezer-1")].alert
    a, end = check(
        "freezer-too-warm", "freezer-1", at("04:00") + H, at("04:00") + passes + POLL + H,
        f"CRITICAL Vaccine freezer (Ward 4B clean utility room): temperature {warm.value:.1f} °C above -15 °C since "
        f"{hm(warm.started_at)} (60 min); keep the door shut, move vaccines to the backup freezer and call Pharmacy (ext 4410)",
    )  # fmt: skip
    assert -15.0 < float(a.value) < -5.0
    assert end is not None and at("08:00") <= end.at - MIDNIGHT <= at("08:00") + H  # cooled below -16 °C
    assert re.fullmatch(r".* — resolved 0[89]:\d\d after \d h \d+ min, worst -\d+\.\d °C", end.alert.message)
    # the worst: at 08:00, at least where the leak alone had brought it in 4 h
    leak_only = spec.ambient - (spec.ambient - onset["freezer-1"]) * math.exp(-4 * H / spec.tau_s)
    assert leak_only - NOISE - 0.05 <= end.alert.extra["resolution"]["worst"] < -4.0

    # warmer-1's heater stays on: 0.5 °C/min from its temperature at 06:00 past 54 °C, then 10 min.
    early, late = leaves(onset["warmer-1"], 54.0, 0.5 / MIN)
    hot = alerts[("warmer-too-hot", "warmer-1")].alert
    a, end = check(
        "warmer-too-hot", "warmer-1", at("06:00") + early + 10 * MIN, at("06:00") + late + 10 * MIN,
        f"WARNING Blanket warmer (Ward 4B linen bay): temperature {hot.value:.1f} °C above 54 °C since "
        f"{hm(hot.started_at)} (10 min); do not use the blankets; switch the warmer off and call Facilities (ext 2200)",
    )  # fmt: skip
    assert 58.5 < float(a.value) < 60.0  # 10 min at 0.5 °C/min past 54 °C
    assert end is not None and at("07:00") <= end.at - MIDNIGHT <= at("07:00") + H  # cooled below 53 °C
    assert re.fullmatch(r".* — resolved 07:\d\d after \d+ min, worst 6[45]\.\d °C", end.alert.message)

    # fridge-4's probe reads 0x7FFF from the 09:00 poll on: 5 min later, "sensor failed".
    a, end = check(
        "probe-failed", "fridge-4", at("09:05"), at("09:05") + POLL,
        "WARNING Medication refrigerator 4 (Ward 4B medication room): temperature sensor failed (the device "
        "reports no valid reading) since 09:00 (5 min); the temperature is not known; check with a thermometer "
        "and call Facilities (ext 2200)",
    )
    assert end is not None and at("10:00") <= end.at - MIDNIGHT <= at("10:00") + POLL
    assert end.alert.message.endswith(" — resolved 10:00 after 60 min")

    # fridge-1 stops answering at 11:00: offline at its third failed poll (offline_after 3, 10 s
    # apart), then it waits incident_wait (60 s) for the others of its location: they answer.
    offline_after = site.modbus_devices()[0].offline_after
    wait = site.alerts.incident_wait
    a, end = check(
        "device-offline", "fridge-1", at("11:00") + (offline_after - 1) * POLL + wait,
        at("11:00") + offline_after * POLL + wait,
        "WARNING Medication refrigerator 1 (Ward 4B clean utility room): not responding since 11:00 "
        "(127.0.0.1:15021 unit 1: no reply within 2 s); check its power and network cable, then call Facilities",
    )
    assert end is not None and at("12:00") <= end.at - MIDNIGHT <= at("12:00") + POLL
    assert end.alert.message.endswith(" — resolved 12:00 after 60 min")

    # The treatment room's gateway goes down at 13:00: both units behind it fail their polls,
    # offline together; one incident naming them — no "device offline" for either.
    a, end = check(
        "incident-gateway", "gateway:127.0.0.1:15030", at("13:00") + (offline_after - 1) * POLL + wait,
        at("13:00") + offline_after * POLL + wait,
        "WARNING Modbus gateway 127.0.0.1:15030 (Ward 4B treatment room): 2 devices not responding since 13:00 — "
        "Medication refrigerator 3, Vaccine freezer 2; check the gateway's power and network cable, then call Facilities",
    )
    assert a.extra["devices"] == ["fridge-3", "freezer-2"] and a.extra["group"] == "gateway"
    assert end is not None and at("14:00") <= end.at - MIDNIGHT <= at("14:00") + POLL
    assert end.alert.message.endswith(" — resolved 14:00 after 60 min")

    # fridge-5's door is left open at 15:00 for 30 min: the door rule after 20 min — counted
    # from when the door opened, which is 15:00 unless someone had just opened it (a door
    # opening of the model lasts 10–45 s): then that opening is the one left open. The open
    # door warms the fridge past 8 °C, yet no temperature alert: back in range within the hour.
    door = alerts[("door-left-open", "fridge-5")].alert
    assert at("15:00") - 45 <= door.started_at - MIDNIGHT <= at("15:00")
    a, end = check(
        "door-left-open", "fridge-5", door.started_at - MIDNIGHT + 20 * MIN, door.started_at - MIDNIGHT + 20 * MIN + POLL,
        f"WARNING Medication refrigerator 5 (Ward 4B medication room): door open since {hm(door.started_at)} "
        "(20 min); shut the door and check the temperature in 30 min",
    )
    assert onset["fridge-5 at 15:30"] > 10.0
    assert end is not None and at("15:30") <= end.at - MIDNIGHT <= at("15:30") + POLL
    assert end.alert.message.endswith(" — resolved 15:30 after 30 min")  # (a shade over 30 min when opened earlier)

    # freezer-3's probe sticks at 16:00: 3 h without change (counted from the first reading of
    # the value it stuck at, which may be a poll or two before 16:00).
    stuck = alerts[("probe-stuck", "freezer-3")].alert
    assert at("16:00") - 3 * POLL <= stuck.started_at - MIDNIGHT <= at("16:00")
    a, end = check(
        "probe-stuck", "freezer-3", stuck.started_at - MIDNIGHT + 3 * H, stuck.started_at - MIDNIGHT + 3 * H + POLL,
        f"WARNING Vaccine freezer 3 (Ward 4B medication room): temperature sensor may be stuck at "
        f"{onset['stuck_at']:.1f} °C since {hm(stuck.started_at)} (no change for 3 h); check with a thermometer; "
        "the probe may need replacing (Facilities, ext 2200)",
    )
    assert end is not None and at("20:00") <= end.at - MIDNIGHT <= at("20:00") + 3 * POLL  # the value moves
    assert re.fullmatch(r".* — resolved 20:00 after 4 h", end.alert.message)

    # shelf-linens stops publishing at 21:00: found silent stale_after (10 min) after its last
    # message (a heartbeat at most 30 s before 21:00), then incident_wait for the linen bay.
    last = onset["shelf-linens"] - MIDNIGHT
    stale_after = next(d for d in site.mqtt_devices() if d.id == "shelf-linens").stale_after
    assert at("21:00") - 30 <= last <= at("21:00")
    a, end = check(
        "device-offline", "shelf-linens", last + stale_after + wait, last + stale_after + POLL + wait,
        f"WARNING Bed sheets shelf (Ward 4B linen bay): silent (no data) since {hm(MIDNIGHT + last)} (nothing "
        "received for 10 min); check its power and network cable, then call Facilities",
    )
    assert end is not None and at("22:00") <= end.at - MIDNIGHT <= at("22:00") + 30 + POLL  # its next heartbeat
    assert re.fullmatch(r".* — resolved 22:00 after 60 min", end.alert.message)

    # The devices that went quiet, and only those; every alert but the excursion record resolved.
    assert {(e.device_id, e.state) for e in day.events if e.state != DeviceState.ONLINE} == {
        ("fridge-1", DeviceState.DEGRADED), ("fridge-1", DeviceState.OFFLINE),
        ("fridge-3", DeviceState.DEGRADED), ("fridge-3", DeviceState.OFFLINE),
        ("freezer-2", DeviceState.DEGRADED), ("freezer-2", DeviceState.OFFLINE),
        ("shelf-linens", DeviceState.STALE),
    }  # fmt: skip
    assert [(a.rule_id, a.device_id) for a in day.engine.active()] == [("fridge-excursion", "fridge-2")]
    assert all(c.alert.state in (AlertState.ACTIVE, AlertState.RESOLVED) for c in day.log)

