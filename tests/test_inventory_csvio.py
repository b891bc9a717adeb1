"""CSV import and export of items, locations and bins (inventory/csvio.py), on SQLite and
PostgreSQL: every bad row reported by line and column, against the file and the database; a
file with any problem applies nothing (not even the site file's inventory applied before it in
the same transaction); export writes what import reads, and import(export(x)) == x
(hypothesis); the `eqmon inventory import|export` commands."""

from __future__ import annotations

import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, select, update

from eqmon import db
from eqmon.config import (
    InventoryBin,
    InventoryItem,
    InventoryLocationRow,
    Site,
    format_inventory_csv,
    format_location_path,
    load_site,
    read_inventory_csv,
)
from eqmon.db.engine import create
from eqmon.db.schema import inventory_bins, inventory_items, inventory_locations
from inventory.catalog import Catalog
from inventory.csvio import CsvImportError, export_csv, import_csv
from inventory.setup import apply_site_inventory
from tests.sitefiles import EXAMPLE

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(EXAMPLE)


def tables(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {t.name: sorted(tuple(r) for r in conn.execute(select(t))) for t in (inventory_items, inventory_locations, inventory_bins)}


def problems(exc: pytest.ExceptionInfo[CsvImportError]) -> list[str]:
    return exc.value.lines()


# -- all or nothing, every problem -----------------------------------------------------------


def test_every_bad_row_is_reported_and_nothing_applied(engine: Engine, site: Site) -> None:
    text = (
        "sku,name,category,pack_size,unit_weight_g,critical\n"
        "GOWN,isolation gown,PPE,10,120,false\n"         # good
        "CAP,bouffant cap,PPE,0,1.5,no\n"                 # line 3: pack_size
        "APRON,,PPE,100,-2,maybe\n"                       # line 4: name, unit_weight_g, critical
        "WIPES,disinfectant wipes,cleaning,12,,true\n"    # good
    )  # fmt: skip
    with pytest.raises(CsvImportError) as exc:
        import_csv(engine, "items", text, file="items.csv", site=site)
    assert problems(exc) == [
        "items.csv: line 3, column pack_size (D): expected greater than or equal to 1, got '0'",
        "items.csv: line 4, column name (B): a value is required",
        "items.csv: line 4, column unit_weight_g (E): expected greater than 0, got '-2'",
        "items.csv: line 4, column critical (F): expected a valid boolean, got 'maybe'",
    ]
    assert tables(engine) == {"inventory_items": [], "inventory_locations": [], "inventory_bins": []}


def test_rows_are_checked_against_the_database_and_nothing_is_applied(engine: Engine, site: Site) -> None:
    text = (
        "item,location,min,reorder_point,par,shelf\n"
        "GLV-NIT-M,Ward 4B linen bay,10,20,100,\n"                      # good: gloves in the linen bay too
        "NOPE,Ward 4B linen bay,1,2,3,\n"                               # line 3: item
        "MSK-SURG,Ward 9 supply room,1,2,3,\n"                          # line 4: location
        "MSK-SURG,Ward 4B linen bay,1,2,3,shelf-gloves\n"               # line 5: the gloves' shelf
        "MSK-SURG,Ward 4B supply room,1,2,3,fridge-1\n"                 # line 6: not a shelf
        "LIN-SHEET,Main building,1,2,3,\n"                              # good
        "LIN-SHEET,/Main building,1,2,3,\n"                             # line 8: the same bin again
    )  # fmt: skip
    with pytest.raises(CsvImportError) as exc:
        import_csv(engine, "bins", text, file="bins.csv", site=site)
    assert problems(exc) == [
        "bins.csv: line 3, column item (A): no item with SKU 'NOPE'",
        "bins.csv: line 4, column location (B): no location 'Ward 9 supply room'",
        "bins.csv: line 5, column shelf (F): shelf 'shelf-gloves' already weighs the bin of GLV-NIT-M at "
        "Main building/Floor 4/Ward 4B supply room/Shelf A/A1 (the state database): a shelf weighs one bin",
        "bins.csv: line 6, column shelf (F): device 'fridge-1' is not a smart shelf (an MQTT device of kind smart_shelf; it is a modbus medication_refrigerator)",
        "bins.csv: line 8, column location (B): a second bin of LIN-SHEET at Main building (first at bins.csv line 7)",
    ]
    # the site file's inventory, applied first in the same transaction, was rolled back too
    assert tables(engine) == {"inventory_items": [], "inventory_locations": [], "inventory_bins": []}


def test_a_good_file_is_applied_in_one_go(engine: Engine, site: Site) -> None:
    result = import_csv(engine, "locations", (
        "path,kind\n"
        "Main building/Floor 4/Ward 4B supply room/Cart 1,bin\n"   # its parent is the site file's
        "Annex/Floor 1/Store,room\n"                                # children before their parents: fine
        "Annex,building\n"
        "Annex/Floor 1,floor\n"
    ), file="locations.csv", site=site)  # fmt: skip
    assert result.site_changes is not None and result.site_changes.summary() == "inventory: items 3 added; locations 8 added; bins 3 added"
    assert result.summary() == "locations.csv: 4 locations applied: 4 added, 0 changed, 0 unchanged"
    result = import_csv(engine, "items", "sku,name,pack_size,unit_weight_g\nGOWN,isolation gown,10,120\nMSK-SURG,surgical masks,40,3.2\n",
                        file="items.csv", site=site)  # fmt: skip
    assert result.summary() == "items.csv: 2 items applied: 1 added, 1 changed, 0 unchanged"
    assert result.warnings == ["items.csv: line 3 changed what the site file declares; start-up applies the site file's values again: change them there"]
    cat = Catalog(engine)
    masks = cat.item("MSK-SURG")
    # columns the file leaves out keep their value (critical, category)
    assert masks is not None and (masks.pack_size, masks.critical, masks.category) == (40, True, "PPE")
    result = import_csv(engine, "bins", "item,location,par,lead_time,shelf\nGOWN,Store,40,1d,\nGOWN,Cart 1,20,2h,\n", file="bins.csv", site=site)
    assert result.summary() == "bins.csv: 2 bins applied: 2 added, 0 changed, 0 unchanged"
    gown = cat.item("GOWN")
    assert gown is not None
    assert sorted((b.par, b.lead_time_s) for b in cat.bins() if b.item_id == gown.id) == [(20, 7200.0), (40, 86400.0)]


def test_a_partial_bins_file_keeps_the_levels_it_leaves_out_and_they_must_still_fit(engine: Engine, site: Site) -> None:
    apply_site_inventory(engine, site.inventory)
    with pytest.raises(CsvImportError) as exc:  # gloves: min 50, reorder point 150
        import_csv(engine, "bins", "item,location,par\nGLV-NIT-M,Shelf A/A1,100\n", file="b.csv", site=site)
    assert problems(exc) == [
        "b.csv: line 2, column par (C): with the bin's min 50, reorder_point 150 (not in this file) the levels would be "
        "min 50, reorder_point 150, par 100: need min <= reorder_point <= par"
    ]
    result = import_csv(engine, "bins", "item,location,par\nGLV-NIT-M,Shelf A/A1,600\n", file="b.csv", site=site)
    assert result.summary() == "b.csv: 1 bins applied: 0 added, 1 changed, 0 unchanged"
    assert result.warnings == ["b.csv: line 2 changed what the site file declares; start-up applies the site file's values again: change them there"]


def test_a_dry_run_checks_against_the_database_and_applies_nothing(engine: Engine, site: Site) -> None:
    result = import_csv(engine, "items", "sku,name\nGOWN,gown\n", file="i.csv", site=site, dry_run=True)
    assert result.summary() == "i.csv: 1 items checked, nothing applied (dry run): 1 added, 0 changed, 0 unchanged"
    assert tables(engine)["inventory_items"] == []


# -- export, round trip ------------------------------------------------------------------------


def test_export_then_import_changes_nothing(engine: Engine, site: Site) -> None:
    apply_site_inventory(engine, site.inventory)
    import_csv(engine, "locations", "path,kind\nAnnex,building\nAnnex/Shelf A,shelf\nA1,bin\n", file="l.csv", site=site)
    import_csv(engine, "items", "sku,name,unit_weight_g,critical\nGOWN,\"gown, isolation\",120.25,true\n", file="i.csv", site=site)
    import_csv(engine, "bins", "item,location,par,lead_time,tare_g\nGOWN,/A1,40,90m,0.5\nGOWN,Annex/Shelf A,5,0,0\n", file="b.csv", site=site)
    before = tables(engine)
    exported = {k: export_csv(engine, k) for k in ("items", "locations", "bins")}
    assert exported["items"].splitlines()[0] == "sku,name,category,unit,pack_size,unit_weight_g,critical"
    assert 'GOWN,"gown, isolation",,each,1,120.25,true' in exported["items"].splitlines()
    # the path 'A1' ends another ('…/Shelf A/A1'): the export writes it from the root
    assert "GOWN,/A1,0,0,40,0,90m,0.5,\n" in exported["bins"]
    assert "GOWN,Annex/Shelf A,0,0,5,0,0s,0,\n" in exported["bins"]
    for kind, text in exported.items():
        result = import_csv(engine, kind, text, file=f"{kind}.csv", site=site)
        assert not result.changes.changed_anything, kind
    assert tables(engine) == before
    assert {k: export_csv(engine, k) for k in exported} == exported


skus = st.text(string.ascii_uppercase + string.digits + "-_./", min_size=1, max_size=12)
names = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="/"), min_size=1, max_size=20).map(str.strip).filter(bool)
floats = st.floats(min_value=0.001, max_value=1e6, allow_nan=False, allow_infinity=False)
items = st.builds(
    InventoryItem,
    sku=skus, name=names, category=st.sampled_from(["", "PPE", "linen, bed"]), unit=st.sampled_from(["each", "pair", "ream"]),
    pack_size=st.integers(1, 1000), unit_weight_g=st.none() | floats, critical=st.booleans(),
)  # fmt: skip


