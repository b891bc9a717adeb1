"""Read queries for the API (dashboard_api/routers/inventory.py; docs/api.md, "Inventory"):
pages of items, locations, bin statuses and ledger rows, and one supply room's status.

A page is a keyset query: ``WHERE key > the previous page's last key ORDER BY key LIMIT n + 1``
(the extra row says whether there is a next page), with every filter in the same statement, so
a page is the next ``n`` rows that match and its cost does not grow with how far the client has
walked. Keys: items by SKU, locations and bins by id, ledger rows by id, newest first.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Select, func, literal, or_, select
from sqlalchemy.sql.expression import CTE

from eqmon.config import format_location_path
from eqmon.db.schema import inventory_bins, inventory_items, inventory_ledger, inventory_locations

from .catalog import Item, Location, LocationKind
from .ledger import Entry, Kind
from .status import (
    BinStatus,
    NotARoom,
    Place,
    level_sql,
    place,
    room_rows,
    rows_under,
    statement,
    status_of,
)


@dataclass(frozen=True, slots=True)
class LocationRow:
    """A location and its path from the root, as the site file and the CSV files write it
    (``Main building/Floor 4/Ward 4B supply room``)."""

    location: Location
    path: str


@dataclass(frozen=True, slots=True)
class LedgerRow:
    entry: Entry
    sku: str
    item: str
    location: str


# -- helpers ----------------------------------------------------------------------------------


def subtree(location_id: int) -> CTE:
    """The ids of ``location_id`` and every location under it (a recursive CTE)."""
    loc = inventory_locations.c
    tree = select(loc.id).where(loc.id == location_id).cte("subtree", recursive=True)
    child = inventory_locations.alias("sub_child")
    return tree.union_all(select(child.c.id).where(child.c.parent_id == tree.c.id))


def paths(conn: Connection, location_ids: Iterable[int]) -> dict[int, str]:
    """The path from the root of each location (one recursive query over their ancestors)."""
    ids = sorted(set(location_ids))
    if not ids:
        return {}
    loc = inventory_locations.c
    up = select(loc.id.label("start"), loc.parent_id, loc.name, literal(0).label("depth"))
    up_cte = up.where(loc.id.in_(ids)).cte("up", recursive=True)
    parent = inventory_locations.alias("up_parent")
    up_cte = up_cte.union_all(
        select(up_cte.c.start, parent.c.parent_id, parent.c.name, up_cte.c.depth + 1).where(
            parent.c.id == up_cte.c.parent_id
        )
    )
    rows = conn.execute(select(up_cte.c.start, up_cte.c.name, up_cte.c.depth)).tuples().all()
    names: dict[int, list[tuple[int, str]]] = {}
    for start, name, depth in rows:
        names.setdefault(start, []).append((depth, name))
    return {k: format_location_path(tuple(n for _, n in sorted(v, reverse=True))) for k, v in names.items()}


def lookup(engine: Engine, sku: str, location_ids: Collection[int]) -> tuple[Item | None, dict[int, str]]:
    """The item of ``sku`` (None: no such item) and the names of those of ``location_ids`` that
    exist (one connection, two small queries)."""
    i, loc = inventory_items.c, inventory_locations.c
    with engine.connect() as conn:
        r = conn.execute(select(inventory_items).where(i.sku == sku)).mappings().first()
        names = dict(conn.execute(select(loc.id, loc.name).where(loc.id.in_(list(location_ids)))).tuples().all())
    return (None if r is None else Item(**dict(r))), names


def location_names(engine: Engine, location_ids: Collection[int]) -> dict[int, str]:
    """The names of those of ``location_ids`` that exist."""
    loc = inventory_locations.c
    with engine.connect() as conn:
        return dict(conn.execute(select(loc.id, loc.name).where(loc.id.in_(list(location_ids)))).tuples().all())


# -- pages ------------------------------------------------------------------------------------


def items_page(engine: Engine, *, limit: int, after: str | None = None, q: str | None = None,
               category: str | None = None) -> list[Item]:  # fmt: skip
    """Up to ``limit + 1`` items by SKU after ``after``; ``q``: a part of the SKU or the name
    (any case); ``category``: exactly."""
    c = inventory_items.c
    stmt = select(*[c[k] for k in Item.__dataclass_fields__]).order_by(c.sku).limit(limit + 1)
    if after is not None:
        stmt = stmt.where(c.sku > after)
    if q:
        needle = q.lower()
        stmt = stmt.where(or_(func.lower(c.sku).contains(needle, autoescape=True),
                              func.lower(c.name).contains(needle, autoescape=True)))  # fmt: skip
    if category is not None:
        stmt = stmt.where(c.category == category)
    with engine.connect() as conn:
        return [Item(*r) for r in conn.execute(stmt).tuples()]


def locations_page(engine: Engine, *, limit: int, after: int | None = None, kind: LocationKind | None = None,
                   parent_id: int | None = None, roots: bool = False) -> list[LocationRow]:  # fmt: skip
    """Up to ``limit + 1`` locations by id after ``after``, with their paths; ``parent_id``:
    its children only; ``roots``: those at the top only."""
    c = inventory_locations.c
    stmt = select(*[c[k] for k in Location.__dataclass_fields__]).order_by(c.id).limit(limit + 1)
    if after is not None:
        stmt = stmt.where(c.id > after)
    if kind is not None:
        stmt = stmt.where(c.kind == kind)
    if parent_id is not None:
        stmt = stmt.where(c.parent_id == parent_id)
    if roots:
        stmt = stmt.where(c.parent_id.is_(None))
    with engine.connect() as conn:
        found = [Location(*r) for r in conn.execute(stmt).tuples()]
        known = paths(conn, (x.id for x in found))
    return [LocationRow(x, known[x.id]) for x in found]


def levels_page(engine: Engine, *, now: float, limit: int, after: int | None = None, location_id: int | None = None,
                levels: Collection[str] = (), sku: str | None = None) -> list[BinStatus]:  # fmt: skip
    """Up to ``limit + 1`` bins by bin id after ``after``, with their status at ``now``;
    ``location_id``: the bins under it (itself included: a room gives its shelves' bins too;
    ``InventoryError`` if unknown); ``levels``: only these levels; ``sku``: one item's bins."""
    b, i = inventory_bins.c, inventory_items.c

    def refine(stmt: Select[Any]) -> Select[Any]:
        if after is not None:
            stmt = stmt.where(b.id > after)
        if levels:
            stmt = stmt.where(level_sql().in_(sorted(levels)))
        if sku is not None:
            stmt = stmt.where(i.sku == sku)
        return stmt.order_by(b.id).limit(limit + 1)

    with engine.connect() as conn:
        if location_id is None:
            rows = list(conn.execute(refine(statement(False))).tuples().all())
        else:
            rows = rows_under(conn, place(conn, location_id), refine)
    return [status_of(r, now) for r in rows]


