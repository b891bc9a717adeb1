"""Inventory: items, locations, stock levels and one supply room's status, the pick list, the
ledger's transactions (written with an idempotency key), CSV export and import
(docs/api.md, "Inventory"; docs/inventory.md).

Threads: the reads are plain ``def`` routes (worker threads: they query the state database),
but for a room's status, which is kept encoded between stock changes (``state.stock_views``, on
the loop) and built in a worker thread when it is not there. The writes are ``async def``
routes that do their database work in a worker thread (``run_in_threadpool``) and then, on the
loop, await ``state.stock_changed`` with the bins they changed, so the stock alerts of those bins
are re-evaluated (and the rooms' kept status dropped) before the response goes out.

Every stock change is written by ``inventory.ledger.Ledger`` with the logged-in user as its
``who`` and the note as its ``why``, and audited (``inventory.<kind>``, subject
``bin:<sku>@<location id>``)."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from eqmon.config import INVENTORY_CSV_KINDS, column_letter
from inventory import picklist, queries
from inventory.catalog import LocationKind
from inventory.csvio import CsvImportError, ImportResult, export_csv, import_csv
from inventory.errors import IdempotencyConflict, InsufficientStock, InventoryError
from inventory.ledger import MAX_KEY, Applied, Entry, Kind, Ledger
from inventory.status import BinStatus, Level, bin_statuses

from ..auth import Principal, need
from ..deps import StateDep
from ..errors import BODY_ERRORS, ERROR_RESPONSES, MESSAGE_MAX, NOT_FOUND, error_response, show
from ..models import ErrorBody, ErrorResponse
from ..pagination import Cursor, CursorError, Limit, Page, decode_cursor, encode_cursor
from .alerts import _valid_text

PREFIX = "/api/v1/inventory"
router = APIRouter(prefix=PREFIX, tags=["inventory"], responses=ERROR_RESPONSES)

MAX_ID = 2**31 - 1  # ids of items, locations and bins (32-bit columns)
MAX_LEDGER_ID = 2**63 - 1
MAX_QUANTITY = 1_000_000  # units in one transaction, and the largest count
MAX_TS = 253402300799.0  # 9999-12-31T23:59:59Z
MAX_IMPORT_BYTES = 5 * 1024 * 1024  # a CSV import's body (~50,000 rows); other bodies: errors.MAX_BODY_BYTES
# The paths that take a body larger than the app's limit (dashboard_api/app.py: errors.install).
LARGER_BODIES = {f"{PREFIX}/import/{k}": MAX_IMPORT_BYTES for k in INVENTORY_CSV_KINDS}
MAX_ISSUES = 200  # CSV problems listed in one error response (all are counted)
MAX_NAMES = 200  # names of added/changed entries listed in an import's answer

READ = need("inventory:read")
WRITE = need("inventory:write")

CsvKind = Literal["items", "locations", "bins"]
LevelFilter = Literal["out", "below_min", "below_reorder", "in_stock", "above_par", "below_reorder_point"]
ApiKind = Literal["receipt", "issue", "transfer", "count", "adjustment"]
BELOW_REORDER_POINT = ("out", "below_min", "below_reorder")
LEVEL_TEXT: dict[str, str] = {
    "out": "out of stock",
    "below_min": "below minimum",
    "below_reorder": "below reorder point",
    "in_stock": "in stock",
    "above_par": "above par",
}
NOT_COUNTED = "not counted yet: stock unknown"

Text = Annotated[str, StringConstraints(max_length=100), AfterValidator(_valid_text)]
Sku = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_valid_text)]
Id = Annotated[int, Field(ge=1, le=MAX_ID, strict=True)]
Note = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=500),
    AfterValidator(_valid_text),
    Field(description="why (at most 500 characters; not for patient identifiers)"),
]


def _id_query(description: str) -> Any:
    return Query(None, ge=1, le=MAX_ID, description=description)


# -- response models --------------------------------------------------------------------------


class ItemOut(BaseModel):
    id: int
    sku: str
    name: str
    category: str
    unit: str = Field(description="what one unit is: each, pair, ream …")
    pack_size: int = Field(description="units per pack (what is brought)")
    unit_weight_g: float | None = Field(description="one unit's weight for smart shelves; null: not weighed")
    critical: bool


class LocationOut(BaseModel):
    id: int
    parent_id: int | None = Field(description="null: a root (a building)")
    kind: LocationKind
    name: str
    path: str = Field(description="from the root, names joined by `/`, as the site file and CSV files name it")


class BinLevelOut(BaseModel):
    """One bin (an item at a location with its par levels) and its stock now."""

    bin_id: int
    subject: str = Field(description="the bin's id in alerts: `bin:<sku>@<location id>`")
    item_id: int
    sku: str
    name: str
    unit: str
    pack_size: int
    critical: bool
    location_id: int
    location: str = Field(description="the location's own name")
    room_id: int | None = Field(description="the supply room it is in (itself if a room); null: in none")
    room: str
    path: str = Field(description="the room and the finer locations down to the bin: `Ward 4B supply room / Shelf A`")
    on_hand: int = Field(description="units on hand (0 when never counted: see `counted`)")
    counted: bool = Field(description="false: no stock was ever recorded here, the level is unknown")
    min_qty: int
    reorder_point: int
    par: int = Field(description="the maximum, what a restock fills up to")
    reorder_qty: int
    lead_time_s: float
    level: Level
    status_text: str = Field(description="the level in words, e.g. `below reorder point`")
    below_reorder_point: bool
    packs_to_par: int = Field(description="whole packs that bring it to par (the pick list's)")
    use_per_day: float = Field(description="recent use, units per day (weighted, half-life one day); 0: none seen")
    days_of_supply: float | None = Field(description="on hand ÷ use per day; null: no use seen")
    stockout_at: float | None = Field(description="predicted out of stock, Unix seconds; null: no use seen")
    source: Literal["shelf", "count"] = Field(description="shelf: weighed by a smart shelf; count: counted by people")
    shelf_device_id: str | None
    updated_at: float | None = Field(description="the on-hand's last change, Unix seconds; null: never counted")


class PlaceOut(BaseModel):
    id: int
    name: str
    path: str


class RoomStatusOut(BaseModel):
    """One supply room: its bins (its shelves' and bins' included) against par."""

    room: PlaceOut
    generated_at: float
    bins: int = Field(description="bins in the room (all pages)")
    below_reorder_point: int = Field(description="bins below their reorder point (all pages)")
    levels: dict[Level, int] = Field(description="bins per level (all pages)")
    items: list[BinLevelOut] = Field(description="by path, then item name")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class PickLineOut(BaseModel):
    urgency: picklist.Urgency
    room: str
    path: str
    location_id: int
    sku: str
    name: str
    unit: str
    pack_size: int
    critical: bool
    on_hand: int
    min_qty: int
    reorder_point: int
    par: int
    packs: int = Field(description="packs to bring")
    quantity: int = Field(description="units: packs × pack_size")
    use_per_day: float
    days_of_supply: float | None
    stockout_at: float | None


class PickListOut(BaseModel):
    generated_at: float
    lines: list[PickLineOut] = Field(description="most urgent first (inventory/picklist.py)")


class LedgerEntryOut(BaseModel):
    """One ledger row: a change of one item's stock at one location (a transfer writes two)."""

    id: int
    ts: float
    kind: Kind = Field(description="receipt, issue, transfer, count, adjustment; shelf: a smart shelf's reading")
    item_id: int
    sku: str
    item: str
    location_id: int
    location: str
    delta: int = Field(description="the signed change of on-hand")
    balance: int = Field(description="on hand after it")
    counted: int | None = Field(description="what a count or a shelf found; null for other kinds")
    who: str = Field(description="the user (or shelf device) who made it")
    note: str
    idempotency_key: str
    leg: int = Field(description="0; a transfer's row into its destination: 1")


