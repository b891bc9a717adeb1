"""The catalog in the state database: items, locations (a tree) and bins (the par settings of
one item at one location, its tare and smart shelf). A small repository, one transaction per
call; filling it from the site file or CSV is not built yet (docs/inventory.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, TypeVar, get_args

from sqlalchemy import Engine, RowMapping, insert, select, update

from eqmon.db import writing
from eqmon.db.schema import inventory_bins, inventory_items, inventory_locations

from .errors import InventoryError

LocationKind = Literal["building", "floor", "room", "shelf", "bin"]
LOCATION_KINDS: tuple[LocationKind, ...] = get_args(LocationKind)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    sku: str
    name: str
    category: str = ""
    unit: str = "each"
    pack_size: int = 1
    unit_weight_g: float | None = None
    critical: bool = False


@dataclass(frozen=True, slots=True)
class Location:
    id: int
    parent_id: int | None
    kind: LocationKind
    name: str


@dataclass(frozen=True, slots=True)
class Bin:
    """Par settings of one item at one location: minimum <= reorder point <= par (maximum)."""

    id: int
    item_id: int
    location_id: int
    min_qty: int = 0
    reorder_point: int = 0
    par: int = 0
    reorder_qty: int = 0
    lead_time_s: float = 0.0
    tare_g: float = 0.0
    shelf_device_id: str | None = None


_BIN_SETTINGS = ("min_qty", "reorder_point", "par", "reorder_qty", "lead_time_s", "tare_g", "shelf_device_id")
# A slots dataclass keeps no defaults on the class (getattr(Bin, k) is a slot descriptor).
_BIN_DEFAULTS = {f.name: f.default for f in fields(Bin) if f.name in _BIN_SETTINGS}


class Catalog:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- items ---------------------------------------------------------------------------------

    def add_item(
        self,
        sku: str,
        name: str,
        *,
        category: str = "",
        unit: str = "each",
        pack_size: int = 1,
        unit_weight_g: float | None = None,
        critical: bool = False,
    ) -> Item:
        if not sku or not name:
            raise InventoryError("an item needs a SKU and a name")
        if pack_size < 1:
            raise InventoryError(f"item {sku}: pack_size must be at least 1, not {pack_size}")
        if unit_weight_g is not None and not unit_weight_g > 0:
            raise InventoryError(f"item {sku}: unit_weight_g must be above 0, not {unit_weight_g}")
        item = Item(id=0, sku=sku, name=name, category=category, unit=unit, pack_size=pack_size,
                    unit_weight_g=unit_weight_g, critical=critical)  # fmt: skip
        values = {k: getattr(item, k) for k in Item.__dataclass_fields__ if k != "id"}
        with writing(self._engine) as conn:
            if conn.execute(select(inventory_items.c.id).where(inventory_items.c.sku == sku)).first():
                raise InventoryError(f"item {sku} already exists")
            item_id = conn.execute(insert(inventory_items).values(**values).returning(inventory_items.c.id)).scalar_one()
        return replace(item, id=item_id)

    def item(self, sku: str) -> Item | None:
        with self._engine.connect() as conn:
            r = conn.execute(select(inventory_items).where(inventory_items.c.sku == sku)).mappings().first()
        return None if r is None else _make(Item, r)

    def items(self) -> list[Item]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(inventory_items).order_by(inventory_items.c.sku)).mappings().all()
        return [_make(Item, r) for r in rows]

    # -- locations -----------------------------------------------------------------------------

    def add_location(self, kind: LocationKind, name: str, parent_id: int | None = None) -> Location:
        """A location under ``parent_id`` (None: a root). A child is a finer kind than its
        parent (building > floor > room > shelf > bin; a level may be skipped)."""
        if kind not in LOCATION_KINDS:
            raise InventoryError(f"location {name!r}: kind must be one of {', '.join(LOCATION_KINDS)}")
        if not name:
            raise InventoryError("a location needs a name")
        with writing(self._engine) as conn:
            if parent_id is not None:
                parent = conn.execute(
                    select(inventory_locations.c.kind).where(inventory_locations.c.id == parent_id)
                ).scalar()
                if parent is None:
                    raise InventoryError(f"location {name!r}: no parent location {parent_id}")
                if LOCATION_KINDS.index(kind) <= LOCATION_KINDS.index(parent):
                    raise InventoryError(f"location {name!r}: a {kind} cannot be inside a {parent}")
            taken = conn.execute(
                select(inventory_locations.c.id).where(
                    inventory_locations.c.name == name,
                    inventory_locations.c.parent_id.is_(None)
                    if parent_id is None
                    else inventory_locations.c.parent_id == parent_id,
                )
            ).first()
            if taken:
                raise InventoryError(f"location {name!r} already exists there (id {taken[0]})")
            loc_id = conn.execute(
                insert(inventory_locations)
                .values(kind=kind, name=name, parent_id=parent_id)
                .returning(inventory_locations.c.id)
            ).scalar_one()
        return Location(id=loc_id, parent_id=parent_id, kind=kind, name=name)

    def location(self, location_id: int) -> Location | None:
        with self._engine.connect() as conn:
            r = conn.execute(select(inventory_locations).where(inventory_locations.c.id == location_id)).mappings().first()
        return None if r is None else _make(Location, r)

    def children(self, location_id: int | None) -> list[Location]:
        """The locations directly under ``location_id`` (None: the roots), by name."""
        c = inventory_locations.c
        where = c.parent_id.is_(None) if location_id is None else c.parent_id == location_id
        with self._engine.connect() as conn:
            rows = conn.execute(select(inventory_locations).where(where).order_by(c.name)).mappings().all()
        return [_make(Location, r) for r in rows]

    # -- bins (par settings) -------------------------------------------------------------------

    def set_bin(self, item_id: int, location_id: int, **settings: Any) -> Bin:
        """Create or change the bin of an item at a location; settings not given keep their
        value (a new bin: 0 / None)."""
        unknown = set(settings) - set(_BIN_SETTINGS)
        if unknown:
            raise TypeError(f"unknown bin settings: {', '.join(sorted(unknown))}")
        with writing(self._engine) as conn:
            c = inventory_bins.c
            r = conn.execute(
                select(inventory_bins).where(c.item_id == item_id, c.location_id == location_id)
            ).mappings().first()
            current = dict(_BIN_DEFAULTS) if r is None else {k: r[k] for k in _BIN_SETTINGS}
            new = {**current, **settings}
            _check_levels(item_id, location_id, new)
            if r is None:
                bin_id = conn.execute(
                    insert(inventory_bins).values(item_id=item_id, location_id=location_id, **new).returning(c.id)
                ).scalar_one()
            else:
                bin_id = r["id"]
                conn.execute(update(inventory_bins).where(c.id == bin_id).values(**new))
        return Bin(id=bin_id, item_id=item_id, location_id=location_id, **new)

    def bins(self, location_id: int | None = None) -> list[Bin]:
        q = select(inventory_bins).order_by(inventory_bins.c.location_id, inventory_bins.c.item_id)
        if location_id is not None:
            q = q.where(inventory_bins.c.location_id == location_id)
        with self._engine.connect() as conn:
            return [_make(Bin, r) for r in conn.execute(q).mappings().all()]


def _check_levels(item_id: int, location_id: int, s: dict[str, Any]) -> None:
    where = f"bin of item {item_id} at location {location_id}"
    if not 0 <= s["min_qty"] <= s["reorder_point"] <= s["par"]:
        raise InventoryError(
            f"{where}: need 0 <= min_qty <= reorder_point <= par, got {s['min_qty']}, {s['reorder_point']}, {s['par']}"
        )
    for k in ("reorder_qty", "lead_time_s", "tare_g"):
        if s[k] < 0:
            raise InventoryError(f"{where}: {k} must not be negative, got {s[k]}")


def _make(cls: Callable[..., T], r: RowMapping) -> T:
    return cls(**dict(r))  # the dataclasses' fields are their tables' columns


__all__ = ["LOCATION_KINDS", "Bin", "Catalog", "Item", "Location", "LocationKind"]
