"""Silences and maintenance windows: list, create, cancel.

A silence keeps matching alerts (a device, a location and/or a rule) from notifying anyone
until it ends; an alert still open then notifies at that moment. A maintenance window (a device
or a location) makes its devices raise nothing and marks their readings. Routes are ``async
def``: they run on the service's loop, which applies a change to the engine at once."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from ..auth import Principal, need
from ..deps import StateDep
from ..errors import BODY_ERRORS, ERROR_RESPONSES, NOT_FOUND, error_response, show
from ..models import SilenceKind, SilenceOut
from .alerts import Note, Who, _valid_text

router = APIRouter(prefix="/api/v1/silences", tags=["silences"], responses=ERROR_RESPONSES)

MAX_DURATION_S = 30 * 86400.0  # a silence longer than a month is a rule to change, not a silence

Name = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_valid_text)]


class SilenceCreate(BaseModel):
    kind: SilenceKind = "silence"
    device_id: Name | None = None
    location: Name | None = None
    rule_id: Name | None = None
    owner: Who | None = Field(
        default=None,
        description="whose it is (e.g. the technician doing the work); default: the logged-in user",
    )
    reason: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
        AfterValidator(_valid_text),
    ] = Field(description="why, e.g. door seal being replaced (no patient identifiers)")
    starts_at: float | None = Field(default=None, ge=0, le=253402300799, description="default: now")
    duration_s: float = Field(gt=0, le=MAX_DURATION_S, description="how long, seconds (at most 30 days)")


class CancelRequest(BaseModel):
    by: Who
    note: Note = ""


@router.get("", response_model=list[SilenceOut])
async def list_silences(
    state: StateDep,
    who: Annotated[Principal, need("alerts:read")],
    include_ended: bool = False,
    limit: int = Query(200, ge=1, le=1000),
) -> list[dict[str, Any]]:
    """In force and to come (or, with ``include_ended``, the latest ones of any kind)."""
    repo = state.silences
    found = repo.list(limit=limit) if include_ended else repo.current(state.clock())[:limit]
    return [s.as_dict() for s in found]


@router.post("", response_model=SilenceOut, status_code=201, responses=BODY_ERRORS)
async def create_silence(
    body: SilenceCreate, state: StateDep, who: Annotated[Principal, need("silences:write")]
) -> Any:
    site = state.site
    if body.device_id is None and body.location is None and body.rule_id is None:
        return error_response(422, "a silence needs a device_id, a location or a rule_id to match", "body")
    if body.kind == "maintenance" and (body.rule_id is not None or (body.device_id is None and body.location is None)):
        return error_response(422, "a maintenance window is for a device_id or a location, not a rule", "body.rule_id")
    if body.device_id is not None and body.device_id not in {d.id for d in site.devices}:
        return error_response(422, f"no device {show(body.device_id)!r}", "body.device_id")
    if body.location is not None and body.location not in {d.location for d in site.devices}:
        return error_response(422, f"no device is in location {show(body.location)!r}", "body.location")
    now = state.clock()
    start = now if body.starts_at is None else body.starts_at
    if start + body.duration_s <= now:
        return error_response(422, "the silence would have ended already", "body.starts_at")
    s = state.silences.add(
        owner=body.owner or who.name, reason=body.reason, starts_at=start, ends_at=start + body.duration_s,
        device_id=body.device_id, location=body.location, rule_id=body.rule_id, created_at=now, kind=body.kind,
    )  # fmt: skip
    state.audit("silence.create", f"silence:{s.id}", s.as_dict(), who.name)
    state.silences_changed()
    state.views.changed()
    return s.as_dict()


@router.delete("/{silence_id}", response_model=SilenceOut, responses=NOT_FOUND)
async def cancel_silence(
    state: StateDep,
    who: Annotated[Principal, need("silences:write")],
    silence_id: str = Path(max_length=64),
) -> Any:
    """End it now; kept with its cancellation time. Alerts it held that are still open
    notify at once."""
    if not state.silences.cancel(silence_id, state.clock()):
        raise HTTPException(404, f"no silence {show(silence_id)!r} in force")
    s = state.silences.get(silence_id)
    assert s is not None
    state.audit("silence.cancel", f"silence:{s.id}", s.as_dict(), who.name)
    state.silences_changed()
    state.views.changed()
    return s.as_dict()