class TransactionIn(BaseModel):
    """One stock change. Per kind:

    * **receipt** — `quantity` (≥ 1) arrived at `location_id`
    * **issue** — `quantity` (≥ 1) taken from `location_id` for use; refused (422) if fewer are on hand
    * **transfer** — `quantity` (≥ 1) moved from `location_id` to `to_location_id`
    * **count** — people counted `location_id`: on hand becomes `quantity` (≥ 0)
    * **adjustment** — a correction by the signed `quantity` (≠ 0: damaged, expired, found); `note` required

    The note is for stock reasons only: never patient identifiers. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    kind: ApiKind
    sku: Sku
    location_id: Id = Field(description="where (a transfer: from where)")
    to_location_id: Id | None = Field(default=None, description="a transfer's destination; only for a transfer")
    quantity: int = Field(ge=-MAX_QUANTITY, le=MAX_QUANTITY, strict=True, description="units (see the kinds)")
    note: Note = ""


class TransactionOut(BaseModel):
    idempotency_key: str
    kind: ApiKind
    sku: str
    entries: list[LedgerEntryOut] = Field(description="the ledger rows written (a transfer: out, then in)")


class ImportOut(BaseModel):
    kind: CsvKind
    rows: int
    added: int
    changed: int
    unchanged: int
    added_names: list[str] = Field(description=f"what was added (at most {MAX_NAMES})")
    changed_names: list[str] = Field(description=f"what was changed (at most {MAX_NAMES})")
    warnings: list[str]
    applied: bool = Field(description="false: a dry run, nothing applied")


class CsvIssueOut(BaseModel):
    line: int = Field(description="the CSV file's line (1: the header)")
    column: str | None = Field(description="the column's header name; null: the whole row or file")
    column_letter: str | None = Field(description="the column as a spreadsheet shows it (A, B …)")
    message: str


class CsvErrorBody(ErrorBody):
    """The error body, with a CSV file's problems (none: another error, e.g. of a parameter)."""

    issues: list[CsvIssueOut] = Field(default_factory=list, description=f"the file's problems, by line (at most {MAX_ISSUES})")
    issue_count: int = Field(default=0, description="how many problems the file has (all of them)")


