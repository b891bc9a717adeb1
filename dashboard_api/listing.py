"""The device, alert and incident lists: filters and keyset pages (pagination.py's convention)
without sorting or reading the whole history per request.

* **Devices** are kept sorted by (location, id) once (``MonitorState.devices_by_location``); a
  page starts by bisection after the cursor's key and stops at ``limit + 1`` matches. Views are
  built for the page only.
* **Alerts**: open ones first, then resolved ones, each newest first: the key is
  ``(rank, started_at, id)`` with rank 0 for open (active, acknowledged), 1 for resolved, and
  ``started_at`` and ``id`` descending. The open alerts are the engine's (in memory, a few);
  the resolved ones come from the alert store by one bounded keyset query
  (``AlertStore.resolved_page``). An alert resolved while a client walks the list moves from the
  open part to the resolved part: it may be served twice (once in each state), as with any list
  whose order depends on what changes.

Everything here reads what the service's event loop writes: call it from ``async def`` routes.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from eqmon.domain import Alert, AlertState, DeviceState, Severity

from .pagination import CursorError, decode_cursor, encode_cursor
from .state import MonitorState

OPEN_STATES = frozenset({AlertState.ACTIVE, AlertState.ACKNOWLEDGED})


# -- devices ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceFilter:
    location: str | None = None
    kind: str | None = None
    protocol: str | None = None
    status: frozenset[DeviceState] | None = None
    q: str | None = None  # a substring of the id or the name, any case


def device_page(state: MonitorState, f: DeviceFilter, limit: int, cursor: str | None) -> dict[str, Any]:
    after = decode_cursor(cursor)
    if after is not None and not (len(after) == 2 and all(isinstance(k, str) for k in after)):
        raise CursorError()
    keyed = state.devices_by_location
    start = 0 if after is None else bisect.bisect_right(keyed, tuple(after), key=lambda p: p[0])
    q = None if f.q is None else f.q.casefold()
    page: list[tuple[tuple[str, str], str]] = []
    for key, d in keyed[start:]:
        if (
            (f.location is not None and d.location != f.location)
            or (f.kind is not None and d.kind != f.kind)
            or (f.protocol is not None and d.protocol != f.protocol)
            or (f.status is not None and state.health[d.id].state not in f.status)
            or (q is not None and q not in d.id.casefold() and q not in d.display_name.casefold())
        ):
            continue
        page.append((key, d.id))
        if len(page) > limit:
            break
    more = len(page) > limit
    page = page[:limit]
    refs = state.open_alert_refs()
    return {
        "items": [state.device_view(dev_id, refs) for _, dev_id in page],
        "next_cursor": encode_cursor(page[-1][0]) if more and page else None,
    }


# -- alerts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertFilter:
    states: frozenset[AlertState] | None = None  # None: every state
    severities: frozenset[Severity] | None = None
    location: str | None = None
    device_id: str | None = None
    rule_id: str | None = None
    rule_prefix: str | None = None  # incidents: "incident-"
    since: float | None = None  # started at or after


def _alert_after(cursor: str | None) -> tuple[int, float, str] | None:
    key = decode_cursor(cursor)
    if key is None:
        return None
    if len(key) != 3:
        raise CursorError()
    rank, ts, last = key
    if (
        rank not in (0, 1)
        or isinstance(rank, bool)
        or not isinstance(ts, int | float)
        or isinstance(ts, bool)
        or not math.isfinite(ts)
        or not isinstance(last, str)
    ):
        raise CursorError()
    return int(rank), float(ts), last


def _matcher(state: MonitorState, f: AlertFilter) -> Callable[[Alert], bool]:
    subjects = None if f.location is None else state.location_subjects(f.location)

    def match(a: Alert) -> bool:
        return not (
            (f.severities is not None and a.severity not in f.severities)
            or (f.device_id is not None and a.device_id != f.device_id)
            or (f.rule_id is not None and a.rule_id != f.rule_id)
            or (f.rule_prefix is not None and not a.rule_id.startswith(f.rule_prefix))
            or (f.since is not None and a.started_at < f.since)
            or (
                subjects is not None
                and a.device_id not in subjects
                and a.extra.get("location") != f.location
            )
        )

    return match


def alert_page(
    state: MonitorState, f: AlertFilter, limit: int, cursor: str | None, view: Callable[[Alert], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A page of alerts (as ``view`` makes them; default ``state.alert_view``) in the list's
    order: open first, then resolved, each newest first."""
    view = view or state.alert_view
    after = _alert_after(cursor)
    open_states = OPEN_STATES if f.states is None else OPEN_STATES & f.states
    want_resolved = f.states is None or AlertState.RESOLVED in f.states
    active = state.engine.active()
    page: list[tuple[int, Alert]] = []
    if open_states and (after is None or after[0] == 0):
        match = _matcher(state, f)
        found = [a for a in active if a.state in open_states and match(a)]
        if after is not None:
            found = [a for a in found if (a.started_at, a.id) < after[1:]]
        found.sort(key=lambda a: (a.started_at, a.id), reverse=True)
        page = [(0, a) for a in found[: limit + 1]]
    if len(page) <= limit and want_resolved:
        before = after[1:] if after is not None and after[0] == 1 else None
        open_ids = {a.id for a in active}
        resolved = state.alert_store.resolved_page(
            limit=limit + 1 - len(page), before=before, **_store_filter(state, f)
        )
        page += [(1, a) for a in resolved if a.id not in open_ids]
    more = len(page) > limit
    page = page[:limit]
    last = page[-1] if page else None
    return {
        "items": [view(a) for _, a in page],
        "next_cursor": encode_cursor([last[0], last[1].started_at, last[1].id]) if more and last else None,
    }


