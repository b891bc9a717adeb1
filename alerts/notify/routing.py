"""Which alert change goes to whom: the rows to queue in the notification outbox.

``on_change(alert, kind, ts)`` is called inside the alert's save (same transaction) with the
event kind the store derived (raised, reopened, resolved, acknowledged, changed); ``due(now)``
is called by the service's housekeeping with its clock and returns the escalations, repeats and
storm digests that have come due. Every row has a stable message id (alert, event and its
number, recipient), so planning the same thing twice — after a restart, say — queues it once.

Escalation: a route's contacts are called in turn when it has ``escalate_after``: the first at
once (step 0), then at step k, k × escalate_after after the raise while still unacknowledged,
the next contact not called yet. Without ``escalate_after`` they are all called at once.
Repeats (``repeat`` by severity): repeat n goes to everyone called so far at n × interval,
until acknowledged. A resolved notice goes to everyone called before acknowledgement or
resolution (routes with ``resolved: true``). Storm: past ``storm.max_alerts`` raised in a
window, further raises of that window become one digest per recipient at the window's end
(kept in memory until then: a restart within the window loses the digest, not the alerts).

Rotas (a route's ``rota``, rota.py): a route's contacts at an instant are, for each shift of its
rota in force then, that shift's contacts followed by the route's own ``contacts`` (the rota's
``default`` when no shift is in force; only the route's own contacts without one). Each shift
in force is a chain of its own: the raise calls the first contact of each, step k the next one
not called yet of each shift in force at step k's time: after a handover, the new shift's first
contact. Who a step calls depends only on the raise time, so a restarted planner plans the
same steps under the same message ids. A rota contact is only ever notified while on shift:
every row to one is planned for the shifts in force at the time of planning (``now``), so a
step, repeat or resolved notice never reaches someone whose shift has ended, even when eqmon
was down when it came due. Repeats go to those called so far who are on shift (without
``escalate_after``: everyone on shift), the resolved notice to those called who are on shift.
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
from .rota import OnShift

log = logging.getLogger("eqmon.notify")

Row = dict[str, Any]  # message_id, alert_id, channel, recipient, payload


class Target(NamedTuple):
    channel: str
    recipient: str
    contact: str | None


@dataclass
class _Escalation:
    """Whom one route called about one alert, step by step (step k at raise + k × escalate_after),
    worked out as far as needed; a pure function of the raise time and the site file."""

    step: int = -1  # the last step worked out
    calls: list[tuple[int, float, tuple[str, ...]]] = field(default_factory=list)  # (step, at, names)
    called: set[str] = field(default_factory=set)
    done: bool = False  # nobody is left to call

    def record(self, step: int, at: float, names: list[str]) -> None:
        self.step = step
        if names:
            self.calls.append((step, at, tuple(names)))
            self.called.update(names)


@dataclass
class _Tracked:
    alert: Alert
    raised_at: float
    repeats: int = 0  # the last repeat number planned
    quiet: bool = False  # silenced since it was raised: nobody was told, so no resolved notice
    escalations: dict[int, _Escalation] = field(default_factory=dict)  # by route index


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
        self._rotas = {r.id: OnShift(r, site.site.timezone) for r in settings.rotas}
        # Everyone each route can call: its escalation is done once they all were.
        self._reachable: list[set[str]] = [
            set(r.contacts) | set(rota.rota.contact_names() if (rota := self._rota(r)) is not None else ())
            for r in settings.routes
        ]
        self._locations = {d.id: d.location or None for d in site.devices}
        self._open: dict[str, _Tracked] = {}
        self._storm = _Storm()
        self.digested = 0  # alerts that went into a storm digest instead of their own message

    # -- routing ----------------------------------------------------------------------------

    def _location(self, a: Alert) -> str | None:
        """The device's location; an incident's own (alerts/incidents.py)."""
        loc = self._locations.get(a.device_id) or a.extra.get("location")
        return loc if isinstance(loc, str) and loc else None

    def _routes(self, a: Alert) -> list[tuple[int, Route]]:
        loc = self._location(a)
        return [
            (i, r)
            for i, r in enumerate(self.settings.routes)
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

    # -- who is called: rotas and escalation ------------------------------------------------

    def _rota(self, route: Route) -> OnShift | None:
        return self._rotas.get(route.rota) if route.rota is not None else None

    def _chains(self, route: Route, at: float) -> list[list[str]]:
        """The route's contacts at ``at`` in escalation order: one list per shift of its rota in
        force (the shift's contacts, then the route's own), else the route's own contacts."""
        own = list(route.contacts)
        rota = self._rota(route)
        on_shift = rota.contacts(at) if rota is not None else []
        if not on_shift:
            return [own] if own else []
        return [[*names, *(n for n in own if n not in names)] for names in on_shift]

    def _on_shift(self, route: Route, at: float) -> set[str]:
        return {n for chain in self._chains(route, at) for n in chain}

    def _step_names(self, route: Route, at: float, called: set[str]) -> list[str]:
        """Whom a step at ``at`` calls: everyone (no ``escalate_after``), or of each chain the
        first contact not called yet."""
        chains = self._chains(route, at)
        if route.escalate_after is None:
            return list(dict.fromkeys(n for chain in chains for n in chain))
        out: list[str] = []
        for chain in chains:
            nxt = next((n for n in chain if n not in called), None)
            if nxt is not None and nxt not in out:
                out.append(nxt)
        return out

    def _escalation(self, esc: _Escalation, ri: int, route: Route, raised_at: float, until: float) -> _Escalation:
        """``esc`` worked out up to the steps due at ``until``."""
        if esc.step < 0:
            esc.record(0, raised_at, self._step_names(route, raised_at, set()))
            esc.done = route.escalate_after is None or esc.called >= self._reachable[ri]
        every = route.escalate_after
        while not esc.done and every is not None:
            k = esc.step + 1
            at = raised_at + k * every
            if at > until:
                break
            names = self._step_names(route, at, esc.called)
            esc.record(k, at, names)
            rota = self._rota(route)
            if esc.called >= self._reachable[ri] or (not names and rota is None):
                esc.done = True
            elif not names and rota is not None:  # nobody new until the shifts change: on to the first step then
                change = rota.segment(at).end
                nxt = max(k + 1, math.ceil((change - raised_at) / every))
                while raised_at + nxt * every < change:
                    nxt += 1
                esc.step = nxt - 1
        return esc

    def _called(self, a: Alert, tr: _Tracked, ri: int, route: Route, end: float) -> list[str]:
        """Everyone the route called about the alert by ``end``, in order."""
        esc = self._escalation(tr.escalations.setdefault(ri, _Escalation()), ri, route, tr.raised_at, end)
        names = [n for _, at, step in esc.calls if at <= end for n in step]
        every = self.settings.repeat.get(str(a.severity))  # type: ignore[call-overload]
        rota = self._rota(route)
        if route.escalate_after is None and rota is not None and every:
            # all at once: each repeat called everyone on shift then (the same people until the
            # shifts change)
            n = 1
            while tr.raised_at + n * every <= end:
                at = tr.raised_at + n * every
                names += self._on_shift(route, at)
                n = max(n + 1, math.ceil((rota.segment(at).end - tr.raised_at) / every))
        return list(dict.fromkeys(names))

    def _first(self, tr: _Tracked, ri: int, route: Route) -> list[Target]:
        """The raise: the route's channels and the contacts of step 0."""
        esc = self._escalation(tr.escalations.setdefault(ri, _Escalation()), ri, route, tr.raised_at, tr.raised_at)
        names = esc.calls[0][2] if esc.calls and esc.calls[0][0] == 0 else ()
        return self._channel_targets(route) + [t for n in names for t in self._contact_targets(route, n)]

    def _reached(
        self, a: Alert, tr: _Tracked, at: float, *, resolved_notice: bool = False, called_by: float | None = None
    ) -> list[Target]:
        """Everyone called about the alert by ``at`` (or by ``called_by``; escalation stops at
        acknowledgement) who is still on shift at ``at``, and the routes' channels."""
        by = at if called_by is None else called_by
        end = by if a.acknowledged_at is None else min(by, a.acknowledged_at)
        seen: dict[tuple[str, str], Target] = {}
        for ri, r in self._routes(a):
            if resolved_notice and not r.resolved:
                continue
            on_shift = self._on_shift(r, at)
            targets = self._channel_targets(r)
            for name in self._called(a, tr, ri, r, end):
                if name in on_shift:
                    targets += self._contact_targets(r, name)
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
            tr = self._open[a.id] = _Tracked(a, ts, quiet=silenced)
            targets = [t for ri, r in self._routes(a) for t in self._first(tr, ri, r)]
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
            gone = tracked or _Tracked(a, a.started_at)
            raised_at = gone.raised_at
            held = [h for h, _ in self._storm.held if h.id == a.id]
            if held:  # still waiting in a digest: say it there, as resolved
                self._storm.held = [(h, t) for h, t in self._storm.held if h.id != a.id] + [(a, ts)]
                return []
            took = _minutes(ts - raised_at)
            text = f"RESOLVED after {took}: {a.message}"
            return self._dedup(
                [self._row(a, "resolved", 0, text, t, ts) for t in self._reached(a, gone, ts, resolved_notice=True)]
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
            for ri, r in self._routes(a):
                esc = self._escalation(tr.escalations.setdefault(ri, _Escalation()), ri, r, tr.raised_at, now)
                on_shift = self._on_shift(r, now)  # planned again each time: only those on shift now
                text = f"ESCALATED (unacknowledged for {_minutes(now - tr.raised_at)}): {a.message}"
                for k, _, names in esc.calls:
                    if k > 0:
                        rows += [
                            self._row(a, "escalated", k, text, t, now)
                            for n in names if n in on_shift for t in self._contact_targets(r, n)
                        ]  # fmt: skip
            every = self.settings.repeat.get(str(a.severity))  # type: ignore[call-overload]
            if every:
                n = math.floor((now - tr.raised_at) / every)
                # The current repeat is planned at every call, as escalations are: the outbox
                # keeps one row per message id, and a write that failed (database away) is
                # simply made again at the next call instead of the repeat being lost.
                if n >= 1:
                    tr.repeats = max(tr.repeats, n)
                    text = f"REPEAT (unacknowledged for {_minutes(now - tr.raised_at)}): {a.message}"
                    # Everyone called by the repeat's own time (on shift now), not by now:
                    # planned again after a restart past the next step, it goes to the same people.
                    called = self._reached(a, tr, now, called_by=tr.raised_at + n * every)
                    rows += [self._row(a, "repeated", n, text, t, now) for t in called]
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
            for _, r in self._routes(a):
                # in place of the raise: whom a raise now would reach (the shifts may have changed)
                names = self._step_names(r, now, set())
                for t in self._channel_targets(r) + [t for n in names for t in self._contact_targets(r, n)]:
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
