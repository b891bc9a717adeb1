"""Telemetry: self-metrics in Prometheus text format and the dead-letter store."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse

from ..deps import StateDep

router = APIRouter(tags=["telemetry"])


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(state: StateDep) -> PlainTextResponse:
    """eqmon's own metrics (readings accepted/written/dead-lettered, spool depth and age,
    write latency) in the Prometheus text exposition format."""
    if state.metrics_text is None:
        raise HTTPException(404, "no metrics")
    return PlainTextResponse(state.metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/api/v1/telemetry/dead-letters")
def dead_letters(state: StateDep, limit: int = Query(1000, ge=1, le=100000)) -> dict[str, Any]:
    """Points a sink could never write (rejected by the server as malformed), newest first."""
    if state.dead_letters is None:
        return {"count": 0, "items": []}
    return {"count": state.dead_letters.count(), "items": state.dead_letters.list(limit)}


@router.get("/api/v1/mqtt/dead-letters")
def mqtt_dead_letters(state: StateDep, limit: int = Query(100, ge=1, le=10000)) -> dict[str, Any]:
    """MQTT messages that could not become readings: counts by reason (since start) and the
    newest raw messages kept (a bounded list, `mqtt.dead_letters` in the site file)."""
    m = state.mqtt
    if m is None:
        return {"counts": {}, "items": []}
    items = [d.as_dict() for d in list(m.dead_letters)[-limit:]]
    items.reverse()
    return {"counts": dict(m.bad_payloads), "items": items}
