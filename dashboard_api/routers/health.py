"""Liveness, readiness and a summary for monitoring the monitor.

``/healthz`` is the liveness probe: 200 while the process serves requests. ``/readyz`` is the
readiness probe: each component (MQTT broker, sinks, spool, state database, collectors) with
its state, 200 when none is down, 503 otherwise; the checks themselves are the service's
(eqmon_app/readiness.py, handed in as ``MonitorState.readiness``). Both are open to anyone
(load balancers and orchestrators carry no token): they say states, never addresses, errors or
data."""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..deps import StateDep
from ..errors import ERROR_RESPONSES
from ..models import HealthOut

log = logging.getLogger("eqmon.api")

router = APIRouter(tags=["health"], responses=ERROR_RESPONSES)


@router.get("/healthz", response_model=HealthOut)
async def healthz(state: StateDep) -> dict[str, Any]:
    # async: reads the device health and the alert engine on the loop that writes them
    counts: dict[str, int] = {}
    for h in state.health.values():
        counts[str(h.state)] = counts.get(str(h.state), 0) + 1
    return {
        "status": "ok",
        "site": state.site.site.name,
        "uptime_s": round(state.clock() - state.started_at, 1),
        "devices": counts,
        "open_alerts": len(state.engine.active()),
        "counters": state.counters(),
    }


ComponentState = Literal["ok", "degraded", "down"]


class ComponentOut(BaseModel):
    name: str = Field(
        description="collectors, mqtt-broker (with MQTT devices), sink:embedded, sink:influxdb, "
        "spool, state-database"
    )
    state: ComponentState = Field(
        description="ok; degraded (working around a fault: nothing lost yet); down (not doing its job)"
    )
    detail: str = Field(description="what the state means now, for people (no addresses, no error text)")


class ReadyOut(BaseModel):
    ready: bool = Field(description="no component is down (the status is 200; 503 otherwise)")
    checked_at: float = Field(description="when, Unix seconds")
    components: list[ComponentOut]


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "Not ready: a component is down (the body says which)"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    """Readiness: 200 when every component is ok or degraded, 503 when one is down (or the
    service has not started). Never cached."""
    # async: the checks read the collectors, sinks and spool on the loop that writes them; the
    # database's is bounded and off the loop (eqmon_app/readiness.py)
    if state.readiness is None:
        report: dict[str, Any] = {
            "ready": False, "checked_at": state.clock(),
            "components": [{"name": "service", "state": "down", "detail": "no readiness checks: not a running service"}],
        }  # fmt: skip
    else:
        try:
            report = await state.readiness()
        except Exception:
            log.exception("readiness checks failed")
            report = {
                "ready": False, "checked_at": state.clock(),
                "components": [{"name": "readiness", "state": "down", "detail": "the checks failed (see the service log)"}],
            }  # fmt: skip
    body = ReadyOut.model_validate(report).model_dump(mode="json")
    return JSONResponse(body, status_code=200 if body["ready"] else 503, headers={"Cache-Control": "no-store"})
