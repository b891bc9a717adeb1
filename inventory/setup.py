"""The site file's inventory into the state database: ``apply_site_inventory(engine,
site.inventory)`` at start-up creates or changes the items, locations and bins the file declares
(matched by SKU, by location path, by item and location), in one transaction; running it again
changes nothing. What the database holds and the file no longer declares is **kept** (its stock
and ledger history stay; an item cannot be deleted while ledger rows name it) and reported.

A smart shelf weighs one bin: a bin the file gives a shelf takes it from a bin that only the
database knows (reported as changed).

The same upserts serve ``inventory.csvio`` (CSV import), with the connection of its transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from eqmon.config import (
    Inventory,
    InventoryBin,
    InventoryItem,
    KnownInventory,
    format_location_path,
)
from eqmon.db import writing
from eqmon.db.schema import inventory_bins, inventory_items, inventory_locations

Path = tuple[str, ...]

ITEM_FIELDS = ("name", "category", "unit", "pack_size", "unit_weight_g", "critical")
# A bin's fields in the site file and CSV -> its columns.
BIN_COLUMNS = {
    "min": "min_qty", "reorder_point": "reorder_point", "par": "par", "reorder_qty": "reorder_qty",
    "lead_time": "lead_time_s", "tare_g": "tare_g", "shelf": "shelf_device_id",
}  # fmt: skip


@dataclass
class Changes:
    """What one sync or import did: names of what it added and changed; what the database
    holds that the site file does not declare (kept: only ``apply_site_inventory`` fills it)."""

    items_added: list[str] = field(default_factory=list)  # SKUs
    items_changed: list[str] = field(default_factory=list)
    locations_added: list[str] = field(default_factory=list)  # paths
    locations_changed: list[str] = field(default_factory=list)
    bins_added: list[str] = field(default_factory=list)  # "SKU at path"
    bins_changed: list[str] = field(default_factory=list)
    items_kept: list[str] = field(default_factory=list)
    locations_kept: list[str] = field(default_factory=list)
    bins_kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. a shelf taken from a bin

    @property
    def changed_anything(self) -> bool:
        return any((self.items_added, self.items_changed, self.locations_added, self.locations_changed,
                    self.bins_added, self.bins_changed))  # fmt: skip

    def summary(self) -> str:
        """One line: ``inventory: items 3 added, 1 changed; locations 7 added; bins 3 added``."""
        parts = []
        for what in ("items", "locations", "bins"):
            added, changed = getattr(self, f"{what}_added"), getattr(self, f"{what}_changed")
            done = [f"{len(added)} added"] * bool(added) + [f"{len(changed)} changed"] * bool(changed)
            if done:
                parts.append(f"{what} {', '.join(done)}")
        return "inventory: " + ("; ".join(parts) if parts else "up to date")

    def kept_lines(self) -> list[str]:
        """What the database keeps that the site file no longer declares, one line a kind."""
        out = []
        for what, names in (("items", self.items_kept), ("locations", self.locations_kept), ("bins", self.bins_kept)):
            if names:
                shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                out.append(f"inventory: {len(names)} {what} in the state database are not in the site file (kept, with their stock history): {shown}")
        return out


def apply_site_inventory(engine: Engine, inventory: Inventory | None) -> Changes:
    """Create or change the site file's items, locations and bins in the state database (one
    transaction; idempotent). Returns what changed and what the database keeps beyond the file."""
    with writing(engine) as conn:
        return apply_inventory(conn, inventory)


def apply_inventory(conn: Connection, inventory: Inventory | None) -> Changes:
    """``apply_site_inventory`` inside the caller's transaction."""
    changes = Changes()
    cat = load(conn)
    if inventory is None:
        return changes
    bins = inventory.bin_locations()
    upsert_items(conn, cat, inventory.items, changes)
    ensure_locations(conn, cat, inventory.location_paths(), changes)
    upsert_bins(conn, cat, bins, changes, take_shelves=True)
    skus = {i.sku for i in inventory.items}
    paths = {p for p, _ in inventory.location_paths()}
    keys = {(b.item, p) for b, p in bins}
    changes.items_kept = sorted(s for s in cat.items if s not in skus)
    changes.locations_kept = sorted(format_location_path(p) for p in cat.locations if p not in paths)
    changes.bins_kept = sorted(_bin_name(k) for k in cat.bin_keys() if k not in keys)
    return changes


# -- the catalog as the database holds it ----------------------------------------------------


@dataclass
class DbCatalog:
    items: dict[str, dict[str, Any]]  # SKU -> row
    locations: dict[Path, tuple[int, str]]  # path -> (id, kind)
    bins: dict[tuple[int, int], dict[str, Any]]  # (item id, location id) -> row

    def __post_init__(self) -> None:
        self.item_sku = {r["id"]: sku for sku, r in self.items.items()}
        self.location_path = {loc_id: p for p, (loc_id, _) in self.locations.items()}

    def bin_keys(self) -> list[tuple[str, Path]]:
        return [(self.item_sku[i], self.location_path[loc]) for i, loc in self.bins]

    def known(self) -> KnownInventory:
        return KnownInventory(
            items={sku: r["unit_weight_g"] for sku, r in self.items.items()},
            locations={p: kind for p, (_, kind) in self.locations.items()},
            bins={(self.item_sku[i], self.location_path[loc]): r["shelf_device_id"] for (i, loc), r in self.bins.items()},
        )


