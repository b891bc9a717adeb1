"""Alerts: open ones first, then recent resolved ones; acknowledgement.

Both routes are ``async def``: they run on the service's event loop, the only writer of the
alert engine and the alert store (see state.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from ..deps import StateDep
from ..errors import BODY_ERRORS, ERROR_RESPONSES, NOT_FOUND, show
from ..models import AlertOut

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], responses=ERROR_RESPONSES)


def _valid_text(v: str) -> str:
    """Text that can be stored and shown: no lone surrogates (JSON's "\\ud800" escapes)."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogate)") from None
    return v


class AckRequest(BaseModel):
    by: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(_valid_text)
    ] = Field(description="who takes it on")
    note: Annotated[str, StringConstraints(max_length=500), AfterValidator(_valid_text)] = ""


@router.get("", response_model=list[AlertOut])
async def list_alerts(
    state: StateDep,
    open_only: bool = False,
    limit: int = Query(200, ge=1, le=1000, description="at most this many alerts"),
) -> list[dict[str, Any]]:
    return [a.as_dict() for a in state.alerts_view(include_resolved=not open_only, limit=limit)]


@router.post("/{alert_id}/ack", response_model=AlertOut, responses={**NOT_FOUND, **BODY_ERRORS})
async def acknowledge(
    body: AckRequest, state: StateDep, alert_id: str = Path(max_length=200)
) -> dict[str, Any]:
    alert = state.engine.acknowledge(alert_id, body.by, state.clock(), body.note)
    if alert is None:
        raise HTTPException(404, f"no open alert {show(alert_id)!r}")
    return alert.as_dict()
