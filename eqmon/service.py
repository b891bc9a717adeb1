"""Service wiring: builds collectors, sinks, the alert engine and the API from a validated site,
and runs them on one asyncio loop.

Data flows one way: devices → collectors → ``accept`` → sinks, latest values and the alert
engine; device status → ``on_status`` → alert engine; alerts → store and notifiers → API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from alerts.engine import AlertEngine
from alerts.notifiers import LogNotifier, Notifier
from alerts.store import AlertStore
from collectors.embedded import EmbeddedStore
from collectors.health import DeviceHealth
from collectors.modbus import ModbusCollector
from collectors.scheduler import PollScheduler
from collectors.sinks import SinkRunner
from dashboard_api.app import create_app
from eqmon.config import ModbusDevice, MqttBroker, Site
from eqmon.domain import Alert, DeviceStatusEvent, Reading
from eqmon.state import MonitorState

log = logging.getLogger("eqmon")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Service:
    """The production service: collectors, sinks, alerts and API for one site."""

    def __init__(
        self,
        site: Site,
        *,
        data_dir: Path,
        mqtt: MqttBroker | None = None,
        api_port: int | None = None,
        delay_scale: float = 1.0,
        clock: Callable[[], float] = time.time,
        notifiers: list[Notifier] | None = None,
    ) -> None:
        self.site = site
        self.data_dir = data_dir
        self.clock = clock
        self.mqtt_broker = mqtt or site.mqtt
        if site.mqtt_devices() and self.mqtt_broker is None:
            raise ValueError("the site has MQTT devices but no `mqtt:` broker section")
        self.api_port = site.api.port if api_port is None else api_port
        self.notifiers = notifiers if notifiers is not None else [LogNotifier()]
        data_dir.mkdir(parents=True, exist_ok=True)

        self.health: dict[str, DeviceHealth] = {}
        for d in site.devices:
            if isinstance(d, ModbusDevice):
                h = DeviceHealth(d.id, offline_after=d.offline_after, emit=self.on_status)
            else:
                h = DeviceHealth(d.id, stale_after=d.stale_after, emit=self.on_status)
            self.health[d.id] = h

        self.alert_store = AlertStore(data_dir / "alerts.sqlite")
        self.engine = AlertEngine(
            site, on_change=self._on_alert, delay_scale=delay_scale, active=self.alert_store.open_alerts()
        )

        self.sinks: list[SinkRunner] = []
        self.embedded: EmbeddedStore | None = None
        tel = site.telemetry
        if tel.embedded is not None:
            self.embedded = EmbeddedStore(data_dir / tel.embedded.path, retention=tel.embedded.retention)
            self.sinks.append(SinkRunner(self.embedded, batch_size=2000, flush_interval=0.5))
        if tel.influxdb is not None:
            from collectors.influx import InfluxSink

            devices = {d.id: (d.kind, d.location) for d in site.devices}
            influx = InfluxSink(tel.influxdb, devices)
            self.sinks.append(
                SinkRunner(influx, batch_size=tel.influxdb.batch_size, flush_interval=tel.influxdb.flush_interval)
            )

        self.modbus = ModbusCollector(site.modbus_devices(), self.health.__getitem__, clock=clock)
        self.scheduler = PollScheduler(self.modbus.pollers, self.accept)
        self.mqtt = None
        if site.mqtt_devices():
            from collectors.mqtt import MqttCollector

            assert self.mqtt_broker is not None
            self.mqtt = MqttCollector(
                self.mqtt_broker, site.mqtt_devices(), self.health.__getitem__, self.accept, clock=clock
            )

        self.state = MonitorState(
            site=site,
            health=self.health,
            engine=self.engine,
            alert_store=self.alert_store,
            embedded=self.embedded,
            clock=clock,
        )
        self.readings_in = 0
        self.state.counters = {
            "readings_received": lambda: self.readings_in,
            "polls": lambda: self.scheduler.polls,
            "poll_failures": lambda: self.scheduler.failures,
            "mqtt_messages": lambda: self.mqtt.messages if self.mqtt else 0,
            "mqtt_bad_payloads": lambda: sum(self.mqtt.bad_payloads.values()) if self.mqtt else 0,
            **{f"sink_{s.sink.name}_written": (lambda s=s: s.written) for s in self.sinks},
            **{f"sink_{s.sink.name}_buffered": (lambda s=s: s.depth) for s in self.sinks},
        }
        self._server: _Server | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None

    # -- data flow --------------------------------------------------------------------------

    async def accept(self, readings: list[Reading]) -> None:
        """Take readings from a collector. When this returns, they are handed on (the contract
        that lets the MQTT collector acknowledge a message only after this)."""
        self.readings_in += len(readings)
        self.state.record(readings)
        for s in self.sinks:
            s.submit(readings)
        self.engine.on_readings(readings)

    def on_status(self, event: DeviceStatusEvent) -> None:
        self.engine.on_status(event)

    def _on_alert(self, alert: Alert) -> None:
        self.alert_store.save(alert)
        for n in self.notifiers:
            try:
                n.notify(alert)
            except Exception:  # a notifier must never stop the engine
                log.exception("notifier %s failed", type(n).__name__)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self.state.started_at = self.clock()
        for s in self.sinks:
            s.start()
        if self.mqtt is not None:
            await self.mqtt.start()
        self.scheduler.start()
        self._housekeeping = asyncio.create_task(self._housekeep(), name="housekeeping")
        config = uvicorn.Config(
            create_app(self.state),
            host=self.site.api.host,
            port=self.api_port,
            log_level="warning",
            lifespan="off",
        )
        self._server = _Server(config)
        self._server_task = asyncio.create_task(self._server.serve(), name="api")
        while not self._server.started:
            if self._server_task.done():
                await self._server_task  # raises what stopped it
                raise RuntimeError(f"the API could not listen on {self.site.api.host}:{self.api_port}")
            await asyncio.sleep(0.05)

    @property
    def api_url(self) -> str:
        port = self.api_port
        if self._server is not None and self._server.servers:
            port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://{self.site.api.host}:{port}"

    async def stop(self) -> None:
        await self.scheduler.stop()
        if self.mqtt is not None:
            await self.mqtt.stop()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        if self._server is not None and self._server_task is not None:
            self._server.should_exit = True
            await self._server_task
        for s in self.sinks:
            await s.stop()
        self.modbus.close()
        self.alert_store.close()

    async def _housekeep(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(1.0)
            now = self.clock()
            self.engine.tick(now)
            if self.mqtt is not None:
                self.mqtt.check_stale(now)
            if self.embedded is not None and now - last_prune > 3600:
                last_prune = now
                await self.embedded.prune(now)
