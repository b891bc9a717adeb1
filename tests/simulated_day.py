"""A site's simulated devices stepped on a fake clock through the alert engine: no server, no
broker, no socket, no sleep — a simulated day in seconds.

Every simulated Modbus unit's model (simulators/models.py) is stepped on simulated time,
written into its register bank and polled at its device's ``interval``: its registers are
decoded as the collector decodes them (``compile_register``), and the poll's outcome goes to
the device's real ``DeviceHealth`` (``collectors.registry.device_health``, with the
protocol's settings) as ``ModbusPoller.poll`` reports it — ``success`` after a poll that got
through; ``failure`` with the collector's own error text when the unit is silent (the
simulator's ``silence`` fault: "no reply within 2 s") or its gateway is down (``gateway``:
"cannot connect to host:port: timeout"), so a device goes offline after ``offline_after``
failed polls. A failed poll is reported at the time it started (the collector reports it when
the request times out, within the interval).

Every simulated MQTT device (smart shelves, environment sensors) runs its real publisher
(simulators/shelves.py ``DevicePublisher``: publish on change once held, heartbeat) with its
MQTT client replaced by a list; each message is parsed as the collector parses it
(``parse_payload``), its readings go to the engine and the device's health hears from it
(``success``); ``check_stale`` runs on every step, as the service's housekeeping does, so a
silent shelf goes stale after its ``stale_after``.

Health events go to ``engine.on_status``; the engine is ticked every ``step`` seconds. Each
change of an alert is kept with the fake time it happened at (``log``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from alerts.engine import AlertEngine
from collectors.health import DeviceHealth
from collectors.modbus import compile_register
from collectors.mqtt import parse_payload
from collectors.registry import device_health
from eqmon.config import ModbusDevice, MqttDevice, Site
from eqmon.domain import Alert, AlertState, DeviceStatusEvent, Reading
from simulators.modbus_server import RegisterBank
from simulators.models import EQUIPMENT_MODELS, MODEL_FAULTS, protocol_fault
from simulators.sensors import SensorModel
from simulators.shelves import DevicePublisher, ShelfModel

T0 = 1_780_000_000.0
TABLES = {"holding": "holding", "input": "input", "coil": "coils", "discrete_input": "discrete"}
Decoder = Callable[[list[int], float, list[Reading]], None]


def polled_every(data: dict[str, Any], interval: str) -> dict[str, Any]:
    """The site dict with every Modbus device polled every ``interval`` (a day polled every 2 s
    is five times the work of one polled every 10 s, for the same rules)."""
    for d in data["devices"]:
        if d["protocol"] == "modbus":
            d["interval"] = interval
    return data


@dataclass
class ModbusUnit:
    device: ModbusDevice
    model: Any  # ThermalModel, ProcessModel or Generator
    bank: RegisterBank
    health: DeviceHealth
    reads: list[tuple[str, int, int, Decoder]]  # (bank table, address, words, decoder)
    next_poll: float = 0.0


class _Sent:
    """Stands in for a simulated device's MQTT client: keeps what it publishes."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        self.messages.append((topic, payload))


@dataclass
class MqttUnit:
    device: MqttDevice
    publisher: DevicePublisher
    health: DeviceHealth
    sent: _Sent


@dataclass
class Change:
    at: float  # fake time of the change (epoch seconds)
    alert: Alert


