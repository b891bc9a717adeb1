"""Service wiring: builds collectors, sinks, the alert engine and the API from a validated site,
and runs them on one asyncio loop.

Data flows one way: devices → collectors → ``accept`` → the durable spool → sinks; what the spool
took is published on the bus (eqmon/bus.py) to the latest values and the alert engine (and next
the shelf feed of the inventory, eqmon_app/shelves.py); device status → bus → alert engine; alerts → store and notifiers → API. The
collectors come from one registry keyed by protocol (collectors/registry.py), the self-metrics
from one registry (eqmon_app/metrics.py), the link and spool warnings from alerts/links.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from alerts.engine import AlertEngine
from alerts.links import BROKER_GRACE, SINK_FAILING_GRACE, LinkFacts, LinkWatch
from alerts.notifiers import Notifier
from alerts.notify import Dispatcher, NotificationPlanner, build_senders
from alerts.store import AlertStore, import_legacy_alerts
from collectors.deadletters import DeadLetterStore
from collectors.embedded import EmbeddedStore
from collectors.errors import SpoolFull
from collectors.health import DeviceHealth
from collectors.registry import BuildContext, Collector, device_health, kind_of
from collectors.sinks import SinkRunner
from collectors.spool import Spool
from dashboard_api.app import create_app
from dashboard_api.auth import Authenticator
from dashboard_api.state import MonitorState
from eqmon import db
from eqmon.bus import Bus
from eqmon.config import DEFAULT_NOTIFICATIONS, MqttBroker, Site
from eqmon.db.repos import AuditLog, OutboxRepo, SilenceRepo, UserRepo, queue_notifications
from eqmon.domain import Alert, Reading
from inventory.setup import apply_site_inventory

from .metrics import SelfMetrics
from .readiness import Readiness
from .shelves import ShelfConsumer, StockConditions, has_shelf_bins

log = logging.getLogger("eqmon")

STOCK_REVIEW_S = 60.0  # every bin's stock condition is reviewed this often (and on each shelf change)
# ... a slice of the bins each second (by location id), not all at once: 10,000 bins take ~0.3 s
# of CPU, which in one go held up the API's requests by as much (bench/api_load.py)
STOCK_SLICES = int(STOCK_REVIEW_S)


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
        # Synchronous notifiers called after each alert save (tests, extensions); people are
        # notified through the outbox (site file `notifications:`, a log line by default).
        self.notifiers = notifiers if notifiers is not None else []
        data_dir.mkdir(parents=True, exist_ok=True)

        self.bus = Bus()
        self.health: dict[str, DeviceHealth] = {
            d.id: device_health(d, self.bus.publish_status) for d in site.devices
        }

        # The state database (alerts and their history …): migrated before anything reads it;
        # a schema newer than this eqmon raises db.SchemaTooNew, an unreachable one
        # db.DatabaseUnavailable, a password_env not set ValueError.
        self.db = db.open_engine(site.database, data_dir)
        try:
            db.upgrade(self.db)
            import_legacy_alerts(self.db, data_dir)
            # The site file's inventory (items, locations, bins) into the catalog tables:
            # idempotent; what the file no longer declares is kept with its stock history.
            if site.inventory is not None:
                changes = apply_site_inventory(self.db, site.inventory)
                if changes.changed_anything:
                    log.info("%s", changes.summary())
                for line in changes.kept_lines() + changes.notes:
                    log.warning("%s", line)
        except BaseException:
            self.db.dispose()
            raise
        self.alert_store = AlertStore(self.db, clock=clock)

        # Notifications: rows queued in the outbox with each alert change (same transaction),
        # sent by the dispatcher while the service runs (alerts/notify/).
        self.notify_settings = site.notifications or DEFAULT_NOTIFICATIONS
        self.outbox = OutboxRepo(self.db)
        self.planner = NotificationPlanner(site, self.notify_settings, clock=clock)
        self.mqtt_publisher: Any = None
        if any(c.type == "mqtt" for c in self.notify_settings.channels):
            if self.mqtt_broker is None:
                log.error("notifications: mqtt channels need a broker (mqtt:); their rows wait")
            else:
                from collectors.mqtt import MqttPublisher

                self.mqtt_publisher = MqttPublisher(self.mqtt_broker)
        self.dispatcher = Dispatcher(
            self.outbox,
            build_senders(
                self.notify_settings,
                publish=self.mqtt_publisher.publish if self.mqtt_publisher is not None else None,
            ),
            self.notify_settings.retry,
            clock=clock,
            poll_interval=self.notify_settings.poll_interval,
        )
        self.engine = AlertEngine(
            site, on_change=self._on_alert, delay_scale=delay_scale, active=self.alert_store.open_alerts()
        )
        self.links = LinkWatch(self.engine)
        # Silences and maintenance windows: read from the database at start, every few seconds
        # and whenever the API changes one (refresh_silences).
        self.silences = SilenceRepo(self.db)
        self.refresh_silences()
        for a in self.engine.active():  # escalations and repeats go on from each alert's raise
            raised = [e["ts"] for e in self.alert_store.events(a.id) if e["kind"] in ("raised", "reopened", "unsilenced")]
            self.planner.restore(a, raised[-1] if raised else a.started_at)

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
        history: Any = None
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
        self.readings_lost = 0  # polls refused by a full spool (a poll cannot be sent again)
        self.readings_in = 0
        self.accept_seconds = 0.0
        self.accept_calls = 0
        self._lost_logged = False

        # Collectors: one per protocol present in the site, from the registry.
        by_protocol: dict[str, list[Any]] = {}
        for d in site.devices:
            by_protocol.setdefault(d.protocol, []).append(d)
        self.collectors: list[Collector] = []
        for protocol, devs in by_protocol.items():
            kind = kind_of(protocol)
            accept = self.accept if kind.redeliverable else self._accept_once
            ctx = BuildContext(site, self.health, accept, clock, self.mqtt_broker)
            self.collectors.append(kind.build(ctx, devs))

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
            silences=self.silences,
            audit_log=AuditLog(self.db),
            silences_changed=self.refresh_silences,
            auth=Authenticator(UserRepo(self.db), clock),
            db=self.db,
            stock_changed=self.on_stock_changed,
        )
        # Subscribers, in order: the latest values first (what the API shows), then the engine.
        self.bus.subscribe_readings("latest-values", self.state.record)
        self.bus.subscribe_readings("alert-engine", self.engine.on_readings)
        self.bus.subscribe_status("live-updates", self.state.publish_device)  # GET /api/v1/events
        self.bus.subscribe_status("alert-engine", self.engine.on_status)
        # The inventory: shelf readings -> counts in the ledger (a worker thread) -> stock and
        # recalibrate conditions -> the engine (on the loop); only when a bin has a shelf.
        # Every bin's stock condition is reviewed every STOCK_REVIEW_S as well (housekeeping).
        # The API's stock changes are followed by their bins' conditions at once (on_stock_changed).
        self.stock_conditions = StockConditions(self.db, site.site.timezone)
        self.stock_review = self.stock_conditions if site.inventory is not None else None
        self._stock_slice = 0  # the next slice of the bins the housekeeping reviews
        self._stock_swept = False  # a whole review done (slices 0 to n-1, or one call without part)
        self._stock_reviews = 0
        self.shelves: ShelfConsumer | None = None
        if has_shelf_bins(self.db):
            names = {d.id: f"{d.display_name} ({d.location})" if d.location else d.display_name for d in site.devices}
            self.shelves = ShelfConsumer(
                self.db, self.engine, tz=site.site.timezone, names=names, clock=clock, on_stock=self._shelf_stock
            )
            self.bus.subscribe_readings("inventory-shelves", self.shelves.on_readings)

        self.metrics = SelfMetrics(self)
        self.state.metrics_text = self.metrics.text
        # /readyz: collectors started (and not stopping), broker, sinks, spool, state database
        self.collecting = False
        self.stopping = False
        self.readiness = Readiness(self)
        self.state.readiness = self.readiness.check
        self.state.counters = self._health_counters
        self._server: _Server | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._last_self_metrics = 0.0

    # -- collectors by protocol (for tests, benchmarks and the API) ------------------------------

    def collector(self, protocol: str) -> Any:
        for c in self.collectors:
            if c.protocol == protocol:
                return c
        return None

    @property
    def mqtt(self) -> Any:
        """The MQTT collector (collectors/mqtt.py), or None without MQTT devices."""
        c = self.collector("mqtt")
        return c.mqtt if c is not None else None

    @property
    def modbus(self) -> Any:
        c = self.collector("modbus")
        return c.modbus if c is not None else None

    @property
    def scheduler(self) -> Any:
        c = self.collector("modbus")
        return c.scheduler if c is not None else None

    # -- data flow --------------------------------------------------------------------------

    async def accept(self, readings: list[Reading]) -> None:
        """Take readings from a collector. When this returns, they are durably in the spool
        (fsync'd, group-committed with every other call waiting at that moment): the contract
        that lets the MQTT collector acknowledge a message only after this. Then they are
        published on the bus (latest values, alert engine).

        Raises SpoolFull when the spool is at its bound under policy ``reject``: nothing of this
        call was stored (the MQTT collector must not acknowledge; see ``_accept_once``).
        Safe to call concurrently and often: the spool's writer thread batches the calls."""
        self.readings_in += len(readings)
        t0 = time.perf_counter()
        await self.spool.put(readings)
        self.accept_seconds += time.perf_counter() - t0
        self.accept_calls += 1
        for s in self.sinks:
            s.notify(len(readings))
        self.bus.publish_readings(readings)

    async def _accept_once(self, readings: list[Reading]) -> None:
        """accept() for sources that cannot send readings again (a Modbus poll): under SpoolFull
        they are lost; counted, logged once per episode, still published on the bus."""
        try:
            await self.accept(readings)
        except SpoolFull:
            if not self._lost_logged:
                log.error("telemetry spool full: poll readings are lost (counted) until it has room")
                self._lost_logged = True
            self.readings_lost += len(readings)
            self.bus.publish_readings(readings)
        else:
            self._lost_logged = False

    def _on_alert(self, alert: Alert) -> None:
        queued = 0

        def also(conn: Any, kind: str, ts: float) -> None:
            nonlocal queued
            try:
                rows = self.planner.on_change(alert, kind, ts)
            except Exception:  # a routing bug must not lose the alert itself
                log.exception("notifications: cannot plan %s of alert %s", kind, alert.id)
                return
            queued = queue_notifications(conn, rows, ts)

        self.alert_store.save(alert, also=also)
        if queued:
            self.dispatcher.wake()
        try:
            self.state.publish_alert(alert)  # the live updates (GET /api/v1/events)
        except Exception:
            log.exception("live updates: cannot publish alert %s", alert.id)
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
        self.state.events.bind(asyncio.get_running_loop())
        for s in self.sinks:
            s.start()
        if self.shelves is not None:
            await self.shelves.start()  # knows its shelves before the first reading
        for c in self.collectors:
            await c.start()
        self.collecting = True
        if self.mqtt_publisher is not None:
            self.mqtt_publisher.start()
        self.dispatcher.start()
        self._housekeeping = asyncio.create_task(self._housekeep(), name="housekeeping")
        config = uvicorn.Config(
            create_app(self.state),
            host=self.site.api.host,
            port=self.api_port,
            log_level="warning",
            lifespan="off",
            # a live-updates stream whose client stopped reading cannot end by itself
            timeout_graceful_shutdown=5,
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
        self.stopping = True
        for c in self.collectors:
            await c.stop()
        if self.shelves is not None:
            await self.shelves.stop()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        if self._server is not None and self._server_task is not None:
            self.state.events.close()  # the live-updates streams end (their clients reconnect)
            self._server.should_exit = True
            await self._server_task
        await self.dispatcher.stop()
        if self.mqtt_publisher is not None:
            self.mqtt_publisher.stop()
        if self.site.telemetry.self_metrics_interval > 0:
            with contextlib.suppress(SpoolFull):
                await self._write_self_metrics(self.clock())
        for s in self.sinks:
            await s.stop()
        self.spool.close()
        self.dead_letters.close()
        if self.state.history is not None and self.state.history is not self.embedded:
            self.state.history.close()
        self.alert_store.close()
        await self.readiness.database.close()
        self.db.dispose()

    async def _housekeep(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(1.0)
            now = self.clock()
            if now - self._silences_read >= 5.0:
                await self._reread_silences(now)
            for c in self.collectors:
                for link in c.status().links:
                    if link.devices:
                        self.engine.on_link(link.key, not link.up, link.devices)
            self.engine.tick(now)
            self._notify_due(now)
            for c in self.collectors:
                c.tick(now)
            if self.embedded is not None and now - last_prune > 3600:
                last_prune = now
                await self.embedded.prune(now)
            self.links.check_spool(
                now,
                fill=self.spool.fill,
                warn_at=self.site.telemetry.spool.warn_at,
                depth=self.spool.depth,
                oldest_age=self.spool.oldest_age(now),
            )
            self.links.check_links(now, self._link_facts())
            if self.stock_review is not None:
                await self._review_stock(now, (self._stock_slice % STOCK_SLICES, STOCK_SLICES))
                self._stock_slice += 1
            interval = self.site.telemetry.self_metrics_interval
            if interval > 0 and now - self._last_self_metrics >= interval:
                try:
                    await self._write_self_metrics(now)
                except SpoolFull:
                    pass  # counted by the spool; the next interval tries again

    async def _review_stock(self, now: float, part: tuple[int, int] | None = None) -> None:
        """Every bin's stock condition to the engine (read in a worker thread, applied here on
        the loop): raised, updated (the predicted stock-out nears) or resolved (a receipt). With
        ``part`` (k, n): the bins of slice k of n only (housekeeping walks the n slices, one a
        second). The reviews until a first whole one only learn the bins (no stock events)."""
        assert self.stock_review is not None
        first = not self._stock_swept
        try:
            statuses, conditions = await asyncio.to_thread(self.stock_review.review, now, part)
        except Exception:  # the database is away: the next review tries again
            log.exception("inventory: cannot review the stock levels; trying again in %g s", STOCK_REVIEW_S)
            return
        self._stock_reviews += 1
        if part is None or part[0] == part[1] - 1:
            self._stock_swept = True
        for c in conditions:
            self.engine.on_condition(c.subject, c.key, c.active, c.text, severity=c.severity, ts=now)
        # live updates: the bins whose level or count changed since the last review (the first
        # review only learns them)
        self.state.publish_stock(statuses, announce_new=not first)

    async def on_stock_changed(self, bins: Sequence[tuple[int, int]] | None) -> None:
        """What follows a stock change made outside the shelf feed (the API: a transaction, a CSV
        import), on the loop: the stock of ``bins`` ((item id, location id); None: every counted
        bin) is read now in a worker thread (the rooms' cached status dropped first), its
        conditions go to the alert engine — a count
        bringing a bin back to its reorder point resolves its notice at once rather than at the
        next review — and its statuses to the live updates (a ``stock`` event for each bin whose
        level or count changed; after a CSV import, bins not published before are only learned,
        as at the first review). Never raises: the review every STOCK_REVIEW_S catches up with
        what it could not read."""
        now = self.clock()
        self.state.stock_views.changed()  # the supply rooms' cached status: the change is stored
        try:
            if bins is None:
                statuses, conditions = await asyncio.to_thread(self.stock_conditions.review, now)
            else:
                statuses, conditions = await asyncio.to_thread(self.stock_conditions.of, bins, now)
        except Exception:
            log.exception("inventory: cannot read the changed bins' stock; the review in %g s tries again", STOCK_REVIEW_S)
            return
        for c in conditions:
            self.engine.on_condition(c.subject, c.key, c.active, c.text, severity=c.severity, ts=now)
        try:
            self.state.publish_stock(statuses, announce_new=bins is not None)
        except Exception:
            log.exception("live updates: cannot publish the changed bins' stock")

    def _shelf_stock(self, statuses: list[Any]) -> None:
        """Bins whose count a smart shelf changed (on the loop): the supply rooms' cached status
        is dropped and their ``stock`` events go to the live updates at once."""
        self.state.stock_views.changed()
        self.state.publish_stock(statuses)

    def refresh_silences(self) -> None:
        """Hand the engine the silences and maintenance windows as stored now (on the loop:
        start-up and the API after a change)."""
        now = self.clock()
        self._silences_read = now
        self.engine.set_silences(self.silences.current(now), now)

    async def _reread_silences(self, now: float) -> None:
        self._silences_read = now
        try:
            current = await asyncio.to_thread(self.silences.current, now)
        except Exception:  # the database is away: the silences known so far stay in force
            log.exception("silences: cannot read them from the state database; trying again")
            return
        self.engine.set_silences(current, now)

    def _notify_due(self, now: float) -> None:
        """Escalations, repeats and storm digests that came due: into the outbox."""
        try:
            rows = self.planner.due(now)
            if rows and self.outbox.add_many(rows, now=now):
                self.dispatcher.wake()
        except Exception:
            log.exception("notifications: cannot queue escalations and repeats; trying again")

    def _link_facts(self) -> list[LinkFacts]:
        """The links eqmon depends on: each collector's (a broker) and each sink."""
        facts = [
            LinkFacts(
                key=link.key,
                what=f"cannot reach {link.name}",
                down_since=None if link.up else link.down_since,
                grace=BROKER_GRACE,
                impact=link.impact,
                action=link.action,
                devices=tuple(self.site.device(d).display_name for d in link.devices),
            )
            for c in self.collectors
            for link in c.status().links
        ]
        for s in self.sinks:
            facts.append(
                LinkFacts(
                    key=f"telemetry-sink-{s.name}-failing",
                    what=f"cannot write telemetry to {s.name}",
                    down_since=s.failing_since,
                    grace=SINK_FAILING_GRACE,
                    impact=f"readings wait in the spool ({s.depth} so far)",
                    action=f"check that {s.name} is reachable, then call IT",
                    detail=str(s.last_error or ""),
                )
            )
        return facts

    # -- self-metrics -----------------------------------------------------------------------

    def _health_counters(self) -> dict[str, float]:
        return self.metrics.flat()

    async def _write_self_metrics(self, now: float) -> None:
        """eqmon's own metrics into the spool as measurement eqmon_internal (device "_eqmon"):
        not onto the bus (latest values, alert engine)."""
        from collectors.influx import INTERNAL_DEVICE

        self._last_self_metrics = now
        readings = [Reading(INTERNAL_DEVICE, k, float(x), now) for k, x in self.metrics.flat().items()]
        await self.spool.put(readings)
        for s in self.sinks:
            s.notify(len(readings))
