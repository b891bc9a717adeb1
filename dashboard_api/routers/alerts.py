"""Alerts: open ones first, then recent resolved ones; pending conditions; acknowledgement and
resolution by hand.

Both routes are ``async def``: they run on the service's event loop, the only writer of the
alert engine and the alert store (see state.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from ..auth import Principal, need
from ..deps import StateDep
from ..errors import BODY_ERRORS, ERROR_RESPONSES, NOT_FOUND, show
from ..models import AlertOut, PendingOut

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


@router.get("", response_model=list[AlertOut])
async def list_alerts(
    state: StateDep,
    who: Annotated[Principal, need("alerts:read")],
    open_only: bool = False,
    limit: int = Query(200, ge=1, le=1000, description="at most this many alerts"),
) -> list[dict[str, Any]]:
    return [a.as_dict() for a in state.alerts_view(include_resolved=not open_only, limit=limit)]


@router.get("/pending", response_model=list[PendingOut])
async def pending(
    state: StateDep, who: Annotated[Principal, need("alerts:read")]
) -> list[dict[str, Any]]:
    """Conditions whose delay is running (a fridge above 8 °C for 12 of its 60 minutes), soonest
    first: not alerts yet, nobody is notified; each raises at ``due`` if it still holds."""
    return state.engine.pending(state.clock())


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
    state.audit(
        "alert.resolve",
        f"alert:{alert.id}",
        {"note": body.note, "rule_id": alert.rule_id, "device_id": alert.device_id},
        who.name,
    )
    return alert.as_dict()


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
    state.audit(
        "alert.acknowledge",
        f"alert:{alert.id}",
        {"note": body.note, "rule_id": alert.rule_id, "device_id": alert.device_id},
        who.name,
    )
    return alert.as_dict()
