"""Telemetry: self-metrics in Prometheus text format and the dead-letter store."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse

from ..auth import need
from ..deps import StateDep
from ..errors import ERROR_RESPONSES, NOT_FOUND
from ..models import DeadLettersOut, MqttDeadLettersOut

router = APIRouter(
    tags=["telemetry"], responses=ERROR_RESPONSES, dependencies=[need("metrics:read")]
)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={**NOT_FOUND, 200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(state: StateDep) -> PlainTextResponse:
    """eqmon's own metrics (readings accepted/written/dead-lettered, spool depth and age,
    write latency) in the Prometheus text exposition format."""
    if state.metrics_text is None:
        raise HTTPException(404, "no metrics")
    return PlainTextResponse(state.metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/api/v1/telemetry/dead-letters", response_model=DeadLettersOut)
def dead_letters(state: StateDep, limit: int = Query(1000, ge=1, le=100000)) -> dict[str, Any]:
    """Points a sink could never write (rejected by the server as malformed), newest first."""
    if state.dead_letters is None:
        return {"count": 0, "items": []}
    return {"count": state.dead_letters.count(), "items": state.dead_letters.list(limit)}


@router.get("/api/v1/mqtt/dead-letters", response_model=MqttDeadLettersOut)
async def mqtt_dead_letters(state: StateDep, limit: int = Query(100, ge=1, le=10000)) -> dict[str, Any]:
    """MQTT messages that could not become readings: counts by reason (since start) and the
    newest raw messages kept (a bounded list, `mqtt.dead_letters` in the site file).

    async: the collector appends to these on the service's event loop; copying them there
    cannot meet a deque mutated during iteration."""
    m = state.mqtt
    if m is None:
        return {"counts": {}, "items": []}
    items = [d.as_dict() for d in list(m.dead_letters)[-limit:]]
    items.reverse()
    return {"counts": dict(m.bad_payloads), "items": items}
