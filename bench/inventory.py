"""Issue 10's inventory benchmark: status of one supply room, the whole pick list, and the shelf
readings per second the ledger absorbs, at the scale of a large hospital.

    .venv/bin/python bench/inventory.py [--rooms 40] [--items 250] [--rows-per-bin 100] [--rounds 15]
    .venv/bin/python bench/inventory.py --postgres postgresql://postgres@127.0.0.1:5432/test

Builds ``rooms × items`` bins (defaults: 10,000; 4 floors, each room with 10 shelves of 25
items) and ``rows-per-bin`` ledger rows each (1,000,000) over the last 30 days: receipts,
issues and shelf readings with running balances, on-hand and each bin's use as the ledger keeps
them (bulk-inserted, not through ``Ledger``; ``Ledger.verify()`` is run on the result). On a
fresh SQLite file, or with ``--postgres URL`` on a throwaway database created on that server
(and dropped). Then the median of ``--rounds`` of:

* ``bin_statuses(location_id=<one room>)``            target < 20 ms
* ``pick_list(bin_statuses())`` for all bins          target < 300 ms
* ``Ledger.shelf_count`` one reading a transaction, and ``Ledger.shelf_counts`` in batches of
  ``--batch``: readings/s                              target >= 50,000
* the shelf feed: weight readings through ``ShelfFeed.absorb`` (the production class, as
  eqmon_app/shelves.py's worker uses it: ``refresh`` from the catalog, then batches of
  ``--feed-batch``), every bin weighed by a shelf, readings/s   target >= 50,000

  - ``mix``: one reading in ``--change-every`` (10) changes its bin's count (a piece taken),
    the others are heartbeats (the weight unchanged). Why 1 in 10: a simulated shelf
    (simulators/shelves.py) publishes a heartbeat every 30 s (120 an hour) and a change once
    it held; the example site's busiest bins (gloves, masks: 40 and 25 used an hour, × 1.6 by
    day, taken 2.5 to 4 at a time) are taken from about 16 times an hour by day, each take
    adding ~3 unstable messages: ~16 changes in ~185 messages, 1 in 11; a bed-sheet bin, 1 in 30.
  - ``worst``: every reading changes its bin's count (each one a ledger row).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, insert  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from eqmon import db  # noqa: E402
from eqmon.db.engine import create  # noqa: E402
from eqmon.db.schema import (  # noqa: E402
    inventory_bins,
    inventory_items,
    inventory_locations,
    inventory_on_hand,
)
from eqmon.domain import Reading  # noqa: E402
from inventory.feed import WEIGHT_METRIC, ShelfFeed  # noqa: E402
from inventory.ledger import Ledger, ShelfReading  # noqa: E402
from inventory.picklist import pick_list  # noqa: E402
from inventory.status import bin_statuses  # noqa: E402
from inventory.usage import add_use, is_use  # noqa: E402

NOW = 1_767_225_600.0  # the benchmark's "now"
SPAN = 30 * 86_400.0
FLOORS, SHELVES = 4, 10
TARE_G = 400.0
LEDGER_COLUMNS = ("id", "ts", "item_id", "location_id", "kind", "delta", "balance", "counted", "who", "why",
                  "idempotency_key", "leg")  # fmt: skip


def unit_weight(item_id: int) -> float:
    return 5.0 + 10.0 * (item_id % 8)  # 5 to 75 g a piece


def fill(engine: Engine, rooms: int, items: int, rows_per_bin: int) -> dict[str, Any]:
    """The catalog, location tree, ledger and on-hand; returns the room ids and the bins."""
    locs: list[dict[str, Any]] = [{"id": 1, "parent_id": None, "kind": "building", "name": "Main"}]
    for f in range(FLOORS):
        locs.append({"id": 2 + f, "parent_id": 1, "kind": "floor", "name": f"floor {f + 1}"})
    room_ids, shelf_of = [], {}
    nid = len(locs) + 1
    for r in range(rooms):
        room_ids.append(nid)
        locs.append({"id": nid, "parent_id": 2 + r % FLOORS, "kind": "room", "name": f"Ward {r + 1} supply room"})
        nid += 1
        for s in range(SHELVES):
            shelf_of[(room_ids[-1], s)] = nid
            locs.append({"id": nid, "parent_id": room_ids[-1], "kind": "shelf", "name": f"shelf {chr(65 + s)}"})
            nid += 1
    per_shelf = -(-items // SHELVES)
    item_rows = [{"id": i + 1, "sku": f"SKU-{i:04d}", "name": f"item {i:04d}", "unit": "each",
                  "pack_size": (1, 10, 50, 100)[i % 4], "critical": i % 10 == 0,
                  "unit_weight_g": unit_weight(i + 1)} for i in range(items)]  # fmt: skip
    bins, bin_rows, on_hand = [], [], []
    ledger: list[tuple[Any, ...]] = []
    n = 0
    step = SPAN / rows_per_bin
    for room in room_ids:
        for i in range(items):
            loc = shelf_of[(room, i // per_shelf)]
            item = i + 1
            par = 100 + 20 * (i % 20)
            bins.append((item, loc))
            bin_rows.append({"item_id": item, "location_id": loc, "min_qty": par // 10, "reorder_point": par // 4,
                             "par": par, "reorder_qty": par // 2, "lead_time_s": 8 * 3600.0,
                             "tare_g": TARE_G, "shelf_device_id": f"shelf-{len(bins)}"})  # fmt: skip
            balance, use, use_at, first = 0, 0.0, None, NOW - SPAN
            for k in range(rows_per_bin):
                ts = NOW - SPAN + k * step
                n += 1
                if balance < par // 4:
                    kind, delta, counted = "receipt", par - balance, None
                elif k % 3 == 0:
                    kind, counted = "shelf", max(0, balance - 1 - (k * 7 + i) % 5)
                    delta = counted - balance
                else:
                    kind, delta, counted = "issue", -min(balance, 1 + (k * 13 + i) % (par // 20 + 1)), None
                balance += delta
                if is_use(kind, delta):
                    use, use_at = add_use(use, use_at, -delta, ts)
                ledger.append((n, ts, item, loc, kind, delta, balance, balance if counted is not None else None,
                               "bench", "", f"b{n}", 0))  # fmt: skip
            on_hand.append({"item_id": item, "location_id": loc, "quantity": balance, "updated_at": ts,
                            "use_decayed": use, "use_at": use_at, "first_at": first})  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(inventory_items), item_rows)
        conn.execute(insert(inventory_locations), locs)
        conn.execute(insert(inventory_bins), bin_rows)
        conn.execute(insert(inventory_on_hand), on_hand)
        raw: Any = conn.connection.driver_connection
        if conn.dialect.name == "postgresql":
            with raw.cursor().copy(f"COPY inventory_ledger ({', '.join(LEDGER_COLUMNS)}) FROM STDIN") as copy:
                for row in ledger:
                    copy.write_row(row)
            conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('inventory_ledger', 'id'), {n})")
        else:
            marks = ", ".join("?" * len(LEDGER_COLUMNS))
            raw.executemany(f"INSERT INTO inventory_ledger ({', '.join(LEDGER_COLUMNS)}) VALUES ({marks})", ledger)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"
        )
    return {"rooms": room_ids, "bins": bins, "rows": n}


def median_ms(fn: Callable[[], object], rounds: int) -> tuple[float, object]:
    out = fn()  # warm
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, out


def shelf_rate(ledger: Ledger, bins: list[tuple[int, int]], count: int, batch: int, tag: str, rounds: int) -> float:
    """Median readings/s of ``rounds`` runs of ``count`` readings, each one unit below the last
    reading of its bin (use), bins taken in turn; one transaction each, or ``batch`` at once."""
    on_hand = {b: ledger.on_hand(*b) for b in bins[: count * rounds]}  # (bins are taken in turn)
    rates = []
    pos = 0
    for r in range(rounds):
        readings = []
        for k in range(count):
            b = bins[pos % min(len(bins), count * rounds)]
            pos += 1
            on_hand[b] = max(0, on_hand[b] - 1)
            readings.append(ShelfReading(b[0], b[1], on_hand[b], "shelf-bench", f"{tag}-{r}-{k}", at=NOW + pos))
        t = time.perf_counter()
        if batch <= 1:
            for x in readings:
                ledger.shelf_count(x.item_id, x.location_id, x.counted, who=x.who, key=x.key, at=x.at)
        else:
            for n in range(0, len(readings), batch):
                ledger.shelf_counts(readings[n : n + batch])
        rates.append(count / (time.perf_counter() - t))
    return statistics.median(rates)


class FeedRun:
    """Readings of every catalog shelf through one ``ShelfFeed``, as the service's worker does:
    ``refresh`` (the catalog: which shelf weighs which bin, their on-hand), then ``absorb`` of
    batches. Each pass, every shelf publishes once, 30 s after its previous reading (a heartbeat
    period, so nothing is taken for a wobble); a change takes one piece (a restock to 100
    pieces when the bin is empty)."""

    def __init__(self, engine: Engine, start: float, feed: Any = ShelfFeed, part: tuple[int, int] = (0, 1)) -> None:
        """``part`` (k, n): only every n-th shelf from the k-th (bench/inventory_ab.py: one feed
        per variant, each the only writer of its bins)."""
        self.feed = feed(engine, clock=lambda: NOW)
        self.feed.refresh()
        if part != (0, 1):
            mine = sorted(self.feed.devices, key=lambda d: int(d.rsplit("-", 1)[1]))[part[0] :: part[1]]
            self.feed.set_bins([(self.feed.bin_of(d), self.feed._shelves[d].count) for d in mine])  # noqa: SLF001
        self.shelves = sorted(self.feed.devices)
        self.count = {d: self.feed._shelves[d].count or 0 for d in self.shelves}  # noqa: SLF001 - the bench's own view
        self.ts = start
        self.n = 0
        self.absorb([self.pass_(change_every=0)])  # the first readings since start: each shelf's base weight

    def pass_(self, change_every: int) -> list[Reading]:
        self.ts += 30.0
        out = []
        for k, dev in enumerate(self.shelves):
            self.n += 1
            if change_every and self.n % change_every == 0:
                self.count[dev] = self.count[dev] - 1 if self.count[dev] > 0 else 100
            sb = self.feed.bin_of(dev)
            assert sb is not None
            out.append(Reading(dev, WEIGHT_METRIC, sb.tare_g + self.count[dev] * sb.unit_weight_g, self.ts + k * 1e-4))
        return out

    def absorb(self, passes: list[list[Reading]], batch: int = 2000) -> int:
        written = 0
        readings = [r for p in passes for r in p]
        for n in range(0, len(readings), batch):
            written += self.feed.absorb(readings[n : n + batch]).applied.written
        return written

    def rate(self, change_every: int, count: int, batch: int, rounds: int) -> tuple[float, int]:
        """Median readings/s of ``rounds`` runs of ``count`` readings (whole passes), and the
        ledger rows written in all."""
        rates, written = [], 0
        for _ in range(rounds):
            passes = [self.pass_(change_every) for _ in range(max(1, count // len(self.shelves)))]
            n = sum(map(len, passes))
            t = time.perf_counter()
            written += self.absorb(passes, batch)
            rates.append(n / (time.perf_counter() - t))
        return statistics.median(rates), written


@contextmanager
def database(postgres: str | None) -> Iterator[str]:
    if postgres is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/state.sqlite"
        return
    import psycopg

    admin = make_url(postgres).set(drivername="postgresql")
    name = f"eqmon_bench_{uuid.uuid4().hex[:12]}"
    dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rooms", type=int, default=40)
    ap.add_argument("--items", type=int, default=250)
    ap.add_argument("--rows-per-bin", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--readings", type=int, default=2000, help="shelf readings one by one, per round")
    ap.add_argument("--batch-readings", type=int, default=50_000, help="shelf readings in batches, per round")
    ap.add_argument("--batch", type=int, default=1000, help="readings per Ledger.shelf_counts call")
    ap.add_argument("--feed-readings", type=int, default=50_000, help="readings through the shelf feed, per round")
    ap.add_argument("--feed-batch", type=int, default=2000, help="readings per ShelfFeed.absorb call")
    ap.add_argument("--change-every", type=int, default=10, help="the mix: one reading in N changes its bin")
    ap.add_argument("--postgres", metavar="URL", default=None, help="a PostgreSQL server (a throwaway database is made on it)")
    args = ap.parse_args()
    with database(args.postgres) as url:
        engine = create(url)
        try:
            db.upgrade(engine)
            t0 = time.perf_counter()
            built = fill(engine, args.rooms, args.items, args.rows_per_bin)
            print(f"{engine.dialect.name}: {len(built['bins'])} bins in {len(built['rooms'])} rooms, "
                  f"{built['rows']} ledger rows (filled in {time.perf_counter() - t0:.1f} s)")  # fmt: skip
            ledger = Ledger(engine, clock=lambda: NOW)
            t0 = time.perf_counter()
            bad = ledger.verify()
            print(f"  Ledger.verify(): {len(bad)} bins disagree ({time.perf_counter() - t0:.2f} s)")
            room = built["rooms"][len(built["rooms"]) // 2]
            ms, rows = median_ms(lambda: bin_statuses(engine, now=NOW, location_id=room), args.rounds)
            print(f"  status of one supply room: {len(rows):6} bins   {ms:8.2f} ms (median of {args.rounds}; target < 20)")  # type: ignore[arg-type]
            ms, lines = median_ms(lambda: pick_list(bin_statuses(engine, now=NOW), now=NOW), args.rounds)
            print(f"  whole pick list:           {len(lines):6} lines  {ms:8.2f} ms (median of {args.rounds}; target < 300)")  # type: ignore[arg-type]
            rounds = 3
            one = shelf_rate(ledger, built["bins"], args.readings, 1, "one", rounds)
            print(f"  Ledger.shelf_count, one a transaction:  {one:9,.0f} readings/s (median of {rounds} × {args.readings})")
            many = shelf_rate(ledger, built["bins"], args.batch_readings, args.batch, "batch", rounds)
            print(f"  Ledger.shelf_counts, {args.batch} a call:     {many:9,.0f} readings/s (median of {rounds} × {args.batch_readings}; target >= 50,000)")
            run = FeedRun(engine, start=NOW + 10_000_000)
            for name, every in ((f"mix 1 in {args.change_every}", args.change_every), ("worst, all change", 1)):
                rate, written = run.rate(every, args.feed_readings, args.feed_batch, rounds)
                print(f"  ShelfFeed.absorb, {name:18} {rate:9,.0f} readings/s (median of {rounds} × "
                      f"{args.feed_readings}, {args.feed_batch} a batch; {written} rows written; target >= 50,000)")  # fmt: skip
            bad = ledger.verify()
            print(f"  Ledger.verify() after: {len(bad)} bins disagree")
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
