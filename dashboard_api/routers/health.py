"""Liveness and a summary for monitoring the monitor."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..deps import StateDep
from ..errors import ERROR_RESPONSES
from ..models import HealthOut

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
