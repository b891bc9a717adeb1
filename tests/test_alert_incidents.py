"""Incidents, silences, maintenance windows, manual resolution and pending conditions, on a
fake clock (alerts/engine.py, alerts/incidents.py)."""

from __future__ import annotations

from typing import Any

from alerts.engine import AlertEngine
from alerts.incidents import outage_groups
from alerts.store import _row, event_for
from eqmon.config import Site
from eqmon.db.repos import Silence
from eqmon.domain import Alert, AlertState, DeviceState, DeviceStatusEvent, Quality, Reading

T0 = 1_780_000_000.0

REGS = [{"name": "temperature_c", "address": 0, "type": "input", "data_type": "int16", "scale": 0.1, "unit": "°C"}]


def modbus(dev_id: str, name: str, location: str, host: str, port: int, unit: int) -> dict[str, Any]:
    return {
        "id": dev_id, "name": name, "kind": "medication_refrigerator", "location": location, "protocol": "modbus",
        "host": host, "port": port, "unit_id": unit, "interval": "10s", "registers": REGS,
    }  # fmt: skip


def ward_site(**alerts: Any) -> Site:
    """Ward 4B: three fridges behind one RS-485 gateway (10.0.0.5:502) in the utility room, a
    freezer on its own address in the same room; Ward 5A: two fridges on their own addresses;
    a lone warmer in the linen bay (shares nothing)."""
    devices = [
        modbus("fridge-1", "Fridge 1", "Ward 4B utility", "10.0.0.5", 502, 1),
        modbus("fridge-2", "Fridge 2", "Ward 4B utility", "10.0.0.5", 502, 2),
        modbus("fridge-3", "Fridge 3", "Ward 4B utility", "10.0.0.5", 502, 3),
        modbus("freezer-1", "Freezer 1", "Ward 4B utility", "10.0.0.9", 502, 1),
        modbus("fridge-5a", "Fridge 5A", "Ward 5A", "10.0.1.1", 502, 1),
        modbus("fridge-5b", "Fridge 5B", "Ward 5A", "10.0.1.2", 502, 1),
        modbus("warmer-1", "Warmer", "Linen bay", "10.0.2.1", 502, 1),
    ]
    rules = [
        {"id": "too-warm", "kind": "threshold", "device_kind": "medication_refrigerator", "metric": "temperature_c",
         "above": 8, "for": "30m", "hysteresis": 0.5, "severity": "critical"},
    ]  # fmt: skip
    return Site.model_validate(
        {"site": {"name": "Test", "timezone": "Europe/London"}, "devices": devices,
         "alerts": {"rules": rules, **alerts}}  # fmt: skip
    )


def engine(**alerts: Any) -> tuple[AlertEngine, list[Alert]]:
    changes: list[Alert] = []
    return AlertEngine(ward_site(**alerts), on_change=changes.append), changes


def down(e: AlertEngine, dev: str, t: float) -> None:
    e.on_status(DeviceStatusEvent(dev, DeviceState.OFFLINE, T0 + t, "no reply"))


def up(e: AlertEngine, dev: str, t: float) -> None:
    e.on_status(DeviceStatusEvent(dev, DeviceState.ONLINE, T0 + t))


def temp(e: AlertEngine, dev: str, value: float, t: float) -> None:
    e.on_readings([Reading(dev, "temperature_c", value, T0 + t, Quality.GOOD, "°C")])


def opened(changes: list[Alert]) -> list[tuple[str, str]]:
    return [(a.rule_id, a.device_id) for a in changes if a.state == AlertState.ACTIVE and not a.resolved_at]


# -- groups -------------------------------------------------------------------------------------


def test_groups_are_gateways_and_locations_of_two_or_more_largest_first() -> None:
    groups = outage_groups(ward_site())
    assert [(g.key, sorted(g.members)) for g in groups] == [
        ("location:Ward 4B utility", ["freezer-1", "fridge-1", "fridge-2", "fridge-3"]),
        ("gateway:10.0.0.5:502", ["fridge-1", "fridge-2", "fridge-3"]),
        ("location:Ward 5A", ["fridge-5a", "fridge-5b"]),
    ]


