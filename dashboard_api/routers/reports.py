"""Reports over the alert history, as ``eqmon report`` makes them (alerts/reports.py): the shift
summary, the excursions per device and the alert volume per rule, as JSON (the content of
``eqmon report --json``) or CSV (byte for byte ``eqmon report --csv``).

``since`` and ``until`` are Unix seconds or ISO 8601 local to the site (its ``timezone``); the
defaults are the CLI's (``reports.report_period``): the current shift, or the last 7 days for the
alert volume. A period is at most ``MAX_PERIOD_DAYS`` long. The routes are plain ``def``: they
read the state database in a worker thread, never on the service's loop."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from alerts import reports

from ..auth import need
from ..deps import StateDep
from ..errors import ERROR_RESPONSES
from ..models import ErrorResponse

MAX_PERIOD_DAYS = 366

router = APIRouter(
    prefix="/api/v1/reports",
    tags=["reports"],
    dependencies=[need("reports:read")],
    responses={
        **ERROR_RESPONSES,
        503: {"model": ErrorResponse, "description": "The state database cannot be read now"},
    },
)

TimeParam = Annotated[
    str | None,
    Query(
        max_length=64,
        description="Unix seconds (`1772431200`) or ISO 8601 (`2026-03-02T07:00`; without an offset, "
        "local to the site's time zone)",
    ),
]
Format = Annotated[Literal["json", "csv"], Query(description="json, or csv with a header row")]


# -- JSON bodies (alerts/reports.py as_json) ------------------------------------------------


class PeriodOut(BaseModel):
    since: float = Field(description="Unix seconds, inclusive")
    until: float = Field(description="Unix seconds, exclusive")
    timezone: str = Field(description="the site's: how days and shifts are cut")
    since_local: str = Field(description="ISO 8601 with the site's offset")
    until_local: str
    shift: str | None = Field(description='"day shift" or "night shift" when the period is exactly one')


class SeverityFiguresOut(BaseModel):
    severity: str = Field(description='a severity, or "total"')
    raised: int
    acknowledged: int
    resolved: int
    open_at_end: int
    median_ack_s: float | None = Field(description="from the raise to the acknowledgement, seconds")
    max_ack_s: float | None


class OpenAlertOut(BaseModel):
    id: str
    severity: str
    rule_id: str
    device_id: str
    started_at: float
    raised_at: float
    acknowledged_at: float | None
    acknowledged_by: str | None
    message: str


class ShiftReportOut(BaseModel):
    report: Literal["shift"]
    period: PeriodOut
    by_severity: list[SeverityFiguresOut] = Field(description="the severities seen, most severe first")
    total: SeverityFiguresOut
    still_open: list[OpenAlertOut] = Field(description="open at the end of the period, oldest first")
    as_of: float = Field(description="the end of the period, or now for a period not over yet")


class ExcursionEntryOut(BaseModel):
    start: float | None
    duration_s: float | None
    min: float | None
    max: float | None


class ExcursionOut(BaseModel):
    alert_id: str
    device_id: str
    metric: str
    rule_id: str
    severity: str
    start: float
    end: float | None = Field(description="null: still open")
    duration_s: float = Field(description="to the end, or to now while open")
    value: float | None = Field(description="the worst value of the excursion")
    acknowledged_at: float | None
    acknowledged_by: str | None
    note: str | None
    excursions: list[ExcursionEntryOut] = Field(description="the rule's own excursion entries, when it keeps them")


class ExcursionReportOut(BaseModel):
    report: Literal["excursions"]
    period: PeriodOut
    excursions: list[ExcursionOut] = Field(description="by device, then start")


class VolumeRowOut(BaseModel):
    rule_id: str
    device_id: str | None = Field(description="null: the rule over all its devices")
    count: int
    open: int = Field(description="not resolved yet")
    median_duration_s: float | None = Field(description="over the resolved ones")
    by_day: list[int] = Field(description="alerts raised per day, aligned with `days`")


class AlertVolumeOut(BaseModel):
    report: Literal["alert-volume"]
    period: PeriodOut
    days: list[str] = Field(description="the local dates (ISO) the period covers")
    rows: list[VolumeRowOut] = Field(description="each rule, then its devices; most alerts first")


def _csv_doc(columns: tuple[str, ...], extra: str = "") -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": f"JSON, or with `format=csv` CSV with a header row: {', '.join(columns)}{extra}",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    }


# -- the routes ------------------------------------------------------------------------------


def _report(state: StateDep, name: str, since: str | None, until: str | None, fmt: str) -> Any:
    tz = state.site.site.timezone
    now = time.time()
    bounds: dict[str, float | None] = {}
    for field, text in (("since", since), ("until", until)):
        try:
            bounds[field] = None if text is None else reports.parse_time(text, tz)
        except ValueError as exc:
            raise _invalid(field, str(exc)) from None
    try:
        period = reports.report_period(name, bounds["since"], bounds["until"], tz, now=now)
    except ValueError as exc:
        raise _invalid("since", str(exc)) from None
    if period.until - period.since > MAX_PERIOD_DAYS * 86400:
        raise _invalid("since", f"a report covers at most {MAX_PERIOD_DAYS} days")
    if state.db is None:
        raise HTTPException(503, "no state database")
    try:
        report = reports.make_report(state.db, name, period, now=now)
    except SQLAlchemyError:
        raise HTTPException(503, "the state database cannot be read now; try again") from None
    if fmt == "csv":
        start = datetime.fromtimestamp(period.since, period.tz)
        filename = f"eqmon-{name}-{start:%Y%m%d-%H%M}.csv"
        return Response(
            reports.render_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return reports.as_json(report)


class _Invalid(HTTPException):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(422, f"query.{field}: {message}")
        self.field = f"query.{field}"  # the error body's field (errors.py)


def _invalid(field: str, message: str) -> HTTPException:
    return _Invalid(field, message)


@router.get("/shift", response_model=ShiftReportOut, responses=_csv_doc(reports.SHIFT_CSV))
def shift(state: StateDep, since: TimeParam = None, until: TimeParam = None, format: Format = "json") -> Any:
    """Alerts raised, acknowledged and resolved in the period and open at its end, by severity,
    with the time to acknowledge; the alerts still open. Default: the current shift (day
    07:00–19:00, night 19:00–07:00, site time)."""
    return _report(state, "shift", since, until, format)


@router.get("/excursions", response_model=ExcursionReportOut, responses=_csv_doc(reports.EXCURSIONS_CSV))
def excursions(state: StateDep, since: TimeParam = None, until: TimeParam = None, format: Format = "json") -> Any:
    """Each threshold or range alert overlapping the period, per device: start, end, duration,
    worst value, who acknowledged it and their note. Default: the current shift."""
    return _report(state, "excursions", since, until, format)


@router.get(
    "/alert-volume",
    response_model=AlertVolumeOut,
    responses=_csv_doc(reports.VOLUME_CSV, ", then one column per local day"),
)
def alert_volume(state: StateDep, since: TimeParam = None, until: TimeParam = None, format: Format = "json") -> Any:
    """Alerts raised per rule and per rule and device, per local day, with the median duration:
    the noisy rules. Default: the last 7 days."""
    return _report(state, "alert-volume", since, until, format)
