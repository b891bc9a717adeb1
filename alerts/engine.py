"""The alert engine: readings and device-status events in, alerts out.

Threshold rules raise an alert when a metric stays beyond a limit for the rule's ``for``
duration (a short excursion, such as a door opened for a delivery, raises nothing) and resolve it
when the value is back inside the limit by the rule's hysteresis (so a value hovering on the
limit does not flap). A device going offline raises one "device offline" alert, resolved when it
is back. Time comes only from the readings and from ``tick(now)``, so tests drive a fake clock.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from eqmon.config import Device, Site, ThresholdRule
from eqmon.domain import (
    Alert,
    AlertState,
    DeviceState,
    DeviceStatusEvent,
    Quality,
    Reading,
    Severity,
)

log = logging.getLogger(__name__)

OFFLINE_RULE_ID = "device-offline"
MISCONFIGURED_RULE_ID = "device-misconfigured"


@dataclass(slots=True)
class _Pending:
    since: float  # when the value first went beyond the limit
    worst: float
    last: float
    last_ts: float


def _fmt_duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return f"{int(seconds)} s"
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


class AlertEngine:
    """Evaluates the site's rules; every raised, changed or resolved alert goes to ``on_change``."""

    def __init__(
        self,
        site: Site,
        *,
        on_change: Callable[[Alert], None] = lambda a: None,
        delay_scale: float = 1.0,
        active: Iterable[Alert] = (),
    ) -> None:
        """``delay_scale`` divides every ``for`` duration (the demo compresses an hour into
        seconds); ``active`` are alerts still open from before a restart."""
        self.site = site
        self._on_change = on_change
        self._delay_scale = delay_scale
        self._tz = ZoneInfo(site.site.timezone)
        self._devices: dict[str, Device] = {d.id: d for d in site.devices}
        # (device_id, metric) -> rules that watch it
        self._rules: dict[tuple[str, str], list[ThresholdRule]] = {}
        for rule in site.alerts.rules:
            for d in site.devices:
                if d.id in rule.devices or d.kind == rule.device_kind:
                    self._rules.setdefault((d.id, rule.metric), []).append(rule)
        self._pending: dict[tuple[str, str], _Pending] = {}  # (rule id, device id)
        self._active: dict[tuple[str, str], Alert] = {}
        for a in active:
            if a.state != AlertState.RESOLVED:
                self._active[(a.rule_id, a.device_id)] = a

    # -- inputs -----------------------------------------------------------------------------

    def on_readings(self, readings: Sequence[Reading]) -> None:
        for r in readings:
            rules = self._rules.get((r.device_id, r.metric))
            if not rules or r.quality is not Quality.GOOD or isinstance(r.value, bool | str) or r.value is None:
                continue
            for rule in rules:
                self._evaluate(rule, r.device_id, float(r.value), r.ts)

    def on_status(self, event: DeviceStatusEvent) -> None:
        """Offline or stale (silent) devices raise "device offline"; a device that rejects our
        requests raises "device misconfigured"; both resolve when the device is back online."""
        dev = self._devices.get(event.device_id)
        if dev is None:
            return
        offline = (OFFLINE_RULE_ID, event.device_id)
        misconfigured = (MISCONFIGURED_RULE_ID, event.device_id)
        where = f"{dev.display_name}{self._where(dev)}"
        since = self._clock_time(event.ts)
        if event.state in (DeviceState.OFFLINE, DeviceState.STALE, DeviceState.MISCONFIGURED) and not event.partial:
            self._condition_unknown(dev, event)
        elif event.state == DeviceState.ONLINE:
            self._condition_known_again(event.device_id)
        if event.state in (DeviceState.OFFLINE, DeviceState.STALE) and offline not in self._active:
            what = "not responding" if event.state == DeviceState.OFFLINE else "silent (no data)"
            # A reason that already says what to check (a gateway's 0x0A/0x0B: the unit id, the
            # serial line) is not contradicted by the generic advice.
            check = "" if "check " in event.reason else "check its power and network cable, then "
            msg = f"WARNING {where}: {what} since {since} ({event.reason}); {check}call Facilities"
            self._raise(offline, Severity.WARNING, "", msg, event.ts, None)
        elif event.state == DeviceState.MISCONFIGURED and misconfigured not in self._active:
            missing = "those readings are missing" if event.partial else "its readings are missing"
            msg = (
                f"WARNING {where}: rejects eqmon's requests since {since} ({event.reason}); "
                f"{missing} — ask the integrator to check its register map"
            )
            self._raise(misconfigured, Severity.WARNING, "", msg, event.ts, None)
        elif event.state == DeviceState.ONLINE:
            for key in (offline, misconfigured):
                if key in self._active:
                    self._resolve(key, event.ts)

    def _condition_unknown(self, dev: Device, event: DeviceStatusEvent) -> None:
        """The device stopped answering: its pending excursions stop (a reading that does not
        come is neither in nor out of range), and its open threshold alerts stay open — the
        condition is not cleared, it is unknown — and say so."""
        for key in [k for k in self._pending if k[1] == event.device_id]:
            del self._pending[key]
        why = "not answering" if event.state != DeviceState.MISCONFIGURED else "rejecting eqmon's requests"
        note = f" — condition now unknown: the device is {why} since {self._clock_time(event.ts)}"
        for (_, device_id), a in self._active.items():
            if device_id != event.device_id or not a.metric:
                continue
            base = a.extra.setdefault("base_message", a.message)
            a.message = base + note
            a.extra["condition_unknown_since"] = event.ts
            self._emit(a)

    def _condition_known_again(self, device_id: str) -> None:
        for (_, dev_id), a in self._active.items():
            if dev_id == device_id and "condition_unknown_since" in a.extra:
                a.message = a.extra.pop("base_message", a.message)
                del a.extra["condition_unknown_since"]
                self._emit(a)

    def tick(self, now: float) -> None:
        """Raise alerts whose ``for`` elapsed although no new reading arrived since."""
        for (rule_id, device_id), p in list(self._pending.items()):
            rule = self._rule(rule_id)
            if rule is not None and now - p.since >= self._delay(rule):
                self._raise_threshold(rule, device_id, p, now)

    def raise_system(self, key: str, severity: Severity, message: str, ts: float) -> None:
        """Raise an alert about eqmon itself (e.g. "telemetry spool filling up"), once per
        ``key`` until resolved; the device id of such alerts is "eqmon"."""
        if (key, "eqmon") not in self._active:
            self._raise((key, "eqmon"), severity, "", message, ts, None)

    def resolve_system(self, key: str, ts: float) -> None:
        if (key, "eqmon") in self._active:
            self._resolve((key, "eqmon"), ts)

    # -- queries ----------------------------------------------------------------------------

    def active(self) -> list[Alert]:
        return sorted(self._active.values(), key=lambda a: a.started_at)

    def acknowledge(self, alert_id: str, by: str, ts: float, note: str = "") -> Alert | None:
        for a in self._active.values():
            if a.id == alert_id:
                if a.state == AlertState.ACTIVE:
                    a.state = AlertState.ACKNOWLEDGED
                    a.acknowledged_at, a.acknowledged_by = ts, by
                    if note:
                        a.extra["ack_note"] = note
                    self._emit(a)
                return a
        return None

    # -- internals --------------------------------------------------------------------------

    def _rule(self, rule_id: str) -> ThresholdRule | None:
        for r in self.site.alerts.rules:
            if r.id == rule_id:
                return r
        return None

    def _delay(self, rule: ThresholdRule) -> float:
        return rule.for_ / self._delay_scale

    def _evaluate(self, rule: ThresholdRule, device_id: str, value: float, ts: float) -> None:
        key = (rule.id, device_id)
        beyond = (rule.above is not None and value > rule.above) or (
            rule.below is not None and value < rule.below
        )
        back_inside = (rule.above is None or value <= rule.above - rule.hysteresis) and (
            rule.below is None or value >= rule.below + rule.hysteresis
        )
        if beyond:
            p = self._pending.get(key)
            if p is None:
                p = self._pending[key] = _Pending(ts, value, value, ts)
            else:
                p.last, p.last_ts = value, ts
                p.worst = max(p.worst, value) if rule.above is not None and value > rule.above else min(p.worst, value)
            if key not in self._active and ts - p.since >= self._delay(rule):
                self._raise_threshold(rule, device_id, p, ts)
            elif key in self._active:
                self._active[key].value = value
            return
        # Not beyond the limit: the `for` timer restarts; an open alert needs the hysteresis.
        self._pending.pop(key, None)
        if key in self._active and back_inside:
            self._resolve(key, ts)

    def _raise_threshold(self, rule: ThresholdRule, device_id: str, p: _Pending, ts: float) -> None:
        key = (rule.id, device_id)
        if key in self._active:
            return
        dev = self._devices[device_id]
        unit = self._unit(dev, rule.metric)
        if rule.above is not None and p.last > rule.above:
            how = f"{p.last:.1f}{unit} above {rule.above:g}{unit}"
        else:
            how = f"{p.last:.1f}{unit} below {rule.below:g}{unit}"
        label = rule.metric.removesuffix("_c").replace("_", " ")
        msg = (
            f"{rule.severity.upper()} {dev.display_name}{self._where(dev)}: {label} {how} since "
            f"{self._clock_time(p.since)} ({_fmt_duration(ts - p.since)})"
            + (f"; {rule.action}" if rule.action else "")
        )
        self._raise(key, Severity(rule.severity), rule.metric, msg, p.since, p.last)

    def _raise(
        self, key: tuple[str, str], severity: Severity, metric: str, msg: str, since: float, value: float | None
    ) -> None:
        alert = Alert(
            id=uuid.uuid4().hex[:12],
            rule_id=key[0],
            device_id=key[1],
            metric=metric,
            severity=severity,
            state=AlertState.ACTIVE,
            message=msg,
            started_at=since,
            value=value,
        )
        self._active[key] = alert
        log.debug("raised %s", msg)
        self._emit(alert)

    def _resolve(self, key: tuple[str, str], ts: float) -> None:
        alert = self._active.pop(key)
        alert.state = AlertState.RESOLVED
        alert.resolved_at = ts
        log.debug("resolved after %s: %s", _fmt_duration(ts - alert.started_at), alert.message)
        self._emit(alert)

    def _emit(self, alert: Alert) -> None:
        # A copy: what listeners keep is the alert as it was at this change.
        self._on_change(dataclasses.replace(alert, extra=dict(alert.extra)))

    @staticmethod
    def _where(dev: Device) -> str:
        return f" ({dev.location})" if dev.location else ""

    @staticmethod
    def _unit(dev: Device, metric: str) -> str:
        u = dev.metric_units().get(metric, "")
        return f" {u}" if u else ""

    def clock_time(self, ts: float) -> str:
        """``ts`` as HH:MM in the site's time zone, as alerts show times."""
        return self._clock_time(ts)

    def _clock_time(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self._tz).strftime("%H:%M")