# -- incidents ----------------------------------------------------------------------------------


def test_a_gateway_going_quiet_is_one_incident_not_three_alerts() -> None:
    e, changes = engine()
    for i, dev in enumerate(("fridge-1", "fridge-2", "fridge-3")):
        down(e, dev, 2 * i)  # each device's poll fails in turn
    e.tick(T0 + 59)
    assert changes == []  # incident_wait (60 s) after the first: the whole room might follow
    assert [p["device_id"] for p in e.pending(T0 + 59)] == ["fridge-1", "fridge-2", "fridge-3"]
    e.tick(T0 + 60)
    assert opened(changes) == [("incident-gateway", "gateway:10.0.0.5:502")]
    (incident,) = changes
    assert incident.message == (
        "WARNING Modbus gateway 10.0.0.5:502 (Ward 4B utility): 3 devices not responding since 21:26 — "
        "Fridge 1, Fridge 2, Fridge 3; check the gateway's power and network cable, then call Facilities"
    )
    assert incident.started_at == T0 and incident.extra["devices"] == ["fridge-1", "fridge-2", "fridge-3"]
    assert incident.extra["location"] == "Ward 4B utility"
    for t in range(10, 3600, 10):
        e.tick(T0 + t)  # an hour later: still the one incident, no per-device alert
    assert len(changes) == 1 and e.pending(T0 + 3600) == []


def test_when_the_incident_clears_a_device_still_down_raises_its_own_alert_after_the_wait() -> None:
    e, changes = engine()
    for dev in ("fridge-1", "fridge-2", "fridge-3"):
        down(e, dev, 0)
    e.tick(T0 + 60)
    up(e, "fridge-1", 600)  # the gateway is back: fridge-1 answers, the others on their next poll
    assert [(a.rule_id, str(a.state)) for a in changes] == [
        ("incident-gateway", "active"), ("incident-gateway", "resolved")]  # fmt: skip
    up(e, "fridge-2", 610)
    for t in range(610, 660, 10):
        e.tick(T0 + t)
    assert len(changes) == 2  # fridge-3 waits incident_wait (60 s) after the incident cleared
    e.tick(T0 + 660)
    assert opened(changes[2:]) == [("device-offline", "fridge-3")]
    assert "Fridge 3 (Ward 4B utility): not responding since 21:26 (no reply)" in changes[2].message


def test_a_whole_location_on_several_addresses_is_one_incident() -> None:
    e, changes = engine()
    down(e, "fridge-5a", 0)
    down(e, "fridge-5b", 5)
    e.tick(T0 + 60)
    assert opened(changes) == [("incident-location", "location:Ward 5A")]
    assert changes[0].message.startswith("WARNING Ward 5A: all 2 devices not responding since 21:26 — Fridge 5A, Fridge 5B;")
    assert "check the area's network and power" in changes[0].message


def test_a_location_with_a_gateway_inside_is_one_incident_for_the_location() -> None:
    e, changes = engine()
    for i, dev in enumerate(("fridge-1", "fridge-2", "fridge-3", "freezer-1")):
        down(e, dev, 10 * i)  # the gateway's three first, then the freezer on its own address
    e.tick(T0 + 60)
    assert opened(changes) == [("incident-location", "location:Ward 4B utility")]


def test_one_device_of_a_group_down_raises_its_own_alert_after_the_wait() -> None:
    e, changes = engine()
    down(e, "fridge-2", 0)
    e.tick(T0 + 30)
    assert changes == []
    (waiting,) = e.pending(T0 + 30)
    assert (waiting["rule_id"], waiting["device_id"], waiting["due"]) == ("device-offline", "fridge-2", T0 + 60)
    e.tick(T0 + 60)
    assert opened(changes) == [("device-offline", "fridge-2")]
    up(e, "fridge-2", 90)
    assert changes[-1].state == AlertState.RESOLVED


def test_a_device_that_shares_nothing_raises_at_once_and_a_short_blip_of_a_grouped_one_raises_nothing() -> None:
    e, changes = engine()
    down(e, "warmer-1", 0)
    assert opened(changes) == [("device-offline", "warmer-1")]
    down(e, "fridge-5a", 0)
    up(e, "fridge-5a", 20)
    e.tick(T0 + 120)
    assert opened(changes) == [("device-offline", "warmer-1")]


