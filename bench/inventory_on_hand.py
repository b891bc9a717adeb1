"""Measurement behind the inventory's on-hand table (docs/inventory.md): is on-hand read from a
table kept in the ledger's transaction, or computed from the ledger when asked?

    .venv/bin/python bench/inventory_on_hand.py [--rooms 40] [--items 250] [--rows-per-bin 100] [--postgres]

Builds ``rooms × items`` bins with ``rows-per-bin`` ledger rows each (the defaults: 10,000 bins,
1,000,000 rows, the scale of issue 10's benchmark) on a fresh SQLite file (or a private
PostgreSQL server with ``--postgres``), then times three ways of reading on-hand, for the bins
of one supply room and for all bins (median of ``--rounds``):

* table    — ``inventory_on_hand`` (what eqmon does)
* sum      — ``SUM(delta)`` of the ledger, grouped per bin
* balance  — the ``balance`` of each bin's newest ledger row
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, Select, func, insert, select  # noqa: E402

from eqmon import db  # noqa: E402
from eqmon.db.engine import create  # noqa: E402
from eqmon.db.schema import (  # noqa: E402
    inventory_items,
    inventory_ledger,
    inventory_locations,
    inventory_on_hand,
)


def fill(engine: Engine, rooms: int, items: int, rows_per_bin: int) -> None:
    with engine.begin() as conn:
        conn.execute(insert(inventory_items), [{"id": i + 1, "sku": f"SKU-{i}", "name": f"item {i}"} for i in range(items)])
        conn.execute(insert(inventory_locations), [{"id": r + 1, "kind": "room", "name": f"room {r}"} for r in range(rooms)])
        on_hand = []
        batch: list[dict[str, object]] = []
        n = 0
        for r in range(rooms):
            for i in range(items):
                balance = 0
                for k in range(rows_per_bin):
                    delta = 50 if balance < 10 else -(k % 7 + 1)
                    balance += delta
                    n += 1
                    batch.append({
                        "id": n, "ts": 1e9 + k, "item_id": i + 1, "location_id": r + 1,
                        "kind": "receipt" if delta > 0 else "issue", "delta": delta, "balance": balance,
                        "who": "bench", "why": "", "idempotency_key": f"k{n}", "leg": 0,
                    })  # fmt: skip
                on_hand.append({"item_id": i + 1, "location_id": r + 1, "quantity": balance, "updated_at": 1e9})
                if len(batch) >= 50_000:
                    conn.execute(insert(inventory_ledger), batch)
                    batch = []
        if batch:
            conn.execute(insert(inventory_ledger), batch)
        conn.execute(insert(inventory_on_hand), on_hand)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")


def queries(room: int | None) -> dict[str, Select[Any]]:
    oh, lg = inventory_on_hand, inventory_ledger
    table = select(oh.c.item_id, oh.c.location_id, oh.c.quantity)
    summed = select(lg.c.item_id, lg.c.location_id, func.sum(lg.c.delta)).group_by(lg.c.item_id, lg.c.location_id)
    newest = select(lg.c.item_id, lg.c.location_id, func.max(lg.c.id).label("id"))
    if room is not None:
        table = table.where(oh.c.location_id == room)
        summed = summed.where(lg.c.location_id == room)
        newest = newest.where(lg.c.location_id == room)
    last = newest.group_by(lg.c.item_id, lg.c.location_id).subquery()
    balance = select(lg.c.item_id, lg.c.location_id, lg.c.balance).join(last, lg.c.id == last.c.id)
    return {"table": table, "sum": summed, "balance": balance}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rooms", type=int, default=40)
    ap.add_argument("--items", type=int, default=250)
    ap.add_argument("--rows-per-bin", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--postgres", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        if args.postgres:
            from simulators.servers import PostgresServer

            server = PostgresServer()
            server.start()
            url = f"postgresql+psycopg://{server.user}@{server.host}:{server.port}/{server.dbname}"
        else:
            url = f"sqlite:///{tmp}/state.sqlite"
        engine = create(url)
        try:
            db.upgrade(engine)
            t0 = time.perf_counter()
            fill(engine, args.rooms, args.items, args.rows_per_bin)
            bins = args.rooms * args.items
            print(f"{engine.dialect.name}: {bins} bins, {bins * args.rows_per_bin} ledger rows "
                  f"(filled in {time.perf_counter() - t0:.1f} s)")  # fmt: skip
            for label, room in (("one room", args.rooms // 2), ("all bins", None)):
                for name, q in queries(room).items():
                    times = []
                    with engine.connect() as conn:
                        rows = conn.execute(q).all()  # warm
                        for _ in range(args.rounds):
                            t = time.perf_counter()
                            rows = conn.execute(q).all()
                            times.append(time.perf_counter() - t)
                    print(f"  {label:9} {name:8} {len(rows):6} rows  {statistics.median(times) * 1000:8.2f} ms")
        finally:
            engine.dispose()
            if server is not None:
                server.close()


if __name__ == "__main__":
    main()
