"""Devices: status, last seen and latest readings; history of one metric."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query

from ..deps import StateDep

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])


@router.get("")
def list_devices(state: StateDep) -> list[dict[str, Any]]:
    """Every configured device with its status and latest readings."""
    return state.devices_view()


@router.get("/{device_id}")
def get_device(device_id: str, state: StateDep) -> dict[str, Any]:
    try:
        return state.device_view(device_id)
    except KeyError:
        raise HTTPException(404, f"no device {device_id!r}") from None


@router.get("/{device_id}/history")
def history(
    device_id: str,
    state: StateDep,
    metric: str,
    since: float | None = Query(None, description="Unix seconds; default one hour ago"),
    until: float | None = Query(None, description="Unix seconds; default now"),
    limit: int = Query(10000, ge=1, le=100000),
) -> dict[str, Any]:
    """Raw readings of one metric from the embedded store, oldest first."""
    try:
        state.site.device(device_id)
    except KeyError:
        raise HTTPException(404, f"no device {device_id!r}") from None
    if state.embedded is None:
        raise HTTPException(501, "history needs the embedded store (telemetry.embedded)")
    now = state.clock()
    t0 = since if since is not None else now - 3600
    t1 = until if until is not None else now
    points = state.embedded.history(device_id, metric, t0, t1, limit)
    return {
        "device_id": device_id,
        "metric": metric,
        "points": [{"ts": ts, "value": v, "quality": q} for ts, v, q in points],
    }
