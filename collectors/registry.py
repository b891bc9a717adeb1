"""The collector protocol and the one registry of collector kinds, keyed by the site file's
``protocol:``.

A new protocol is one module with its collector plus its device model in eqmon/config.py, and one
``register(...)`` line here: the service, the device health settings, the API's device views and
the alert engine then work with it without naming it. A collector kind says:

* how to build one collector for all the site's devices of its protocol (``build``);
* how its devices' availability is judged (``health_settings``: missed polls for a polled
  protocol, silence for a pushed one);
* whether its source can send readings again (``redeliverable``): an MQTT message that the spool
  refused is redelivered by the broker, a Modbus poll is not — its readings are counted lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from eqmon.config import Device, ModbusDevice, MqttBroker, MqttDevice, Site
from eqmon.domain import Reading

from .health import DeviceHealth

Accept = Callable[[list[Reading]], Awaitable[None]]


@dataclass(slots=True)
class LinkStatus:
    """A link a collector depends on (a broker, a gateway), for "cannot reach …" alerts."""

    key: str  # alert key, stable per link
    name: str  # "the MQTT broker 10.0.0.5:1883"
    up: bool
    down_since: float | None
    impact: str  # what the coordinator misses while it is down
    action: str  # what to do
    devices: tuple[str, ...] = ()  # the devices heard through it (their silence is its fault)


@dataclass(slots=True)
class CollectorStatus:
    """What a collector reports about itself: counters for the self-metrics (monotonic counts),
    gauges, counts by label, and its links."""

    protocol: str
    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    # metric -> (label name, {label value: count})
    labelled: dict[str, tuple[str, dict[str, float]]] = field(default_factory=dict)
    links: list[LinkStatus] = field(default_factory=list)


class Collector(Protocol):
    """One running collector for all the devices of one protocol."""

    protocol: str

    async def start(self) -> None:
        """Begin collecting; returns once running (connections may still be under way)."""

    async def stop(self) -> None:
        """Stop collecting and hand on what is under way; idempotent."""

    def tick(self, now: float) -> None:
        """Housekeeping, about once a second (silence checks)."""

    def status(self) -> CollectorStatus:
        """Counters and link state, for the self-metrics, /healthz and link alerts."""


@dataclass(frozen=True, slots=True)
class BuildContext:
    site: Site
    health: Mapping[str, DeviceHealth]
    accept: Accept
    clock: Callable[[], float]
    mqtt_broker: MqttBroker | None = None


@dataclass(frozen=True, slots=True)
class CollectorKind:
    protocol: str
    build: Callable[[BuildContext, Sequence[Any]], Collector]
    health_settings: Callable[[Any], dict[str, Any]]
    redeliverable: bool


_KINDS: dict[str, CollectorKind] = {}


def register(kind: CollectorKind) -> None:
    _KINDS[kind.protocol] = kind


def kind_of(protocol: str) -> CollectorKind:
    try:
        return _KINDS[protocol]
    except KeyError:
        raise ValueError(f"no collector for protocol {protocol!r} (known: {', '.join(sorted(_KINDS))})") from None


def kinds() -> list[CollectorKind]:
    return list(_KINDS.values())


def device_health(device: Device, emit: Callable[..., None]) -> DeviceHealth:
    """The availability tracker of one device, with its protocol's settings."""
    return DeviceHealth(device.id, emit=emit, **kind_of(device.protocol).health_settings(device))


# -- Modbus TCP ----------------------------------------------------------------------------------


class ModbusTcpCollector:
    """Polls every Modbus device on APScheduler time slots (collectors/scheduler.py)."""

    protocol = "modbus"

    def __init__(self, ctx: BuildContext, devices: Sequence[ModbusDevice]) -> None:
        from .modbus import ModbusCollector
        from .scheduler import PollScheduler

        self.modbus = ModbusCollector(devices, ctx.health.__getitem__, clock=ctx.clock)
        self.scheduler = PollScheduler(self.modbus.pollers, ctx.accept)
        self._stopped = False

    async def start(self) -> None:
        self.scheduler.start()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.scheduler.stop()
        self.modbus.close()

    def tick(self, now: float) -> None:
        pass  # availability comes from each poll's outcome

    def status(self) -> CollectorStatus:
        s = self.scheduler
        return CollectorStatus(
            "modbus",
            counters={"polls": s.polls, "poll_failures": s.failures},
        )


def _modbus_health(d: ModbusDevice) -> dict[str, Any]:
    return {"offline_after": d.offline_after}


register(
    CollectorKind(
        "modbus",
        build=lambda ctx, devices: ModbusTcpCollector(ctx, devices),
        health_settings=_modbus_health,
        redeliverable=False,
    )
)


# -- MQTT ----------------------------------------------------------------------------------------


class MqttSubscriber:
    """Subscribes to the broker for every MQTT device (collectors/mqtt.py)."""

    protocol = "mqtt"

    def __init__(self, ctx: BuildContext, devices: Sequence[MqttDevice]) -> None:
        from .mqtt import MqttCollector

        broker = ctx.mqtt_broker or ctx.site.mqtt
        if broker is None:
            raise ValueError("the site has MQTT devices but no `mqtt:` broker section")
        self.broker = broker
        self.mqtt = MqttCollector(broker, devices, ctx.health.__getitem__, ctx.accept, clock=ctx.clock)
        self.device_ids = tuple(d.id for d in devices)
        self._started = False

    async def start(self) -> None:
        self._started = True
        await self.mqtt.start()

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self.mqtt.stop()

    def tick(self, now: float) -> None:
        self.mqtt.check_stale(now)

    def status(self) -> CollectorStatus:
        m = self.mqtt
        b = self.broker
        return CollectorStatus(
            "mqtt",
            counters={
                "messages": m.messages,
                "redelivered": m.duplicates_redelivered,
                "connects": m.connects,
            },
            gauges={"connected": int(m.connected)},
            labelled={"bad_messages": ("reason", dict(m.bad_payloads))},
            links=[
                LinkStatus(
                    key="mqtt-broker-unreachable",
                    name=f"the MQTT broker {b.host}:{b.port}",
                    up=m.connected,
                    down_since=m.disconnected_since,
                    impact="smart shelves and sensors are not heard (their messages wait at the broker)",
                    action="check the broker, then call IT",
                    devices=self.device_ids,
                )
            ],
        )


def _mqtt_health(d: MqttDevice) -> dict[str, Any]:
    return {"stale_after": d.stale_after}


register(
    CollectorKind(
        "mqtt",
        build=lambda ctx, devices: MqttSubscriber(ctx, devices),
        health_settings=_mqtt_health,
        redeliverable=True,
    )
)