class CsvErrorResponse(BaseModel):
    error: CsvErrorBody


CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "The idempotency key was used for another request"}
}
CSV_200: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}


# -- helpers ----------------------------------------------------------------------------------


def _after(cursor: str | None, *types: type) -> list[Any] | None:
    """The key of a cursor of this route (its values of ``types``); CursorError otherwise."""
    key = decode_cursor(cursor)
    if key is None:
        return None
    if len(key) != len(types):
        raise CursorError()
    for v, t in zip(key, types, strict=True):
        if not isinstance(v, t) or isinstance(v, bool):
            raise CursorError()
        if isinstance(v, int) and not 0 <= v <= MAX_LEDGER_ID:
            raise CursorError()
        if isinstance(v, str) and len(v) > 200:
            raise CursorError()
    return key


def _page(rows: Sequence[Any], limit: int, key: Callable[[Any], list[Any]], out: Callable[[Any], Any]) -> dict[str, Any]:
    """A page from up to ``limit + 1`` rows of a keyset query."""
    more = len(rows) > limit
    shown = rows[:limit]
    return {"items": [out(r) for r in shown], "next_cursor": encode_cursor(key(shown[-1])) if more and shown else None}


def _bin_out(s: BinStatus) -> dict[str, Any]:
    counted = s.updated_at is not None
    return {
        "bin_id": s.bin_id, "subject": s.subject, "item_id": s.item_id, "sku": s.sku, "name": s.name,
        "unit": s.unit, "pack_size": s.pack_size, "critical": s.critical, "location_id": s.location_id,
        "location": s.location, "room_id": s.room_id, "room": s.room, "path": s.path, "on_hand": s.on_hand,
        "counted": counted, "min_qty": s.min_qty, "reorder_point": s.reorder_point, "par": s.par,
        "reorder_qty": s.reorder_qty, "lead_time_s": s.lead_time_s, "level": s.level,
        "status_text": LEVEL_TEXT[s.level] if counted else NOT_COUNTED,
        "below_reorder_point": s.below_reorder_point, "packs_to_par": picklist.packs_to_par(s),
        "use_per_day": s.use_per_day, "days_of_supply": s.days_of_supply, "stockout_at": s.stockout_at,
        "source": "count" if s.shelf_device_id is None else "shelf", "shelf_device_id": s.shelf_device_id,
        "updated_at": s.updated_at,
    }  # fmt: skip


def _entry_out(e: Entry, sku: str, item: str, location: str) -> dict[str, Any]:
    return {
        "id": e.id, "ts": e.ts, "kind": e.kind, "item_id": e.item_id, "sku": sku, "item": item,
        "location_id": e.location_id, "location": location, "delta": e.delta, "balance": e.balance,
        "counted": e.counted, "who": e.who, "note": e.why, "idempotency_key": e.idempotency_key, "leg": e.leg,
    }  # fmt: skip


