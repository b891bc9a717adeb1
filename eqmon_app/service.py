"""Service wiring: builds collectors, sinks, the alert engine and the API from a validated site,
and runs them on one asyncio loop.

Data flows one way: devices → collectors → ``accept`` → sinks, latest values and the alert
engine; device status → ``on_status`` → alert engine; alerts → store and notifiers → API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from alerts.engine import AlertEngine
from alerts.notifiers import LogNotifier, Notifier
from alerts.store import AlertStore
from collectors.embedded import EmbeddedStore
from collectors.errors import SpoolFull
from collectors.health import DeviceHealth
from collectors.modbus import ModbusCollector
from collectors.scheduler import PollScheduler
from collectors.sinks import SinkRunner
from collectors.spool import DeadLetterStore, Spool
from dashboard_api.app import create_app
from dashboard_api.state import MonitorState
from eqmon.config import ModbusDevice, MqttBroker, Site
from eqmon.domain import Alert, DeviceStatusEvent, Reading, Severity

log = logging.getLogger("eqmon")

SPOOL_ALERT = "telemetry-spool-filling"
MQTT_BROKER_ALERT = "mqtt-broker-unreachable"
MQTT_BROKER_GRACE = 60.0  # a broker restart is not an incident; a minute without it is
SINK_FAILING_GRACE = 300.0  # retries ride out short outages; five minutes of failures is one


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

        # Telemetry: collectors -> durable spool -> one runner per sink, each with its cursor.
        tel = site.telemetry
        sink_names = (["embedded"] if tel.embedded is not None else []) + (
            ["influxdb"] if tel.influxdb is not None else []
        )
        self.spool = Spool(
            data_dir / tel.spool.path,
            max_readings=tel.spool.capacity(site),
            full_policy=tel.spool.full_policy,
            sinks=sink_names,
        )
        self.dead_letters = DeadLetterStore(data_dir / "dead_letters.sqlite")
        self.sinks: list[SinkRunner] = []
        self.embedded: EmbeddedStore | None = None
        history: object = None
        if tel.embedded is not None:
            self.embedded = EmbeddedStore(
                data_dir / tel.embedded.path,
                retention=tel.embedded.retention,
                rollup_retention=tel.embedded.rollup_retention,
            )
            history = self.embedded
            self.sinks.append(SinkRunner(self.embedded, self.spool, batch_size=5000, flush_interval=0.5))
        self.influx = None
        if tel.influxdb is not None:
            from collectors.influx import InfluxHistory, InfluxSink

            devices = {d.id: (d.kind, d.location) for d in site.devices}
            self.influx = InfluxSink(tel.influxdb, devices, dead_letters=self.dead_letters)
            self.sinks.append(
                SinkRunner(
                    self.influx,
                    self.spool,
                    batch_size=tel.influxdb.batch_size,
                    flush_interval=tel.influxdb.flush_interval,
                )
            )
            if history is None:
                history = InfluxHistory(tel.influxdb, devices)
        self.readings_lost: dict[str, int] = {"spool_full": 0}
        self.accept_seconds = 0.0
        self.accept_calls = 0

        self.modbus = ModbusCollector(site.modbus_devices(), self.health.__getitem__, clock=clock)
        self.scheduler = PollScheduler(self.modbus.pollers, self._accept_poll)
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
            history=history,
            dead_letters=self.dead_letters,
            mqtt=self.mqtt,
        )
        self.state.metrics_text = self.metrics_text
        self.readings_in = 0
        self.state.counters = {
            "readings_received": lambda: self.readings_in,
            "polls": lambda: self.scheduler.polls,
            "poll_failures": lambda: self.scheduler.failures,
            "mqtt_messages": lambda: self.mqtt.messages if self.mqtt else 0,
            "mqtt_bad_payloads": lambda: sum(self.mqtt.bad_payloads.values()) if self.mqtt else 0,
            **{f"sink_{s.sink.name}_written": (lambda s=s: s.written) for s in self.sinks},
            **{f"sink_{s.sink.name}_pending": (lambda s=s: s.depth) for s in self.sinks},
            "spool_depth": lambda: self.spool.depth,
            "spool_rejected_full": lambda: self.spool.rejected_full,
            "spool_dropped_oldest": lambda: self.spool.dropped_oldest,
            "readings_lost_spool_full": lambda: self.readings_lost["spool_full"],
            "dead_lettered": lambda: self.influx.dead_lettered if self.influx else 0,
        }
        self._server: _Server | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._lost_logged = False
        self._last_self_metrics = 0.0

    # -- data flow --------------------------------------------------------------------------

    async def accept(self, readings: list[Reading]) -> None:
        """Take readings from a collector. When this returns, they are durably in the spool
        (fsync'd, group-committed with every other call waiting at that moment): the contract
        that lets the MQTT collector acknowledge a message only after this. Then the latest
        values and the alert engine see them.

        Raises SpoolFull when the spool is at its bound under policy ``reject``: nothing of this
        call was stored (the MQTT collector must not acknowledge; see ``_accept_poll``).
        Safe to call concurrently and often: the spool's writer thread batches the calls."""
        self.readings_in += len(readings)
        t0 = time.perf_counter()
        await self.spool.put(readings)
        self.accept_seconds += time.perf_counter() - t0
        self.accept_calls += 1
        for s in self.sinks:
            s.notify(len(readings))
        self.state.record(readings)
        self.engine.on_readings(readings)

    async def _accept_poll(self, readings: list[Reading]) -> None:
        """accept() for Modbus polls: a device cannot be asked to send a poll again, so under
        SpoolFull its readings are lost; counted, logged once per episode, still shown as
        latest values and evaluated by the alert engine."""
        try:
            await self.accept(readings)
        except SpoolFull:
            if self.readings_lost["spool_full"] == 0 or not self._lost_logged:
                log.error("telemetry spool full: poll readings are lost (counted) until it has room")
                self._lost_logged = True
            self.readings_lost["spool_full"] += len(readings)
            self.state.record(readings)
            self.engine.on_readings(readings)
        else:
            self._lost_logged = False

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
        # The API's socket first: a port in use stops start-up before anything else runs
        # (uvicorn would sys.exit() from inside its task).
        api_sock = socket.socket(socket.AF_INET6 if ":" in self.site.api.host else socket.AF_INET)
        api_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            api_sock.bind((self.site.api.host, self.api_port))
        except OSError as exc:
            api_sock.close()
            raise OSError(
                exc.errno, f"cannot listen on {self.site.api.host}:{self.api_port} for the API: {exc.strerror}"
            ) from None
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
        self._server_task = asyncio.create_task(self._server.serve(sockets=[api_sock]), name="api")
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
        if self.site.telemetry.self_metrics_interval > 0:
            with contextlib.suppress(SpoolFull):
                await self._write_self_metrics(self.clock())
        for s in self.sinks:
            await s.stop()
        self.spool.close()
        self.dead_letters.close()
        if self.state.history is not None and self.state.history is not self.embedded:
            self.state.history.close()
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
            self._check_spool(now)
            self._check_links(now)
            interval = self.site.telemetry.self_metrics_interval
            if interval > 0 and now - self._last_self_metrics >= interval:
                try:
                    await self._write_self_metrics(now)
                except SpoolFull:
                    pass  # counted by the spool; the next interval tries again

    def _check_links(self, now: float) -> None:
        """One warning alert per outage of a link eqmon depends on: the MQTT broker, a sink."""
        m = self.mqtt
        if m is not None:
            since = m.disconnected_since
            if since is not None and now - since >= MQTT_BROKER_GRACE:
                b = self.mqtt_broker
                assert b is not None
                self.engine.raise_system(
                    MQTT_BROKER_ALERT,
                    Severity.WARNING,
                    f"WARNING eqmon: cannot reach the MQTT broker {b.host}:{b.port} since "
                    f"{self.engine.clock_time(since)}; smart shelves and sensors are not heard "
                    "(their messages wait at the broker) — check the broker, then call IT",
                    since,
                )
            elif since is None:
                self.engine.resolve_system(MQTT_BROKER_ALERT, now)
        for s in self.sinks:
            key = f"telemetry-sink-{s.name}-failing"
            if s.failing_since is not None and now - s.failing_since >= SINK_FAILING_GRACE:
                self.engine.raise_system(
                    key,
                    Severity.WARNING,
                    f"WARNING eqmon: cannot write telemetry to {s.name} since "
                    f"{self.engine.clock_time(s.failing_since)} ({s.last_error}); readings wait in "
                    f"the spool ({s.depth} so far) — check that {s.name} is reachable, then call IT",
                    s.failing_since,
                )
            elif s.failing_since is None:
                self.engine.resolve_system(key, now)

    def _check_spool(self, now: float) -> None:
        """Warning alert when the spool passes ``warn_at`` full; resolved below 90 % of that."""
        warn_at = self.site.telemetry.spool.warn_at
        fill = self.spool.fill
        if fill >= warn_at:
            self.engine.raise_system(
                SPOOL_ALERT,
                Severity.WARNING,
                f"WARNING eqmon: telemetry spool filling up, {fill:.0%} full "
                f"({self.spool.depth} readings, oldest {self.spool.oldest_age(now) / 60:.0f} min); "
                "check that InfluxDB is reachable, then call IT",
                now,
            )
        elif fill < warn_at * 0.9:
            self.engine.resolve_system(SPOOL_ALERT, now)

    # -- self-metrics -----------------------------------------------------------------------

    def _self_metric_values(self, now: float) -> dict[str, float]:
        v: dict[str, float] = {
            "readings_accepted": self.spool.accepted,
            "readings_rejected_spool_full": self.spool.rejected_full,
            "readings_dropped_oldest": self.spool.dropped_oldest,
            "readings_lost_spool_full": self.readings_lost["spool_full"],
            "spool_depth": self.spool.depth,
            "spool_oldest_age_s": self.spool.oldest_age(now),
            "spool_fill_ratio": self.spool.fill,
            "dead_lettered": self.influx.dead_lettered if self.influx else 0,
        }
        for s in self.sinks:
            v[f"written_{s.name}"] = s.written
            v[f"write_seconds_avg_{s.name}"] = s.write_seconds / s.batches if s.batches else 0.0
        v["accept_seconds_avg"] = self.accept_seconds / self.accept_calls if self.accept_calls else 0.0
        return v

    async def _write_self_metrics(self, now: float) -> None:
        """eqmon's own metrics into the spool as measurement eqmon_internal (device "_eqmon"):
        not into the latest values or the alert engine."""
        from collectors.influx import INTERNAL_DEVICE

        self._last_self_metrics = now
        readings = [Reading(INTERNAL_DEVICE, k, float(x), now) for k, x in self._self_metric_values(now).items()]
        await self.spool.put(readings)
        for s in self.sinks:
            s.notify(len(readings))

    def metrics_text(self) -> str:
        """Prometheus text exposition format (version 0.0.4) of the self-metrics."""
        now = self.clock()
        out: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                out.append(f"{name}{labels} {float(value)!r}")

        metric("eqmon_readings_accepted_total", "counter", "Readings durably accepted into the spool.",
               [("", self.spool.accepted)])
        metric("eqmon_readings_rejected_total", "counter", "Readings refused because the spool was full.",
               [('{reason="spool_full"}', self.spool.rejected_full)])
        metric("eqmon_readings_lost_total", "counter", "Readings lost: Modbus polls refused by a full spool, "
               "or oldest readings dropped by policy drop_oldest.",
               [('{reason="spool_full"}', self.readings_lost["spool_full"]),
                ('{reason="dropped_oldest"}', self.spool.dropped_oldest)])
        metric("eqmon_readings_written_total", "counter", "Readings written, per sink.",
               [(f'{{sink="{s.name}"}}', s.written) for s in self.sinks])
        metric("eqmon_readings_dead_lettered_total", "counter", "Points a sink rejected as malformed.",
               [('{sink="influxdb"}', self.influx.dead_lettered if self.influx else 0)])
        metric("eqmon_sink_pending_readings", "gauge", "Readings in the spool not yet written, per sink.",
               [(f'{{sink="{s.name}"}}', s.depth) for s in self.sinks])
        metric("eqmon_sink_write_failures_total", "counter", "Failed sink writes (retried).",
               [(f'{{sink="{s.name}"}}', s.failures) for s in self.sinks])
        metric("eqmon_spool_depth_readings", "gauge", "Readings in the spool.", [("", self.spool.depth)])
        metric("eqmon_spool_capacity_readings", "gauge", "Bound of the spool.", [("", self.spool.max_readings)])
        metric("eqmon_spool_oldest_age_seconds", "gauge", "Age of the oldest spool entry.",
               [("", self.spool.oldest_age(now))])
        out.append("# HELP eqmon_sink_write_seconds Latency of successful sink writes.")
        out.append("# TYPE eqmon_sink_write_seconds summary")
        for s in self.sinks:
            out.append(f'eqmon_sink_write_seconds_sum{{sink="{s.name}"}} {s.write_seconds!r}')
            out.append(f'eqmon_sink_write_seconds_count{{sink="{s.name}"}} {float(s.batches)!r}')
        if self.mqtt is not None:
            m = self.mqtt
            metric("eqmon_mqtt_messages_total", "counter", "MQTT messages whose readings were handed on.",
                   [("", m.messages)])
            metric("eqmon_mqtt_bad_messages_total", "counter", "MQTT messages that could not become readings, by reason.",
                   [(f'{{reason="{r}"}}', n) for r, n in sorted(m.bad_payloads.items())] or [('{reason="none"}', 0)])
            metric("eqmon_mqtt_redelivered_total", "counter", "MQTT messages the broker sent again (DUP).",
                   [("", m.duplicates_redelivered)])
            metric("eqmon_mqtt_connected", "gauge", "1 while connected to the MQTT broker.", [("", int(m.connected))])
            metric("eqmon_mqtt_connects_total", "counter", "Successful MQTT connections.", [("", m.connects)])
        out.append("# HELP eqmon_accept_seconds Latency of accept() (spool group commit).")
        out.append("# TYPE eqmon_accept_seconds summary")
        out.append(f"eqmon_accept_seconds_sum {self.accept_seconds!r}")
        out.append(f"eqmon_accept_seconds_count {float(self.accept_calls)!r}")
        return "\n".join(out) + "\n"