@st.composite
def catalogs(draw: st.DrawFn) -> tuple[list[InventoryItem], list[tuple[tuple[str, ...], Any]], list[InventoryBin]]:
    its = draw(st.lists(items, min_size=1, max_size=6, unique_by=lambda i: i.sku))
    kinds = ("building", "floor", "room", "shelf", "bin")
    paths: dict[tuple[str, ...], str] = {}
    for _ in range(draw(st.integers(1, 8))):
        parent = draw(st.sampled_from([(), *paths])) if paths else ()
        depth = kinds.index(paths[parent]) + 1 if parent else 0
        if depth >= len(kinds):
            continue
        paths.setdefault((*parent, draw(names)), draw(st.sampled_from(kinds[depth:])))
    bins = []
    for item in its:
        for path in draw(st.lists(st.sampled_from(sorted(paths)), max_size=3, unique=True)):
            low = draw(st.integers(0, 50))
            rop = draw(st.integers(low, 100))
            bins.append(InventoryBin(
                item=item.sku, location="/" + format_location_path(path), min=low, reorder_point=rop,
                par=draw(st.integers(rop, 1000)), reorder_qty=draw(st.integers(0, 500)),
                lead_time=draw(st.sampled_from([0, 0.5, 60, 5400, 86400, 3725.25])), tare_g=draw(st.floats(0, 5e4)),
            ))  # fmt: skip
    return its, sorted(paths.items()), bins


