"""The inventory's catalog and stock ledger (inventory/catalog.py, inventory/ledger.py) on SQLite
and on a real PostgreSQL (``state_db``): each kind of transaction, idempotency keys, refusals that
write nothing, ``verify()``; the ledger invariant under generated sequences of transactions
(hypothesis, SQLite only: many small transactions); 8 threads issuing from one bin at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, func, select, text, update

from eqmon.db.schema import inventory_ledger, inventory_on_hand
from inventory.catalog import Catalog
from inventory.errors import IdempotencyConflict, InsufficientStock, InventoryError
from inventory.ledger import Applied, Ledger, Mismatch


@dataclass
class Site:
    catalog: Catalog
    ledger: Ledger
    gloves: int
    masks: int
    room: int  # Ward 4B supply room
    cart: int  # a cart in that room
    other: int  # another supply room


@pytest.fixture
def site(engine: Engine) -> Site:
    cat = Catalog(engine)
    gloves = cat.add_item("GLV-M", "exam gloves M", category="PPE", unit="each", pack_size=100, unit_weight_g=5.2)
    masks = cat.add_item("MSK", "surgical masks", pack_size=50, unit_weight_g=3.1, critical=True)
    b = cat.add_location("building", "Main")
    f = cat.add_location("floor", "4", b.id)
    room = cat.add_location("room", "Ward 4B supply room", f.id)
    cart = cat.add_location("bin", "cart 1", room.id)
    other = cat.add_location("room", "Ward 4C supply room", f.id)
    return Site(cat, Ledger(engine, clock=lambda: 1000.0), gloves.id, masks.id, room.id, cart.id, other.id)


# -- the catalog --------------------------------------------------------------------------------


def test_catalog_items_locations_and_bins(site: Site) -> None:
    cat = site.catalog
    item = cat.item("GLV-M")
    assert item is not None and item.pack_size == 100 and item.unit_weight_g == 5.2 and not item.critical
    assert [i.sku for i in cat.items()] == ["GLV-M", "MSK"]
    with pytest.raises(InventoryError, match="GLV-M already exists"):
        cat.add_item("GLV-M", "again")
    with pytest.raises(InventoryError, match="pack_size"):
        cat.add_item("X", "x", pack_size=0)
    with pytest.raises(InventoryError, match="a floor cannot be inside a room"):
        cat.add_location("floor", "5", site.room)
    with pytest.raises(InventoryError, match="already exists"):
        cat.add_location("room", "Ward 4B supply room", cat.location(site.room).parent_id)  # type: ignore[union-attr]
    assert [loc.name for loc in cat.children(cat.location(site.room).parent_id)] == [  # type: ignore[union-attr]
        "Ward 4B supply room", "Ward 4C supply room",
    ]  # fmt: skip
    b = cat.set_bin(site.gloves, site.room, min_qty=50, reorder_point=150, par=500, reorder_qty=200,
                    lead_time_s=86400, tare_g=412.0, shelf_device_id="shelf-4b-1")  # fmt: skip
    b2 = cat.set_bin(site.gloves, site.room, par=600)  # the others kept
    assert b2.id == b.id and (b2.min_qty, b2.reorder_point, b2.par, b2.tare_g) == (50, 150, 600, 412.0)
    with pytest.raises(InventoryError, match="min_qty <= reorder_point <= par"):
        cat.set_bin(site.gloves, site.room, reorder_point=700)
    assert cat.bins(site.room) == [b2]


# -- the ledger ---------------------------------------------------------------------------------


def test_each_kind_of_transaction(site: Site) -> None:
    led, g = site.ledger, site.gloves
    r = led.receive(g, site.room, 500, who="stores", why="delivery 4411", key="rcv-1")
    assert not r.replayed and (r.entry.kind, r.entry.delta, r.entry.balance) == ("receipt", 500, 500)
    assert (r.entry.who, r.entry.why, r.entry.idempotency_key, r.entry.ts) == ("stores", "delivery 4411", "rcv-1", 1000.0)
    assert led.issue(g, site.room, 120, who="nurse", key="iss-1").entry.balance == 380
    t = led.transfer(g, site.room, site.cart, 80, who="aide", why="fill cart", key="xfer-1", at=1100.0)
    assert [(e.location_id, e.delta, e.balance, e.leg) for e in t.entries] == [(site.room, -80, 300, 0), (site.cart, 80, 80, 1)]
    c = led.count(g, site.room, 290, who="aide", why="cycle count", key="cnt-1")
    assert (c.entry.kind, c.entry.delta, c.entry.counted, c.entry.balance) == ("count", -10, 290, 290)
    assert led.count(g, site.room, 290, who="aide", key="cnt-2").entry.delta == 0  # agreed: recorded
    a = led.adjust(g, site.room, -5, who="aide", why="torn box", key="adj-1")
    assert (a.entry.kind, a.entry.balance) == ("adjustment", 285)
    s = led.shelf_count(g, site.cart, 75, who="shelf-4b-1", key="shelf-4b-1:1234")
    assert (s.entry.kind, s.entry.delta, s.entry.counted) == ("shelf", -5, 75)
    assert led.on_hand(g, site.room) == 285 and led.on_hand(g, site.cart) == 75
    assert led.on_hand(site.masks, site.room) == 0 and led.on_hand_at(site.room) == {g: 285}
    assert [e.kind for e in led.history(g, site.room)] == ["adjustment", "count", "count", "transfer", "issue", "receipt"]
    assert led.verify() == []


def test_a_key_applies_once_and_returns_the_first_result(site: Site) -> None:
    led, g = site.ledger, site.gloves
    first = led.receive(g, site.room, 100, who="stores", key="k1")
    again = led.receive(g, site.room, 100, who="stores (retry)", key="k1", at=2000.0)
    assert again.replayed and again.entries == first.entries
    assert led.on_hand(g, site.room) == 100
    t1 = led.transfer(g, site.room, site.cart, 30, who="aide", key="k2")
    t2 = led.transfer(g, site.room, site.cart, 30, who="aide", key="k2")
    assert t2.replayed and t2.entries == t1.entries and led.on_hand(g, site.cart) == 30
    c1 = led.count(g, site.cart, 25, who="aide", key="k3")
    led.issue(g, site.cart, 5, who="nurse", key="k4")
    assert led.count(g, site.cart, 25, who="aide", key="k3").entries == c1.entries  # not counted again
    assert led.on_hand(g, site.cart) == 20
    for bad in (
        lambda: led.receive(g, site.room, 101, who="stores", key="k1"),  # another amount
        lambda: led.issue(g, site.room, 100, who="stores", key="k1"),  # another kind
        lambda: led.receive(site.masks, site.room, 100, who="stores", key="k1"),  # another item
        lambda: led.transfer(g, site.room, site.other, 30, who="aide", key="k2"),  # another destination
        lambda: led.count(g, site.cart, 24, who="aide", key="k3"),
    ):
        with pytest.raises(IdempotencyConflict, match="already used"):
            bad()
    assert len(led.by_key("k2")) == 2 and led.by_key("nope") == ()
    assert led.verify() == []


def test_refusals_write_nothing_and_name_the_numbers(site: Site, engine: Engine) -> None:
    led, g = site.ledger, site.gloves
    led.receive(g, site.room, 3, who="stores", key="r")
    with pytest.raises(InsufficientStock) as exc:
        led.issue(g, site.room, 5, who="nurse", key="i")
    assert str(exc.value) == f"cannot issue 5 × exam gloves M (GLV-M) from Ward 4B supply room (location {site.room}): only 3 on hand"
    with pytest.raises(InsufficientStock, match="only 0 on hand"):
        led.transfer(g, site.cart, site.room, 1, who="aide", key="t")
    with pytest.raises(InventoryError, match="would leave -1"):
        led.adjust(g, site.room, -4, who="aide", why="lost", key="a")
    with pytest.raises(InventoryError, match="say why"):
        led.adjust(g, site.room, -1, who="aide", why=" ", key="a2")
    with pytest.raises(InventoryError, match="above 0"):
        led.issue(g, site.room, 0, who="nurse", key="z")
    with pytest.raises(InventoryError, match="below 0"):
        led.count(g, site.room, -1, who="nurse", key="z")
    with pytest.raises(InventoryError, match="no item 999"):
        led.receive(999, site.room, 1, who="stores", key="z")
    with pytest.raises(InventoryError, match="no location 999"):
        led.transfer(g, site.room, 999, 1, who="aide", key="z")
    with pytest.raises(InventoryError, match="same location"):
        led.transfer(g, site.room, site.room, 1, who="aide", key="z")
    with pytest.raises(InventoryError, match="idempotency key"):
        led.receive(g, site.room, 1, who="stores", key="")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(inventory_ledger)).scalar() == 1
    # A refused request kept nothing: under the same key it goes through once stock is there.
    led.receive(g, site.room, 10, who="stores", key="r2")
    assert led.issue(g, site.room, 5, who="nurse", key="i").entry.balance == 8
    assert led.verify() == []


def test_verify_finds_an_on_hand_that_is_not_the_sum_of_the_ledger(site: Site, engine: Engine) -> None:
    led, g = site.ledger, site.gloves
    led.receive(g, site.room, 10, who="stores", key="a")
    led.receive(g, site.cart, 4, who="stores", key="b")
    led.receive(site.masks, site.room, 7, who="stores", key="c")
    with engine.begin() as conn:  # what no eqmon code does
        oh = inventory_on_hand.c
        conn.execute(update(inventory_on_hand).where(oh.item_id == g, oh.location_id == site.room).values(quantity=11))
        conn.execute(delete(inventory_ledger).where(inventory_ledger.c.idempotency_key == "b"))
    assert led.verify() == [
        Mismatch(g, site.room, on_hand=11, ledger_sum=10, last_balance=10),
        Mismatch(g, site.cart, on_hand=4, ledger_sum=0, last_balance=None),
    ]


def test_the_database_refuses_a_negative_on_hand_too(site: Site, engine: Engine) -> None:
    from sqlalchemy.exc import IntegrityError

    site.ledger.receive(site.gloves, site.room, 1, who="stores", key="a")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE inventory_on_hand SET quantity = -1"))


# -- the invariant, under any sequence of transactions ----------------------------------------

BINS = [(0, 0), (0, 1), (1, 0), (1, 1)]  # (item index, location index)
qty = st.integers(min_value=1, max_value=30)
op = st.one_of(
    st.tuples(st.just("receive"), st.sampled_from(BINS), qty),
    st.tuples(st.just("issue"), st.sampled_from(BINS), qty),
    st.tuples(st.just("transfer"), st.sampled_from(BINS), qty),  # to the item's other location
    st.tuples(st.just("count"), st.sampled_from(BINS), st.integers(min_value=0, max_value=60)),
    st.tuples(st.just("adjust"), st.sampled_from(BINS), st.integers(min_value=-20, max_value=20).filter(bool)),
    st.tuples(st.just("retry"), st.integers(min_value=0, max_value=1000), st.just(0)),
)


@pytest.mark.parametrize("state_db", ["sqlite"], indirect=True)
@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=25))
def test_on_hand_is_the_sum_of_the_ledger_under_any_sequence(site: Site, engine: Engine, ops: list[tuple[Any, Any, int]]) -> None:
    with engine.begin() as conn:  # one example's rows do not meet the next's
        conn.execute(delete(inventory_ledger))
        conn.execute(delete(inventory_on_hand))
    led = site.ledger
    items, locs = [site.gloves, site.masks], [site.room, site.cart]
    model = {b: 0 for b in BINS}
    done: dict[str, Applied] = {}  # key -> its first result

    def run(kind: str, b: tuple[int, int], n: int, key: str) -> Applied:
        item, loc, other = items[b[0]], locs[b[1]], locs[1 - b[1]]
        if kind == "receive":
            return led.receive(item, loc, n, who="t", key=key)
        if kind == "issue":
            return led.issue(item, loc, n, who="t", key=key)
        if kind == "transfer":
            return led.transfer(item, loc, other, n, who="t", key=key)
        if kind == "count":
            return led.count(item, loc, n, who="t", key=key)
        return led.adjust(item, loc, n, who="t", why="generated", key=key)

    def expect(kind: str, b: tuple[int, int], n: int) -> dict[tuple[int, int], int] | None:
        """The model's on-hand after the request, or None if it must be refused."""
        new = dict(model)
        if kind == "receive":
            new[b] += n
        elif kind in ("issue", "transfer"):
            new[b] -= n
            if kind == "transfer":
                new[(b[0], 1 - b[1])] += n
        elif kind == "count":
            new[b] = n
        else:
            new[b] += n
        return None if min(new.values()) < 0 else new

    requests: list[tuple[str, tuple[int, int], int]] = []
    for i, (kind, arg, n) in enumerate(ops):
        if kind == "retry":  # an earlier request again, under its key
            if not requests:
                continue
            key = f"op{arg % len(requests)}"
            kind, b, n = requests[arg % len(requests)]
        else:
            key, b = f"op{len(requests)}", arg
            requests.append((kind, b, n))
        first = done.get(key)
        if first is not None:  # applied before: the first result, nothing changes
            again = run(kind, b, n, key)
            assert again.replayed and again.entries == first.entries
            continue
        after = expect(kind, b, n)
        if after is None:  # refused, nothing kept: a retry of it is evaluated afresh
            with pytest.raises(InventoryError):
                run(kind, b, n, key)
        else:
            result = run(kind, b, n, key)
            assert not result.replayed
            model = after
            assert result.entry.balance == model[b]
            done[key] = result
        for bb in BINS:
            assert led.on_hand(items[bb[0]], locs[bb[1]]) == model[bb], (i, kind, bb)
    assert led.verify() == []
    for bb in BINS:
        rows = led.history(items[bb[0]], locs[bb[1]], limit=10_000)
        assert sum(e.delta for e in rows) == model[bb] >= 0
        assert all(e.balance >= 0 for e in rows)
        assert [e.balance for e in rows[1:]] == [e.balance - e.delta for e in rows[:-1]]  # a running balance


