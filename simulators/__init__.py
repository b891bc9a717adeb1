"""Simulated devices for `eqmon demo`, `eqmon simulate` and the tests.

:class:`SimulatedSite` stands in for every device of a site file that has a ``simulator:``
section: Modbus equipment is served by hand-written Modbus TCP servers (devices sharing a
host:port share one server, as units behind a gateway), smart shelves publish over their own
hand-written MQTT connections, and the site's ``scenario`` injects faults at set times.

    sim = SimulatedSite(site, mqtt_host="127.0.0.1", mqtt_port=1883, speed=1.0)
    await sim.start()
    sim.inject("fridge-1", "drift", {"metric": "temperature_c", "target": 12, "rate_per_min": 1})
    await sim.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from eqmon.config import ModbusDevice, MqttDevice, Site

from .faults import Fault, equipment_faults, sensor_faults, shelf_faults
from .modbus_server import ModbusServer, RegisterBank
from .models import (
    EQUIPMENT_MODELS,
    MODEL_FAULTS,
    PROTOCOL_FAULTS,
    ThermalModel,
    protocol_fault,
)
from .sensors import SENSOR_KINDS, SensorModel
from .shelves import LINK_FAULTS, DevicePublisher, ShelfModel, ShelfPublisher, check_link_fault

__all__ = ["SimulatedSite", "MODEL_NAMES"]

log = logging.getLogger(__name__)

SHELF_MODEL = "smart_shelf"
MQTT_MODELS = (SHELF_MODEL, *sorted(SENSOR_KINDS))
MODEL_NAMES = tuple(sorted(EQUIPMENT_MODELS)) + MQTT_MODELS
EQUIPMENT_FAULTS = MODEL_FAULTS + PROTOCOL_FAULTS


@dataclass
class _ModbusSim:
    device: ModbusDevice
    model: Any  # ThermalModel, ProcessModel or Generator (same interface)
    bank: RegisterBank
    server_key: tuple[str, int]


@dataclass
class _ShelfSim:
    device: MqttDevice
    publisher: ShelfPublisher


class SimulatedSite:
    """Every simulated device of a site, started and stopped together."""

    def __init__(
        self,
        site: Site,
        *,
        mqtt_host: str | None,
        mqtt_port: int | None,
        speed: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        tick_s: float = 0.5,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self.site = site
        self.speed = float(speed)
        self.clock = clock
        self.wall = wall
        self.tick_s = tick_s
        if mqtt_host is None and site.mqtt is not None:
            mqtt_host = site.mqtt.host
        if mqtt_port is None and site.mqtt is not None:
            mqtt_port = site.mqtt.port
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port if mqtt_port is not None else 1883

        self._modbus: dict[str, _ModbusSim] = {}
        self._shelves: dict[str, _ShelfSim] = {}
        self._servers: dict[tuple[str, int], ModbusServer] = {}
        self._no_broker: list[str] = []  # simulated shelves left out: no MQTT broker given
        for dev in site.devices:
            spec = dev.simulator
            if spec is None:
                continue
            rng = random.Random(spec.seed)
            params = spec.param_values()  # validated by the site file's models (eqmon.config)
            if isinstance(dev, ModbusDevice):
                factory = EQUIPMENT_MODELS.get(spec.model)
                if factory is None:
                    raise ValueError(
                        f"{dev.id}: unknown simulator model {spec.model!r} for a Modbus device; "
                        f"expected one of {sorted(EQUIPMENT_MODELS)}"
                    )
                try:
                    model = factory(rng, params)
                except ValueError as exc:
                    raise ValueError(f"{dev.id}: {exc}") from None
                key = (dev.host, dev.port)
                server = self._servers.setdefault(key, ModbusServer(framing=dev.framing))
                if dev.unit_id in server.units:
                    other = next(
                        s.device.id
                        for s in self._modbus.values()
                        if s.server_key == key and s.device.unit_id == dev.unit_id
                    )
                    raise ValueError(
                        f"{dev.id}: unit id {dev.unit_id} on {dev.host}:{dev.port} is already "
                        f"simulated for {other}; expected a different unit_id or port"
                    )
                bank = server.add_unit(dev.unit_id)
                model.write(bank)
                self._modbus[dev.id] = _ModbusSim(dev, model, bank, key)
            else:
                if spec.model not in MQTT_MODELS:
                    raise ValueError(
                        f"{dev.id}: unknown simulator model {spec.model!r} for an MQTT device; "
                        f"expected one of {list(MQTT_MODELS)}"
                    )
                if dev.topic is None or "{" in dev.topic or "+" in dev.topic or "#" in dev.topic:
                    raise ValueError(f"{dev.id}: a simulated MQTT device needs a plain topic of its own")
                mqtt_model: ShelfModel | SensorModel
                try:
                    if spec.model == SHELF_MODEL:
                        mqtt_model = ShelfModel(rng, params)
                    else:
                        mqtt_model = SensorModel(spec.model, rng, params)
                except ValueError as exc:
                    raise ValueError(f"{dev.id}: {exc}") from None
                if self.mqtt_host is None:
                    # No broker to publish to: Modbus devices still run, shelves are left out.
                    self._no_broker.append(dev.id)
                    continue
                pub = DevicePublisher(
                    dev.id,
                    dev.topic,
                    mqtt_model,
                    host=self.mqtt_host,
                    port=self.mqtt_port,
                    speed=self.speed,
                    clock=clock,
                    wall=wall,
                    tz=site.site.timezone,
                )
                self._shelves[dev.id] = _ShelfSim(dev, pub)
        for i, step in enumerate(site.scenario):
            try:
                self._check_fault(step.device, step.fault, step.param_values())
            except (KeyError, ValueError) as exc:
                msg = exc.args[0] if exc.args else str(exc)
                raise ValueError(f"scenario[{i}]: {msg}") from None
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = False
        self._t0 = 0.0
        self.injected: list[tuple[float, str, str, dict[str, Any]]] = []  # (sim s, dev, fault, params)

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def sim_now(self) -> float:
        """Simulated seconds since start."""
        return (self.clock() - self._t0) * self.speed if self._started else 0.0

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("simulated site already started")
        self._t0 = self.clock()
        self._started = True
        try:
            for (host, port), server in self._servers.items():
                try:
                    await server.start(host, port)
                except OSError as exc:
                    devices = ", ".join(d for d, m in self._modbus.items() if m.server_key == (host, port))
                    raise OSError(
                        exc.errno, f"cannot listen on {host}:{port} for simulated {devices}: "
                        f"{exc.strerror or exc} (is another eqmon demo or simulate running?)"
                    ) from None
            for sh in self._shelves.values():
                await sh.publisher.start()
        except BaseException:
            await self.stop()
            raise
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="sim-equipment"))
        if self.site.scenario:
            self._tasks.append(asyncio.create_task(self._scenario(), name="sim-scenario"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for sh in self._shelves.values():
            await sh.publisher.stop()
        for server in self._servers.values():
            await server.stop()
        self._started = False

    async def __aenter__(self) -> SimulatedSite:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def tick(self) -> None:
        """Advance every equipment model to now and update its registers."""
        now = self.sim_now
        for sim in self._modbus.values():
            sim.model.read_setpoint(sim.bank)
            sim.model.step(now)
            sim.model.write(sim.bank)

    async def _tick_loop(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("simulated equipment tick failed")
            await asyncio.sleep(self.tick_s)

    async def _scenario(self) -> None:
        for step in sorted(self.site.scenario, key=lambda s: s.at):
            delay = self._t0 + step.at / self.speed - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                self.inject(step.device, step.fault, step.param_values())
            except (KeyError, ValueError) as exc:  # checked at construction; be safe anyway
                log.error("scenario step at %ss failed: %s", step.at, exc)
            else:
                log.info("scenario: %s %s %s", step.device, step.fault, step.param_values())

    # -- faults -------------------------------------------------------------------------------

    def _check_fault(self, device_id: str, fault: str, params: dict[str, Any]) -> None:
        """Validate without applying, on throw-away copies."""
        if device_id in self._modbus:
            sim = self._modbus[device_id]
            if fault in MODEL_FAULTS:
                spec = sim.device.simulator
                assert spec is not None
                probe = EQUIPMENT_MODELS[spec.model](random.Random(0), spec.param_values())
                probe.inject(fault, params)
            elif fault in PROTOCOL_FAULTS:
                protocol_fault(RegisterBank(), fault, params)
            else:
                raise ValueError(
                    f"{device_id}: unknown fault {fault!r}; expected one of {EQUIPMENT_FAULTS}"
                )
        elif device_id in self._shelves or device_id in self._no_broker:
            mqtt_spec = self.site.device(device_id).simulator
            assert mqtt_spec is not None
            try:
                if fault in LINK_FAULTS:
                    check_link_fault(fault, params)
                elif mqtt_spec.model == SHELF_MODEL:
                    ShelfModel(random.Random(0), mqtt_spec.param_values()).inject(fault, params)
                else:
                    SensorModel(mqtt_spec.model, random.Random(0), mqtt_spec.param_values()).inject(fault, params)
            except ValueError as exc:
                raise ValueError(f"{device_id}: {exc}") from None
        else:
            self._unknown(device_id)

    def _unknown(self, device_id: str) -> NoReturn:
        if device_id in self._no_broker:
            raise KeyError(f"device {device_id!r} is not simulated: no MQTT broker was given")
        try:
            self.site.device(device_id)
        except KeyError:
            raise KeyError(f"no device with id {device_id!r}") from None
        raise KeyError(f"device {device_id!r} has no simulator section, so it is not simulated")

    def inject(self, device_id: str, fault: str, params: dict[str, Any] | None = None) -> None:
        """Apply a fault to a simulated device now.

        Equipment: drift, stuck, sentinel, fault_bit, door_open, exception, slow, silence, reset,
        wrong_tid, wrong_function, short_reply, reboot, reject, clear. MQTT devices: malformed, silence, duplicate, out_of_order, burst, lastwill, clear;
        shelves also restock, take, set_count; sensors also drift, stuck.
        KeyError for an unknown or unsimulated device, ValueError for a bad fault or params.
        """
        params = dict(params or {})
        if device_id in self._modbus:
            sim = self._modbus[device_id]
            try:
                if fault in MODEL_FAULTS:
                    sim.model.inject(fault, params)
                    if fault == "clear":
                        sim.bank.faults.clear()
                elif fault in PROTOCOL_FAULTS:
                    protocol_fault(sim.bank, fault, params)
                    if fault == "reboot":
                        self._servers[sim.server_key].drop_connections()
                else:
                    raise ValueError(f"unknown fault {fault!r}; expected one of {EQUIPMENT_FAULTS}")
            except ValueError as exc:
                raise ValueError(f"{device_id}: {exc}") from None
            sim.model.write(sim.bank)
        elif device_id in self._shelves:
            try:
                self._shelves[device_id].publisher.inject(fault, params)
            except ValueError as exc:
                raise ValueError(f"{device_id}: {exc}") from None
        else:
            self._unknown(device_id)
        self.injected.append((self.sim_now, device_id, fault, params))

    # -- introspection ------------------------------------------------------------------------

    def describe(self) -> list[str]:
        """One line per simulated device."""
        lines = []
        width = max((len(d) for d in [*self._modbus, *self._shelves, *self._no_broker]), default=0)
        mqtt_kinds = [d.simulator.model for d in self.site.devices
                      if d.simulator and (d.id in self._shelves or d.id in self._no_broker)]  # fmt: skip
        kinds = [s.model.kind for s in self._modbus.values()] + mqtt_kinds
        kw = max((len(k) for k in kinds), default=0)
        for dev in self.site.devices:
            if dev.id in self._modbus:
                assert isinstance(dev, ModbusDevice)
                sim = self._modbus[dev.id]
                server = self._servers[sim.server_key]
                port = server.port or dev.port
                line = (
                    f"{dev.id:<{width}}  {sim.model.kind:<{kw}}  modbus {dev.host}:{port} unit {dev.unit_id}"
                )
                faults = self.active_faults(dev.id)
            elif dev.id in self._shelves:
                assert isinstance(dev, MqttDevice)
                model_name = dev.simulator.model if dev.simulator else SHELF_MODEL
                line = (
                    f"{dev.id:<{width}}  {model_name:<{kw}}  mqtt {self.mqtt_host}:{self.mqtt_port} "
                    f"topic {dev.topic}"
                )
                faults = self.active_faults(dev.id)
            elif dev.id in self._no_broker:
                model_name = dev.simulator.model if dev.simulator else SHELF_MODEL
                lines.append(
                    f"{dev.id:<{width}}  {model_name:<{kw}}  not simulated: no MQTT broker given"
                )
                continue
            else:
                continue
            if faults:
                line += "  [" + ", ".join(faults) + "]"
            lines.append(line)
        return lines

    @property
    def device_ids(self) -> list[str]:
        return [*self._modbus, *self._shelves]

    def model_name(self, device_id: str) -> str:
        """The simulator model of a simulated device (``medication_refrigerator``,
        ``smart_shelf`` …); KeyError for a device not simulated."""
        if device_id not in self._modbus and device_id not in self._shelves:
            self._unknown(device_id)
        spec = self.site.device(device_id).simulator
        assert spec is not None
        return spec.model

    def active_faults(self, device_id: str) -> list[str]:
        """The faults in force on a simulated device, as people read them (``drift to 12``,
        ``exception 0x06`` …); KeyError for a device not simulated."""
        if device_id in self._modbus:
            sim = self._modbus[device_id]
            return list(sim.model.active_faults) + list(sim.bank.faults.active)
        if device_id in self._shelves:
            return list(self._shelves[device_id].publisher.active_faults)
        self._unknown(device_id)

    def faults(self, device_id: str) -> list[Fault]:
        """The faults a simulated device takes, with their params (simulators/faults.py;
        ``clear`` not listed); KeyError for a device not simulated."""
        if device_id in self._modbus:
            return equipment_faults(self._modbus[device_id].model)
        if device_id in self._shelves:
            model = self._shelves[device_id].publisher.model
            return shelf_faults(model) if isinstance(model, ShelfModel) else sensor_faults(model)
        self._unknown(device_id)

    def bank(self, device_id: str) -> RegisterBank:
        return self._modbus[device_id].bank

    def model(self, device_id: str) -> ThermalModel | ShelfModel | SensorModel:
        if device_id in self._modbus:
            return self._modbus[device_id].model
        return self._shelves[device_id].publisher.model

    def shelf(self, device_id: str) -> DevicePublisher:
        return self._shelves[device_id].publisher

    def server_port(self, device_id: str) -> int | None:
        """The bound port of a Modbus device's server (None before start)."""
        return self._servers[self._modbus[device_id].server_key].port
