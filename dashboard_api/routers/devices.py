"""Devices: status, last seen and latest readings; history of one metric."""

from __future__ import annotations

from typing import Any, Literal

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


def _history_source(state: StateDep, device_id: str) -> Any:
    try:
        state.site.device(device_id)
    except KeyError:
        raise HTTPException(404, f"no device {device_id!r}") from None
    if state.history is None:
        raise HTTPException(501, "history needs a telemetry store (telemetry.embedded or telemetry.influxdb)")
    return state.history


@router.get("/{device_id}/history")
def history(
    device_id: str,
    state: StateDep,
    metric: str,
    since: float | None = Query(None, description="Unix seconds; default one hour ago"),
    until: float | None = Query(None, description="Unix seconds; default now"),
    limit: int = Query(10000, ge=1, le=100000),
) -> dict[str, Any]:
    """Raw readings of one metric (embedded store, or InfluxDB without it), oldest first."""
    source = _history_source(state, device_id)
    now = state.clock()
    t0 = since if since is not None else now - 3600
    t1 = until if until is not None else now
    points = source.history(device_id, metric, t0, t1, limit)
    return {
        "device_id": device_id,
        "metric": metric,
        "points": [{"ts": ts, "value": v, "quality": q} for ts, v, q in points],
    }


@router.get("/{device_id}/history/aggregate")
def history_aggregate(
    device_id: str,
    state: StateDep,
    metric: str,
    window: Literal["1m", "1h"] = Query("1m", description="window length"),
    since: float | None = Query(None, description="Unix seconds; default one day ago"),
    until: float | None = Query(None, description="Unix seconds; default now"),
) -> dict[str, Any]:
    """min/mean/max/count of the good numeric readings per window (``ts`` = window start)."""
    source = _history_source(state, device_id)
    now = state.clock()
    t0 = since if since is not None else now - 86400
    t1 = until if until is not None else now
    return {
        "device_id": device_id,
        "metric": metric,
        "window": window,
        "points": source.aggregate(device_id, metric, t0, t1, window),
    }
