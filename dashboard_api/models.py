"""Typed response bodies of the API: what the OpenAPI schema promises and responses are checked
against (tests/test_api_fuzz.py). The views in state.py build plain dicts; these models give
them a schema."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from eqmon.domain import AlertState, DeviceState, Quality, Severity

Value = float | int | bool | str | None


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. validation_error, not_found")
    message: str = Field(description="what went wrong, for people (bounded, never raw input)")
    field: str | None = Field(
        description="the request part at fault, e.g. `query.limit` or `body.by`; null when none"
    )


class ErrorResponse(BaseModel):
    """The one shape of every error response."""

    error: ErrorBody


class ReadingOut(BaseModel):
    value: Value = Field(description="null when the quality is bad")
    unit: str
    ts: float = Field(description="when it was measured, Unix seconds")
    quality: Quality = Field(
        description="good; bad (the device reports a sensor failure); stale (the device is not "
        "heard any more: the value is its last known one)"
    )
    age_s: float = Field(description="seconds since `ts`, at the time of the response")
    maintenance: bool = Field(
        default=False, description="the device is in a maintenance window: the value is not evaluated by any rule"
    )


class OpenAlertRef(BaseModel):
    id: str
    severity: Severity
    metric: str


class DeviceOut(BaseModel):
    # Other keys may be added to the device view (e.g. per-protocol diagnostics): kept, not dropped.
    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    kind: str
    location: str
    protocol: str
    address: str | None
    status: DeviceState
    status_since: float | None
    last_seen: float | None
    last_error: str | None
    consecutive_failures: int
    rejected_registers: list[dict[str, Any]] = Field(
        default_factory=list, description="Modbus registers the device rejects: name, table, address, exception"
    )
    open_alerts: list[OpenAlertRef]
    readings: dict[str, ReadingOut]
    maintenance: dict[str, Any] | None = Field(
        default=None, description="the maintenance window it is in (id, owner, reason, until); null when none"
    )


class AlertOut(BaseModel):
    id: str
    rule_id: str
    device_id: str
    metric: str
    severity: Severity
    state: AlertState
    message: str
    started_at: float
    value: Value
    resolved_at: float | None
    acknowledged_at: float | None
    acknowledged_by: str | None
    silenced: dict[str, Any] | None = Field(
        default=None,
        description="the silence or maintenance window keeping it from notifying anyone: "
        "id, kind, owner, reason, until (Unix seconds); null when none",
    )
    resolved_by: str | None = Field(default=None, description="who resolved it by hand (null: it resolved by itself)")
    note: str | None = Field(default=None, description="the acknowledgement's or the manual resolution's note")


class PendingOut(BaseModel):
    """A condition whose delay is running: it becomes an alert at ``due`` if it still holds."""

    rule_id: str
    device_id: str
    metric: str
    severity: Severity
    since: float
    due: float
    message: str


SilenceKind = Literal["silence", "maintenance"]


class SilenceOut(BaseModel):
    id: str
    kind: SilenceKind
    device_id: str | None
    location: str | None
    rule_id: str | None
    owner: str
    reason: str
    starts_at: float
    ends_at: float
    created_at: float
    cancelled_at: float | None


class HealthOut(BaseModel):
    status: Literal["ok"]
    site: str
    uptime_s: float
    devices: dict[str, int] = Field(description="device count by status")
    open_alerts: int
    counters: dict[str, float]


class HistoryPoint(BaseModel):
    ts: float
    value: Value
    quality: str


class HistoryOut(BaseModel):
    device_id: str
    metric: str
    points: list[HistoryPoint]


class AggregatePoint(BaseModel):
    ts: float = Field(description="window start, Unix seconds")
    min: float
    mean: float
    max: float
    count: int


class AggregateOut(BaseModel):
    device_id: str
    metric: str
    window: Literal["1m", "1h"]
    points: list[AggregatePoint]


class DeadLettersOut(BaseModel):
    count: int
    items: list[dict[str, Any]]


class MqttDeadLettersOut(BaseModel):
    counts: dict[str, int]
    items: list[dict[str, Any]]
