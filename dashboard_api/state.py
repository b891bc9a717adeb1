"""What the running service knows now, as the API reads it: devices with their status and latest
readings, alerts, and where history lives. Written only by the service's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from alerts.incidents import outage_groups
from eqmon.config import Device, Site
from eqmon.domain import Alert, DeviceState, DeviceStatusEvent, Quality, Reading

from .events import EventHub
from .models import AlertOut, DeviceEventOut, StockEventOut
from .viewcache import ViewCache

if TYPE_CHECKING:
    from alerts.engine import AlertEngine
    from alerts.store import AlertStore
    from collectors.embedded import EmbeddedStore
    from collectors.health import DeviceHealth
    from inventory.status import BinStatus


STOCK_VIEW_TTL_S = 5.0  # the longest a supply room's status is served from its cache

class SimulatorControl(Protocol):
    """Fault injection into the simulated devices running in this process (``eqmon demo`` hands
    in simulators/control.py's ``FaultControl``). Devices as dicts (routers/simulators.py's
    ``SimulatedDeviceOut``); ``KeyError`` for a device not simulated, ``ValueError`` for a bad
    fault or params (its ``field``, when it has one: ``"fault"`` or ``"params"``)."""

    def devices(self) -> list[dict[str, Any]]: ...

    def inject(self, device_id: str, fault: str, params: dict[str, Any]) -> dict[str, Any]: ...

    def clear(self, device_id: str) -> dict[str, Any]: ...


async def _no_stock_hook(bins: Sequence[tuple[int, int]] | None) -> None:
    return None


@dataclass
class MonitorState:
    site: Site
    health: dict[str, DeviceHealth]
    engine: AlertEngine
    alert_store: AlertStore
    embedded: EmbeddedStore | None
    clock: Callable[[], float]
    latest: dict[str, dict[str, Reading]] = field(default_factory=dict)
    # the self-metrics as {name: value} (eqmon_app/metrics.py), shown by /healthz
    counters: Callable[[], dict[str, float]] = dict
    started_at: float = 0.0
    # telemetry: the history source (embedded store or InfluxDB reader), the dead-letter store
    # and the Prometheus text of the self-metrics
    history: Any = None
    dead_letters: Any = None
    metrics_text: Callable[[], str] | None = None
    mqtt: Any = None  # the MQTT collector (bad-message counts and dead letters), if any
    # silences and maintenance windows (eqmon/db/repos.py SilenceRepo), the audit log, and what
    # to call after a change so that the engine applies it at once
    silences: Any = None
    audit_log: Any = None
    silences_changed: Callable[[], None] = lambda: None
    # users, tokens and logins (dashboard_api/auth.py Authenticator); None: no logins possible
    auth: Any = None
    # operations: the state database (SQLAlchemy Engine: reports), the readiness checks (/readyz:
    # {"ready", "checked_at", "components"}), the simulators running in this process (eqmon demo)
    db: Any = None
    readiness: Callable[[], Awaitable[dict[str, Any]]] | None = None
    simulators: SimulatorControl | None = None
    # After a stock change made through the API (a transaction, a CSV import) the inventory
    # routes await ``stock_changed`` on the loop with the (item id, location id) bins changed
    # (None: any bin may have changed); the service re-evaluates their stock alerts and publishes
    # their stock events there (service.py ``on_stock_changed``). It never raises.
    stock_changed: Callable[[Sequence[tuple[int, int]] | None], Awaitable[None]] = _no_stock_hook
    # live updates (GET /api/v1/events): the hub, and each bin's (level, on hand) last published
    events: EventHub = field(default_factory=EventHub)
    # the device and alert lists' encoded pages (viewcache.py): dropped by the hooks below
    views: ViewCache = field(default_factory=ViewCache)
    # the supply rooms' encoded status (routers/inventory.py): dropped by every stock change the
    # service hears of (the API's at once: service.py on_stock_changed; a smart shelf's new count:
    # _shelf_stock; the review's stock events), kept at most STOCK_VIEW_TTL_S (a change made by
    # another process, `eqmon inventory …`, shows by then or at its bin's next review)
    stock_views: ViewCache = field(default_factory=lambda: ViewCache(ttl=STOCK_VIEW_TTL_S))
    stock_building: dict[Any, asyncio.Future[bytes]] = field(default_factory=dict)  # pages being built
    stock_published: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)

    # -- live updates: what the service calls when something changed ---------------------------

    def publish_alert(self, alert: Alert) -> None:
        """An alert was raised, changed, acknowledged, silenced or resolved (after its save)."""
        self.views.changed()
        self.events.publish("alert", AlertOut.model_validate(self.alert_view(alert)))

    def publish_device(self, event: DeviceStatusEvent) -> None:
        """Bus status subscriber: a device's status changed (or the registers it rejects)."""
        self.views.changed()
        h = self.health[event.device_id].snapshot()
        self.events.publish("device", DeviceEventOut(
            id=event.device_id, status=h.state, status_since=h.since, last_seen=h.last_success,
            last_error=h.last_error, reason=event.reason,
            rejected_registers=[r.as_dict() for r in h.rejected],
        ))  # fmt: skip

    def publish_stock(self, bins: Iterable[BinStatus], *, announce_new: bool = True) -> int:
        """Bins whose stock status may have changed (``inventory.status.BinStatus``, e.g. from
        ``bin_statuses`` after a stock change): a ``stock`` event for each whose level or
        on-hand count differs from what was last published (a bin not published before: only
        when ``announce_new``). Returns how many were published. From any thread (off the
        service's loop it runs on the loop soon, and returns 0)."""
        if not self.events.on_loop():
            self.events.call_on_loop(self.publish_stock, list(bins), announce_new=announce_new)
            return 0
        n = 0
        for b in bins:
            key, now = (b.item_id, b.location_id), (str(b.level), b.on_hand)
            was = self.stock_published.get(key)
            if was == now:
                continue
            self.stock_published[key] = now
            if was is None and not announce_new:
                continue
            self.events.publish("stock", StockEventOut(
                item_id=b.item_id, sku=b.sku, name=b.name, unit=b.unit, location_id=b.location_id,
                location=b.location, room=b.room, path=b.path, on_hand=b.on_hand, level=b.level,
                min_qty=b.min_qty, reorder_point=b.reorder_point, par=b.par,
                days_of_supply=b.days_of_supply, stockout_at=b.stockout_at,
            ))  # fmt: skip
            n += 1
        if n:
            self.stock_views.changed()  # in this same call: before any client hears of them
        return n

    def audit(self, action: str, subject: str, detail: dict[str, Any], actor: str) -> None:
        if self.audit_log is not None:
            self.audit_log.add(actor=actor, action=action, subject=subject, detail=detail, ts=self.clock())

    def record(self, readings: Sequence[Reading]) -> None:
        for r in readings:
            self.latest.setdefault(r.device_id, {})[r.metric] = r

    def device_view(
        self, device_id: str, open_alerts: Mapping[str, list[dict[str, Any]]] | None = None
    ) -> dict[str, Any]:
        """``open_alerts``: the open alerts' refs by device (``open_alert_refs``), when a caller
        builds several views at once."""
        d = self.devices_by_id[device_id]  # KeyError: no such device
        h = self.health[device_id].snapshot()
        readings = self.latest.get(device_id, {})
        work = self.engine.maintenance(device_id)
        return {
            "id": d.id,
            "name": d.display_name,
            "kind": d.kind,
            "location": d.location,
            "protocol": d.protocol,
            "address": d.address,
            "status": str(h.state),
            "status_since": h.since,
            "last_seen": h.last_success,
            "last_error": h.last_error,
            "consecutive_failures": h.consecutive_failures,
            "rejected_registers": [r.as_dict() for r in h.rejected],  # Modbus: {name, table, address, exception}
            "open_alerts": (
                self.open_alert_refs() if open_alerts is None else open_alerts
            ).get(device_id, []),
            "readings": self.readings_view(readings, h.state, maintenance=work is not None),
            "maintenance": None if work is None else {
                "id": work.id, "owner": work.owner, "reason": work.reason, "until": work.ends_at,
            },
        }  # fmt: skip

    def devices_view(self) -> list[dict[str, Any]]:
        refs = self.open_alert_refs()
        return [self.device_view(d.id, refs) for d in self.site.devices]

    def open_alert_refs(self) -> dict[str, list[dict[str, Any]]]:
        """The open alerts as ``{device_id: [{id, severity, metric}, …]}``, oldest first."""
        refs: dict[str, list[dict[str, Any]]] = {}
        for a in self.engine.active():
            refs.setdefault(a.device_id, []).append({"id": a.id, "severity": str(a.severity), "metric": a.metric})
        return refs

    @cached_property
    def devices_by_id(self) -> dict[str, Device]:
        """The site's devices by id (``Site.device`` looks through the list)."""
        return {d.id: d for d in self.site.devices}

    @cached_property
    def devices_by_location(self) -> list[tuple[tuple[str, str], Device]]:
        """The site's devices keyed and sorted by (location, id): the device list's order."""
        return sorted(((d.location, d.id), d) for d in self.site.devices)

    @cached_property
    def _locations(self) -> tuple[dict[str, str], dict[str, frozenset[str]]]:
        where = {d.id: d.location for d in self.site.devices}
        subjects: dict[str, set[str]] = {}
        for dev_id, loc in where.items():
            subjects.setdefault(loc, set()).add(dev_id)
        for g in outage_groups(self.site):  # an incident is in every location of its devices
            for loc in {where[m] for m in g.members}:
                subjects[loc].add(g.key)
        return where, {loc: frozenset(s) for loc, s in subjects.items()}

    def alert_location(self, a: Alert) -> str | None:
        """The alert's location: its device's, or (an incident) the one all its devices share."""
        loc = self._locations[0].get(a.device_id) or a.extra.get("location")
        return loc if isinstance(loc, str) and loc else None

    def location_subjects(self, location: str) -> frozenset[str]:
        """The alert subjects (``device_id``) of a location: its devices and the outage groups
        (incidents) with a device there."""
        return self._locations[1].get(location, frozenset())

    def alert_view(self, a: Alert) -> dict[str, Any]:
        view = a.as_dict()
        view["location"] = self.alert_location(a)
        return view

    def alerts_view(self, *, include_resolved: bool = True, limit: int = 200) -> list[Alert]:
        open_alerts = self.engine.active()
        if not include_resolved:
            return open_alerts
        seen = {a.id for a in open_alerts}
        resolved = [a for a in self.alert_store.recent(limit) if a.id not in seen]
        return open_alerts + resolved[: max(0, limit - len(open_alerts))]

    def readings_view(
        self, readings: dict[str, Reading], state: DeviceState, *, maintenance: bool = False
    ) -> dict[str, dict[str, Any]]:
        """Latest readings by metric with their age (``age_s``, seconds). While the device is
        not heard (offline, stale, unknown, misconfigured), its last values are served as
        quality ``stale``, never ``good``; a ``bad`` value stays ``bad``. While the device is in
        a maintenance window its readings say so (``maintenance: true``: not evaluated)."""
        now = self.clock()
        silent = state in NOT_HEARD
        out: dict[str, dict[str, Any]] = {}
        for m, r in sorted(readings.items()):
            quality = Quality.STALE if silent and r.quality == Quality.GOOD else r.quality
            out[m] = {
                "value": r.value, "unit": r.unit, "ts": r.ts, "quality": str(quality),
                "age_s": round(max(0.0, now - r.ts), 1), "maintenance": maintenance,
            }  # fmt: skip
        return out


# Device states in which the latest values are no longer being refreshed.
NOT_HEARD = frozenset({DeviceState.OFFLINE, DeviceState.STALE, DeviceState.UNKNOWN, DeviceState.MISCONFIGURED})
