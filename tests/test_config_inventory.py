"""The site file's `inventory:` section: items, locations (a tree), bins with their par levels and
smart shelf, and CSV files it imports. Every problem names the file, the path inside it and the
line (a CSV file's: its line and column too); check-config prints them (exit 2) or a summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eqmon.config import (
    ConfigError,
    ConfigIssue,
    format_duration,
    format_inventory_csv,
    load_site,
    parse_duration,
    parse_site,
    read_inventory_csv,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "site.yaml"

HEAD = """\
site: {name: Ward 4B}
devices:
  - {id: fridge-1, kind: medication_refrigerator, protocol: modbus, host: h, registers: [{name: t, address: 0}]}
  - {id: shelf-1, kind: smart_shelf, protocol: mqtt, topic: s/1, fields: [{metric: weight_g, path: weight_g}]}
  - {id: shelf-2, kind: smart_shelf, protocol: mqtt, topic: s/2, fields: [{metric: weight_g, path: weight_g}]}
  - {id: env-1, kind: room_environment, protocol: mqtt, topic: e/1, fields: [{metric: t, path: t}]}
inventory:
  items:
    - {sku: GLV-M, name: exam gloves M, pack_size: 100, unit_weight_g: 5.6, critical: true}
    - {sku: MSK, name: surgical masks, pack_size: 50, unit_weight_g: 3.2}
    - {sku: PAPER, name: paper ream, unit: ream}
  locations:
    - name: Main
      kind: building
      children:
        - name: Floor 4
          kind: floor
          children:
            - name: Ward 4B supply room
              kind: room
              children: [{name: Shelf A, kind: shelf}]
            - name: Ward 4C supply room
              kind: room
              children: [{name: Shelf A, kind: shelf}]
"""  # line 24 is the last


def site_with(bins: str, extra: str = "") -> str:
    return HEAD + extra + "  bins:\n" + bins


def errors(text: str, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_site(text, "site.yaml", base_dir=base_dir)
    return exc.value.render().splitlines()


def test_the_example_declares_its_three_shelves() -> None:
    site = load_site(EXAMPLE)
    inv = site.inventory
    assert inv is not None
    assert [i.sku for i in inv.items] == ["GLV-NIT-M", "MSK-SURG", "LIN-SHEET"]
    by_shelf = {b.shelf: (b, path) for b, path in inv.bin_locations()}
    gloves, path = by_shelf["shelf-gloves"]
    assert path == ("Main building", "Floor 4", "Ward 4B supply room", "Shelf A", "A1")
    assert (gloves.min, gloves.reorder_point, gloves.par, gloves.lead_time, gloves.tare_g) == (50, 150, 500, 1800.0, 410.0)
    # the simulators weigh what the items and bins say
    for d in site.mqtt_devices():
        b, _ = by_shelf[d.id]
        item = next(i for i in inv.items if i.sku == b.item)
        assert d.simulator is not None
        params = d.simulator.param_values()
        assert (params["unit_weight_g"], params["tare_g"], params["par"]) == (item.unit_weight_g, b.tare_g, b.par)
    assert inv.summary() == "inventory: 3 items (2 critical), 8 locations (2 supply rooms), 3 bins (3 on smart shelves)"


def test_a_valid_inventory() -> None:
    site = parse_site(site_with("""\
    - {item: GLV-M, location: Ward 4B supply room/Shelf A, min: 50, reorder_point: 150, par: 500, lead_time: 2h, tare_g: 410, shelf: shelf-1}
    - {item: GLV-M, location: /Main/Floor 4/Ward 4C supply room/Shelf A, par: 300}
    - {item: PAPER, location: Ward 4B supply room, par: 10, reorder_qty: 5}