# -- concurrent writers ------------------------------------------------------------------------


def test_eight_threads_issue_from_one_bin_at_once(site: Site) -> None:
    led, g, room = site.ledger, site.gloves, site.room
    led.receive(g, room, 1000, who="stores", key="start")
    # Each thread issues 10 times (distinct keys), and threads 0 and 1 both send request "dup"
    # (a retried request) first: it is applied once.
    plan = {t: [(f"t{t}-{k}", 1 + (t * 7 + k * 3) % 5) for k in range(10)] for t in range(8)}
    for t in (0, 1):
        plan[t].insert(0, ("dup", 4))
    start = threading.Barrier(8)

    def worker(t: int) -> list[Applied]:
        start.wait()
        return [led.issue(g, room, n, who=f"nurse {t}", key=k) for k, n in plan[t]]

    with ThreadPoolExecutor(8) as pool:
        results = [r for rs in pool.map(worker, range(8)) for r in rs]
    distinct = {k: n for steps in plan.values() for k, n in steps}
    assert led.on_hand(g, room) == 1000 - sum(distinct.values())
    dup = [r for r in results if r.entry.idempotency_key == "dup"]
    assert sorted(r.replayed for r in dup) == [False, True] and dup[0].entries == dup[1].entries
    assert len(led.history(g, room, limit=1000)) == 1 + len(distinct)
    assert led.verify() == []


