"""Alerts: a filtered, paginated list (open ones first, then resolved ones, newest first); one
alert with its history; pending conditions; acknowledgement and resolution by hand.

The routes are ``async def``: they run on the service's event loop, the only writer of the
alert engine and the alert store (see state.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from eqmon.domain import AlertState, Severity

from ..auth import Principal, need
from ..deps import StateDep
from ..errors import BODY_ERRORS, ERROR_RESPONSES, NOT_FOUND, show
from ..filters import MultiValue, parse_multi, text, values
from ..listing import OPEN_STATES, AlertFilter, alert_history, alert_page, find_alert
from ..models import AlertDetailOut, AlertOut, PendingOut
from ..pagination import DEFAULT_LIMIT, Cursor, Limit, Page, cached_page

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], responses=ERROR_RESPONSES)


def _valid_text(v: str) -> str:
    """Text that can be stored and shown: no lone surrogates (JSON's "\\ud800" escapes)."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogate)") from None
    return v


Who = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(_valid_text)]
Note = Annotated[str, StringConstraints(max_length=500), AfterValidator(_valid_text)]


class AckRequest(BaseModel):
    """Taken on by the logged-in user."""

    note: Note = Field(
        default="", description="a comment, e.g. what is being done (no patient identifiers)"
    )


class ResolveRequest(BaseModel):
    """Resolved by the logged-in user."""

    note: Note = Field(
        default="",
        description="why: what was done, kept in the alert's history (no patient identifiers)",
    )


Since = Annotated[
    float | None,
    Query(ge=0, le=253402300799, allow_inf_nan=False, description="only those started at or after this, Unix seconds"),
]
STATES = "active, acknowledged, resolved"


def alert_states(raw: list[str] | None, open_only: bool) -> frozenset[AlertState] | None:
    states = parse_multi(raw, AlertState, "state")
    if open_only:
        states = OPEN_STATES if states is None else states & OPEN_STATES
    return states


StateFilter = Annotated[MultiValue, values(f"only those in these states: {STATES}", alias="state")]
OpenOnly = Annotated[bool, Query(description="only the open ones (active, acknowledged): a shorthand for state")]


@router.get("", response_model=Page[AlertOut])
async def list_alerts(
    state: StateDep,
    who: Annotated[Principal, need("alerts:read")],
    state_: StateFilter = None,
    open_only: OpenOnly = False,
    severity: Annotated[MultiValue, values("only those of these severities: info, warning, critical")] = None,
    location: Annotated[
        str | None, text("only those of this location: of its devices, and incidents with a device there")
    ] = None,
    device_id: Annotated[str | None, text("only those of this device (for an incident: this group)")] = None,
    rule_id: Annotated[str | None, text("only those of this rule, e.g. device-offline, incident-gateway")] = None,
    since: Since = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """Open alerts first (active and acknowledged), then resolved ones; each newest first.
    Incidents are alerts too (rule ``incident-…``; ``/api/v1/incidents`` lists them with their
    devices)."""
    f = AlertFilter(
        states=alert_states(state_, open_only), severities=parse_multi(severity, Severity, "severity"),
        location=location, device_id=device_id, rule_id=rule_id, since=since,
    )  # fmt: skip
    key = ("alerts", tuple(state_ or ()), open_only, tuple(severity or ()), location, device_id, rule_id, since, limit, cursor)
    return cached_page(state, key, lambda: alert_page(state, f, limit, cursor))


@router.get("/pending", response_model=list[PendingOut])
async def pending(
    state: StateDep, who: Annotated[Principal, need("alerts:read")]
) -> list[dict[str, Any]]:
    """Conditions whose delay is running (a fridge above 8 °C for 12 of its 60 minutes), soonest
    first: not alerts yet, nobody is notified; each raises at ``due`` if it still holds."""
    return state.engine.pending(state.clock())


AlertId = Annotated[str, Path(max_length=200, description="the alert's id")]


@router.get("/{alert_id}", response_model=AlertDetailOut, responses=NOT_FOUND)
async def get_alert(
    alert_id: AlertId, state: StateDep, who: Annotated[Principal, need("alerts:read")]
) -> dict[str, Any]:
    """One alert (open or resolved) with its history: raised, acknowledged (by whom, their
    comment), silenced, notified (by which channel, to whom on the rota), resolved (by itself
    or by hand, with the note) …"""
    alert = find_alert(state, alert_id)
    if alert is None:
        raise HTTPException(404, f"no alert {show(alert_id)!r}")
    return {**state.alert_view(alert), "events": alert_history(state, alert.id)}


def _audit(state: Any, action: str, alert: Any, note: str, who: Principal) -> None:
    state.audit(action, f"alert:{alert.id}", {"note": note, "rule_id": alert.rule_id, "device_id": alert.device_id}, who.name)


@router.post("/{alert_id}/resolve", response_model=AlertOut, responses={**NOT_FOUND, **BODY_ERRORS})
async def resolve(
    body: ResolveRequest,
    state: StateDep,
    who: Annotated[Principal, need("alerts:write")],
    alert_id: str = Path(max_length=200),
) -> dict[str, Any]:
    """Resolve an open alert by hand, with who and why. If its condition still holds, the
    engine raises it again (a new alert) at the next reading or within a second."""
    alert = state.engine.resolve(alert_id, who.name, state.clock(), body.note)
    if alert is None:
        raise HTTPException(404, f"no open alert {show(alert_id)!r}")
    _audit(state, "alert.resolve", alert, body.note, who)
    return state.alert_view(alert)


@router.post("/{alert_id}/ack", response_model=AlertOut, responses={**NOT_FOUND, **BODY_ERRORS})
async def acknowledge(
    body: AckRequest,
    state: StateDep,
    who: Annotated[Principal, need("alerts:write")],
    alert_id: str = Path(max_length=200),
) -> dict[str, Any]:
    """Take an open alert on, with a comment. The first acknowledgement keeps it; escalation
    stops."""
    alert = state.engine.acknowledge(alert_id, who.name, state.clock(), body.note)
    if alert is None:
        raise HTTPException(404, f"no open alert {show(alert_id)!r}")
    _audit(state, "alert.acknowledge", alert, body.note, who)
    return state.alert_view(alert)