def _bad_location(location_id: int, field: str) -> HTTPException:
    exc = HTTPException(422, f"no location {location_id}")
    exc.field = field  # type: ignore[attr-defined]  # the error body's field (errors.py)
    return exc


# -- reads ------------------------------------------------------------------------------------


@router.get("/items", response_model=Page[ItemOut])
def list_items(
    state: StateDep,
    who: Annotated[Principal, READ],
    limit: Limit = 100,
    cursor: Cursor = None,
    q: Annotated[Text | None, Query(description="a part of the SKU or the name, any case")] = None,
    category: Annotated[Text | None, Query(description="exactly this category")] = None,
) -> dict[str, Any]:
    """The catalog's items, by SKU."""
    after = _after(cursor, str)
    rows = queries.items_page(state.db, limit=limit, after=None if after is None else after[0], q=q, category=category)
    return _page(rows, limit, lambda i: [i.sku], lambda i: {k: getattr(i, k) for k in ItemOut.model_fields})


@router.get("/locations", response_model=Page[LocationOut])
def list_locations(
    state: StateDep,
    who: Annotated[Principal, READ],
    limit: Limit = 100,
    cursor: Cursor = None,
    kind: LocationKind | None = None,
    parent: int | None = _id_query("the children of this location only"),
    roots: bool = Query(False, description="the locations at the top (buildings) only"),
) -> dict[str, Any]:
    """The location tree (building > floor > room > shelf > bin), by id."""
    after = _after(cursor, int)
    rows = queries.locations_page(state.db, limit=limit, after=None if after is None else after[0], kind=kind,
                                  parent_id=parent, roots=roots)  # fmt: skip
    return _page(rows, limit, lambda r: [r.location.id], lambda r: {
        "id": r.location.id, "parent_id": r.location.parent_id, "kind": r.location.kind, "name": r.location.name,
        "path": r.path,
    })  # fmt: skip


@router.get("/levels", response_model=Page[BinLevelOut])
def list_levels(
    state: StateDep,
    who: Annotated[Principal, READ],
    limit: Limit = 100,
    cursor: Cursor = None,
    location: int | None = _id_query("the bins at or under this location (a room: its shelves' and bins' too)"),
    status: Annotated[
        list[LevelFilter] | None,
        Query(description="only these levels; `below_reorder_point`: out, below_min and below_reorder"),
    ] = None,
    sku: Annotated[Sku | None, Query(description="one item's bins")] = None,
) -> dict[str, Any]:
    """Every bin with its stock now: level, days of supply, where the count comes from; by bin id."""
    after = _after(cursor, int)
    levels = {x for f in status or () for x in (BELOW_REORDER_POINT if f == "below_reorder_point" else (f,))}
    try:
        rows = queries.levels_page(state.db, now=state.clock(), limit=limit, after=None if after is None else after[0],
                                   location_id=location, levels=levels, sku=sku)  # fmt: skip
    except InventoryError:
        raise _bad_location(location or 0, "query.location") from None
    return _page(rows, limit, lambda s: [s.bin_id], _bin_out)


@router.get("/rooms/{location_id}/status", response_model=RoomStatusOut, responses=NOT_FOUND)
async def room_status(
    state: StateDep,
    who: Annotated[Principal, READ],
    location_id: Annotated[int, Path(ge=1, le=MAX_ID, description="the room's location id")],
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many bins per page")] = 1000,
    cursor: Cursor = None,
) -> Response:
    """One supply room: each of its bins (its shelves' and bins' included) against par, with days
    of supply, by path then item name; and how many bins are at each level. An answer is kept
    for up to 5 s (`generated_at` says when it was made) and dropped at once by every stock
    change made through the API, every smart shelf's new count and every stock event; a change
    made by another process (`eqmon inventory`) shows within those 5 s."""
    views = state.stock_views  # on the loop (viewcache.py); the page is built in a worker thread
    key = ("room", location_id, limit, cursor or "")
    body = views.get(key)
    if body is None:
        # one build per page at a time: the requests for a page being built wait for it (without
        # it, each would build its own in a thread of its own, all holding the GIL at once)
        building = state.stock_building.get(key)
        if building is not None:
            return Response(await asyncio.shield(building), media_type="application/json")
        building = asyncio.get_running_loop().create_future()
        state.stock_building[key] = building
        try:
            generation = views.generation
            body = await run_in_threadpool(_room_status, state, location_id, limit, cursor)
            views.put(key, body, generation)  # not kept if stock changed meanwhile
            building.set_result(body)
        except BaseException as exc:
            building.set_exception(exc)
            building.exception()  # retrieved: nobody may be waiting
            raise
        finally:
            del state.stock_building[key]
    return Response(body, media_type="application/json")