"""), "site.yaml")  # fmt: skip
    assert site.inventory is not None
    paths = [p for _, p in site.inventory.bin_locations()]
    assert paths == [
        ("Main", "Floor 4", "Ward 4B supply room", "Shelf A"),
        ("Main", "Floor 4", "Ward 4C supply room", "Shelf A"),
        ("Main", "Floor 4", "Ward 4B supply room"),
    ]
    assert site.inventory.bins[0].lead_time == 7200.0


@pytest.mark.parametrize(
    ("bins", "expected"),
    [
        ("    - {item: NOPE, location: Ward 4B supply room, par: 10}\n",
         "inventory.bins[0].item: no item with SKU 'NOPE' (line 26)"),
        ("    - {item: MSK, location: Ward 9 supply room, par: 10}\n",
         "inventory.bins[0].location: no location 'Ward 9 supply room' (line 26)"),
        ("    - {item: MSK, location: Shelf A, par: 10}\n",
         "inventory.bins[0].location: 'Shelf A' names 2 locations (Main/Floor 4/Ward 4B supply room/Shelf A, "
         "Main/Floor 4/Ward 4C supply room/Shelf A): write more of its path (line 26)"),
        ("    - {item: MSK, location: /Floor 4, par: 10}\n",
         "inventory.bins[0].location: no location 'Floor 4' (line 26)"),
        ("    - {item: MSK, location: Ward 4B supply room, par: 10}\n    - {item: MSK, location: Main/Floor 4/Ward 4B supply room, par: 20}\n",
         "inventory.bins[1].location: a second bin of MSK at Main/Floor 4/Ward 4B supply room (first at inventory.bins[0]) (line 27)"),
        ("    - {item: MSK, location: Ward 4B supply room, min: 20, reorder_point: 10, par: 30}\n",
         "inventory.bins[0].reorder_point: reorder_point (10) is below min (20): need min <= reorder_point <= par (line 26)"),
        ("    - {item: MSK, location: Ward 4B supply room, reorder_point: 40, par: 30}\n",
         "inventory.bins[0].par: par (30) is below reorder_point (40): need min <= reorder_point <= par (line 26)"),
        ("    - {item: MSK, location: Ward 4B supply room, par: -1}\n",
         "inventory.bins[0].par: expected greater than or equal to 0, got -1 (line 26)"),
        ("    - {item: MSK, location: Ward 4B supply room}\n",
         "inventory.bins[0].par: required key is missing (line 26)"),
        ("    - {item: MSK, location: Ward 4B supply room, par: 10, lead_time: 2y}\n",
         "inventory.bins[0].lead_time: expected a duration such as 30s, 5m or 1h (line 26)"),
        ("    - {item: MSK, location: Ward 4B supply room, par: 10, shelf: shelf-9}\n",
         "inventory.bins[0].shelf: no device with id 'shelf-9' (line 26)"),
        ("    - {item: MSK, location: Ward 4B supply room, par: 10, shelf: fridge-1}\n",
         "inventory.bins[0].shelf: device 'fridge-1' is not a smart shelf (an MQTT device of kind smart_shelf; it is a modbus medication_refrigerator) (line 26)"),
        ("    - {item: MSK, location: Ward 4B supply room, par: 10, shelf: env-1}\n",
         "inventory.bins[0].shelf: device 'env-1' is not a smart shelf"),
        ("    - {item: PAPER, location: Ward 4B supply room, par: 10, shelf: shelf-1}\n",
         "inventory.bins[0].shelf: item PAPER has no unit_weight_g: a smart shelf counts its bin by weight (line 26)"),
        ("    - {item: MSK, location: Ward 4B supply room, par: 10, shelf: shelf-1}\n    - {item: GLV-M, location: Ward 4B supply room, par: 10, shelf: shelf-1}\n",
         "inventory.bins[1].shelf: shelf 'shelf-1' already weighs the bin of MSK at Main/Floor 4/Ward 4B supply room (inventory.bins[0]): a shelf weighs one bin (line 27)"),
        ("    - {item: MSK, location: Ward 4B supply room, par: 10, colour: red}\n",
         "inventory.bins[0].colour: unknown key (line 26)"),
    ],
)  # fmt: skip
def test_bad_bins_name_their_path_and_line(bins: str, expected: str) -> None:
    lines = errors(site_with(bins))
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"site.yaml: {expected}"), lines[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("pack_size: 100", "pack_size: 0"), "inventory.items[0].pack_size: expected greater than or equal to 1, got 0 (line 9)"),
        (("sku: MSK,", "sku: GLV-M,"), "inventory.items[1].sku: duplicate SKU 'GLV-M' (first at inventory.items[0]) (line 10)"),
        (("sku: MSK,", "sku: M S K,"), "inventory.items[1].sku: expected a SKU without spaces, got 'M S K' (line 10)"),
        (("unit_weight_g: 3.2", "unit_weight_g: 0"), "inventory.items[1].unit_weight_g: expected greater than 0, got 0 (line 10)"),
        (("unit_weight_g: 3.2", "unit_weight_g: .nan"), "inventory.items[1].unit_weight_g: expected a finite number"),
        (("name: Ward 4C supply room", "name: Ward 4B supply room"),
         "inventory.locations[0].children[0].children[1].name: duplicate location 'Main/Floor 4/Ward 4B supply room' "
         "(first at inventory.locations[0].children[0].children[0]) (line 22)"),
        (("name: Ward 4C supply room", "name: Ward 4C/4D"),
         "inventory.locations[0].children[0].children[1].name: a location's name may not hold '/'"),
        (("kind: floor", "kind: shelf"),
         "inventory.locations[0].children[0].children[0].kind: a room cannot be inside a shelf (Main/Floor 4): building > floor > room > shelf > bin (line 20)"),
        (("kind: building", "kind: cupboard"), "inventory.locations[0].kind: expected one of 'building', 'floor', 'room', 'shelf' or 'bin', got 'cupboard' (line 14)"),
    ],
)  # fmt: skip
def test_bad_items_and_locations_name_their_path_and_line(change: tuple[str, str], expected: str) -> None:
    text = site_with("    - {item: MSK, location: Main, par: 1}\n").replace(*change, 1)
    lines = errors(text)
    assert any(line.startswith(f"site.yaml: {expected}") for line in lines), lines


def test_every_inventory_problem_is_reported() -> None:
    lines = errors(site_with("""\
    - {item: NOPE, location: Ward 4B supply room, par: 10}
    - {item: MSK, location: Nowhere, par: 10}
    - {item: PAPER, location: Ward 4C supply room, par: 10, shelf: shelf-2}
