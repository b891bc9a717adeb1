"""The site file's inventory into the state database (inventory/setup.py), on SQLite and
PostgreSQL: created at the first start, unchanged by the next ones, changed where the file
changes, and what the file no longer declares kept (with its stock history) and reported."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select

from eqmon import db
from eqmon.config import Inventory, Site, load_site, parse_site
from eqmon.db.engine import create
from eqmon.db.schema import inventory_bins, inventory_items, inventory_locations
from inventory.catalog import Catalog
from inventory.ledger import Ledger
from inventory.setup import apply_site_inventory
from tests.sitefiles import EXAMPLE


@pytest.fixture
def engine(state_db: str) -> Iterator[Engine]:
    e = create(state_db)
    try:
        db.upgrade(e)
        yield e
    finally:
        e.dispose()


def tables(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {t.name: sorted(tuple(r) for r in conn.execute(select(t))) for t in (inventory_items, inventory_locations, inventory_bins)}


def example() -> Inventory:
    inv = load_site(EXAMPLE).inventory
    assert inv is not None
    return inv


def edited(**changes: str) -> Inventory:
    """The example's inventory with its text changed (old=new, by position of the keyword)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    for old, new in changes.values():
        assert old in text, old
        text = text.replace(old, new, 1)
    site: Site = parse_site(text, str(EXAMPLE))
    assert site.inventory is not None
    return site.inventory


def test_first_start_creates_the_catalog_and_the_next_changes_nothing(engine: Engine) -> None:
    first = apply_site_inventory(engine, example())
    assert (len(first.items_added), len(first.locations_added), len(first.bins_added)) == (3, 8, 3)
    assert first.summary() == "inventory: items 3 added; locations 8 added; bins 3 added"
    cat = Catalog(engine)
    gloves = cat.item("GLV-NIT-M")
    assert gloves is not None and (gloves.pack_size, gloves.unit_weight_g, gloves.critical) == (100, 5.6, True)
    (b,) = [b for b in cat.bins() if b.item_id == gloves.id]
    assert (b.min_qty, b.reorder_point, b.par, b.reorder_qty, b.lead_time_s, b.tare_g, b.shelf_device_id) == (
        50, 150, 500, 400, 1800.0, 410.0, "shelf-gloves")  # fmt: skip
    room = cat.location(b.location_id)
    assert room is not None and (room.kind, room.name) == ("bin", "A1")
    before = tables(engine)
    again = apply_site_inventory(engine, example())
    assert not again.changed_anything and again.summary() == "inventory: up to date"
    assert (again.items_kept, again.locations_kept, again.bins_kept) == ([], [], [])
    assert tables(engine) == before


def test_a_changed_par_level_and_item_are_updated_in_place(engine: Engine) -> None:
    apply_site_inventory(engine, example())
    ids = {k: [r[0] for r in v] for k, v in tables(engine).items()}
    changes = apply_site_inventory(engine, edited(
        par=("reorder_point: 150, par: 500", "reorder_point: 150, par: 600"),
        pack=("pack_size: 50, unit_weight_g: 3.2", "pack_size: 40, unit_weight_g: 3.2"),
        kind=("- {name: A2, kind: bin}", "- {name: A2, kind: bin}\n                    - {name: A3, kind: bin}"),
    ))  # fmt: skip
    assert changes.summary() == "inventory: items 1 changed; locations 1 added; bins 1 changed"
    assert changes.items_changed == ["MSK-SURG"]
    assert changes.bins_changed == ["GLV-NIT-M at Main building/Floor 4/Ward 4B supply room/Shelf A/A1"]
    assert changes.locations_added == ["Main building/Floor 4/Ward 4B supply room/Shelf A/A3"]
    cat = Catalog(engine)
    gloves = cat.item("GLV-NIT-M")
    assert gloves is not None
    assert [b.par for b in cat.bins() if b.item_id == gloves.id] == [600]
    assert cat.item("MSK-SURG").pack_size == 40  # type: ignore[union-attr]
    # same rows (ids), changed in place
    after = {k: [r[0] for r in v] for k, v in tables(engine).items()}
    assert after["inventory_items"] == ids["inventory_items"] and after["inventory_bins"] == ids["inventory_bins"]


def test_what_the_file_no_longer_declares_is_kept_and_reported(engine: Engine) -> None:
    apply_site_inventory(engine, example())
    cat = Catalog(engine)
    sheets = cat.item("LIN-SHEET")
    assert sheets is not None
    (bin_,) = [b for b in cat.bins() if b.item_id == sheets.id]
    Ledger(engine).receive(sheets.id, bin_.location_id, 30, who="test", key="k1")
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("    - {sku: LIN-SHEET, name: bed sheet, category: linen, unit: each, pack_size: 10, unit_weight_g: 720}\n", "")
    start = text.index("    - {item: LIN-SHEET")
    text = text[:start] + text[text.index("  # More from CSV", start):]
    site = parse_site(text, str(EXAMPLE))
    changes = apply_site_inventory(engine, site.inventory)
    assert not changes.changed_anything
    assert changes.items_kept == ["LIN-SHEET"]
    assert changes.bins_kept == ["LIN-SHEET at Main building/Floor 4/Ward 4B linen bay/Linen rack"]
    assert changes.kept_lines() == [
        "inventory: 1 items in the state database are not in the site file (kept, with their stock history): LIN-SHEET",
        "inventory: 1 bins in the state database are not in the site file (kept, with their stock history): LIN-SHEET at Main building/Floor 4/Ward 4B linen bay/Linen rack",
    ]
    assert cat.item("LIN-SHEET") is not None
    assert Ledger(engine).on_hand(sheets.id, bin_.location_id) == 30
    assert Ledger(engine).verify() == []


def test_a_shelf_the_file_gives_to_a_bin_is_taken_from_a_bin_only_the_database_knows(engine: Engine) -> None:
    apply_site_inventory(engine, example())
    cat = Catalog(engine)
    paper = cat.add_item("PAPER", "paper ream", unit_weight_g=2270.0)
    room = cat.children(None)[0]
    cat.set_bin(paper.id, room.id, par=10, shelf_device_id="shelf-linens")  # say, by `eqmon inventory import`
    changes = apply_site_inventory(engine, example())
    assert changes.notes == [
        "shelf 'shelf-linens' now weighs the bin of LIN-SHEET at Main building/Floor 4/Ward 4B linen bay/Linen rack, "
        "no longer that of PAPER at Main building"
    ]
    shelves = {b.item_id: b.shelf_device_id for b in cat.bins()}
    assert shelves[paper.id] is None
    assert changes.bins_changed == ["PAPER at Main building"]
    assert apply_site_inventory(engine, example()).changed_anything is False


def test_no_inventory_section_changes_nothing(engine: Engine) -> None:
    changes = apply_site_inventory(engine, None)
    assert not changes.changed_anything and tables(engine) == {"inventory_items": [], "inventory_locations": [], "inventory_bins": []}
