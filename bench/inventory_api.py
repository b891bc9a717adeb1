"""Latency of the inventory API's reads with 10,000 bins (docs/api.md, "Inventory"; the supply
room's status is one of the three routes issue 11's load test measures).

    .venv/bin/python bench/inventory_api.py [--rooms 40] [--shelves 5] [--items 250] [--postgres] [--rounds 200]

Builds a catalog of ``rooms × items`` bins (default 10,000): one building, 4 floors, the rooms
spread over them, each room with ``shelves`` shelves holding its items; every bin counted once
and used since (so each has a rate and days of supply). Then, in this one process, calls each
route through the whole app (routing, auth, validation, the queries, the response model, JSON)
as an ASGI server would, one request at a time: the latency of one request and the CPU it costs
this process (all threads; what bounds the requests/s one process can serve), not a load test
(that is bench/api_load.py's). The room status twice: built (its cached answer dropped before
each request, as after a stock change) and from the cache; and its database work alone
(``queries.room_status``). Prints median, p95 and p99 over ``--rounds`` requests after a
warm-up, and the mean CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, insert  # noqa: E402

from dashboard_api.app import create_app  # noqa: E402
from eqmon.db.schema import inventory_bins, inventory_items, inventory_locations, inventory_on_hand  # noqa: E402
from eqmon_app.service import Service  # noqa: E402
from inventory import queries  # noqa: E402
from inventory.usage import add_use  # noqa: E402
from tests.sitefiles import example_on_free_ports, site  # noqa: E402
from tests.test_api_support import auth_headers  # noqa: E402

NOW = 1_767_225_600.0


def fill(engine: Engine, rooms: int, shelves: int, items: int) -> list[int]:
    """The catalog and on-hand rows; returns the rooms' ids."""
    with engine.begin() as conn:
        conn.execute(insert(inventory_items), [
            {"id": i + 1, "sku": f"SKU-{i:05d}", "name": f"item {i}", "pack_size": 10, "critical": i % 10 == 0}
            for i in range(items)
        ])  # fmt: skip
        locs: list[dict[str, Any]] = [{"id": 1, "parent_id": None, "kind": "building", "name": "Main"}]
        locs += [{"id": 2 + f, "parent_id": 1, "kind": "floor", "name": f"Floor {f}"} for f in range(4)]
        room_ids, shelf_of = [], {}
        n = len(locs) + 1
        for r in range(rooms):
            room_ids.append(n)
            locs.append({"id": n, "parent_id": 2 + r % 4, "kind": "room", "name": f"Room {r}"})
            room = n
            n += 1
            for s in range(shelves):
                locs.append({"id": n, "parent_id": room, "kind": "shelf", "name": f"Shelf {s}"})
                shelf_of[(room, s)] = n
                n += 1
        conn.execute(insert(inventory_locations), locs)
        bins, on_hand = [], []
        for room in room_ids:
            for i in range(items):
                loc = shelf_of[(room, i % shelves)]
                bins.append({"item_id": i + 1, "location_id": loc, "min_qty": 20, "reorder_point": 60, "par": 200,
                             "reorder_qty": 150, "lead_time_s": 8 * 3600.0})  # fmt: skip
                use, at = add_use(0.0, None, 5 + i % 20, NOW - 7200)
                on_hand.append({"item_id": i + 1, "location_id": loc, "quantity": (i * 7) % 240, "updated_at": NOW - 60,
                                "use_decayed": use, "use_at": at, "first_at": NOW - 3 * 86400})  # fmt: skip
        conn.execute(insert(inventory_bins), bins)
        conn.execute(insert(inventory_on_hand), on_hand)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    return room_ids


async def asgi_get(app: Any, path_qs: str, token: str) -> tuple[int, int]:
    """One GET through the ASGI app, as uvicorn would call it: (status, body bytes)."""
    path, _, qs = path_qs.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": qs.encode(), "root_path": "",
        "headers": [(b"host", b"eqmon"), (b"authorization", token.encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    out = {"status": 0, "size": 0}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["size"] += len(message.get("body", b""))

    await app(scope, receive, send)
    return out["status"], out["size"]


def stats(times: list[float]) -> str:
    t = sorted(times)
    q = statistics.quantiles(t, n=100)
    return f"median {statistics.median(t) * 1000:7.2f} ms  p95 {q[94] * 1000:7.2f} ms  p99 {q[98] * 1000:7.2f} ms"


async def run(url: str, args: argparse.Namespace, tmp: Path) -> None:
    data = example_on_free_ports()
    data["devices"] = [d for d in data["devices"] if d["protocol"] == "modbus"]
    data.pop("inventory")
    data["database"] = {"url": url}
    service = Service(site(data), data_dir=tmp, clock=lambda: NOW)
    try:
        t0 = time.perf_counter()
        rooms = fill(service.db, args.rooms, args.shelves, args.items)
        print(f"{service.db.dialect.name}: {args.rooms * args.items} bins in {args.rooms} rooms "
              f"(filled in {time.perf_counter() - t0:.1f} s)")  # fmt: skip
        room = rooms[len(rooms) // 2]
        times, cpu = [], 0.0
        for k in range(args.rounds + 10):
            if k == 10:
                cpu = time.process_time()
            t = time.perf_counter()
            queries.room_status(service.db, now=NOW, room_id=room)
            if k >= 10:
                times.append(time.perf_counter() - t)
        cpu = (time.process_time() - cpu) / args.rounds
        print(f"  {'queries.room_status (database + status)':48} {stats(times)}  cpu {cpu * 1000:6.2f} ms")
        app = create_app(service.state)
        token = auth_headers(service.state, "viewer")["Authorization"]
        views = service.state.stock_views
        for label, path in (
            ("GET /rooms/{id}/status (250 bins), built", f"/api/v1/inventory/rooms/{room}/status"),
            ("GET /rooms/{id}/status, from the cache", f"/api/v1/inventory/rooms/{room}/status"),
            ("GET /levels (a page of 100)", "/api/v1/inventory/levels"),
            ("GET /levels?status=below_reorder_point", "/api/v1/inventory/levels?status=below_reorder_point"),
            ("GET /levels?location={room}", f"/api/v1/inventory/levels?location={room}"),
            ("GET /items (a page of 100)", "/api/v1/inventory/items"),
            ("GET /pick-list?location={room}", f"/api/v1/inventory/pick-list?location={room}"),
            ("GET /pick-list (every room)", "/api/v1/inventory/pick-list"),
        ):
            times = []
            rounds = args.rounds if "every room" not in label else max(10, args.rounds // 20)
            built = label.endswith("built")  # the room's cached answer dropped before each request
            for _ in range(5):
                await asgi_get(app, path, token)
            cpu = time.process_time()
            for _ in range(rounds):
                if built:
                    views.changed()
                t = time.perf_counter()
                status, size = await asgi_get(app, path, token)
                times.append(time.perf_counter() - t)
                assert status == 200, status
            cpu = (time.process_time() - cpu) / rounds
            print(f"  {label:48} {stats(times)}  cpu {cpu * 1000:6.2f} ms  ({size // 1024} KiB)")
    finally:
        await service.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rooms", type=int, default=40)
    ap.add_argument("--shelves", type=int, default=5)
    ap.add_argument("--items", type=int, default=250)
    ap.add_argument("--rounds", type=int, default=200)
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
        try:
            asyncio.run(run(url, args, Path(tmp)))
        finally:
            if server is not None:
                server.close()


if __name__ == "__main__":
    main()