def test_the_formats_read_back_what_they_write() -> None:
    @given(st.lists(items, max_size=5))
    def check(entries: list[InventoryItem]) -> None:
        table = read_inventory_csv(format_inventory_csv("items", entries), "items")
        assert not table.issues and [e for _, e in table.rows] == entries

    check()


def test_import_of_an_export_is_the_same_catalog(tmp_path: Path) -> None:
    """import(export(x)) == x for generated catalogs (SQLite: many small databases' worth)."""
    engine = create(f"sqlite:///{tmp_path / 'state.sqlite'}")
    db.upgrade(engine)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(catalogs())
    def check(cat: tuple[list[InventoryItem], list[tuple[tuple[str, ...], Any]], list[InventoryBin]]) -> None:
        its, locs, bins = cat
        with engine.begin() as conn:
            conn.execute(delete(inventory_bins))
            conn.execute(update(inventory_locations).values(parent_id=None))
            for t in (inventory_locations, inventory_items):
                conn.execute(delete(t))
        loc_csv = format_inventory_csv("locations", [InventoryLocationRow(path=format_location_path(p), kind=k) for p, k in locs])
        import_csv(engine, "items", format_inventory_csv("items", its), file="i.csv")
        import_csv(engine, "locations", loc_csv, file="l.csv")
        import_csv(engine, "bins", format_inventory_csv("bins", bins), file="b.csv")
        exported = {k: export_csv(engine, k) for k in ("items", "locations", "bins")}
        assert read_rows(exported["items"], "items") == sorted(its, key=lambda i: i.sku)
        assert [(r.parts, r.kind) for r in read_rows(exported["locations"], "locations")] == locs
        got = {(b.item, b.location.lstrip("/")): b.model_copy(update={"location": ""}) for b in read_rows(exported["bins"], "bins")}
        assert got == {(b.item, b.location.lstrip("/")): b.model_copy(update={"location": ""}) for b in bins}
        for kind, text in exported.items():  # and importing the export changes nothing
            assert not import_csv(engine, kind, text, file="x.csv").changes.changed_anything

    try:
        check()
    finally:
        engine.dispose()