def test_an_outage_is_dated_from_when_it_began_and_waits_from_when_it_was_seen() -> None:
    """A silent device is found stale ``stale_after`` after its last message, an unanswering one
    offline at its third failed poll: the texts and the alert's start say since when it has been
    quiet (the event's ``since``), the wait for its group counts from when it was seen."""
    e, changes = engine()
    e.on_status(DeviceStatusEvent("fridge-2", DeviceState.STALE, T0 + 600, "nothing received for 10 min", since=T0))
    e.tick(T0 + 659)
    assert changes == []
    (waiting,) = e.pending(T0 + 659)
    assert (waiting["since"], waiting["due"]) == (T0, T0 + 660) and "not answering since 21:26;" in waiting["message"]
    e.tick(T0 + 660)
    (alert,) = changes
    assert alert.message == (
        "WARNING Fridge 2 (Ward 4B utility): silent (no data) since 21:26 (nothing received for 10 min); "
        "check its power and network cable, then call Facilities"
    )
    assert alert.started_at == T0
    e.on_status(DeviceStatusEvent("fridge-5a", DeviceState.OFFLINE, T0 + 620, "no reply", since=T0 + 600))
    e.on_status(DeviceStatusEvent("fridge-5b", DeviceState.OFFLINE, T0 + 630, "no reply", since=T0 + 610))
    e.tick(T0 + 680)
    assert opened(changes[1:]) == [("incident-location", "location:Ward 5A")]
    assert "all 2 devices not responding since 21:36 — " in changes[1].message and changes[1].started_at == T0 + 600


def test_devices_behind_a_link_that_is_down_wait_for_it() -> None:
    e, changes = engine()
    e.on_link("mqtt-broker-unreachable", True, ["fridge-5a"])
    down(e, "fridge-5a", 0)
    for t in range(0, 600, 10):
        e.tick(T0 + t)
    assert changes == []  # the link's own warning says it (alerts/links.py)
    e.on_link("mqtt-broker-unreachable", False, ["fridge-5a"])
    e.tick(T0 + 600)
    assert changes == []
    e.tick(T0 + 660)
    assert opened(changes) == [("device-offline", "fridge-5a")]


def test_incident_open_at_a_restart_is_kept_and_resolved_when_a_device_answers() -> None:
    e, changes = engine()
    down(e, "fridge-5a", 0)
    down(e, "fridge-5b", 0)
    e.tick(T0 + 60)
    restarted_changes: list[Alert] = []
    restarted = AlertEngine(ward_site(), on_change=restarted_changes.append, active=e.active())
    restarted.tick(T0 + 70)  # nothing known yet about the devices: the incident stays
    assert restarted_changes == [] and [a.rule_id for a in restarted.active()] == ["incident-location"]
    down(restarted, "fridge-5a", 80)
    down(restarted, "fridge-5b", 80)
    restarted.tick(T0 + 200)
    assert restarted_changes == []  # not raised twice
    up(restarted, "fridge-5b", 210)
    assert [str(a.state) for a in restarted_changes] == ["resolved"]


# -- silences and maintenance ---------------------------------------------------------------------


def silence(t0: float, t1: float, **match: Any) -> Silence:
    return Silence(
        id=f"s{int(t0)}", owner="Sam (biomed)", reason="replacing the door seal", starts_at=T0 + t0,
        ends_at=T0 + t1, created_at=T0, **match,
    )  # fmt: skip


def test_a_silenced_alert_is_kept_but_marked_and_notifies_when_the_silence_ends() -> None:
    e, changes = engine()
    e.set_silences([silence(0, 3600, device_id="fridge-1")], T0)
    for minute in range(0, 31):
        temp(e, "fridge-1", 9.0, minute * 60)
    e.tick(T0 + 1860)
    (raised,) = changes
    assert raised.rule_id == "too-warm" and raised.extra["silenced"]["owner"] == "Sam (biomed)"
    assert raised.extra["silenced"]["until"] == T0 + 3600
    e.tick(T0 + 3599)
    assert len(changes) == 1
    e.tick(T0 + 3600)  # the silence ends; the fridge is still warm
    assert len(changes) == 2 and "silenced" not in changes[1].extra and changes[1].id == raised.id
    assert event_for(_row(raised), _row(changes[1]), T0)[0] == "unsilenced"  # type: ignore[index]
    assert event_for(None, _row(raised), T0)[0] == "raised"  # type: ignore[index]