def _room_status(state: Any, location_id: int, limit: int, cursor: str | None) -> bytes:
    """A room's status page, checked against its model and encoded (two queries)."""
    now = state.clock()
    try:
        place, statuses = queries.room_status(state.db, now=now, room_id=location_id)
    except queries.NotARoom as exc:
        raise HTTPException(404, str(exc)) from None
    except InventoryError:
        raise HTTPException(404, f"no location {location_id}") from None
    levels: dict[str, int] = {}
    for s in statuses:
        levels[s.level] = levels.get(s.level, 0) + 1
    # a keyset page of the sorted list: the bins after the cursor's (path, name, sku, location)
    after = _after(cursor, str, str, str, int)
    keys = [[s.path, s.name, s.sku, s.location_id] for s in statuses]
    start = 0 if after is None else bisect.bisect_right(keys, after)
    page = _page(statuses[start : start + limit + 1], limit, lambda s: [s.path, s.name, s.sku, s.location_id], _bin_out)
    out = RoomStatusOut.model_validate({
        "room": {"id": place.id, "name": place.name, "path": place.path},
        "generated_at": now,
        "bins": len(statuses),
        "below_reorder_point": sum(1 for s in statuses if s.below_reorder_point),
        "levels": levels,
        "items": page["items"],
        "next_cursor": page["next_cursor"],
    })  # fmt: skip
    return out.model_dump_json().encode()


@router.get("/pick-list", response_model=PickListOut, responses=CSV_200)
def pick_list(
    state: StateDep,
    who: Annotated[Principal, READ],
    location: int | None = _id_query("only the bins at or under this location (a room)"),
    top_up: bool = Query(False, description="every bin below par, not only those below their reorder point"),
    format: Literal["json", "csv"] = "json",
) -> Any:
    """What to bring where, in whole packs, most urgent first (inventory/picklist.py): one
    document, not paginated (it is walked as a whole; its order is by urgency at
    `generated_at`)."""
    now = state.clock()
    try:
        statuses = bin_statuses(state.db, now=now, location_id=location)
    except InventoryError:
        raise _bad_location(location or 0, "query.location") from None
    lines = picklist.pick_list(statuses, now=now, top_up=top_up)
    if format == "csv":
        return PlainTextResponse(picklist.render_csv(lines), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": 'attachment; filename="pick-list.csv"'})  # fmt: skip
    return {"generated_at": now, "lines": [{k: getattr(p, k) for k in picklist.CSV_COLUMNS} for p in lines]}


@router.get("/transactions", response_model=Page[LedgerEntryOut])
def list_transactions(
    state: StateDep,
    who: Annotated[Principal, READ],
    limit: Limit = 100,
    cursor: Cursor = None,
    sku: Annotated[Sku | None, Query(description="one item's")] = None,
    location: int | None = _id_query("at or under this location"),
    kind: Annotated[list[Kind] | None, Query(description="only these kinds")] = None,
    since: float | None = Query(None, ge=0, le=MAX_TS, allow_inf_nan=False, description="at or after, Unix seconds"),
) -> dict[str, Any]:
    """The stock ledger, newest first: one row per item and location changed."""
    after = _after(cursor, int)
    if location is not None:
        if not queries.location_names(state.db, [location]):
            raise _bad_location(location, "query.location")
    rows = queries.ledger_page(state.db, limit=limit, before=None if after is None else after[0], sku=sku,
                               location_id=location, kinds=kind or (), since=since)  # fmt: skip
    return _page(rows, limit, lambda r: [r.entry.id], lambda r: _entry_out(r.entry, r.sku, r.item, r.location))


@router.get("/export/{kind}", response_model=None, responses=CSV_200)
def export(state: StateDep, who: Annotated[Principal, READ], kind: CsvKind) -> PlainTextResponse:
    """The catalog's items, locations or bins as CSV, in the format `POST /import/{kind}` (and
    `eqmon inventory import`) reads: importing it back changes nothing."""
    return PlainTextResponse(export_csv(state.db, kind), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{kind}.csv"'})  # fmt: skip


# -- writes -----------------------------------------------------------------------------------

KeyHeader = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY,
        pattern=r"^[\x21-\x7e]+$",
        description="a key of your own for this change (1–200 visible ASCII characters, e.g. a UUID): "
        "sending it again (a retry) answers the first result and changes nothing",
    ),
]


