"""Stock status per bin (an item's par settings at a location): its level, its consumption rate,
days of supply and predicted stock-out (docs/inventory.md, "Status and forecast").

Levels (DOMAIN.md), from the on-hand ``q`` and the bin's settings:

* ``out``           — ``q == 0`` (a bin with par 0 is not stocked: never out)
* ``below_min``     — ``q < min_qty``
* ``below_reorder`` — ``q < reorder_point``
* ``in_stock``      — ``reorder_point <= q <= par``
* ``above_par``     — ``q > par``

The use per day is the bin's exponentially weighted recent use (inventory/usage.py: issues and
shelf readings that went down, half-life one day), kept on its on-hand row by the ledger, so one
query over the bins, items, on-hand and the location tree gives the status: no ledger rows are
read. Days of supply = on-hand ÷ use per day; the predicted stock-out is ``now`` + that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Integer,
    Select,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    null,
    select,
)

from eqmon.db.schema import inventory_bins, inventory_items, inventory_locations, inventory_on_hand

from .errors import InventoryError
from .usage import rate_per_day

Level = Literal["out", "below_min", "below_reorder", "in_stock", "above_par"]
LEVELS: tuple[Level, ...] = get_args(Level)
PATH_SEP = " / "


@dataclass(frozen=True, slots=True)
class BinStatus:
    """One bin's stock at ``now``. ``room`` is the supply room it is in (its nearest location of
    kind room, itself included; without one: ``room_id`` None and ``room`` its root); ``path`` the room and the finer
    locations down to the bin ("Ward 4B supply room / shelf A"; the room's name alone for a bin
    at the room itself). ``use_per_day`` is 0.0 when no use was seen; ``days_of_supply`` and
    ``stockout_at`` are then None. An ``out`` bin has 0 days and ``stockout_at == now``."""

    item_id: int
    sku: str
    name: str
    unit: str
    pack_size: int
    critical: bool
    location_id: int
    location: str
    room_id: int | None
    room: str
    path: str
    on_hand: int
    min_qty: int
    reorder_point: int
    par: int
    reorder_qty: int
    lead_time_s: float
    level: Level
    use_per_day: float
    days_of_supply: float | None
    stockout_at: float | None
    # where the on-hand comes from and when it last changed (None: never counted, stock
    # unknown); the bin's own id and the smart shelf weighing it (None: counted by people)
    updated_at: float | None = None
    bin_id: int = 0
    shelf_device_id: str | None = None

    @property
    def subject(self) -> str:
        """A stable id of the bin for alerts: ``bin:<sku>@<location id>``."""
        return f"bin:{self.sku}@{self.location_id}"

    @property
    def below_reorder_point(self) -> bool:
        return self.level in ("out", "below_min", "below_reorder")


def level_of(on_hand: int, min_qty: int, reorder_point: int, par: int) -> Level:
    if on_hand <= 0 and par > 0:
        return "out"
    if on_hand < min_qty:
        return "below_min"
    if on_hand < reorder_point:
        return "below_reorder"
    if on_hand > par:
        return "above_par"
    return "in_stock"


def level_sql() -> ColumnElement[str]:
    """``level_of`` as an SQL expression over a bin and its on-hand row (no row: 0), for
    filtering by level in the database (the API's paginated lists)."""
    b, oh = inventory_bins.c, inventory_on_hand.c
    q = func.coalesce(oh.quantity, 0)
    return case(
        (and_(q <= 0, b.par > 0), literal("out")),
        (q < b.min_qty, literal("below_min")),
        (q < b.reorder_point, literal("below_reorder")),
        (q > b.par, literal("above_par")),
        else_=literal("in_stock"),
    )


@dataclass(frozen=True, slots=True)
class Place:
    """A location with its room and display path (see ``BinStatus``)."""

    id: int
    kind: str
    name: str
    room_id: int | None
    room: str | None
    path: str


def place(conn: Connection, location_id: int) -> Place:
    """The location ``location_id`` with its room and path (one recursive query over its
    ancestors); ``InventoryError`` for an unknown location."""
    chain = conn.execute(_UP, {"start_id": location_id}).tuples().all()
    if not chain:
        raise InventoryError(f"no location {location_id}")
    names = []
    for id_, kind, name in chain:
        names.append(name)
        if kind == "room":
            return Place(location_id, chain[0][1], chain[0][2], id_, name, PATH_SEP.join(reversed(names)))
    return Place(location_id, chain[0][1], chain[0][2], None, None, PATH_SEP.join(reversed(names)))


def bin_statuses(engine: Engine, *, now: float, location_id: int | None = None) -> list[BinStatus]:
    """The status of every bin under ``location_id`` in the location tree (itself included; a
    supply room: all its shelves and bins), or of all bins; by path, then item name.
    ``InventoryError`` for an unknown location."""
    with engine.connect() as conn:
        if location_id is None:
            rows = conn.execute(_ALL).tuples().all()
        else:
            rows = conn.execute(_UNDER, under_params(place(conn, location_id))).tuples().all()
    out = [status_of(r, now) for r in rows]
    out.sort(key=lambda s: (s.path, s.name, s.sku))
    return out


def statement(under: bool) -> Select[Any]:
    """The statement of ``bin_statuses`` (its rows for ``status_of``), for callers that add
    their own conditions, order and limit: ``under`` False: every bin; True: the bins under the
    location given by ``under_params(place)``."""
    return _UNDER if under else _ALL


def under_params(p: Place) -> dict[str, Any]:
    return {"start_id": p.id, "start_room_id": p.room_id, "start_room": p.room, "start_path": p.path}


def _statement(under: bool) -> Select[Any]:
    """The bins of a subtree of locations (``under``: from the location ``:start_id``, whose
    room and path are given; else from the roots) with their items, on-hand and use; built once
    (its SQL is then cached) with the tree as a recursive CTE carrying each location's room and
    path."""
    loc = inventory_locations.c
    if under:
        anchor = select(
            loc.id,
            loc.name,
            cast(bindparam("start_room_id", type_=Integer), Integer).label("room_id"),
            cast(bindparam("start_room", type_=Text), Text).label("room"),
            cast(bindparam("start_path", type_=Text), Text).label("path"),
        ).where(loc.id == bindparam("start_id"))
    else:
        anchor = select(
            loc.id,
            loc.name,
            case((loc.kind == "room", loc.id), else_=cast(null(), Integer)).label("room_id"),
            case((loc.kind == "room", loc.name), else_=cast(null(), Text)).label("room"),
            cast(loc.name, Text).label("path"),
        ).where(loc.parent_id.is_(None))
    tree = anchor.cte("tree", recursive=True)
    child = inventory_locations.alias("child")
    is_room = child.c.kind == "room"
    tree = tree.union_all(
        select(
            child.c.id,
            child.c.name,
            case((is_room, child.c.id), else_=tree.c.room_id),
            case((is_room, cast(child.c.name, Text)), else_=tree.c.room),
            case((is_room, cast(child.c.name, Text)), else_=tree.c.path + PATH_SEP + child.c.name),
        ).where(child.c.parent_id == tree.c.id)
    )
    b, i, oh = inventory_bins.c, inventory_items.c, inventory_on_hand.c
    return (
        select(
            tree.c.id, tree.c.name.label("location"), tree.c.room_id, tree.c.room, tree.c.path,
            b.item_id, i.sku, i.name, i.unit, i.pack_size, i.critical,
            b.min_qty, b.reorder_point, b.par, b.reorder_qty, b.lead_time_s,
            oh.quantity, oh.use_decayed, oh.use_at, oh.first_at,
            oh.updated_at, b.id.label("bin_id"), b.shelf_device_id,
        )  # fmt: skip
        .select_from(tree)
        .join(inventory_bins, b.location_id == tree.c.id)
        .join(inventory_items, i.id == b.item_id)
        .outerjoin(inventory_on_hand, and_(oh.item_id == b.item_id, oh.location_id == b.location_id))
    )


def _ancestors() -> Select[Any]:
    loc = inventory_locations.c
    start = select(loc.id, loc.parent_id, loc.kind, loc.name, literal(0).label("depth"))
    up = start.where(loc.id == bindparam("start_id")).cte("up", recursive=True)
    parent = inventory_locations.alias("parent")
    up = up.union_all(
        select(parent.c.id, parent.c.parent_id, parent.c.kind, parent.c.name, up.c.depth + 1).where(
            parent.c.id == up.c.parent_id
        )
    )
    return select(up.c.id, up.c.kind, up.c.name).order_by(up.c.depth)  # the location first


_ALL, _UNDER, _UP = _statement(False), _statement(True), _ancestors()


def status_of(r: tuple[Any, ...], now: float) -> BinStatus:
    """The status at ``now`` of a row of ``statement``."""
    # Unpacked by position: a Row's attributes by name cost more than the rest of the status.
    (loc_id, location, room_id, room, path, item_id, sku, name, unit, pack_size, critical,
     min_qty, reorder_point, par, reorder_qty, lead_time_s, quantity, use_decayed, use_at, first_at,
     updated_at, bin_id, shelf_device_id) = r  # fmt: skip
    on_hand = quantity or 0
    level = level_of(on_hand, min_qty, reorder_point, par)
    use = 0.0 if quantity is None else rate_per_day(use_decayed, use_at, first_at, now)
    days: float | None
    stockout: float | None
    if level == "out":
        days, stockout = 0.0, now
    elif use > 0:
        days = on_hand / use
        stockout = now + days * 86_400.0
    else:
        days = stockout = None
    return BinStatus(
        item_id, sku, name, unit, pack_size, bool(critical), loc_id, location, room_id,
        path.split(PATH_SEP, 1)[0] if room is None else room, path, on_hand, min_qty, reorder_point, par,
        reorder_qty, float(lead_time_s), level, use, days, stockout, updated_at, bin_id, shelf_device_id,
    )  # fmt: skip


__all__ = [
    "LEVELS", "BinStatus", "Level", "Place", "bin_statuses", "level_of", "level_sql", "place", "statement",
    "status_of", "under_params",
]  # fmt: skip
