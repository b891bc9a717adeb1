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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import (
    CTE,
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


def bin_statuses(
    engine: Engine, *, now: float, location_id: int | None = None, part: tuple[int, int] | None = None
) -> list[BinStatus]:
    """The status of every bin under ``location_id`` in the location tree (itself included; a
    supply room: all its shelves and bins), or of all bins; by path, then item name. ``part``
    ``(k, n)``: of all bins, only those whose location id is ``k`` modulo ``n`` (one of ``n``
    slices). ``InventoryError`` for an unknown location."""
    with engine.connect() as conn:
        if location_id is None and part is not None:
            k, n = part
            rows = conn.execute(_ALL.where((inventory_bins.c.location_id % n) == k)).tuples().all()
        elif location_id is None:
            rows = conn.execute(_ALL).tuples().all()
        else:
            rows = rows_under(conn, place(conn, location_id))
    out = [status_of(r, now) for r in rows]
    out.sort(key=lambda s: (s.path, s.name, s.sku))
    return out


# Locations in a subtree up to which its bins are read by a list of location ids (the planners
# then know how few there are: an index look-up per location); a larger subtree is joined in SQL.
MAX_LISTED = 500
Refine = Callable[[Select[Any]], Select[Any]]


def rows_under(conn: Connection, p: Place, refine: Refine | None = None) -> list[tuple[Any, ...]]:
    """The rows (for ``status_of``) of the bins under ``p``, itself included: two queries, the
    subtree with each location's room and path, then its bins by location id (one with the
    subtree in SQL past ``MAX_LISTED`` locations). ``refine`` adds conditions, an order and a
    limit to the bins' statement (on the columns of the bins, items and on-hand tables)."""
    tree = conn.execute(_TREE_UNDER, under_params(p)).tuples().all()
    return _bins_of(conn, tree, refine, under_params(p))


def room_rows(conn: Connection, room_id: int, refine: Refine | None = None) -> tuple[Place, list[tuple[Any, ...]]]:
    """``rows_under`` for a room, in two queries: the room's subtree (from the room itself: its
    ancestors are not needed), then its bins. ``InventoryError`` for an unknown location;
    ``NotARoom`` for one of another kind."""
    tree = conn.execute(_TREE_ROOM, {"start_id": room_id}).tuples().all()
    top = next((t for t in tree if t[0] == room_id), None)
    if top is None:
        raise InventoryError(f"no location {room_id}")
    if top[5] != "room":
        raise NotARoom(f"location {room_id} is a {top[5]}, not a room")
    p = Place(room_id, "room", top[1], room_id, top[1], top[4])
    return p, _bins_of(conn, tree, refine, under_params(p))


class NotARoom(InventoryError):
    """The location exists but is not a room."""


def _bins_of(conn: Connection, tree: Sequence[tuple[Any, ...]], refine: Refine | None,
             params: dict[str, Any]) -> list[tuple[Any, ...]]:  # fmt: skip
    if len(tree) > MAX_LISTED:
        stmt = _UNDER if refine is None else refine(_UNDER)
        return list(conn.execute(stmt, params).tuples().all())
    where = {t[0]: t[:5] for t in tree}
    stmt = _AT if refine is None else refine(_AT)
    rows = conn.execute(stmt, {"ids": list(where)}).tuples().all()
    return [where[r[0]] + tuple(r[1:]) for r in rows]


def statement(under: bool) -> Select[Any]:
    """The one-query statement of ``bin_statuses`` (its rows for ``status_of``), for callers
    that add their own conditions, order and limit: ``under`` False: every bin; True: the bins
    under the location given by ``under_params(place)`` (``rows_under`` is faster for a room)."""
    return _UNDER if under else _ALL


def under_params(p: Place) -> dict[str, Any]:
    return {"start_id": p.id, "start_room_id": p.room_id, "start_room": p.room, "start_path": p.path}


def _tree(start: Literal["roots", "place", "room"]) -> CTE:
    """The location tree as a recursive CTE (id, name, room_id, room, path, kind) carrying each
    location's room and path: from the roots; from the location ``:start_id`` whose room and
    path are given (``under_params``); or from the room ``:start_id`` (its room: itself)."""
    loc = inventory_locations.c
    if start == "place":
        anchor = select(
            loc.id,
            loc.name,
            cast(bindparam("start_room_id", type_=Integer), Integer).label("room_id"),
            cast(bindparam("start_room", type_=Text), Text).label("room"),
            cast(bindparam("start_path", type_=Text), Text).label("path"),
            loc.kind,
        ).where(loc.id == bindparam("start_id"))
    else:
        anchor = select(
            loc.id,
            loc.name,
            case((loc.kind == "room", loc.id), else_=cast(null(), Integer)).label("room_id"),
            case((loc.kind == "room", loc.name), else_=cast(null(), Text)).label("room"),
            cast(loc.name, Text).label("path"),
            loc.kind,
        ).where(loc.parent_id.is_(None) if start == "roots" else loc.id == bindparam("start_id"))
    tree = anchor.cte("tree", recursive=True)
    child = inventory_locations.alias("child")
    is_room = child.c.kind == "room"
    return tree.union_all(
        select(
            child.c.id,
            child.c.name,
            case((is_room, child.c.id), else_=tree.c.room_id),
            case((is_room, cast(child.c.name, Text)), else_=tree.c.room),
            case((is_room, cast(child.c.name, Text)), else_=tree.c.path + PATH_SEP + child.c.name),
            child.c.kind,
        ).where(child.c.parent_id == tree.c.id)
    )


_BIN_COLUMNS = (
    inventory_bins.c.item_id, inventory_items.c.sku, inventory_items.c.name, inventory_items.c.unit,
    inventory_items.c.pack_size, inventory_items.c.critical, inventory_bins.c.min_qty, inventory_bins.c.reorder_point,
    inventory_bins.c.par, inventory_bins.c.reorder_qty, inventory_bins.c.lead_time_s, inventory_on_hand.c.quantity,
    inventory_on_hand.c.use_decayed, inventory_on_hand.c.use_at, inventory_on_hand.c.first_at,
    inventory_on_hand.c.updated_at, inventory_bins.c.id.label("bin_id"), inventory_bins.c.shelf_device_id,
)  # fmt: skip


def _with_stock(stmt: Select[Any]) -> Select[Any]:
    b, i, oh = inventory_bins.c, inventory_items.c, inventory_on_hand.c
    return stmt.join(inventory_items, i.id == b.item_id).outerjoin(
        inventory_on_hand, and_(oh.item_id == b.item_id, oh.location_id == b.location_id)
    )


def _statement(start: Literal["roots", "place"]) -> Select[Any]:
    """The bins of a subtree of locations with their items, on-hand and use, in one query; built
    once (its SQL is then cached)."""
    tree = _tree(start)
    b = inventory_bins.c
    cols = (tree.c.id, tree.c.name.label("location"), tree.c.room_id, tree.c.room, tree.c.path)
    stmt = _with_stock(select(*cols, *_BIN_COLUMNS).select_from(tree).join(inventory_bins, b.location_id == tree.c.id))
    # Under a location: the bins looked up by location, the subtree's ids first (SQLite's planner
    # otherwise starts from the items and visits every bin of the site).
    return stmt.where(b.location_id.in_(select(tree.c.id))) if start == "place" else stmt


def _tree_rows(start: Literal["place", "room"]) -> Select[Any]:
    tree = _tree(start)
    return select(tree.c.id, tree.c.name, tree.c.room_id, tree.c.room, tree.c.path, tree.c.kind)


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


_ALL, _UNDER, _UP = _statement("roots"), _statement("place"), _ancestors()
_TREE_UNDER, _TREE_ROOM = _tree_rows("place"), _tree_rows("room")
# The bins at a list of locations (``:ids``), the location id first (then as in ``_statement``).
_AT = _with_stock(select(inventory_bins.c.location_id, *_BIN_COLUMNS).select_from(inventory_bins)).where(
    inventory_bins.c.location_id.in_(bindparam("ids", expanding=True))
)


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
    "LEVELS", "BinStatus", "Level", "NotARoom", "Place", "bin_statuses", "level_of", "level_sql", "place",
    "room_rows", "rows_under", "statement", "status_of", "under_params",
]  # fmt: skip