@router.post("/transactions", response_model=TransactionOut, responses={**CONFLICT, **BODY_ERRORS})
async def post_transaction(
    body: TransactionIn,
    state: StateDep,
    who: Annotated[Principal, WRITE],
    idempotency_key: KeyHeader,
    response: Response,
) -> Any:
    """A receipt, issue, transfer, count or adjustment, applied once per `Idempotency-Key`: the
    same key with the same body answers the first result again (200, header
    `Idempotent-Replayed: true`, nothing changed); the same key with another body is a 409. An
    issue or transfer of more than is on hand is refused (422, code `insufficient_stock`), as is
    an adjustment below zero; nothing is written then, and the key may be used again."""
    done = await run_in_threadpool(_apply, state, body, idempotency_key, who)
    if isinstance(done, Response):
        return done
    out, replayed, bins = done
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        await state.stock_changed(bins)
    return out


def _apply(state: Any, body: TransactionIn, key: str, who: Principal) -> Response | tuple[dict[str, Any], bool, list[tuple[int, int]]]:
    """In a worker thread: check, write, audit. An error response, or (the answer, replayed,
    the bins changed)."""
    q, kind = body.quantity, body.kind
    if kind in ("receipt", "issue", "transfer") and q < 1:
        return error_response(422, f"body.quantity: a {kind} moves at least 1 unit", "body.quantity")
    if kind == "count" and q < 0:
        return error_response(422, "body.quantity: a count is 0 or more", "body.quantity")
    if kind == "adjustment":
        if q == 0:
            return error_response(422, "body.quantity: an adjustment changes the stock by a signed amount, not 0", "body.quantity")
        if not body.note:
            return error_response(422, "body.note: an adjustment needs a reason", "body.note")
    if kind == "transfer":
        if body.to_location_id is None:
            return error_response(422, "body.to_location_id: a transfer needs a destination", "body.to_location_id")
        if body.to_location_id == body.location_id:
            return error_response(422, "body.to_location_id: a transfer goes to another location", "body.to_location_id")
    elif body.to_location_id is not None:
        return error_response(422, "body.to_location_id: only a transfer has a destination", "body.to_location_id")
    places = [body.location_id] + ([body.to_location_id] if body.to_location_id is not None else [])
    item, names = queries.lookup(state.db, body.sku, places)
    if item is None:
        return error_response(422, f"body.sku: no item with SKU {show(body.sku)!r}", "body.sku")
    for loc, field in zip(places, ("body.location_id", "body.to_location_id"), strict=False):
        if loc not in names:
            return error_response(422, f"{field}: no location {loc}", field)
    ledger = Ledger(state.db, clock=state.clock)
    user, note = who.name, body.note
    try:
        applied: Applied
        if kind == "receipt":
            applied = ledger.receive(item.id, body.location_id, q, who=user, key=key, why=note)
        elif kind == "issue":
            applied = ledger.issue(item.id, body.location_id, q, who=user, key=key, why=note)
        elif kind == "transfer":
            assert body.to_location_id is not None
            applied = ledger.transfer(item.id, body.location_id, body.to_location_id, q, who=user, key=key, why=note)
        elif kind == "count":
            applied = ledger.count(item.id, body.location_id, q, who=user, key=key, why=note)
        else:
            applied = ledger.adjust(item.id, body.location_id, q, who=user, key=key, why=note)
    except IdempotencyConflict as exc:
        return error_response(409, str(exc), "header.Idempotency-Key")
    except InsufficientStock as exc:
        return error_response(422, str(exc), "body.quantity", code="insufficient_stock")
    except InventoryError as exc:
        return error_response(422, str(exc), "body.quantity")
    first = applied.entry
    if applied.replayed and first.why != body.note:
        return error_response(409, f"idempotency key {show(key)!r} was already used for this {kind} with another note",
                              "header.Idempotency-Key")  # fmt: skip
    out = {
        "idempotency_key": key,
        "kind": kind,
        "sku": item.sku,
        "entries": [_entry_out(e, item.sku, item.name, names.get(e.location_id, "")) for e in applied.entries],
    }
    bins = [(item.id, e.location_id) for e in applied.entries]
    if not applied.replayed:
        detail: dict[str, Any] = {"key": key, "quantity": q, "note": body.note, "ledger_ids": [e.id for e in applied.entries],
                                  "balance": first.balance}  # fmt: skip
        if body.to_location_id is not None:
            detail["to_location_id"] = body.to_location_id
        state.audit(f"inventory.{kind}", f"bin:{item.sku}@{body.location_id}", detail, who.name)
    return out, applied.replayed, bins


IMPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": f"a CSV file (UTF-8) of the kind, at most {MAX_IMPORT_BYTES} bytes",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}
IMPORT_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": f"The body is larger than {MAX_IMPORT_BYTES} bytes"},
    422: {"model": CsvErrorResponse, "description": "The file has problems (each with its line and column): nothing was applied"},
}


@router.post("/import/{kind}", response_model=ImportOut, responses=IMPORT_ERRORS, openapi_extra=IMPORT_BODY)
async def import_file(
    kind: CsvKind,
    request: Request,
    state: StateDep,
    who: Annotated[Principal, WRITE],
    dry_run: bool = Query(False, description="check against the database and apply nothing"),
) -> Any:
    """Items, locations or bins from a CSV file (the format of `GET /export/{kind}`; docs/inventory.md):
    all or nothing. Every problem is answered with its line and column and nothing is applied;
    a clean file is applied in one transaction: new entries created, existing ones changed, a
    column the file leaves out keeps its value, nothing deleted."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return error_response(422, f"the body is not UTF-8 text (byte {exc.start})", "body")
    done = await run_in_threadpool(_import, state, kind, text, dry_run, who)
    if isinstance(done, Response):
        return done
    if done.applied and done.changes.changed_anything:
        await state.stock_changed(None)  # par levels, pack sizes, criticality, rooms: any bin
    return _import_out(kind, done)


def _import(state: Any, kind: CsvKind, text: str, dry_run: bool, who: Principal) -> Response | ImportResult:
    try:
        result = import_csv(state.db, kind, text, file=f"{kind}.csv", site=state.site, dry_run=dry_run)
    except CsvImportError as exc:
        n = len(exc.issues)
        issues = [
            {"line": i.line, "column": None if i.column is None else show(i.column),
             "column_letter": None if i.position is None else column_letter(i.position), "message": show(i.message, MESSAGE_MAX)}
            for i in exc.issues[:MAX_ISSUES]
        ]  # fmt: skip
        first = exc.issues[0]
        where = f"line {first.line}" + ("" if first.column is None else f", column {show(first.column)}")
        body = {"error": {"code": "validation_error", "field": "body", "issues": issues, "issue_count": n,
                          "message": show(f"{n} problem{'' if n == 1 else 's'}, nothing applied; first: {where}: {first.message}", MESSAGE_MAX)}}  # fmt: skip
        return Response(CsvErrorResponse.model_validate(body).model_dump_json(), status_code=422, media_type="application/json")
    except (InventoryError, ValueError) as exc:
        return error_response(422, show(str(exc), MESSAGE_MAX), "body")
    if result.applied and result.changes.changed_anything:  # an import that changed nothing is not audited
        c = result.changes
        added, changed = getattr(c, f"{kind}_added"), getattr(c, f"{kind}_changed")
        state.audit("inventory.import", f"csv:{kind}", {"rows": result.rows, "added": len(added), "changed": len(changed),
                                                       "dry_run": False}, who.name)  # fmt: skip
    return result


def _import_out(kind: CsvKind, r: ImportResult) -> dict[str, Any]:
    added, changed = getattr(r.changes, f"{kind}_added"), getattr(r.changes, f"{kind}_changed")
    return {
        "kind": kind, "rows": r.rows, "added": len(added), "changed": len(changed),
        "unchanged": max(0, r.rows - len(added) - len(changed)), "added_names": added[:MAX_NAMES],
        "changed_names": changed[:MAX_NAMES], "warnings": r.warnings, "applied": r.applied,
    }  # fmt: skip