"""))  # fmt: skip
    assert [line.split(":")[1].strip() for line in lines] == ["inventory.bins[0].item", "inventory.bins[1].location", "inventory.bins[2].shelf"]


def test_a_shelf_whose_simulator_weighs_other_pieces_is_a_warning() -> None:
    text = HEAD.replace(
        "topic: s/1, fields: [{metric: weight_g, path: weight_g}]}",
        "topic: s/1, fields: [{metric: weight_g, path: weight_g}], simulator: {model: smart_shelf, params: {item: gloves, unit_weight_g: 5.2, tare_g: 400, capacity: 600, par: 500}}}",
    ) + "  bins:\n    - {item: GLV-M, location: Ward 4B supply room, par: 500, tare_g: 410, shelf: shelf-1}\n"
    found: list[ConfigIssue] = []
    parse_site(text, "site.yaml", warnings=found)
    assert [w.render("site.yaml", warning=True) for w in found] == [
        "site.yaml: warning: inventory.bins[0].shelf: the simulator of shelf-1 weighs pieces of 5.2 g, item GLV-M says 5.6 g: its simulated counts will be off (line 26)",
        "site.yaml: warning: inventory.bins[0].tare_g: the simulator of shelf-1 has a bin of 400 g, this bin says 410 g: its simulated counts will be off (line 26)",
    ]


# -- CSV files the site file imports ----------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


IMPORTS = "  import: {items: supplies/items.csv, locations: supplies/locations.csv, bins: supplies/bins.csv}\n"


def test_imported_csv_files_join_the_site_file(tmp_path: Path) -> None:
    write(tmp_path / "supplies/items.csv", "sku,name,category,pack_size,unit_weight_g\nGOWN,isolation gown,PPE,10,120\n")
    write(tmp_path / "supplies/locations.csv", "path,kind\nMain/Floor 4/Ward 4B supply room/Shelf B,shelf\n")
    write(tmp_path / "supplies/bins.csv", "item,location,min,reorder_point,par,lead_time,shelf\nGOWN,Ward 4B supply room/Shelf B,5,10,40,1d,shelf-2\n")
    site_file = write(tmp_path / "site.yaml", site_with("    - {item: MSK, location: Ward 4B supply room/Shelf A, par: 100, shelf: shelf-1}\n", ) + IMPORTS)
    site = load_site(site_file)
    inv = site.inventory
    assert inv is not None
    assert [i.sku for i in inv.items] == ["GLV-M", "MSK", "PAPER", "GOWN"]
    assert ("Main", "Floor 4", "Ward 4B supply room", "Shelf B") in dict(inv.location_paths())
    assert [(b.item, b.shelf, b.lead_time, p[-1]) for b, p in inv.bin_locations()] == [
        ("MSK", "shelf-1", 0.0, "Shelf A"), ("GOWN", "shelf-2", 86400.0, "Shelf B"),
    ]  # fmt: skip
    assert inv.summary() == "inventory: 4 items (1 critical), 7 locations (2 supply rooms), 2 bins (2 on smart shelves)"


def test_problems_of_imported_csv_files_name_their_line_and_column(tmp_path: Path) -> None:
    write(tmp_path / "supplies/items.csv", "sku,name,pack_size,critical\nGOWN,isolation gown,0,maybe\n\nCAP,,x,true\n")
    write(tmp_path / "supplies/locations.csv", "path,kind\nMain/Floor 4/Ward 4B supply room/Shelf B,shelf\n")
    write(tmp_path / "supplies/bins.csv", "item,location,par\nMSK,Shelf B,10\n")
    site_file = write(tmp_path / "site.yaml", site_with("    - {item: MSK, location: Main, par: 1}\n") + IMPORTS)
    with pytest.raises(ConfigError) as exc:
        load_site(site_file)
    f = str(site_file)
    assert exc.value.render().splitlines() == [
        f"{f}: inventory.import.items: supplies/items.csv: line 2, column pack_size (C): expected greater than or equal to 1, got '0' (line 27)",
        f"{f}: inventory.import.items: supplies/items.csv: line 2, column critical (D): expected a valid boolean, got 'maybe' (line 27)",
        f"{f}: inventory.import.items: supplies/items.csv: line 4, column name (B): a value is required (line 27)",
        f"{f}: inventory.import.items: supplies/items.csv: line 4, column pack_size (C): expected a valid integer, got 'x' (line 27)",
    ]
    # the rows fixed: the cross-checks see the CSV entries, with their lines
    write(tmp_path / "supplies/items.csv", "sku,name\nGOWN,isolation gown\nMSK,masks again\n")
    write(tmp_path / "supplies/bins.csv", "item,location,par\nGOWN,Shelf B,10\nGOWN,Nowhere,5\n")
    with pytest.raises(ConfigError) as exc:
        load_site(site_file)
    assert exc.value.render().splitlines() == [
        f"{f}: inventory.import.items: supplies/items.csv: line 3, column sku: duplicate SKU 'MSK' (first at inventory.items[1]) (line 27)",
        f"{f}: inventory.import.bins: supplies/bins.csv: line 3, column location: no location 'Nowhere' (line 27)",
    ]


def test_a_missing_csv_file_is_named(tmp_path: Path) -> None:
    site_file = write(tmp_path / "site.yaml", site_with("    - {item: MSK, location: Main, par: 1}\n") + "  import: {items: nothere.csv}\n")
    with pytest.raises(ConfigError) as exc:
        load_site(site_file)
    assert exc.value.render() == f"{site_file}: inventory.import.items: nothere.csv: cannot read: No such file or directory (line 27)"


def test_check_config_prints_the_summary_or_every_problem(tmp_path: Path) -> None:
    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "eqmon_app.cli", "check-config", str(path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip

    good = write(tmp_path / "good.yaml", site_with("    - {item: GLV-M, location: Ward 4B supply room, par: 500, shelf: shelf-1}\n"))
    r = check(good)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.splitlines() == ["inventory: 3 items (1 critical), 6 locations (2 supply rooms), 1 bin (1 on smart shelves)", "ok"]
    bad = write(tmp_path / "bad.yaml", site_with("    - {item: NOPE, location: Ward 4B supply room, par: 5}\n    - {item: MSK, location: Shelf A, par: 5}\n"))
    r = check(bad)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.splitlines() == [
        f"{bad}: inventory.bins[0].item: no item with SKU 'NOPE' (line 26)",
        f"{bad}: inventory.bins[1].location: 'Shelf A' names 2 locations (Main/Floor 4/Ward 4B supply room/Shelf A, Main/Floor 4/Ward 4C supply room/Shelf A): write more of its path (line 27)",
    ]


# -- the CSV formats ----------------------------------------------------------------------------


def test_csv_header_problems() -> None:
    t = read_inventory_csv("sku,colour,sku\n", "items")
    assert [i.render("f.csv") for i in t.issues] == [
        "f.csv: line 1, column colour (B): unknown column; the columns of items are sku, name, category, unit, pack_size, unit_weight_g, critical",
        "f.csv: line 1, column sku (C): this column appears twice",
        "f.csv: line 1: required column 'name' is missing",
    ]
    assert [i.render("f.csv") for i in read_inventory_csv("", "bins").issues] == [
        "f.csv: line 1: no header row: expected the columns item, location, min, reorder_point, par, reorder_qty, lead_time, tare_g, shelf"
    ]
    t = read_inventory_csv('sku,name\n"GLV,"unterminated\n', "items")
    assert [i.render("f.csv") for i in t.issues] == ["f.csv: line 2: not valid CSV: ',' expected after '\"'"]


def test_csv_lines_count_quoted_line_breaks_and_a_bom() -> None:
    t = read_inventory_csv('\ufeffsku,name,pack_size\nA,"two\nlines",1\nB,b,0\n', "items")
    assert [(i.line, i.column) for i in t.issues] == [(4, "pack_size")]
    assert [(line, e.sku) for line, e in t.rows] == [(2, "A")]  # type: ignore[union-attr]


@pytest.mark.parametrize("seconds", [0.0, 1.0, 45.0, 90.0, 1800.0, 7200.0, 86400.0, 3 * 86400.0, 0.25, 1e-05, 3725.5])
def test_durations_round_trip(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_format_reads_back() -> None:
    t = read_inventory_csv("sku,name,unit_weight_g,critical\nA,\"gloves, nitrile\",5.6,yes\nB,b,,\n", "items")
    assert not t.issues
    again = read_inventory_csv(format_inventory_csv("items", [e for _, e in t.rows]), "items")
    assert [e for _, e in again.rows] == [e for _, e in t.rows]