def load(conn: Connection) -> DbCatalog:
    """The items, locations (with their paths) and bins of the state database."""
    items = {r["sku"]: dict(r) for r in conn.execute(select(inventory_items)).mappings()}
    rows = {r.id: r for r in conn.execute(select(inventory_locations))}
    paths: dict[int, Path] = {}

    def path_of(loc_id: int) -> Path:
        done = paths.get(loc_id)
        if done is None:
            chain = []
            at: int | None = loc_id
            while at is not None and at not in paths:
                chain.append(at)
                at = rows[at].parent_id
            above = paths[at] if at is not None else ()
            for i in reversed(chain):
                above = paths[i] = (*above, rows[i].name)
            done = paths[loc_id]
        return done

    locations = {path_of(i): (i, r.kind) for i, r in rows.items()}
    bins = {(r["item_id"], r["location_id"]): dict(r) for r in conn.execute(select(inventory_bins)).mappings()}
    return DbCatalog(items, locations, bins)


# -- upserts (``cat`` is kept up to date) -------------------------------------------------------


def upsert_items(conn: Connection, cat: DbCatalog, items: Iterable[InventoryItem], changes: Changes,
                 fields: Iterable[str] = ITEM_FIELDS) -> None:  # fmt: skip
    """Create the new items; give the others ``fields`` (those not named keep their value)."""
    fields = tuple(fields)
    for item in items:
        found = cat.items.get(item.sku)
        if found is None:
            values = {k: getattr(item, k) for k in ITEM_FIELDS}
            item_id = conn.execute(insert(inventory_items).values(sku=item.sku, **values).returning(inventory_items.c.id)).scalar_one()
            cat.items[item.sku] = {"id": item_id, "sku": item.sku, **values}
            cat.item_sku[item_id] = item.sku
            changes.items_added.append(item.sku)
            continue
        new = {k: getattr(item, k) for k in fields if getattr(item, k) != found[k]}
        if new:
            conn.execute(update(inventory_items).where(inventory_items.c.id == found["id"]).values(**new))
            found.update(new)
            changes.items_changed.append(item.sku)


def ensure_locations(conn: Connection, cat: DbCatalog, locations: Iterable[tuple[Path, str]], changes: Changes) -> None:
    """Create the locations not there yet (each after its parent); change a kind that differs."""
    for path, kind in locations:
        have = cat.locations.get(path)
        if have is None:
            parent_id = cat.locations[path[:-1]][0] if len(path) > 1 else None
            loc_id = conn.execute(
                insert(inventory_locations).values(parent_id=parent_id, kind=kind, name=path[-1]).returning(inventory_locations.c.id)
            ).scalar_one()
            cat.locations[path] = (loc_id, kind)
            cat.location_path[loc_id] = path
            changes.locations_added.append(format_location_path(path))
        elif have[1] != kind:
            conn.execute(update(inventory_locations).where(inventory_locations.c.id == have[0]).values(kind=kind))
            cat.locations[path] = (have[0], kind)
            changes.locations_changed.append(format_location_path(path))


def upsert_bins(conn: Connection, cat: DbCatalog, bins: Iterable[tuple[InventoryBin, Path]], changes: Changes,
                fields: Iterable[str] = tuple(BIN_COLUMNS), *, take_shelves: bool = False) -> None:  # fmt: skip
    """Create the new bins; give the others ``fields``. ``take_shelves``: a shelf given to one of
    these bins is taken from any other bin that had it."""
    fields = tuple(fields)
    bins = list(bins)
    mine = {(cat.items[b.item]["id"], cat.locations[p][0]) for b, p in bins}
    wanted = {b.shelf: (cat.items[b.item]["id"], cat.locations[p][0]) for b, p in bins if b.shelf}
    if take_shelves:
        for key, row in cat.bins.items():
            shelf = row["shelf_device_id"]
            if shelf in wanted and wanted[shelf] != key and key not in mine:
                conn.execute(update(inventory_bins).where(inventory_bins.c.id == row["id"]).values(shelf_device_id=None))
                row["shelf_device_id"] = None
                changes.bins_changed.append(_bin_name((cat.item_sku[key[0]], cat.location_path[key[1]])))
                changes.notes.append(f"shelf {shelf!r} now weighs the bin of {_bin_name(_key_names(cat, wanted[shelf]))}, no longer that of {_bin_name(_key_names(cat, key))}")
    for b, path in bins:
        key = (cat.items[b.item]["id"], cat.locations[path][0])
        found = cat.bins.get(key)
        if found is None:
            values = {col: getattr(b, f) for f, col in BIN_COLUMNS.items()}
            bin_id = conn.execute(
                insert(inventory_bins).values(item_id=key[0], location_id=key[1], **values).returning(inventory_bins.c.id)
            ).scalar_one()
            cat.bins[key] = {"id": bin_id, "item_id": key[0], "location_id": key[1], **values}
            changes.bins_added.append(_bin_name((b.item, path)))
            continue
        new = {BIN_COLUMNS[f]: getattr(b, f) for f in fields if getattr(b, f) != found[BIN_COLUMNS[f]]}
        if new:
            conn.execute(update(inventory_bins).where(inventory_bins.c.id == found["id"]).values(**new))
            found.update(new)
            changes.bins_changed.append(_bin_name((b.item, path)))


def _key_names(cat: DbCatalog, key: tuple[int, int]) -> tuple[str, Path]:
    return cat.item_sku[key[0]], cat.location_path[key[1]]


def _bin_name(key: tuple[str, Path]) -> str:
    return f"{key[0]} at {format_location_path(key[1])}"


__all__ = ["BIN_COLUMNS", "ITEM_FIELDS", "Changes", "DbCatalog", "apply_inventory", "apply_site_inventory", "load"]
