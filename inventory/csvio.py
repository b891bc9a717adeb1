"""CSV import and export of the catalog: items, locations and bins (par levels), in the formats
of eqmon/config.py (``INVENTORY_CSV_COLUMNS``; docs/inventory.md), which the site file's
``inventory.import`` reads too.

**Import** is all or nothing: every bad row is reported (its line and column), against the file
itself and against what the state database holds (an unknown SKU or location, a shelf already
weighing another bin …), and a file with any problem changes nothing. A good file is applied in
one transaction: rows create what is new and change what exists (matched by SKU, location path,
item and location); a column the file leaves out keeps its value; nothing is deleted. With the
site, the site file's own inventory is applied first in the same transaction (as at start-up),
and rows that change what the site file declares are reported: start-up applies the file again.

**Export** writes the same formats, every column, sorted (items by SKU, locations parent first,
bins by location then SKU); importing an export changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Engine

from eqmon.config import (
    INVENTORY_CSV_COLUMNS,
    INVENTORY_CSV_KINDS,
    CsvEntry,
    CsvIssue,
    InventoryBin,
    InventoryItem,
    InventoryLocationRow,
    InventorySource,
    LocationEntry,
    LocationIndex,
    LocationKind,
    Site,
    check_inventory,
    format_inventory_csv,
    format_location_path,
    read_inventory_csv,
)
from eqmon.db import writing

from .errors import InventoryError
from .setup import (
    BIN_COLUMNS,
    Changes,
    DbCatalog,
    apply_inventory,
    ensure_locations,
    load,
    upsert_bins,
    upsert_items,
)


class CsvImportError(InventoryError):
    """A CSV file with problems: nothing of it was applied. ``issues``: every one, by line."""

    def __init__(self, file: str, issues: Iterable[CsvIssue]) -> None:
        self.file = file
        self.issues = sorted(issues, key=lambda i: (i.line, -1 if i.position is None else i.position))
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [i.render(self.file) for i in self.issues]


@dataclass
class ImportResult:
    kind: str
    file: str
    rows: int
    changes: Changes  # what the file added and changed
    site_changes: Changes | None = None  # what applying the site file's inventory first did
    warnings: list[str] = field(default_factory=list)
    applied: bool = True  # False: a dry run, rolled back

    def summary(self) -> str:
        c = self.changes
        added, changed = getattr(c, f"{self.kind}_added"), getattr(c, f"{self.kind}_changed")
        same = self.rows - len(added) - len(changed)
        verb = "applied" if self.applied else "checked, nothing applied (dry run)"
        return f"{self.file}: {self.rows} {self.kind} {verb}: {len(added)} added, {len(changed)} changed, {same} unchanged"


class _DryRun(Exception):
    pass


def import_csv(engine: Engine, kind: str, text: str, *, file: str = "<csv>", site: Site | None = None,
               dry_run: bool = False) -> ImportResult:  # fmt: skip
    """Check ``text`` (a CSV file of ``kind``) and apply it in one transaction, or raise
    ``CsvImportError`` with every problem and change nothing. ``site``: its devices are the
    smart shelves a bin may name, and its inventory is applied first (as at start-up)."""
    table = read_inventory_csv(text, kind)
    if table.issues:
        raise CsvImportError(file, table.issues)
    result: ImportResult | None = None
    try:
        with writing(engine) as conn:
            result = _import_in(conn, kind, table.columns, table.rows, file, site)
            if dry_run:
                raise _DryRun
    except _DryRun:
        assert result is not None
        result.applied = False
    assert result is not None
    return result


def _import_in(conn: Connection, kind: str, columns: tuple[str, ...], rows: tuple[tuple[int, CsvEntry], ...],
               file: str, site: Site | None) -> ImportResult:  # fmt: skip
    inv = site.inventory if site is not None else None
    site_changes = apply_inventory(conn, inv) if inv is not None else None
    cat = load(conn)
    src = {line: InventorySource(file=file, line=line) for line, _ in rows}
    items = [(src[n], e) for n, e in rows if isinstance(e, InventoryItem)]
    locations: list[LocationEntry] = [(src[n], e.parts, e.kind, "path") for n, e in rows if isinstance(e, InventoryLocationRow)]
    bins = [(src[n], e) for n, e in rows if isinstance(e, InventoryBin)]
    problems, resolved = check_inventory(items, locations, bins, site.devices if site is not None else None, cat.known())
    issues = [CsvIssue(s.line or 0, col, msg, columns.index(col) if col in columns else None) for s, col, msg in problems]
    issues += _partial_levels(cat, columns, bins, resolved)
    if issues:
        raise CsvImportError(file, issues)
    changes = Changes()
    present = set(columns)
    if kind == "items":
        upsert_items(conn, cat, [e for _, e in items], changes, [f for f in INVENTORY_CSV_COLUMNS["items"] if f in present and f != "sku"])
    elif kind == "locations":
        ensure_locations(conn, cat, sorted(((p, k) for _, p, k, _ in locations), key=lambda x: len(x[0])), changes)
    else:
        paths = dict(resolved)
        upsert_bins(conn, cat, [(b, paths[s]) for s, b in bins], changes, [f for f in BIN_COLUMNS if f in present])
    warnings = _declared_by_site(kind, rows, inv, dict(resolved), src, file, changes)
    return ImportResult(kind, file, len(rows), changes, site_changes, warnings)


def _partial_levels(cat: DbCatalog, columns: tuple[str, ...], bins: list[tuple[InventorySource, InventoryBin]],
                    resolved: list[tuple[InventorySource, tuple[str, ...]]]) -> list[CsvIssue]:  # fmt: skip
    """A bins file without some of min, reorder_point, par changes an existing bin's levels: the
    levels it keeps must still fit (min <= reorder_point <= par)."""
    levels = ("min", "reorder_point", "par")
    missing = [f for f in levels if f not in columns]
    if not missing:
        return []
    paths = dict(resolved)
    out = []
    for s, b in bins:
        path = paths.get(s)
        if path is None or b.item not in cat.items or path not in cat.locations:
            continue
        row = cat.bins.get((cat.items[b.item]["id"], cat.locations[path][0]))
        if row is None:
            continue
        v = {f: (row[BIN_COLUMNS[f]] if f in missing else getattr(b, f)) for f in levels}
        if not v["min"] <= v["reorder_point"] <= v["par"]:
            col = next(f for f in levels if f in columns)
            out.append(CsvIssue(s.line or 0, col, f"with the bin's {', '.join(f'{f} {v[f]}' for f in missing)} (not in this file) the levels would be min {v['min']}, reorder_point {v['reorder_point']}, par {v['par']}: need min <= reorder_point <= par", columns.index(col)))
    return out


def _declared_by_site(kind: str, rows: tuple[tuple[int, CsvEntry], ...], inv: Any, paths: dict[InventorySource, tuple[str, ...]],
                      src: dict[int, InventorySource], file: str, changes: Changes) -> list[str]:  # fmt: skip
    """Rows that changed what the site file declares: start-up sets the site file's values again."""
    if inv is None:
        return []
    if kind == "items":
        declared = {i.sku for i in inv.items} & set(changes.items_changed)
        hit = [n for n, e in rows if cast(InventoryItem, e).sku in declared]
    elif kind == "bins":
        changed = set(changes.bins_changed)
        declared_bins = {(b.item, p) for b, p in inv.bin_locations() if f"{b.item} at {format_location_path(p)}" in changed}
        hit = [n for n, e in rows if (cast(InventoryBin, e).item, paths.get(src[n])) in declared_bins]
    else:
        return []
    if not hit:
        return []
    lines = ", ".join(map(str, hit[:10])) + (" …" if len(hit) > 10 else "")
    return [f"{file}: {'line' if len(hit) == 1 else 'lines'} {lines} changed what the site file declares; start-up applies the site file's values again: change them there"]