def read_rows(text: str, kind: str) -> list[Any]:
    table = read_inventory_csv(text, kind)
    assert not table.issues, table.issues
    return [e for _, e in table.rows]


# -- the commands -----------------------------------------------------------------------------


def eqmon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eqmon_app.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_the_inventory_import_and_export_commands(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    common = ["--config", str(EXAMPLE), "--data-dir", data]
    r = eqmon("inventory", "export", "--kind", "items", *common)
    assert r.returncode == 1 and "no state database at" in r.stderr
    assert eqmon("db", "upgrade", *common).returncode == 0
    bad = tmp_path / "items.csv"
    bad.write_text("sku,name,pack_size\nGOWN,isolation gown,ten\nCAP,,1\n", encoding="utf-8")
    r = eqmon("inventory", "import", str(bad), "--kind", "items", *common)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.splitlines() == [
        f"{bad}: line 2, column pack_size (C): expected a valid integer, got 'ten'",
        f"{bad}: line 3, column name (B): a value is required",
        f"{bad}: 2 problems: nothing applied",
    ]
    bad.write_text("sku,name,pack_size\nGOWN,isolation gown,10\nCAP,bouffant cap,100\n", encoding="utf-8")
    r = eqmon("inventory", "import", str(bad), "--kind", "items", *common)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.splitlines() == [
        f"{EXAMPLE}: inventory: items 3 added; locations 8 added; bins 3 added (the site file's, as at start-up)",
        f"{bad}: 2 items applied: 2 added, 0 changed, 0 unchanged",
    ]
    out = tmp_path / "export.csv"
    r = eqmon("inventory", "export", "--kind", "items", "-o", str(out), *common)
    assert (r.returncode, r.stdout) == (0, f"{out}: 5 items\n")
    assert out.read_text().splitlines()[:2] == ["sku,name,category,unit,pack_size,unit_weight_g,critical", "CAP,bouffant cap,,each,100,,false"]
    r = eqmon("inventory", "export", "--kind", "bins", *common)
    assert r.returncode == 0 and r.stdout.splitlines()[1] == (
        "LIN-SHEET,Main building/Floor 4/Ward 4B linen bay/Linen rack,5,15,50,40,30m,1500,shelf-linens"
    )
    r = eqmon("inventory", "import", str(out), "--kind", "items", "--dry-run", *common)
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == f"{out}: 5 items checked, nothing applied (dry run): 0 added, 0 changed, 5 unchanged"
