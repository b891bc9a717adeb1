"""Stock status, consumption rate and forecast (inventory/status.py, inventory/usage.py), stock
conditions (inventory/stock_alerts.py) and the pick list (inventory/picklist.py), on SQLite and
PostgreSQL (``state_db``), with deterministic ledger histories on a fake clock (``at=``)."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from eqmon import db
from eqmon.db import migrate
from eqmon.db.schema import inventory_on_hand
from eqmon.domain import Severity
from eqmon_app.cli import main
from inventory import usage
from inventory.catalog import Catalog
from inventory.errors import IdempotencyConflict, InventoryError
from inventory.ledger import Ledger, ShelfReading
from inventory.picklist import pick_list, render_csv, render_json
from inventory.status import BinStatus, bin_statuses, level_of
from inventory.stock_alerts import stock_conditions
from tests.sitefiles import modbus_site_file

H = 3600.0
DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


@dataclass
class Site:
    engine: Engine
    catalog: Catalog
    ledger: Ledger
    gloves: int
    masks: int
    room: int  # Ward 4B supply room
    shelf: int  # shelf A in it
    other: int  # Ward 4C supply room
    n: int = 0

    def key(self) -> str:
        self.n += 1
        return f"k{self.n}"

    def issue(self, item: int, loc: int, q: int, at: float) -> None:
        self.ledger.issue(item, loc, q, who="nurse", key=self.key(), at=at)

    def receive(self, item: int, loc: int, q: int, at: float) -> None:
        self.ledger.receive(item, loc, q, who="supply", key=self.key(), at=at)

    def status(self, item: int, loc: int, now: float) -> BinStatus:
        (s,) = [s for s in bin_statuses(self.engine, now=now) if s.item_id == item and s.location_id == loc]
        return s


@pytest.fixture
def site(engine: Engine) -> Site:
    cat = Catalog(engine)
    gloves = cat.add_item("GLV-M", "exam gloves M", category="PPE", pack_size=100, unit_weight_g=5.2)
    masks = cat.add_item("MSK", "surgical masks", pack_size=50, critical=True)
    b = cat.add_location("building", "Main")
    f = cat.add_location("floor", "4", b.id)
    room = cat.add_location("room", "Ward 4B supply room", f.id)
    shelf = cat.add_location("shelf", "shelf A", room.id)
    other = cat.add_location("room", "Ward 4C supply room", f.id)
    for item in (gloves.id, masks.id):
        cat.set_bin(item, room.id, min_qty=50, reorder_point=150, par=500, reorder_qty=200, lead_time_s=8 * H)
    cat.set_bin(masks.id, shelf.id, min_qty=10, reorder_point=20, par=60, lead_time_s=4 * H)
    cat.set_bin(gloves.id, other.id, min_qty=0, reorder_point=0, par=0)  # not stocked there
    return Site(engine, cat, Ledger(engine), gloves.id, masks.id, room.id, shelf.id, other.id)


# -- levels -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on_hand", "level"),
    [(0, "out"), (1, "below_min"), (49, "below_min"), (50, "below_reorder"), (149, "below_reorder"),
     (150, "in_stock"), (500, "in_stock"), (501, "above_par")],
)  # fmt: skip
def test_levels_and_their_boundaries(on_hand: int, level: str) -> None:
    assert level_of(on_hand, 50, 150, 500) == level


def test_level_edge_settings() -> None:
    assert level_of(0, 0, 0, 0) == "in_stock"  # par 0: not stocked here, never "out"
    assert level_of(3, 0, 0, 0) == "above_par"
    assert level_of(0, 0, 0, 10) == "out"
    assert level_of(5, 5, 5, 5) == "in_stock"


def test_status_levels_from_the_ledger(site: Site) -> None:
    now = T0 + DAY
    site.receive(site.gloves, site.room, 49, T0)
    site.receive(site.masks, site.room, 600, T0)
    site.receive(site.masks, site.shelf, 20, T0)
    by = {(s.sku, s.location_id): s for s in bin_statuses(site.engine, now=now)}
    assert by[("GLV-M", site.room)].level == "below_min"
    assert by[("MSK", site.room)].level == "above_par"
    assert by[("MSK", site.shelf)].level == "in_stock"
    g = by[("GLV-M", site.other)]
    assert (g.on_hand, g.level, g.use_per_day, g.days_of_supply, g.stockout_at) == (0, "in_stock", 0.0, None, None)
    site.issue(site.gloves, site.room, 49, T0 + H)
    s = site.status(site.gloves, site.room, now)
    assert (s.level, s.on_hand, s.days_of_supply, s.stockout_at) == ("out", 0, 0.0, now)


def test_locations_tree_paths_and_rooms(site: Site) -> None:
    now = T0
    every = bin_statuses(site.engine, now=now)
    assert [(s.path, s.sku) for s in every] == [
        ("Ward 4B supply room", "GLV-M"), ("Ward 4B supply room", "MSK"),
        ("Ward 4B supply room / shelf A", "MSK"), ("Ward 4C supply room", "GLV-M"),
    ]  # fmt: skip
    shelf = [s for s in every if s.location_id == site.shelf][0]
    assert (shelf.room_id, shelf.room, shelf.location, shelf.subject) == (
        site.room, "Ward 4B supply room", "shelf A", f"bin:MSK@{site.shelf}",
    )  # fmt: skip
    room = bin_statuses(site.engine, now=now, location_id=site.room)
    assert [(s.location_id, s.sku) for s in room] == [(site.room, "GLV-M"), (site.room, "MSK"), (site.shelf, "MSK")]
    assert [s.path for s in bin_statuses(site.engine, now=now, location_id=site.shelf)] == ["Ward 4B supply room / shelf A"]
    floor = site.catalog.location(site.room).parent_id  # type: ignore[union-attr]
    assert len(bin_statuses(site.engine, now=now, location_id=floor)) == 4
    # a bin outside any room: its path from the root, no room id
    cart = site.catalog.add_location("bin", "cart 1", floor)
    site.catalog.set_bin(site.gloves, cart.id, par=10)
    (c,) = bin_statuses(site.engine, now=now, location_id=cart.id)
    assert (c.path, c.room, c.room_id) == ("Main / 4 / cart 1", "Main", None)
    with pytest.raises(InventoryError, match="no location 999"):
        bin_statuses(site.engine, now=now, location_id=999)


# -- consumption and forecast ----------------------------------------------------------------


def test_steady_use_gives_its_rate_days_of_supply_and_stockout(site: Site) -> None:
    site.receive(site.gloves, site.room, 2000, T0)
    for h in range(1, 24 * 5 + 1):  # 10 an hour for five days
        site.issue(site.gloves, site.room, 10, T0 + h * H)
    now = T0 + 120 * H
    s = site.status(site.gloves, site.room, now)
    assert s.on_hand == 800
    assert s.use_per_day == pytest.approx(240, rel=0.03)
    assert s.days_of_supply == pytest.approx(800 / s.use_per_day)
    assert s.stockout_at == pytest.approx(now + 800 / s.use_per_day * DAY)
    # a day without use: the weight of what was used halves (the observed window grows too)
    later = site.status(site.gloves, site.room, now + DAY)
    assert later.use_per_day == pytest.approx(s.use_per_day / 2, rel=0.06)


def test_a_short_history_gives_its_plain_mean_not_a_diluted_one(site: Site) -> None:
    site.receive(site.gloves, site.room, 500, T0)
    site.issue(site.gloves, site.room, 30, T0 + 1 * H)
    site.issue(site.gloves, site.room, 30, T0 + 2 * H)
    s = site.status(site.gloves, site.room, T0 + 3 * H)
    assert s.use_per_day == pytest.approx(60 / 3 * 24, rel=0.05)  # 20 an hour over the 3 h seen
    assert s.days_of_supply == pytest.approx(440 / s.use_per_day)
    # a use moments after the first receipt: at least an hour of window (not 30 × 3600 a day)
    site.receive(site.masks, site.shelf, 60, T0)
    site.ledger.issue(site.masks, site.shelf, 30, who="n", key="fast", at=T0 + 1)
    assert site.status(site.masks, site.shelf, T0 + 2).use_per_day == pytest.approx(30 * 24, rel=0.02)


def test_only_issues_and_falling_shelf_readings_are_use(site: Site) -> None:
    L, g, room = site.ledger, site.gloves, site.room
    site.receive(g, room, 400, T0)
    L.transfer(g, room, site.other, 100, who="s", key="t", at=T0 + H)  # moved, not used
    L.count(g, room, 250, who="s", key="c", at=T0 + 2 * H)  # a correction
    L.adjust(g, room, -50, who="s", why="expired", key="a", at=T0 + 3 * H)
    L.shelf_count(g, room, 260, who="shelf-1", key="s-up", at=T0 + 4 * H)  # up: a restock
    assert site.status(g, room, T0 + 5 * H).use_per_day == 0.0
    L.shelf_count(g, room, 200, who="shelf-1", key="s-down", at=T0 + 5 * H)  # 60 taken
    site.issue(g, room, 40, T0 + 5 * H)
    s = site.status(g, room, T0 + 5 * H)
    lam = usage.LAMBDA  # 100 used just now, weighed against the 5 h seen
    assert s.use_per_day == pytest.approx(100 * lam / -math.expm1(-lam * 5 * H) * DAY, rel=1e-9)
    assert L.verify() == []


def test_stored_use_matches_the_ledger_and_the_migration_rebuilds_it(site: Site) -> None:
    """The use kept on the on-hand row equals the weighted sum over the ledger's rows, with a
    back-dated row among them; migration 0004 rebuilds the same from the ledger."""
    site.receive(site.masks, site.room, 1000, T0)
    times = [T0 + 5 * H, T0 + 9 * H, T0 + 7 * H, T0 + 30 * H, T0 + 31 * H]  # 7 h: back-dated
    for n, t in enumerate(times):
        site.issue(site.masks, site.room, 10 + n, t)
    now = T0 + 40 * H
    lam = math.log(2) / usage.HALF_LIFE_S
    expected = sum((10 + n) * math.exp(-lam * (now - t)) for n, t in enumerate(times))
    window = now - T0
    rate = expected * lam / (1 - math.exp(-lam * window)) * DAY
    assert site.status(site.masks, site.room, now).use_per_day == pytest.approx(rate, rel=1e-9)

    def stored() -> tuple[float, float | None, float]:
        oh = inventory_on_hand.c
        with site.engine.connect() as conn:
            r = conn.execute(select(oh.use_decayed, oh.use_at, oh.first_at).where(
                oh.item_id == site.masks, oh.location_id == site.room)).one()  # fmt: skip
        return r.use_decayed, r.use_at, r.first_at

    before = stored()
    migrate.downgrade(site.engine, "0003")
    db.upgrade(site.engine)
    after = stored()
    assert after[1:] == before[1:] and after[0] == pytest.approx(before[0], rel=1e-12)
    assert site.status(site.masks, site.room, now).use_per_day == pytest.approx(rate, rel=1e-9)


# -- stock conditions ---------------------------------------------------------------------------


def _status(**kw: object) -> BinStatus:
    base = dict(
        item_id=1, sku="GLV-M", name="exam gloves M", unit="each", pack_size=100, critical=False,
        location_id=3, location="Ward 4B supply room", room_id=3, room="Ward 4B supply room",
        path="Ward 4B supply room", on_hand=38, min_qty=50, reorder_point=150, par=500, reorder_qty=200,
        lead_time_s=8 * H, level="below_min", use_per_day=38 * 24.0, days_of_supply=1 / 24, stockout_at=T0 + H,
    )  # fmt: skip
    base.update(kw)
    s = BinStatus(**base)  # type: ignore[arg-type]
    return replace(s, level=level_of(s.on_hand, s.min_qty, s.reorder_point, s.par))


def test_stock_condition_texts_and_severities() -> None:
    now = T0  # 00:00 UTC, 01:00 in Paris
    gloves = _status()
    (c,) = stock_conditions([gloves], now=now, tz="Europe/Paris")
    assert (c.subject, c.key, c.active, c.severity) == ("bin:GLV-M@3", "stock-level", True, Severity.WARNING)
    assert c.text == (
        "WARNING Ward 4B supply room: exam gloves M 38 left (min 50, par 500), out in ~1 h (about 02:00) "
        "at the current use, within the 8 h lead time — bring 5 packs of 100"
    )
    masks = replace(gloves, sku="MSK", name="surgical masks", critical=True)
    assert stock_conditions([masks], now=now, tz="UTC")[0].severity == Severity.CRITICAL
    # below min, the refill in time: a warning, critical item or not
    slow = replace(masks, use_per_day=10.0, days_of_supply=3.8, stockout_at=now + 3.8 * DAY)
    (c,) = stock_conditions([slow], now=now, tz="UTC")
    assert c.severity == Severity.WARNING
    assert c.text == "WARNING Ward 4B supply room: surgical masks 38 left (min 50, par 500), out in ~4 days at the current use — bring 5 packs of 100"
    # below the reorder point only: info; no use seen: no forecast
    quiet = _status(on_hand=120, use_per_day=0.0, days_of_supply=None, stockout_at=None)
    (c,) = stock_conditions([quiet], now=now, tz="UTC")
    assert (c.active, c.severity) == (True, Severity.INFO)
    assert c.text == "INFO Ward 4B supply room: exam gloves M 120 left (min 50, par 500) — bring 4 packs of 100"
    # out: critical for a critical item, warning otherwise
    out = _status(on_hand=0, path="Ward 4B supply room / shelf A", days_of_supply=0.0, stockout_at=now)
    (c,) = stock_conditions([out], now=now, tz="UTC")
    assert (c.severity, c.text) == (
        Severity.WARNING, "WARNING Ward 4B supply room / shelf A: exam gloves M OUT of stock (min 50, par 500) — bring 5 packs of 100"
    )  # fmt: skip
    assert stock_conditions([replace(out, critical=True)], now=now, tz="UTC")[0].severity == Severity.CRITICAL
    # below the reorder point, predicted out within the lead time: critical item -> critical
    fast = _status(on_hand=140, critical=True, stockout_at=now + 5 * H)
    assert stock_conditions([fast], now=now, tz="UTC")[0].severity == Severity.CRITICAL
    # restocked: inactive
    full = _status(on_hand=480, stockout_at=now + 5 * H)
    (c,) = stock_conditions([full], now=now, tz="UTC")
    assert (c.active, c.subject, c.key) == (False, "bin:GLV-M@3", "stock-level")
    # pack size 1: units
    reams = _status(name="copy paper", unit="ream", pack_size=1, on_hand=2, min_qty=5, reorder_point=8, par=20,
                    stockout_at=None, use_per_day=0.0)  # fmt: skip
    assert stock_conditions([reams], now=now, tz="UTC")[0].text.endswith("— bring 18 × ream")


def test_conditions_follow_the_ledger_from_use_to_restock(site: Site) -> None:
    site.receive(site.gloves, site.room, 500, T0)
    for h in range(1, 46):
        site.issue(site.gloves, site.room, 10, T0 + h * H)  # 50 left
    now = T0 + 46 * H
    conds = {c.subject: c for c in stock_conditions(bin_statuses(site.engine, now=now), now=now, tz="UTC")}
    c = conds[f"bin:GLV-M@{site.room}"]
    assert c.active and c.severity == Severity.WARNING  # 50 left, out in ~5 h, lead time 8 h
    assert c.text.startswith("WARNING Ward 4B supply room: exam gloves M 50 left (min 50, par 500), out in ~5 h")
    assert c.text.endswith("within the 8 h lead time — bring 5 packs of 100")
    assert not conds[f"bin:GLV-M@{site.other}"].active  # par 0
    site.receive(site.gloves, site.room, 500, now + 60)
    conds = {c.subject: c for c in stock_conditions(bin_statuses(site.engine, now=now + 120), now=now + 120, tz="UTC")}
    assert not conds[f"bin:GLV-M@{site.room}"].active


# -- pick list ------------------------------------------------------------------------------------


def test_pick_list_rounds_up_to_packs_and_orders_by_urgency() -> None:
    now = T0
    lines = pick_list(
        [
            _status(sku="A", on_hand=120, stockout_at=None, use_per_day=0.0),  # below reorder
            _status(sku="B", on_hand=40, stockout_at=now + 3 * DAY),  # below min, in time
            _status(sku="C", on_hand=140, stockout_at=now + 2 * H),  # below reorder, out before the refill
            _status(sku="D", on_hand=0, stockout_at=now),  # out
            _status(sku="E", on_hand=0, stockout_at=now, critical=True),  # out, critical
            _status(sku="F", on_hand=130, stockout_at=now + 1 * H),  # sooner than C
            _status(sku="G", on_hand=400, stockout_at=now + 1 * H),  # in stock: only with top_up
            _status(sku="H", on_hand=501, stockout_at=None),  # above par: never
            _status(sku="I", on_hand=499, pack_size=7, min_qty=0, reorder_point=500, par=500, stockout_at=None),
        ],
        now=now,
    )
    assert [(p.sku, p.urgency) for p in lines] == [
        ("E", "out"), ("D", "out"), ("F", "stockout"), ("C", "stockout"), ("B", "below_min"),
        ("A", "below_reorder"), ("I", "below_reorder"),
    ]  # fmt: skip
    by = {p.sku: p for p in lines}
    assert (by["A"].packs, by["A"].quantity) == (4, 400)  # 380 to par -> 4 packs of 100
    assert (by["D"].packs, by["D"].quantity) == (5, 500)
    assert (by["I"].packs, by["I"].quantity) == (1, 7)
    top = pick_list([_status(sku="G", on_hand=400, stockout_at=None)], now=now, top_up=True)
    assert [(p.sku, p.urgency, p.packs) for p in top] == [("G", "top_up", 1)]

    data = json.loads(render_json(lines, now=now))
    assert data["generated_at"] == now and data["lines"][0]["sku"] == "E" and data["lines"][0]["packs"] == 5
    rows = list(csv.DictReader(io.StringIO(render_csv(lines))))
    assert [r["sku"] for r in rows] == ["E", "D", "F", "C", "B", "A", "I"]
    assert rows[-2]["stockout_at"] == "" and rows[0]["quantity"] == "500" and rows[0]["room"] == "Ward 4B supply room"


# -- many shelf readings in one transaction -------------------------------------------------------


def test_shelf_counts_in_a_batch_are_the_single_shelf_counts(site: Site) -> None:
    """``Ledger.shelf_counts`` writes what ``shelf_count`` one by one would (rows, on-hand, use)."""
    L, g, m = site.ledger, site.gloves, site.masks
    readings = [
        ShelfReading(g, site.room, 300, "shelf-1", "r1", at=T0),
        ShelfReading(m, site.shelf, 40, "shelf-2", "r2", at=T0),
        ShelfReading(g, site.room, 280, "shelf-1", "r3", at=T0 + H),
        ShelfReading(m, site.shelf, 35, "shelf-2", "r4", at=T0 + H),
        ShelfReading(g, site.room, 290, "shelf-1", "r5", at=T0 + 2 * H),  # up: not use
        ShelfReading(g, site.room, 250, "shelf-1", "r6", at=T0 + 3 * H),
        ShelfReading(g, site.room, 280, "shelf-1", "r3", at=T0 + H),  # r3 again in the batch
    ]
    out = L.shelf_counts(readings)
    assert [(a.entry.kind, a.entry.delta, a.entry.balance, a.replayed) for a in out] == [
        ("shelf", 300, 300, False), ("shelf", 40, 40, False), ("shelf", -20, 280, False), ("shelf", -5, 35, False),
        ("shelf", 10, 290, False), ("shelf", -40, 250, False), ("shelf", -20, 280, True),
    ]  # fmt: skip
    assert out[6].entry.id == out[2].entry.id > 0
    assert L.on_hand(g, site.room) == 250 and L.on_hand(m, site.shelf) == 35
    assert L.verify() == []
    # replaying the whole batch changes nothing
    again = L.shelf_counts(readings)
    assert all(a.replayed for a in again) and [a.entry.id for a in again] == [a.entry.id for a in out]
    assert L.on_hand(g, site.room) == 250


def test_shelf_counts_match_shelf_count_use(site: Site) -> None:
    L, g = site.ledger, site.gloves
    other = site.catalog.add_location("room", "Ward 4D supply room")
    site.catalog.set_bin(g, other.id, par=500)
    counts = [(T0 + k * H, 400 - 7 * k + (5 if k % 5 == 0 else 0)) for k in range(30)]
    L.shelf_counts([ShelfReading(g, site.room, c, "shelf-1", f"b{k}", at=t) for k, (t, c) in enumerate(counts)])
    for k, (t, c) in enumerate(counts):
        L.shelf_count(g, other.id, c, who="shelf-1", key=f"s{k}", at=t)
    now = T0 + 31 * H
    a, b = site.status(g, site.room, now), site.status(g, other.id, now)
    assert a.on_hand == b.on_hand and a.use_per_day == pytest.approx(b.use_per_day, rel=1e-12) and a.use_per_day > 0
    assert L.verify() == []


def test_shelf_counts_all_or_nothing(site: Site) -> None:
    L, g = site.ledger, site.gloves
    L.receive(g, site.room, 100, who="s", key="rcv", at=T0)
    with pytest.raises(IdempotencyConflict, match="'rcv' was already used for a receipt"):
        L.shelf_counts([ShelfReading(g, site.room, 90, "shelf-1", "x1", at=T0), ShelfReading(g, site.room, 80, "shelf-1", "rcv")])
    with pytest.raises(IdempotencyConflict):
        L.shelf_counts([ShelfReading(g, site.room, 90, "shelf-1", "x1"), ShelfReading(g, site.room, 80, "shelf-1", "x1")])
    with pytest.raises(InventoryError, match="no item 999, location 998"):
        L.shelf_counts([ShelfReading(g, site.room, 90, "shelf-1", "x1"), ShelfReading(999, 998, 1, "shelf-1", "x2")])
    with pytest.raises(InventoryError, match="below 0"):
        L.shelf_counts([ShelfReading(g, site.room, -1, "shelf-1", "x1")])
    assert L.on_hand(g, site.room) == 100 and L.by_key("x1") == () and L.verify() == []
    assert L.shelf_counts([]) == []


# -- the CLI -----------------------------------------------------------------------------------------


def test_cli_status_pick_list_and_verify(site: Site, state_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import time

    now = time.time()
    site.receive(site.gloves, site.room, 500, now - 10 * H)
    for h in range(1, 10):
        site.issue(site.gloves, site.room, 45, now - 10 * H + h * H)  # 95 left
    site.receive(site.masks, site.shelf, 5, now - H)  # below min
    cfg = str(modbus_site_file(tmp_path, state_db))
    common = ["--config", cfg, "--data-dir", str(tmp_path / "data")]

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--log-level", "error", "inventory", *args, *common])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("status", "--json")
    assert code == 0
    bins = {(b["sku"], b["location_id"]): b for b in json.loads(out)["bins"]}
    g = bins[("GLV-M", site.room)]
    assert (g["on_hand"], g["level"], g["subject"]) == (95, "below_reorder", f"bin:GLV-M@{site.room}")
    assert g["use_per_day"] > 0 and g["days_of_supply"] == pytest.approx(95 / g["use_per_day"])
    code, out, _ = run("status", "--location", str(site.shelf))
    assert code == 0 and out.splitlines() == [
        "below_min     Ward 4B supply room / shelf A | surgical masks (MSK): 5 (min 10, reorder 20, par 60); 0.0/day, - of supply"
    ]
    code, _, err = run("status", "--location", "999")
    assert code == 2 and "no location 999" in err

    code, out, _ = run("pick-list", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [(r["sku"], r["path"], r["packs"], r["quantity"]) for r in rows] == [
        ("MSK", "Ward 4B supply room", "10", "500"),  # out (never stocked)
        ("GLV-M", "Ward 4B supply room", "5", "500"),  # 95 left, out in ~5 h, lead time 8 h
        ("MSK", "Ward 4B supply room / shelf A", "2", "100"),  # below min
    ]
    code, out, _ = run("pick-list", "--json")
    assert code == 0 and [line["urgency"] for line in json.loads(out)["lines"]] == ["out", "stockout", "below_min"]
    code, out, _ = run("pick-list")
    assert code == 0 and out.splitlines()[0] == "out           Ward 4B supply room: 10 × 50 surgical masks (MSK) — 0 on hand, par 500"

    code, out, _ = run("verify")
    assert code == 0 and out.startswith("ok")
    with site.engine.begin() as conn:
        conn.execute(inventory_on_hand.update().where(inventory_on_hand.c.item_id == site.gloves).values(quantity=7))
    code, out, _ = run("verify")
    assert code == 1 and out.splitlines() == [
        f"item {site.gloves} at location {site.room}: on hand 7, ledger sum 95, last balance 95",
        "1 bins disagree with the ledger",
    ]


def test_cli_without_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(modbus_site_file(tmp_path, f"sqlite:///{tmp_path / 'none.sqlite'}"))
    assert main(["--log-level", "error", "inventory", "status", "--config", cfg]) == 1
    assert "no state database" in capsys.readouterr().err
