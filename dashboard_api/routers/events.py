"""Live updates: ``GET /api/v1/events``, a Server-Sent Events stream of alert, device and stock
changes with ``Last-Event-ID`` resume (dashboard_api/events.py; docs/api.md, "Live updates").

Hand-rolled on Starlette's ``StreamingResponse`` rather than sse-starlette: the frames are
encoded once per event by the hub and shared by every client; the stream ends when the service
stops (the hub closes) without relying on uvicorn's signal handlers, which the service does not
install (sse-starlette watches those, or a process-wide flag); and the replay, ``reset`` and
keep-alive logic is the hub's anyway. A client that leaves is noticed at once: Starlette listens
for the disconnect and cancels the stream (uvicorn speaks ASGI 2.3).

``async def``: the stream reads the hub on the service's event loop, which alone writes it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator

from ..auth import Principal, bearer, need
from ..deps import StateDep
from ..errors import ERROR_RESPONSES
from ..events import EVENT_TYPES, MAX_CLIENTS
from ..models import AlertOut, DeviceEventOut, ErrorResponse, StockEventOut

router = APIRouter(prefix="/api/v1", tags=["live updates"], responses=ERROR_RESPONSES)

# The scope each event type needs besides alerts:read (every role has them all today; a
# principal without one does not get that type).
TYPE_SCOPES = {"alert": "alerts:read", "device": "devices:read", "stock": "inventory:read"}
MAX_EVENT_ID = 2**53 - 1  # ids stay exact in JavaScript numbers


def _types(v: str | None) -> str | None:
    if v is None:
        return None
    names = [t.strip() for t in v.split(",") if t.strip()]
    unknown = [t for t in names if t not in EVENT_TYPES]
    if unknown or not names:
        raise ValueError(f"must be a comma-separated list of {', '.join(EVENT_TYPES)}")
    return ",".join(names)


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` put in place (an event's data schema sits inside
    the OpenAPI document, where ``#/$defs/…`` would not resolve)."""
    defs = schema.pop("$defs", {})

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            if "$ref" in x:
                name = x["$ref"].rsplit("/", 1)[-1]
                return {**walk(defs[name]), **{k: walk(v) for k, v in x.items() if k != "$ref"}}
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    out: dict[str, Any] = walk(schema)
    return out


_CONTROL_DATA = {
    "type": "object",
    "required": ["last_event_id"],
    "properties": {
        "last_event_id": {"type": "integer", "description": "the stream goes on with the events after this id"},
        "reason": {"type": "string", "description": "reset: why the client must reload its lists"},
    },
}


def _event_schema(name: str, data: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["event", "id", "data"],
        "properties": {
            "event": {"const": name},
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
            "retry": {"type": "integer", "minimum": 0},
        },
    }


# One event of the stream (OpenAPI 3.2's ``itemSchema`` for text/event-stream): its fields as
# strings, ``data`` JSON of the schema its type names.
EVENT_ITEM_SCHEMA = {"oneOf": [
    _event_schema("ready", _CONTROL_DATA, "first of a stream that resumes or starts from now"),
    _event_schema("reset", _CONTROL_DATA, "the events after the given id are no longer kept, or "
                  "the stream fell too far behind: reload the lists, then follow the stream"),
    _event_schema("alert", _inline(AlertOut.model_json_schema()), "an alert raised, changed, "
                  "acknowledged, silenced or resolved"),
    _event_schema("device", _inline(DeviceEventOut.model_json_schema()), "a device's status changed"),
    _event_schema("stock", _inline(StockEventOut.model_json_schema()), "a bin's stock level or count changed"),
]}  # fmt: skip

STREAM_DOC = (
    "A `text/event-stream`: each event is `id: N`, `event: TYPE`, `data: JSON`. Types: `alert` "
    "(an AlertOut), `device` (DeviceEventOut), `stock` (StockEventOut); every stream opens with "
    "`ready` (`{\"last_event_id\": N}`) or, when the events after the given id are no longer "
    "kept, `reset` (reload your lists, then follow the stream). A `: keepalive` comment comes "
    "every 15 s when nothing else was sent."
)


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"itemSchema": EVENT_ITEM_SCHEMA}}, "description": STREAM_DOC},
        503: {"model": ErrorResponse, "description": f"{MAX_CLIENTS} streams are open already"},
    },
)
async def events(
    state: StateDep,
    who: Annotated[Principal, need("alerts:read")],
    token: Annotated[str | None, Depends(bearer)],
    types: Annotated[
        str | None,
        Query(max_length=100, description="only these types, comma-separated: alert,device,stock (default: all)"),
        AfterValidator(_types),
    ] = None,
    last_event_id: Annotated[
        int | None,
        Query(ge=0, le=MAX_EVENT_ID, description="resume after this id (for clients that cannot "
              "set the Last-Event-ID header; the header wins)"),
    ] = None,
    last_event_id_header: Annotated[
        int | None,
        Header(alias="Last-Event-ID", ge=0, le=MAX_EVENT_ID,
               description="resume after this id: the events after it are sent first, then live ones"),
    ] = None,
) -> StreamingResponse:
    """Live updates of alerts, device status and stock status (Server-Sent Events), resumable
    with `Last-Event-ID`. Connect first, then load the lists, and apply each event as an upsert
    by id."""
    hub = state.events
    if hub.closed:
        raise HTTPException(503, "the service is stopping")
    if hub.clients >= MAX_CLIENTS:
        raise HTTPException(503, f"too many live streams open ({MAX_CLIENTS}); try again later")
    wanted = [t for t in (types.split(",") if types else EVENT_TYPES) if TYPE_SCOPES[t] in who.scopes]
    after = last_event_id_header if last_event_id_header is not None else last_event_id

    def still_allowed() -> bool:
        """The token is still valid (not revoked or expired) and its user not disabled."""
        auth: Any = state.auth
        if auth is None or token is None:
            return False
        try:
            return auth.authenticate(token) is not None
        except Exception:  # the user database is away: keep the stream until it can tell
            return True

    return StreamingResponse(
        hub.stream(after, wanted, still_allowed=still_allowed),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
