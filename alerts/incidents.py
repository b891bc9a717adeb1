"""Outage groups: the devices that go quiet together when one thing they share fails.

A Modbus gateway (devices on one host:port), the MQTT broker (every MQTT device), a location
(every device of a ward or room: its network switch, its power). When *every* device of a group
of two or more is down, the engine raises one incident for the group instead of one
"device offline" alert per device (alerts/engine.py); this module only knows the groups, which
one explains an outage, and the incident's words.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass

from eqmon.config import ModbusDevice, MqttDevice, Site

INCIDENT_RULE_PREFIX = "incident-"

# When two groups have the same devices, the more specific cause wins.
_ORDER = {"gateway": 0, "broker": 1, "location": 2}


@dataclass(frozen=True, slots=True)
class OutageGroup:
    key: str  # "gateway:10.0.0.5:502", "broker:127.0.0.1:1883", "location:Ward 4B"
    kind: str  # gateway, broker, location
    label: str  # "Modbus gateway 10.0.0.5:502", "MQTT broker 127.0.0.1:1883", "Ward 4B"
    members: frozenset[str]
    location: str | None  # the location all its devices share, if they do

    @property
    def rule_id(self) -> str:
        return INCIDENT_RULE_PREFIX + self.kind

    def check(self) -> str:
        if self.kind == "gateway":
            return "check the gateway's power and network cable, then call Facilities"
        if self.kind == "broker":
            return "check the MQTT broker and the sensors' wireless network, then call IT"
        return "check the area's network and power (a switch, a breaker), then call Facilities"


def outage_groups(site: Site) -> list[OutageGroup]:
    """Every group of two or more devices, largest first (a gateway before a location with the
    same devices): the order in which the engine looks for the outage that explains the most."""
    groups: dict[str, tuple[str, str, list[str]]] = {}
    locations: dict[str, str] = {}
    for d in site.devices:
        locations[d.id] = d.location
        if isinstance(d, ModbusDevice):
            key = f"{d.host}:{d.port}"
            groups.setdefault(f"gateway:{key}", ("gateway", f"Modbus gateway {key}", []))[2].append(d.id)
        elif isinstance(d, MqttDevice) and site.mqtt is not None:
            key = f"{site.mqtt.host}:{site.mqtt.port}"
            groups.setdefault(f"broker:{key}", ("broker", f"MQTT broker {key}", []))[2].append(d.id)
        if d.location:
            groups.setdefault(f"location:{d.location}", ("location", d.location, []))[2].append(d.id)
    out = []
    for key, (kind, label, members) in groups.items():
        if len(members) < 2:
            continue
        locs = {locations[m] for m in members}
        out.append(OutageGroup(key, kind, label, frozenset(members), locs.pop() if len(locs) == 1 else None))
    out.sort(key=lambda g: (-len(g.members), _ORDER[g.kind], g.key))
    return out


def explaining(groups: Iterable[OutageGroup], down: Set[str]) -> list[OutageGroup]:
    """The groups whose devices are all ``down``, each one adding devices no larger group
    already explains (a gateway serving two wards is one incident, not three)."""
    covered: set[str] = set()
    out = []
    for g in groups:
        if g.members <= down and not g.members <= covered:
            out.append(g)
            covered |= g.members
    return out


def incident_text(g: OutageGroup, names: list[str], since: str) -> str:
    """``WARNING Modbus gateway 10.0.0.5:502 (Ward 4B): 3 devices not responding since 14:02 —
    Fridge 1, Fridge 2, Freezer 1; check the gateway's power …``"""
    where = f" ({g.location})" if g.location and g.kind != "location" else ""
    every = "all " if g.kind == "location" else ""
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return (
        f"WARNING {g.label}{where}: {every}{len(names)} devices not responding since {since} — {shown}; {g.check()}"
    )