# -- export -------------------------------------------------------------------------------------


def export_entries(conn: Connection, kind: str) -> list[CsvEntry]:
    """The catalog's entries of ``kind`` as the CSV formats hold them, sorted."""
    if kind not in INVENTORY_CSV_KINDS:
        raise ValueError(f"kind must be one of {', '.join(INVENTORY_CSV_KINDS)}, not {kind!r}")
    cat = load(conn)
    if kind == "items":
        return [InventoryItem.model_construct(sku=sku, **{k: r[k] for k in ("name", "category", "unit", "pack_size", "unit_weight_g", "critical")})
                for sku, r in sorted(cat.items.items())]  # fmt: skip
    if kind == "locations":
        return [InventoryLocationRow.model_construct(path=format_location_path(p), kind=cast(LocationKind, k)) for p, (_, k) in sorted(cat.locations.items())]
    index = LocationIndex(cat.locations)
    out: list[tuple[tuple[tuple[str, ...], str], CsvEntry]] = []
    for (item_id, loc_id), r in cat.bins.items():
        sku, path = cat.item_sku[item_id], cat.location_path[loc_id]
        ref = format_location_path(path)
        if index.resolve(ref)[0] != path:  # another location's path ends the same way: the whole path
            ref = "/" + ref
        values = {f: r[col] for f, col in BIN_COLUMNS.items()}
        out.append(((path, sku), InventoryBin.model_construct(item=sku, location=ref, **values)))
    return [e for _, e in sorted(out, key=lambda x: x[0])]


def export_csv(engine: Engine, kind: str) -> str:
    """The catalog's ``kind`` (items, locations, bins) as a CSV file (header and rows)."""
    with engine.connect() as conn:
        return format_inventory_csv(kind, export_entries(conn, kind))


__all__ = ["CsvImportError", "ImportResult", "export_csv", "export_entries", "import_csv"]
