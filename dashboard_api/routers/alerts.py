"""Alerts: open ones first, then recent resolved ones; acknowledgement."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from ..deps import StateDep

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])


class AckRequest(BaseModel):
    by: str = Field(min_length=1, max_length=100, description="who takes it on")
    note: str = Field(default="", max_length=500)


@router.get("")
def list_alerts(state: StateDep, open_only: bool = False, limit: int = 200) -> list[dict[str, Any]]:
    return [a.as_dict() for a in state.alerts_view(include_resolved=not open_only, limit=limit)]


@router.post("/{alert_id}/ack")
def acknowledge(alert_id: str, body: AckRequest, state: StateDep) -> dict[str, Any]:
    alert = state.engine.acknowledge(alert_id, body.by, state.clock(), body.note)
    if alert is None:
        raise HTTPException(404, f"no open alert {alert_id!r}")
    return alert.as_dict()