@dataclass
class SimulatedDay:
    """``site``'s simulated devices through an ``AlertEngine`` from ``t0`` on; ``run(until)``
    advances it, ``inject`` and ``gateway`` put faults in at the current time."""

    site: Site
    seed_offset: int = 0
    t0: float = T0
    step: float = 10.0
    now: float = 0.0  # simulated seconds since t0
    log: list[Change] = field(default_factory=list)
    events: list[DeviceStatusEvent] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)  # (device, "door"/"defrost"/"use"/"restock")

    def __post_init__(self) -> None:
        self.engine = AlertEngine(self.site, on_change=lambda a: self.log.append(Change(self.t0 + self.now, a)))
        self.modbus: dict[str, ModbusUnit] = {}
        self.mqtt: dict[str, MqttUnit] = {}
        self.gateways_down: set[tuple[str, int]] = set()
        for dev in self.site.devices:
            spec = dev.simulator
            if spec is None:
                continue
            rng = random.Random(spec.seed + self.seed_offset)
            health = device_health(dev, self._status)
            if isinstance(dev, ModbusDevice):
                model = EQUIPMENT_MODELS[spec.model](rng, spec.param_values())
                reads = [
                    (TABLES[r.type], r.address, 1 if r.type in ("coil", "discrete_input") else r.words,
                     compile_register(dev.id, r, 0))
                    for r in dev.registers
                ]  # fmt: skip
                self.modbus[dev.id] = ModbusUnit(dev, model, RegisterBank(), health, reads)
            elif isinstance(dev, MqttDevice):
                assert dev.topic is not None
                params = spec.param_values()
                mqtt_model = ShelfModel(rng, params) if spec.model == "smart_shelf" else SensorModel(spec.model, rng, params)
                pub = DevicePublisher(
                    dev.id, dev.topic, mqtt_model, host="127.0.0.1", port=1, clock=lambda: self.now,
                    wall=lambda: self.t0 + self.now, tz=self.site.site.timezone,
                )  # fmt: skip
                sent = _Sent()
                pub.client = sent  # type: ignore[assignment]
                pub.begin()
                self.mqtt[dev.id] = MqttUnit(dev, pub, health, sent)

    def _status(self, event: DeviceStatusEvent) -> None:
        self.events.append(event)
        self.engine.on_status(event)

    # -- faults ---------------------------------------------------------------------------------

    def inject(self, device_id: str, fault: str, params: dict[str, Any] | None = None) -> None:
        """A fault now, as ``SimulatedSite.inject`` applies it. Of the Modbus protocol faults
        only ``silence`` is modelled here (the poll fails as a timeout); ``clear`` ends it."""
        params = dict(params or {})
        if device_id in self.mqtt:
            self.mqtt[device_id].publisher.inject(fault, params)
            return
        unit = self.modbus[device_id]
        if fault in MODEL_FAULTS:
            unit.model.inject(fault, params)
            if fault == "clear":
                unit.bank.faults.clear()
        elif fault == "silence":
            protocol_fault(unit.bank, fault, params)
        else:
            raise NotImplementedError(f"{fault}: the fake-clock day models silence only; run SimulatedSite")

    def gateway(self, host: str, port: int, *, down: bool) -> None:
        """The gateway (every device on ``host:port``) loses its power or network, or is back."""
        (self.gateways_down.add if down else self.gateways_down.discard)((host, port))

    # -- time -----------------------------------------------------------------------------------

    def run(self, until: float, plan: Iterable[tuple[float, Callable[[], None]]] = ()) -> None:
        """Advance to ``until`` simulated seconds since t0, doing each ``(at, action)`` of
        ``plan`` at the first step at or after ``at`` (after the models reached that time,
        before the devices are polled)."""
        todo = sorted(plan, key=lambda p: p[0])
        while self.now <= until:
            t = self.now
            for unit in self.modbus.values():
                unit.model.step(t)
                if getattr(unit.model, "door_open", False):
                    self.seen.add((unit.device.id, "door"))
                if getattr(unit.model, "defrosting", False):
                    self.seen.add((unit.device.id, "defrost"))
            while todo and todo[0][0] <= t:
                todo.pop(0)[1]()
            ts = self.t0 + t
            for unit in self.modbus.values():
                if t >= unit.next_poll:
                    unit.next_poll = t + unit.device.interval
                    self._poll(unit, ts)
            for m in self.mqtt.values():
                self._hear(m, t, ts)
            for m in self.mqtt.values():
                m.health.check_stale(ts)
            self.engine.tick(ts)
            self.now += self.step

    def _poll(self, unit: ModbusUnit, ts: float) -> None:
        dev = unit.device
        if (dev.host, dev.port) in self.gateways_down:
            unit.health.failure(ts, f"cannot connect to {dev.host}:{dev.port}: timeout")
            return
        unit.model.write(unit.bank)
        if unit.bank.faults.silent:
            unit.health.failure(ts, f"{dev.host}:{dev.port} unit {dev.unit_id}: no reply within {dev.timeout:g} s")
            return
        readings: list[Reading] = []
        bank = unit.bank
        for table, address, words, decode in unit.reads:
            decode([int(w) for w in getattr(bank, table)[address : address + words]], ts, readings)
        unit.health.success(ts, rejected=(), registers=len(dev.registers))
        self.engine.on_readings(readings)

    def _hear(self, m: MqttUnit, t: float, ts: float) -> None:
        model = m.publisher.model
        before = (getattr(model, "taken", 0), getattr(model, "restocks", 0))
        m.publisher.tick(t)
        if getattr(model, "taken", 0) > before[0]:
            self.seen.add((m.device.id, "use"))
        if getattr(model, "restocks", 0) > before[1]:
            self.seen.add((m.device.id, "restock"))
        for topic, payload in m.sent.messages:
            assert topic == m.device.topic
            self.engine.on_readings(parse_payload(m.device, m.device.id, payload, ts))
            m.health.success(ts)
        m.sent.messages.clear()

    # -- what happened ----------------------------------------------------------------------------

    @property
    def changes(self) -> list[Alert]:
        return [c.alert for c in self.log]

    def raised(self) -> list[Change]:
        """Each alert as it was raised (its first change), in order."""
        first: dict[str, Change] = {}
        for c in self.log:
            first.setdefault(c.alert.id, c)
        return list(first.values())

    def resolved(self) -> dict[str, Change]:
        """The resolution of each alert resolved, by alert id."""
        return {c.alert.id: c for c in self.log if c.alert.state == AlertState.RESOLVED}
