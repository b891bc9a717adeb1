"""Liveness and a summary for monitoring the monitor."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(state: StateDep) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for h in state.health.values():
        counts[str(h.state)] = counts.get(str(h.state), 0) + 1
    return {
        "status": "ok",
        "site": state.site.site.name,
        "uptime_s": round(state.clock() - state.started_at, 1),
        "devices": counts,
        "open_alerts": len(state.engine.active()),
        "counters": {k: f() for k, f in state.counters.items()},
    }
