"""Which alert change goes to whom: the rows to queue in the notification outbox.

``on_change(alert, kind, ts)`` is called inside the alert's save (same transaction) with the
event kind the store derived (raised, reopened, resolved, acknowledged, changed); ``due(now)``
is called by the service's housekeeping with its clock and returns the escalations, repeats and
storm digests that have come due. Every row has a stable message id (alert, event and its
number, recipient), so planning the same thing twice — after a restart, say — queues it once.

Escalation: a route's contacts are called in turn when it has ``escalate_after``: the first at
once, contact k when the alert is still unacknowledged k × escalate_after after it was raised.
Repeats (``repeat`` by severity): repeat n goes to everyone called so far at n × interval,
until acknowledged. A resolved notice goes to everyone called before acknowledgement or
resolution (routes with ``resolved: true``). Storm: past ``storm.max_alerts`` raised in a
window, further raises of that window become one digest per recipient at the window's end
(kept in memory until then: a restart within the window loses the digest, not the alerts).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from eqmon.config import Notifications, Route, Site
from eqmon.domain import Alert, AlertState

from .message import alert_fields, document, message_id, one_line

log = logging.getLogger("eqmon.notify")

Row = dict[str, Any]  # message_id, alert_id, channel, recipient, payload


class Target(NamedTuple):
    channel: str
    recipient: str
    contact: str | None


@dataclass
class _Tracked:
    alert: Alert
    raised_at: float
    repeats: int = 0  # the last repeat number planned
    levels: int = 0  # the last escalation level planned
    quiet: bool = False  # silenced since it was raised: nobody was told, so no resolved notice


@dataclass
class _Storm:
    raises: deque[float] = field(default_factory=deque)
    held: list[tuple[Alert, float]] = field(default_factory=list)
    window_start: float = 0.0


def _minutes(seconds: float) -> str:
    m = round(seconds / 60)
    return f"{m} min" if m < 120 else f"{m / 60:.1f} h"


class NotificationPlanner:
    def __init__(self, site: Site, settings: Notifications, *, clock: Callable[[], float]) -> None:
        self.site = site
        self.settings = settings
        self._clock = clock
        self._channels = {c.id: c for c in settings.channels}
        self._contacts = {c.name: c for c in site.contacts}
        self._locations = {d.id: d.location or None for d in site.devices}
        self._open: dict[str, _Tracked] = {}
        self._storm = _Storm()
        self.digested = 0  # alerts that went into a storm digest instead of their own message

    # -- routing ----------------------------------------------------------------------------

    def _location(self, a: Alert) -> str | None:
        """The device's location; an incident's own (alerts/incidents.py)."""
        loc = self._locations.get(a.device_id) or a.extra.get("location")
        return loc if isinstance(loc, str) and loc else None

    def _routes(self, a: Alert) -> list[Route]:
        loc = self._location(a)
        return [
            r
            for r in self.settings.routes
            if str(a.severity) in r.severity and (r.locations is None or (loc is not None and loc in r.locations))
        ]

    def _contact_targets(self, route: Route, name: str) -> list[Target]:
        c = self._contacts.get(name)
        if c is None:
            return []
        via = route.via if route.via is not None else list(self._channels)
        out = []
        for cid in via:
            ch = self._channels.get(cid)
            addr = c.address(ch.type) if ch is not None else None
            if ch is not None and addr:
                out.append(Target(cid, addr, name))
        return out

    def _channel_targets(self, route: Route) -> list[Target]:
        out = []
        for cid in route.channels:
            ch = self._channels.get(cid)
            if ch is None:
                continue
            if ch.type == "log":
                out.append(Target(cid, "log", None))
            elif ch.type == "email":
                out += [Target(cid, to, None) for to in ch.to]
            elif ch.type == "webhook" and ch.url:
                out.append(Target(cid, ch.url, None))
            elif ch.type == "mqtt" and ch.topic:
                out.append(Target(cid, ch.topic, None))
        return out

    def levels(self, route: Route) -> list[list[Target]]:
        """Level 0: the route's channels and its first contact (all contacts without
        escalation); level k: contact k."""
        contacts = route.contacts if route.escalate_after is not None else []
        first = self._channel_targets(route)
        if route.escalate_after is None:
            for name in route.contacts:
                first += self._contact_targets(route, name)
        elif contacts:
            first += self._contact_targets(route, contacts[0])
        return [first] + [self._contact_targets(route, name) for name in contacts[1:]]

    @staticmethod
    def _level_at(route: Route, raised_at: float, at: float, count: int) -> int:
        if route.escalate_after is None:
            return 0
        return max(0, min(count - 1, math.floor((at - raised_at) / route.escalate_after)))

    def _reached(self, a: Alert, raised_at: float, at: float, *, resolved_notice: bool = False) -> list[Target]:
        """Everyone called about the alert by ``at`` (escalation stops at acknowledgement)."""
        end = at if a.acknowledged_at is None else min(at, a.acknowledged_at)
        seen: dict[tuple[str, str], Target] = {}
        for r in self._routes(a):
            if resolved_notice and not r.resolved:
                continue
            lv = self.levels(r)
            for targets in lv[: self._level_at(r, raised_at, end, len(lv)) + 1]:
                for t in targets:
                    seen.setdefault((t.channel, t.recipient), t)
        return list(seen.values())

    # -- rows -------------------------------------------------------------------------------

    def _row(self, a: Alert, event: str, seq: int, text: str, t: Target, now: float) -> Row:
        label = f"{event}-{seq}" if seq else event
        mid = message_id(a.id, label, t.channel, t.recipient)
        doc = document(
            msg_id=mid, event=event, sequence=seq, text=text, site=self.site.site.name, channel=t.channel,
            contact=t.contact, created_at=now, alert=alert_fields(a, self._location(a)),
        )  # fmt: skip
        return {"message_id": mid, "alert_id": a.id, "channel": t.channel, "recipient": t.recipient, "payload": doc}

    def on_change(self, a: Alert, kind: str, ts: float) -> list[Row]:
        """Rows for one saved change of an alert (``kind`` from the alert store)."""
        if kind in ("raised", "reopened", "unsilenced"):
            # A silenced alert tells nobody; when its silence ends while it is still open and
            # unacknowledged, it is told then ("unsilenced") and escalates from then.
            silenced = bool(a.extra.get("silenced"))
            self._open[a.id] = _Tracked(a, ts, quiet=silenced)
            targets = [t for r in self._routes(a) for t in self.levels(r)[0]]
            if silenced or a.state != AlertState.ACTIVE or not targets:
                return []
            if kind == "raised" and self._storm_holds(a, ts):
                return []
            seq = 0 if kind == "raised" else int(ts)
            text = a.message if kind != "unsilenced" else f"SILENCE ENDED, still open: {a.message}"
            return self._dedup([self._row(a, kind, seq, text, t, ts) for t in targets])
        if kind == "resolved":
            tracked = self._open.pop(a.id, None)
            if tracked is not None and tracked.quiet:
                return []
            raised_at = tracked.raised_at if tracked is not None else a.started_at
            held = [h for h, _ in self._storm.held if h.id == a.id]
            if held:  # still waiting in a digest: say it there, as resolved
                self._storm.held = [(h, t) for h, t in self._storm.held if h.id != a.id] + [(a, ts)]
                return []
            took = _minutes(ts - raised_at)
            text = f"RESOLVED after {took}: {a.message}"
            return self._dedup(
                [self._row(a, "resolved", 0, text, t, ts) for t in self._reached(a, raised_at, ts, resolved_notice=True)]
            )
        tracked = self._open.get(a.id)
        if tracked is not None and a.state != AlertState.RESOLVED:
            tracked.alert = a  # acknowledged, changed: what escalation and repeats now see
        return []

    def restore(self, a: Alert, raised_at: float) -> None:
        """An alert open at start-up: escalation and repeats go on from its raise."""
        self._open[a.id] = _Tracked(a, raised_at, quiet=bool(a.extra.get("silenced")))

    def due(self, now: float) -> list[Row]:
        """Escalations, repeats and storm digests due at ``now``."""
        rows: list[Row] = []
        for tr in list(self._open.values()):
            a = tr.alert
            if a.state != AlertState.ACTIVE or a.extra.get("silenced"):
                continue
            for r in self._routes(a):
                lv = self.levels(r)
                level = self._level_at(r, tr.raised_at, now, len(lv))
                for k in range(1, level + 1):
                    text = f"ESCALATED (unacknowledged for {_minutes(now - tr.raised_at)}): {a.message}"
                    rows += [self._row(a, "escalated", k, text, t, now) for t in lv[k]]
                tr.levels = max(tr.levels, level)
            every = self.settings.repeat.get(str(a.severity))  # type: ignore[call-overload]
            if every:
                n = math.floor((now - tr.raised_at) / every)
                if n > tr.repeats:
                    tr.repeats = n
                    text = f"REPEAT (unacknowledged for {_minutes(now - tr.raised_at)}): {a.message}"
                    rows += [self._row(a, "repeated", n, text, t, now) for t in self._reached(a, tr.raised_at, now)]
        rows += self._flush_digest(now)
        return self._dedup(rows)

    @staticmethod
    def _dedup(rows: list[Row]) -> list[Row]:
        return list({r["message_id"]: r for r in rows}.values())

    # -- storm ------------------------------------------------------------------------------

    def _storm_holds(self, a: Alert, ts: float) -> bool:
        storm = self.settings.storm
        if storm is None:
            return False
        s = self._storm
        while s.raises and s.raises[0] <= ts - storm.window:
            s.raises.popleft()
        s.raises.append(ts)
        if len(s.raises) <= storm.max_alerts and not s.held:
            return False
        if not s.held:
            s.window_start = ts
            log.warning("alert storm: more than %d alerts within %gs; the next ones go into one digest", storm.max_alerts, storm.window)
        s.held.append((a, ts))
        self.digested += 1
        return True

    def _flush_digest(self, now: float) -> list[Row]:
        storm = self.settings.storm
        s = self._storm
        if storm is None or not s.held or now < s.window_start + storm.window:
            return []
        held, s.held = s.held, []
        by_target: dict[Target, list[Alert]] = {}
        for a, _ in held:
            for r in self._routes(a):
                lv = self.levels(r)
                for t in lv[0]:
                    by_target.setdefault(t, []).append(a)
        rows = []
        key = f"digest{int(s.window_start * 1000)}"
        for t, alerts in by_target.items():
            mid = message_id(key, "digest", t.channel, t.recipient)
            first = "; ".join(one_line(a.message, 120) for a in alerts[:3])
            more = f" and {len(alerts) - 3} more" if len(alerts) > 3 else ""
            text = f"{len(alerts)} more alerts within {_minutes(storm.window)} at {self.site.site.name}: {first}{more}"
            doc = document(
                msg_id=mid, event="digest", sequence=len(alerts), text=text, site=self.site.site.name,
                channel=t.channel, contact=t.contact, created_at=now, alert=None,
                alerts=[alert_fields(a, self._location(a)) for a in alerts],
            )  # fmt: skip
            rows.append({"message_id": mid, "alert_id": None, "channel": t.channel, "recipient": t.recipient, "payload": doc})
        return rows