def test_a_silence_by_rule_and_by_location_matches_only_those() -> None:
    e, changes = engine()
    e.set_silences([silence(0, 7200, rule_id="too-warm", location="Ward 5A")], T0)
    for minute in range(0, 31):
        temp(e, "fridge-5a", 9.0, minute * 60)
        temp(e, "fridge-1", 9.0, minute * 60)
    assert {a.device_id: bool(a.extra.get("silenced")) for a in changes} == {"fridge-5a": True, "fridge-1": False}


def test_a_device_in_maintenance_raises_nothing_and_is_evaluated_again_after() -> None:
    e, changes = engine()
    e.set_silences([silence(0, 3600, device_id="fridge-1", kind="maintenance")], T0)
    assert e.maintenance("fridge-1") is not None and e.maintenance("fridge-2") is None
    for minute in range(0, 60):
        temp(e, "fridge-1", 12.0, minute * 60)  # door open, shelves out: warm
        e.tick(T0 + minute * 60)
    down(e, "fridge-1", 3000)  # unplugged for a while
    e.tick(T0 + 3590)
    assert changes == [] and e.pending(T0 + 3590) == []
    e.tick(T0 + 3600)
    assert e.maintenance("fridge-1") is None
    e.tick(T0 + 3660)
    assert opened(changes) == [("device-offline", "fridge-1")]  # still unplugged after the work
    up(e, "fridge-1", 3700)
    for minute in range(62, 62 + 31):
        temp(e, "fridge-1", 9.0, minute * 60)
    # the 30-min delay counts from the first warm reading after the window, not from during it
    assert opened(changes)[-1] == ("too-warm", "fridge-1") and changes[-1].started_at == T0 + 62 * 60


# -- manual resolution and pending ----------------------------------------------------------------


def test_resolved_by_hand_with_a_note_and_raised_again_while_the_condition_holds() -> None:
    e, changes = engine()
    for minute in range(0, 31):
        temp(e, "fridge-1", 9.0, minute * 60)
    (first,) = changes
    assert e.resolve("nope", "Ann", T0) is None
    e.resolve(first.id, "Ann", T0 + 1900, "moved the vials to fridge 2")
    done = changes[1]
    assert done.id == first.id and done.state == AlertState.RESOLVED
    assert done.message.endswith("— resolved by hand by Ann at 21:58 after 31 min (moved the vials to fridge 2), worst 9.0 °C")
    kind, _, actor, note = event_for(_row(first), _row(done), T0)  # type: ignore[misc]
    assert (kind, actor, note) == ("resolved", "Ann", "moved the vials to fridge 2")
    e.tick(T0 + 1901)  # still 9 °C: raised again at once, a new alert
    again = changes[2]
    assert again.id != first.id and again.state == AlertState.ACTIVE
    assert again.message.endswith("still so after Ann resolved it by hand at 21:58")
    temp(e, "fridge-1", 5.0, 2000)
    e.resolve("x", "Ann", T0 + 2000)
    assert changes[-1].state == AlertState.RESOLVED and e.active() == []


def test_pending_lists_conditions_whose_delay_runs() -> None:
    e, changes = engine()
    temp(e, "fridge-1", 9.0, 0)
    temp(e, "fridge-1", 9.2, 600)
    (p,) = e.pending(T0 + 600)
    assert (p["rule_id"], p["device_id"], p["since"], p["due"]) == ("too-warm", "fridge-1", T0, T0 + 1800)
    assert p["message"] == "Fridge 1 (Ward 4B utility): too-warm since 21:26, raises at 21:56 if it still holds"
    temp(e, "fridge-1", 5.0, 700)
    assert e.pending(T0 + 700) == [] and changes == []
