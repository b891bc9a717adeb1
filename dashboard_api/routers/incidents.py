"""Incidents: when every device behind one Modbus gateway, the MQTT broker or in one location
stops answering, the engine raises one alert for the group (rule ``incident-<kind>``, its
``device_id`` the group's key, ``extra["devices"]`` its members; alerts/incidents.py) instead of
one "device offline" alert per device. These routes list them with their devices, and show one
with the alerts it explains. They are alerts: acknowledge and resolve them at
``/api/v1/alerts/{id}/ack`` and ``/resolve``.

``async def``: they read the alert engine on the service's event loop (see state.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path

from alerts.incidents import INCIDENT_RULE_PREFIX
from eqmon.domain import Alert

from ..auth import need
from ..deps import StateDep
from ..errors import ERROR_RESPONSES, NOT_FOUND, show
from ..filters import text
from ..listing import AlertFilter, alert_history, alert_page, find_alert
from ..models import IncidentDetailOut, IncidentOut
from ..pagination import DEFAULT_LIMIT, Cursor, Limit, Page
from ..state import MonitorState
from .alerts import OpenOnly, Since, StateFilter, alert_states

router = APIRouter(
    prefix="/api/v1/incidents",
    tags=["incidents"],
    responses=ERROR_RESPONSES,
    dependencies=[need("alerts:read")],
)

EXPLAINED_MAX = 500  # alerts shown with one incident


def _members(a: Alert) -> list[str]:
    devices = a.extra.get("devices")
    return [str(d) for d in devices] if isinstance(devices, list) else []


def incident_view(state: MonitorState, a: Alert) -> dict[str, Any]:
    kind = a.extra.get("group")
    return {
        **state.alert_view(a),
        "kind": kind if isinstance(kind, str) else a.rule_id.removeprefix(INCIDENT_RULE_PREFIX),
        "group": a.device_id,
        "device_ids": _members(a),
    }


@router.get("", response_model=Page[IncidentOut])
async def list_incidents(
    state: StateDep,
    state_: StateFilter = None,
    open_only: OpenOnly = False,
    location: Annotated[str | None, text("only those with a device in this location")] = None,
    since: Since = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Open incidents first, then resolved ones; each newest first."""
    f = AlertFilter(
        states=alert_states(state_, open_only), location=location, since=since, rule_prefix=INCIDENT_RULE_PREFIX
    )
    return alert_page(state, f, limit, cursor, view=lambda a: incident_view(state, a))


@router.get("/{incident_id}", response_model=IncidentDetailOut, responses=NOT_FOUND)
async def get_incident(
    state: StateDep, incident_id: Annotated[str, Path(max_length=200, description="the incident's (alert's) id")]
) -> dict[str, Any]:
    """One incident with its devices (their status now), the alerts it explains (those of its
    devices open at any time while it was, newest first) and its history."""
    a = find_alert(state, incident_id)
    if a is None or not a.rule_id.startswith(INCIDENT_RULE_PREFIX):
        raise HTTPException(404, f"no incident {show(incident_id)!r}")
    members = _members(a)
    devices = []
    for dev_id in members:
        try:
            d = state.site.device(dev_id)
        except KeyError:  # no longer in the site file
            devices.append({"id": dev_id, "name": dev_id, "kind": "", "location": "", "status": None})
            continue
        health = state.health.get(dev_id)
        devices.append({
            "id": d.id, "name": d.display_name, "kind": d.kind, "location": d.location,
            "status": None if health is None else str(health.state),
        })  # fmt: skip
    return {
        **incident_view(state, a),
        "devices": devices,
        "alerts": [state.alert_view(x) for x in explained(state, a, set(members))],
        "events": alert_history(state, a.id),
    }


def explained(state: MonitorState, incident: Alert, members: set[str]) -> list[Alert]:
    """The alerts of the incident's devices open at any time between its start and its end (now,
    while it is open), newest first: at most ``EXPLAINED_MAX``."""
    if not members:
        return []
    start, end = incident.started_at, incident.resolved_at
    found = [
        x for x in state.engine.active()
        if x.device_id in members and (end is None or x.started_at <= end)
    ]  # fmt: skip
    open_ids = {x.id for x in found}
    resolved = state.alert_store.resolved_page(
        limit=EXPLAINED_MAX, device_ids=members, until=end, resolved_since=start
    )
    out = found + [x for x in resolved if x.id not in open_ids]
    out.sort(key=lambda x: (x.started_at, x.id), reverse=True)
    return out[:EXPLAINED_MAX]
