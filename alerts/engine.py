"""The alert engine: readings, device-status events and external conditions in, alerts out.

Each rule of the site file has an evaluator (alerts/rules.py: threshold, range, cumulative
excursion, rate of change, stuck value, state, sensor failure) that answers readings and ticks
with conditions; the engine keeps the alerts' lifecycle: one alert per (rule, device), raised,
acknowledged, resolved with a summary (how long, worst value), and — while a device does not
answer — kept open with a note that the condition is unknown. A device going offline raises one
"device offline" alert, resolved when it is back; ``on_condition`` raises and resolves alerts of
other parts (the inventory) through the same lifecycle. Time comes only from the readings and
from ``tick(now)``, so tests drive a fake clock.

Outages are grouped (alerts/incidents.py): when every device behind one Modbus gateway, one MQTT
broker or in one location stops answering, one incident is raised instead of an alert per
device; a device's own "device offline" alert waits ``alerts.incident_wait`` for that, and is
raised when it is still down after the incident (or eqmon's own link to a broker) cleared.
Silences (``set_silences``) keep matching alerts from notifying anyone (``extra["silenced"]``)
until they end — an alert still open then notifies at that moment; a maintenance window makes
its devices raise nothing. ``pending()`` lists the conditions whose delay is running;
``resolve()`` closes an alert by hand (raised again if its condition still holds).
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
from eqmon.db.repos import Silence
from eqmon.domain import (
    Alert,
    AlertState,
    DeviceState,
    DeviceStatusEvent,
    Reading,
    Severity,
    Value,
)

from .incidents import INCIDENT_RULE_PREFIX, OutageGroup, explaining, incident_text, outage_groups
from .rules import Evaluator, Raise, Resolve, Update, fmt_duration, make_evaluator, pending_of

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
        by_kind: dict[str, list[str]] = {}
        for d in site.devices:
            by_kind.setdefault(d.kind, []).append(d.id)
        for ev in self._evaluators:  # in rule order, as each (device, metric) list keeps them
            rule = ev.rule
            watched = dict.fromkeys(rule.devices)
            watched.update(dict.fromkeys(by_kind.get(rule.device_kind or "", []) if rule.device_kind else []))
            for dev_id in watched:
                if dev_id in self._devices:
                    self._rules.setdefault((dev_id, rule.metric), []).append(ev)
        self._active: dict[tuple[str, str], Alert] = {}
        for a in active:
            if a.state != AlertState.RESOLVED:
                self._active[(a.rule_id, a.device_id)] = a
        # Outages: devices down (offline or silent as a whole) and up, the groups they share,
        # eqmon's links that are down (a broker: its devices' silence is explained by it).
        self._wait = site.alerts.incident_wait / delay_scale
        self._groups = outage_groups(site)
        self._group = {g.key: g for g in self._groups}
        self._grouped = {m for g in self._groups for m in g.members}
        self._down: dict[str, DeviceStatusEvent] = {}
        self._up: set[str] = set()
        self._covered: set[str] = set()  # down devices an incident or a link explains
        self._uncovered_at: dict[str, float] = {}  # when a device stopped being explained
        self._links: dict[str, frozenset[str]] = {}
        # Silences and maintenance windows in force (set_silences), and alerts resolved by hand
        self._silences: list[Silence] = []
        self._maintenance: dict[str, Silence] = {}
        self._by_hand: dict[tuple[str, str], tuple[str, float]] = {}
        self._now = 0.0  # the latest tick or status time (silences apply from then)

    # -- inputs -----------------------------------------------------------------------------

    def on_readings(self, readings: Sequence[Reading]) -> None:
        maintenance = self._maintenance
        for r in readings:
            evaluators = self._rules.get((r.device_id, r.metric))
            if not evaluators or (maintenance and r.device_id in maintenance):
                continue
            for ev in evaluators:
                conditions = ev.on_reading(r)
                if conditions:  # most readings: none
                    self._apply(ev, conditions)

    def on_status(self, event: DeviceStatusEvent) -> None:
        """Offline or stale (silent) devices raise "device offline" — or, all of a group at
        once, one incident; a device that rejects our requests raises "device misconfigured";
        both resolve when the device is back online."""
        dev = self._devices.get(event.device_id)
        if dev is None:
            return
        misconfigured = (MISCONFIGURED_RULE_ID, event.device_id)
        whole = not event.partial
        if event.state in (DeviceState.OFFLINE, DeviceState.STALE, DeviceState.MISCONFIGURED) and whole:
            self._condition_unknown(dev, event)
        elif event.state == DeviceState.ONLINE:
            self._condition_known_again(event.device_id)
        if event.state in (DeviceState.OFFLINE, DeviceState.STALE) and whole:
            self._down.setdefault(dev.id, event)  # down since the first of them
            self._up.discard(dev.id)
        elif event.state == DeviceState.ONLINE:
            self._down.pop(dev.id, None)
            self._up.add(dev.id)
            self._covered.discard(dev.id)
            self._uncovered_at.pop(dev.id, None)
            for key in ((OFFLINE_RULE_ID, dev.id), misconfigured):
                if key in self._active:
                    self._resolve(key, event.ts)
        if (
            event.state == DeviceState.MISCONFIGURED
            and misconfigured not in self._active
            and dev.id not in self._maintenance
        ):
            where = f"{dev.display_name}{self._where(dev)}"
            missing = "those readings are missing" if event.partial else "its readings are missing"
            msg = (
                f"WARNING {where}: rejects eqmon's requests since {self._clock_time(event.ts)} "
                f"({event.reason}); {missing} — ask the integrator to check its register map"
            )
            self._raise(misconfigured, Severity.WARNING, "", msg, event.ts, None)
        self._now = max(self._now, event.ts)
        self._settle(event.ts)

    def on_link(self, key: str, down: bool, devices: Iterable[str]) -> None:
        """One of eqmon's links (the MQTT broker) is down or up again: while it is down, the
        silence of its ``devices`` is explained by it (its own warning, alerts/links.py) and
        raises no "device offline" alert; they raise theirs if still down ``incident_wait``
        after it is back."""
        if down:
            self._links[key] = frozenset(devices)
        else:
            self._links.pop(key, None)

    def _settle(self, now: float) -> None:
        """Outages: raise an incident for each group whose devices are all down (the largest
        first, ``incident_wait`` after the first went down), resolve one when a device of it
        answers again, and raise a device's own
        "device offline" alert once it has been down and unexplained for ``incident_wait``
        (at once for a device that shares nothing with another)."""
        down = {d for d in self._down if d not in self._maintenance}
        for g in explaining(self._groups, down):
            key = (g.rule_id, g.key)
            # raised ``incident_wait`` after its first device went down, as that device's own
            # alert would be: by then a larger group (the whole ward) has had time to complete
            if key not in self._active and now >= min(self._down[m].ts for m in g.members) + self._wait:
                self._raise_incident(g, key)
        covered: set[str] = set()
        for rule_id, gkey in list(self._active):
            if not rule_id.startswith(INCIDENT_RULE_PREFIX):
                continue
            group = self._group.get(gkey)
            if group is None or any(m in self._up for m in group.members):
                self._resolve((rule_id, gkey), now)
            else:
                covered |= group.members
        for devices in self._links.values():
            covered |= devices
        for d in down:
            if d in covered:
                self._covered.add(d)
                continue
            if d in self._covered:  # its incident or link is over: it waits once more
                self._covered.discard(d)
                self._uncovered_at[d] = now
            key = (OFFLINE_RULE_ID, d)
            if key in self._active:
                continue
            event = self._down[d]
            start = max(event.ts, self._uncovered_at.get(d, event.ts))
            if d not in self._grouped or now >= start + self._wait:
                self._raise_offline(self._devices[d], event)

    @staticmethod
    def _down_since(event: DeviceStatusEvent) -> float:
        """When the outage began, for texts and the alert's start: the collector's ``since``
        (the first failed poll, a silent device's last message) or when it was seen. Delays
        (``incident_wait``) count from ``ts``, when it was seen."""
        return event.ts if event.since is None else event.since

    def _raise_offline(self, dev: Device, event: DeviceStatusEvent) -> None:
        what = "not responding" if event.state == DeviceState.OFFLINE else "silent (no data)"
        since = self._down_since(event)
        # A reason that already says what to check (a gateway's 0x0A/0x0B: the unit id, the
        # serial line) is not contradicted by the generic advice.
        check = "" if "check " in event.reason else "check its power and network cable, then "
        msg = (
            f"WARNING {dev.display_name}{self._where(dev)}: {what} since {self._clock_time(since)} "
            f"({event.reason}); {check}call Facilities"
        )
        self._raise((OFFLINE_RULE_ID, dev.id), Severity.WARNING, "", msg, since, None)

    def _raise_incident(self, g: OutageGroup, key: tuple[str, str]) -> None:
        members = sorted(g.members, key=lambda m: self._devices[m].display_name)
        since = min(self._down_since(self._down[m]) for m in members)
        names = [self._devices[m].display_name for m in members]
        extra: dict[str, Any] = {"devices": members, "group": g.kind}
        if g.location:
            extra["location"] = g.location
        self._raise(key, Severity.WARNING, "", incident_text(g, names, self._clock_time(since)), since, None, extra)

    def _condition_unknown(self, dev: Device, event: DeviceStatusEvent) -> None:
        """The device stopped answering: its pending excursions stop (a reading that does not
        come is neither in nor out of range), and its open rule alerts (every kind: they have a
        metric) stay open — the condition is not cleared, it is unknown — and say so."""
        for ev in self._evaluators:
            self._apply(ev, ev.on_outage(event.device_id, event.ts))
        why = "not answering" if event.state != DeviceState.MISCONFIGURED else "rejecting eqmon's requests"
        note = f" — condition now unknown: the device is {why} since {self._clock_time(self._down_since(event))}"
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
        self._now = max(self._now, now)
        if self._silences:
            self._apply_silences(now)
        self._settle(now)
        self._by_hand.clear()  # a condition still there was raised again by now

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

    # -- silences and maintenance ------------------------------------------------------------

    def set_silences(self, silences: Iterable[Silence], now: float) -> None:
        """The silences and maintenance windows (eqmon/db/repos.py), as stored: those in force
        at ``now`` apply at once, the others when their time comes (``tick``)."""
        self._now = max(self._now, now)
        self._silences = [s for s in silences if s.cancelled_at is None and s.ends_at > now]
        self._apply_silences(now)

    def _apply_silences(self, now: float) -> None:
        self._silences = [s for s in self._silences if s.ends_at > now]
        maintenance: dict[str, Silence] = {}
        for s in self._silences:
            if s.kind == "maintenance" and s.in_force(now):
                for d in self._devices.values():
                    if d.id == s.device_id or (s.device_id is None and d.location == s.location):
                        maintenance.setdefault(d.id, s)
        for dev_id in maintenance.keys() - self._maintenance.keys():
            # work starts: what was pending stops (readings are not evaluated until it ends)
            log.info("%s in maintenance until %s", dev_id, self._clock_time(maintenance[dev_id].ends_at))
            for ev in self._evaluators:
                self._apply(ev, ev.on_outage(dev_id, now))
        self._maintenance = maintenance
        for a in list(self._active.values()):
            self._mark_silenced(a, now, emit=True)

    def _silence_for(self, a: Alert, now: float) -> Silence | None:
        dev = self._devices.get(a.device_id)
        location = dev.location if dev is not None else a.extra.get("location")
        for s in self._silences:
            if s.matches(device_id=a.device_id, location=location or None, rule_id=a.rule_id, at=now):
                return s
        return None

    def _mark_silenced(self, a: Alert, now: float, *, emit: bool) -> None:
        """Mark (or unmark) the alert as silenced: ``extra["silenced"]`` says by what, until
        when; the notification planner sends nothing for a silenced alert, and an alert whose
        silence ended while it is still open notifies then."""
        s = self._silence_for(a, now)
        was = a.extra.get("silenced")
        if s is None and was is None:
            return
        if s is not None and was is not None and was.get("id") == s.id:
            return
        if s is None:
            del a.extra["silenced"]
        else:
            a.extra["silenced"] = {
                "id": s.id, "kind": s.kind, "owner": s.owner, "reason": s.reason, "until": s.ends_at,
            }  # fmt: skip
        if emit:
            self._emit(a)

    def maintenance(self, device_id: str) -> Silence | None:
        """The maintenance window the device is in, if any: it raises nothing meanwhile and
        the dashboard marks its readings."""
        return self._maintenance.get(device_id)

    # -- queries ----------------------------------------------------------------------------

    def pending(self, now: float) -> list[dict[str, Any]]:
        """The conditions whose ``for`` delay is running (not yet alerts), and devices down that
        wait for their group (``incident_wait``): what, since when, and when it raises if it
        still holds; soonest first."""
        out: list[dict[str, Any]] = []
        for ev in self._evaluators:
            for p in pending_of(ev):
                dev = self._devices[p.device_id]
                out.append({
                    "rule_id": ev.rule.id, "device_id": p.device_id, "metric": ev.rule.metric,
                    "severity": str(ev.rule.severity), "since": p.since, "due": p.due,
                    "message": f"{dev.display_name}{self._where(dev)}: {ev.rule.id} since "
                    f"{self._clock_time(p.since)}, raises at {self._clock_time(p.due)} if it still holds",
                })  # fmt: skip
        for d, event in self._down.items():
            if (OFFLINE_RULE_ID, d) in self._active or d in self._covered or d in self._maintenance:
                continue
            dev = self._devices[d]
            due = max(event.ts, self._uncovered_at.get(d, event.ts)) + self._wait
            since = self._down_since(event)
            out.append({
                "rule_id": OFFLINE_RULE_ID, "device_id": d, "metric": "", "severity": "warning",
                "since": since, "due": due,
                "message": f"{dev.display_name}{self._where(dev)}: not answering since "
                f"{self._clock_time(since)}; waiting for the rest of its group until {self._clock_time(due)}",
            })  # fmt: skip
        return sorted(out, key=lambda p: p["due"])

    def active(self) -> list[Alert]:
        return sorted(self._active.values(), key=lambda a: a.started_at)

    def resolve(self, alert_id: str, by: str, ts: float, note: str = "") -> Alert | None:
        """Resolve an open alert by hand (who, when, why): it is raised again — a new alert —
        if its condition still holds at the next reading or tick."""
        for key, a in self._active.items():
            if a.id == alert_id:
                a.extra["resolved_by"] = by
                if note:
                    a.extra["resolve_note"] = note
                self._by_hand[key] = (by, ts)
                self._resolve(key, ts)
                return a
        return None

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
        by_hand = self._by_hand.pop(key, None)
        if by_hand is not None:
            alert.message += f" — still so after {by_hand[0]} resolved it by hand at {self._clock_time(by_hand[1])}"
        if self._silences:
            self._mark_silenced(alert, max(since, self._now), emit=False)
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
        by = alert.extra.get("resolved_by")
        summary = f"resolved {self._clock_time(ts)} after {fmt_duration(duration)}"
        if by:
            note = alert.extra.get("resolve_note")
            summary = f"resolved by hand by {by} at {self._clock_time(ts)} after {fmt_duration(duration)}" + (
                f" ({note})" if note else ""
            )
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
