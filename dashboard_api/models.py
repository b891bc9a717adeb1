"""Typed response bodies of the API: what the OpenAPI schema promises and responses are checked
against (tests/test_api_fuzz.py). The views in state.py build plain dicts; these models give
them a schema."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from eqmon.domain import AlertState, DeviceState, Quality, Severity
from inventory.status import Level as StockLevel

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


class RejectedRegisterOut(BaseModel):
    name: str
    table: str = Field(description="the Modbus table: holding, input, coil, discrete")
    address: int
    exception: int = Field(description="the Modbus exception code the device answered (e.g. 2: illegal address)")


class MaintenanceRef(BaseModel):
    id: str
    owner: str
    reason: str
    until: float = Field(description="when it ends, Unix seconds")


class SilenceRef(BaseModel):
    """What keeps an alert from notifying anyone."""

    id: str
    kind: Literal["silence", "maintenance"] = "silence"
    owner: str = ""
    reason: str = ""
    until: float | None = Field(default=None, description="when it ends, Unix seconds")


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
    rejected_registers: list[RejectedRegisterOut] = Field(
        default_factory=list, description="Modbus registers the device rejects: name, table, address, exception"
    )
    open_alerts: list[OpenAlertRef]
    readings: dict[str, ReadingOut]
    maintenance: MaintenanceRef | None = Field(
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
    silenced: SilenceRef | None = Field(
        default=None,
        description="the silence or maintenance window keeping it from notifying anyone: "
        "id, kind, owner, reason, until (Unix seconds); null when none",
    )
    resolved_by: str | None = Field(default=None, description="who resolved it by hand (null: it resolved by itself)")
    note: str | None = Field(default=None, description="the acknowledgement's or the manual resolution's note")
    location: str | None = Field(
        default=None,
        description="where: the device's location, or the incident's when all its devices share one; "
        "null when none (eqmon's own alerts, an incident spanning locations, stock alerts)",
    )


class AlertEventOut(BaseModel):
    """One entry of an alert's history."""

    ts: float = Field(description="when, Unix seconds")
    kind: str = Field(
        description="raised, changed, acknowledged, silenced, unsilenced, resolved, reopened (the "
        "alert itself); notified, notification_pending, notification_failed (a message about it)"
    )
    actor: str = Field(description='who: a user for acknowledgements and manual resolutions, "eqmon" otherwise')
    note: str | None = Field(
        description="the acknowledgement's comment, the resolution's note, the silence's reason, "
        "the message at a raise or change, what was sent to whom"
    )
    channel: str | None = Field(default=None, description="the notification channel (notifications only)")


class AlertDetailOut(AlertOut):
    events: list[AlertEventOut] = Field(description="its history, oldest first")


class IncidentOut(AlertOut):
    """An outage of a group of devices (a Modbus gateway, the MQTT broker, a location): one
    alert instead of one per device (rule ``incident-<kind>``). Acknowledged and resolved as an
    alert (``/api/v1/alerts/{id}/ack``)."""

    kind: str = Field(description="what the devices share: gateway, broker or location")
    group: str = Field(description='the group, e.g. "gateway:10.0.0.5:502" or "location:Ward 4B" (its device_id)')
    device_ids: list[str] = Field(description="the devices of the group, all down when it was raised")


class IncidentDeviceOut(BaseModel):
    id: str
    name: str
    kind: str
    location: str
    status: DeviceState | None = Field(description="its status now; null for a device no longer configured")


class IncidentDetailOut(IncidentOut):
    devices: list[IncidentDeviceOut] = Field(description="its devices with their status now")
    alerts: list[AlertOut] = Field(
        description="the alerts it explains: those of its devices open at any time while it was "
        "(its devices' own offline alerts, their rule alerts whose condition became unknown), newest first"
    )
    events: list[AlertEventOut] = Field(description="its history, oldest first")


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


# -- live updates (GET /api/v1/events): the data of each event type ---------------------------
# (``alert`` events carry an AlertOut)


class DeviceEventOut(BaseModel):
    """A device's status changed (or the set of registers it rejects)."""

    id: str = Field(description="the device id")
    status: DeviceState
    status_since: float | None
    last_seen: float | None = Field(description="its last successful poll or message, Unix seconds")
    last_error: str | None
    reason: str = Field(description="why it changed, one line (empty when it came back online)")
    rejected_registers: list[dict[str, Any]] = Field(
        default_factory=list, description="Modbus registers the device rejects: name, table, address, exception"
    )


class StockEventOut(BaseModel):
    """A bin's stock status changed: its level or its count on hand."""

    item_id: int
    sku: str
    name: str = Field(description="the item's name")
    unit: str
    location_id: int
    location: str = Field(description="the bin's location's name")
    room: str = Field(description="the supply room it is in")
    path: str = Field(description="the room and the finer locations down to the bin")
    on_hand: int
    level: StockLevel = Field(description="out, below_min, below_reorder, in_stock or above_par")
    min_qty: int
    reorder_point: int
    par: int
    days_of_supply: float | None = Field(description="at the recent rate of use; null when no use was seen")
    stockout_at: float | None = Field(description="when it runs out at that rate, Unix seconds; null when no use was seen")