def test_concurrent_issues_never_take_more_than_is_there(site: Site) -> None:
    led, g, room = site.ledger, site.gloves, site.room
    led.receive(g, room, 20, who="stores", key="start")
    start = threading.Barrier(8)

    def worker(t: int) -> bool:
        start.wait()
        try:
            led.issue(g, room, 3, who=f"nurse {t}", key=f"i{t}")
            return True
        except InsufficientStock:
            return False

    with ThreadPoolExecutor(8) as pool:
        ok = list(pool.map(worker, range(8)))
    assert sum(ok) == 6 and led.on_hand(g, room) == 2 and led.verify() == []


def test_transfers_both_ways_at_once_do_not_deadlock(site: Site) -> None:
    led, g = site.ledger, site.gloves
    led.receive(g, site.room, 100, who="stores", key="a")
    led.receive(g, site.cart, 100, who="stores", key="b")
    start = threading.Barrier(8)

    def worker(t: int) -> None:
        start.wait()
        src, dst = (site.room, site.cart) if t % 2 else (site.cart, site.room)
        for k in range(5):
            led.transfer(g, src, dst, 1 + t, who=f"aide {t}", key=f"t{t}-{k}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    moved = sum(5 * (1 + t) * (1 if t % 2 else -1) for t in range(8))
    assert (led.on_hand(g, site.room), led.on_hand(g, site.cart)) == (100 - moved, 100 + moved)
    assert led.verify() == []