def _store_filter(state: MonitorState, f: AlertFilter) -> dict[str, Any]:
    """``f`` as ``AlertStore.resolved_page`` arguments."""
    where: dict[str, Any] = {
        "since": f.since,
        "severities": None if f.severities is None else sorted(str(s) for s in f.severities),
        "device_id": f.device_id,
        "rule_id": f.rule_id,
        "rule_prefix": f.rule_prefix,
    }
    if f.location is not None:
        subjects: Collection[str] = state.location_subjects(f.location)
        where.update(device_ids=subjects, location=f.location)
    return where


# -- one alert ----------------------------------------------------------------------------------


def find_alert(state: MonitorState, alert_id: str) -> Alert | None:
    """The alert as it is now: the engine's while open, else the store's."""
    for a in state.engine.active():
        if a.id == alert_id:
            return a
    return state.alert_store.get(alert_id)


_NOTIFICATION_KINDS = {"sent": "notified", "pending": "notification_pending", "failed": "notification_failed"}


def alert_history(state: MonitorState, alert_id: str) -> list[dict[str, Any]]:
    """The alert's events (alert_events: raised, acknowledged, silenced, resolved …) and the
    messages about it (the notification outbox: notified when sent, else pending or failed),
    oldest first."""
    events = [{**e, "channel": None} for e in state.alert_store.events(alert_id)]
    for n in state.alert_store.notifications(alert_id):
        to = f" to {n['contact']}" if n["contact"] else ""
        attempts = n["attempts"]
        tries = f" after {attempts} attempt{'' if attempts == 1 else 's'}" if n["state"] == "failed" else ""
        events.append({
            "ts": n["sent_at"] if n["state"] == "sent" and n["sent_at"] is not None else n["created_at"],
            "kind": _NOTIFICATION_KINDS.get(n["state"], "notification_" + n["state"]), "actor": "eqmon",
            "note": f"{n['channel']} message ({n['event']}){to}{tries}", "channel": n["channel"],
        })  # fmt: skip
    events.sort(key=lambda e: e["ts"])  # stable: the store's order among equal times
    return events
