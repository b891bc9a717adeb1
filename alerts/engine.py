"""The alert engine: readings, device-status events and external conditions in, alerts out.

Each rule of the site file has an evaluator (alerts/rules.py: threshold, range, cumulative
excursion, rate of change, stuck value, state, sensor failure) that answers readings and ticks
with conditions; the engine keeps the alerts' lifecycle: one alert per (rule, device), raised,
acknowledged, resolved with a summary (how long, worst value), and — while a device does not
answer — kept open with a note that the condition is unknown. A device going offline raises one
"device offline" alert, resolved when it is back; ``on_condition`` raises and resolves alerts of
other parts (the inventory) through the same lifecycle. Time comes only from the readings and
from ``tick(now)``, so tests drive a fake clock.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from eqmon.config import Device, Site
from eqmon.domain import (
    Alert,
    AlertState,
    DeviceState,
    DeviceStatusEvent,
    Reading,
    Severity,
    Value,
)

from .rules import Evaluator, Raise, Resolve, Update, fmt_duration, make_evaluator

log = logging.getLogger(__name__)

OFFLINE_RULE_ID = "device-offline"
MISCONFIGURED_RULE_ID = "device-misconfigured"

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
        self._evaluators: list[Evaluator] = [make_evaluator(rule, self) for rule in site.alerts.rules]
        self._by_rule: dict[str, Evaluator] = {ev.rule.id: ev for ev in self._evaluators}
        # (device_id, metric) -> the evaluators of the rules that watch it
        self._rules: dict[tuple[str, str], list[Evaluator]] = {}
        for ev in self._evaluators:
            rule = ev.rule
            for d in site.devices:
                if d.id in rule.devices or d.kind == rule.device_kind:
                    self._rules.setdefault((d.id, rule.metric), []).append(ev)
        self._active: dict[tuple[str, str], Alert] = {}
        for a in active:
            if a.state != AlertState.RESOLVED:
                self._active[(a.rule_id, a.device_id)] = a

    # -- inputs -----------------------------------------------------------------------------

    def on_readings(self, readings: Sequence[Reading]) -> None:
        for r in readings:
            evaluators = self._rules.get((r.device_id, r.metric))
            if not evaluators:
                continue
            for ev in evaluators:
                self._apply(ev, ev.on_reading(r))

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
        come is neither in nor out of range), and its open rule alerts (every kind: they have a
        metric) stay open — the condition is not cleared, it is unknown — and say so."""
        for ev in self._evaluators:
            self._apply(ev, ev.on_outage(event.device_id, event.ts))
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
        """Raise alerts whose ``for`` elapsed although no new reading arrived since (and let
        windowed rules move on)."""
        for ev in self._evaluators:
            self._apply(ev, ev.tick(now))

    def raise_system(self, key: str, severity: Severity, message: str, ts: float) -> None:
        """Raise an alert about eqmon itself (e.g. "telemetry spool filling up"), once per
        ``key`` until resolved; the device id of such alerts is "eqmon"."""
        if (key, "eqmon") not in self._active:
            self._raise((key, "eqmon"), severity, "", message, ts, None)

    def resolve_system(self, key: str, ts: float) -> None:
        if (key, "eqmon") in self._active:
            self._resolve((key, "eqmon"), ts)

    def on_condition(self, subject: str, key: str, active: bool, text: str, *, severity: Severity, ts: float) -> None:
        """An external condition (the inventory: "gloves below minimum in supply room 4B"):
        ``active`` raises one alert per (``key``, ``subject``) with ``text`` as its message, or
        updates the open one when the text or severity changed; not ``active`` resolves it
        (with how long it lasted). The alert's rule id is ``key`` and its device id ``subject``."""
        k = (key, subject)
        alert = self._active.get(k)
        if active:
            if alert is None:
                self._raise(k, Severity(severity), "", text, ts, None)
            elif alert.message != text or alert.severity != severity:
                alert.message, alert.severity = text, Severity(severity)
                self._emit(alert)
        elif alert is not None:
            self._resolve(k, ts)

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

    # RuleContext, for the evaluators

    def unit(self, device_id: str, metric: str) -> str:
        return self._unit(self._devices[device_id], metric)

    def delay(self, seconds: float) -> float:
        return seconds / self._delay_scale

    def open_alert(self, rule_id: str, device_id: str) -> Alert | None:
        return self._active.get((rule_id, device_id))

    def _apply(self, ev: Evaluator, conditions: Sequence[Raise | Update | Resolve]) -> None:
        rule = ev.rule
        for c in conditions:
            key = (rule.id, c.device_id)
            alert = self._active.get(key)
            if isinstance(c, Raise):
                if alert is not None:
                    continue
                dev = self._devices[c.device_id]
                msg = (
                    f"{rule.severity.upper()} {dev.display_name}{self._where(dev)}: {c.text}"
                    + (f"; {rule.action}" if rule.action else "")
                )
                extra = dict(c.extra)
                if c.worse is not None and c.worst is not None:
                    extra.update(worst=c.worst, worse=c.worse, worst_label=c.worst_label)
                self._raise(key, Severity(rule.severity), rule.metric, msg, c.since, c.value, extra)
            elif alert is None:
                continue
            elif isinstance(c, Update):
                alert.value = c.value
                alert.extra.update(c.extra)
                worst, worse = alert.extra.get("worst"), alert.extra.get("worse")
                if c.worst is not None and isinstance(worst, int | float):
                    alert.extra["worst"] = max(worst, c.worst) if worse == "high" else min(worst, c.worst)
            else:
                alert.extra.update(c.extra)
                self._resolve(key, c.ts)

    def _raise(
        self,
        key: tuple[str, str],
        severity: Severity,
        metric: str,
        msg: str,
        since: float,
        value: Value | None,
        extra: dict[str, Any] | None = None,
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
            extra=extra or {},
        )
        self._active[key] = alert
        log.debug("raised %s", msg)
        self._emit(alert)

    def _resolve(self, key: tuple[str, str], ts: float) -> None:
        """Resolve an open alert: its message gains a summary of the episode — when, after how
        long, and the worst value when the rule keeps one ("resolved 14:32 after 72 min, worst
        11.4 °C") — also kept in ``extra["resolution"]``."""
        alert = self._active.pop(key)
        alert.state = AlertState.RESOLVED
        alert.resolved_at = ts
        duration = max(0.0, ts - alert.started_at)
        summary = f"resolved {self._clock_time(ts)} after {fmt_duration(duration)}"
        resolution: dict[str, Any] = {"resolved_at": ts, "duration_s": duration}
        worst = alert.extra.get("worst")
        if isinstance(worst, int | float) and not isinstance(worst, bool):
            dev = self._devices.get(alert.device_id)
            unit = self._unit(dev, alert.metric) if dev is not None and alert.metric else ""
            summary += f", {alert.extra.get('worst_label', 'worst')} {worst:.1f}{unit}"
            resolution.update(worst=worst, unit=unit.strip())
        alert.message = f"{alert.extra.pop('base_message', alert.message)} — {summary}"
        alert.extra.pop("condition_unknown_since", None)
        alert.extra["resolution"] = resolution
        log.debug("resolved: %s", alert.message)
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