def room_status(engine: Engine, *, now: float, room_id: int) -> tuple[Place, list[BinStatus]]:
    """One room and the status of every bin in it (its shelves' and bins' included), by path,
    item name, SKU and location id: two queries (``status.room_rows``). ``InventoryError`` (``NotARoom``) for an
    unknown location or one that is not a room."""
    with engine.connect() as conn:
        p, rows = room_rows(conn, room_id)
    out = [status_of(r, now) for r in rows]
    out.sort(key=lambda s: (s.path, s.name, s.sku, s.location_id))
    return p, out


def ledger_page(engine: Engine, *, limit: int, before: int | None = None, sku: str | None = None,
                location_id: int | None = None, kinds: Collection[Kind] = (),
                since: float | None = None) -> list[LedgerRow]:  # fmt: skip
    """Up to ``limit + 1`` ledger rows, newest (highest id) first, before the id ``before``;
    ``sku``: one item's; ``location_id``: at it or under it; ``kinds``: of these kinds;
    ``since``: at or after this time (``ts``; the ledger has no index on it: a filter, not a
    range scan)."""
    lg, i, loc = inventory_ledger.c, inventory_items.c, inventory_locations.c
    stmt = (
        select(*[lg[k] for k in Entry.__dataclass_fields__], i.sku, i.name, loc.name)
        .select_from(inventory_ledger)
        .outerjoin(inventory_items, i.id == lg.item_id)
        .outerjoin(inventory_locations, loc.id == lg.location_id)
        .order_by(lg.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        stmt = stmt.where(lg.id < before)
    if sku is not None:
        stmt = stmt.where(lg.item_id == select(i.id).where(i.sku == sku).scalar_subquery())
    if location_id is not None:
        under = subtree(location_id)
        stmt = stmt.where(lg.location_id.in_(select(under.c.id)))
    if kinds:
        stmt = stmt.where(lg.kind.in_(sorted(kinds)))
    if since is not None:
        stmt = stmt.where(lg.ts >= since)
    n = len(Entry.__dataclass_fields__)
    with engine.connect() as conn:
        rows = conn.execute(stmt).tuples().all()
    return [LedgerRow(Entry(*r[:n]), r[n] or "", r[n + 1] or "", r[n + 2] or "") for r in rows]


__all__ = [
    "LedgerRow", "LocationRow", "NotARoom", "items_page", "ledger_page", "levels_page", "locations_page",
    "location_names", "lookup", "paths", "room_status", "subtree",
]  # fmt: skip
