"""Devices: status, last seen and latest readings (a filtered, paginated list and one device);
history of one metric.

The device routes are ``async def``: the views read what the service's event loop writes
(health, latest values, open alerts), so they run on that loop. The history routes query a
telemetry store and stay plain ``def`` (worker threads)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response

from eqmon.domain import DeviceState

from ..auth import need
from ..deps import StateDep
from ..errors import ERROR_RESPONSES, NOT_FOUND, show
from ..filters import TEXT_MAX, MultiValue, parse_multi, text, values
from ..listing import DeviceFilter, device_page
from ..models import AggregateOut, DeviceOut, ErrorResponse, HistoryOut
from ..pagination import DEFAULT_LIMIT, Cursor, Limit, Page, cached_page

router = APIRouter(
    prefix="/api/v1/devices",
    tags=["devices"],
    responses=ERROR_RESPONSES,
    dependencies=[need("devices:read")],
)

# Timestamps accepted in queries: Unix seconds from 1970 to the end of year 9999, finite.
MAX_TS = 253402300799.0  # 9999-12-31T23:59:59Z


def _timestamp(description: str) -> Any:
    return Query(None, ge=0, le=MAX_TS, allow_inf_nan=False, description=description)


Metric = Annotated[str, Query(min_length=1, max_length=200, description="metric name, e.g. temperature_c")]
HISTORY_ERRORS: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND,
    501: {"model": ErrorResponse, "description": "No telemetry store configured"},
}


@router.get("", response_model=Page[DeviceOut])
async def list_devices(
    state: StateDep,
    location: Annotated[str | None, text("only the devices of this location (exact)")] = None,
    kind: Annotated[str | None, text("only those of this kind, e.g. medication_refrigerator")] = None,
    status: Annotated[MultiValue, values(f"only those in these states: {', '.join(DeviceState)}")] = None,
    protocol: Annotated[str | None, text("only those of this protocol: modbus, mqtt")] = None,
    q: Annotated[str | None, text("only those whose id or name contains this (any case)")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """The configured devices with their status and latest readings, by location then id."""
    f = DeviceFilter(location, kind, protocol, parse_multi(status, DeviceState, "status"), q)
    key = ("devices", location, kind, tuple(status or ()), protocol, q, limit, cursor)
    return cached_page(state, key, lambda: device_page(state, f, limit, cursor))


DeviceId = Annotated[str, Path(max_length=TEXT_MAX, description="the device's id, as in the site file")]


@router.get("/{device_id}", response_model=DeviceOut, responses=NOT_FOUND)
async def get_device(device_id: DeviceId, state: StateDep) -> dict[str, Any]:
    try:
        return state.device_view(device_id)
    except KeyError:
        raise HTTPException(404, f"no device {show(device_id)!r}") from None


def _history_source(state: StateDep, device_id: str) -> Any:
    try:
        state.site.device(device_id)
    except KeyError:
        raise HTTPException(404, f"no device {show(device_id)!r}") from None
    if state.history is None:
        raise HTTPException(501, "history needs a telemetry store (telemetry.embedded or telemetry.influxdb)")
    return state.history


@router.get("/{device_id}/history", response_model=HistoryOut, responses=HISTORY_ERRORS)
def history(
    device_id: DeviceId,
    state: StateDep,
    metric: Metric,
    since: float | None = _timestamp("Unix seconds; default one hour ago"),
    until: float | None = _timestamp("Unix seconds; default now"),
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


@router.get("/{device_id}/history/aggregate", response_model=AggregateOut, responses=HISTORY_ERRORS)
def history_aggregate(
    device_id: DeviceId,
    state: StateDep,
    metric: Metric,
    window: Literal["1m", "1h"] = Query("1m", description="window length"),
    since: float | None = _timestamp("Unix seconds; default one day ago"),
    until: float | None = _timestamp("Unix seconds; default now"),
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
