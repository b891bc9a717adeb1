"""Issue 11's API benchmark: the API of a real `eqmon run` at hospital scale, loaded from a
second process, with live-stream clients connected.

    .venv/bin/python bench/api_load.py [--devices 1000] [--rooms 40 --items 250] [--sse-clients 100]
                                       [--rate 500] [--duration 30] [--postgres URL]

Set-up (not timed): a Mosquitto of its own; a site file of ``--devices`` MQTT sensors in 50
locations with a threshold rule (above 30 °C: an alert at once); the state database migrated
and filled with ``rooms × items`` bins (10,000 by default, bench/inventory.py's ``fill``, 20
ledger rows each); a viewer and a coordinator with API tokens (``eqmon user``'s code). Then
`eqmon run` in its own process, pinned to CPU 0 (this process on CPU 1 when there are two);
every device publishes a reading (5 % of them above 30 °C: ~50 open alerts) and keeps
publishing one reading per device every 10 s (100 messages/s) while the load runs.

Measured, this process against the server over loopback, HTTP/1.1 keep-alive:

* **requests**: an open-loop schedule at ``--rate`` requests/s for ``--duration`` s, round robin
  over three routes — the device list (first page of 100, ``GET /api/v1/devices?limit=100``),
  the alert list (``GET /api/v1/alerts?limit=100``: open ones first), one supply room's status
  (``GET /api/v1/inventory/rooms/{id}/status``, a random room) — on ``--connections`` connections.
  Latency is from the request's *scheduled* time to the end of its response, so a server that
  falls behind is charged for the queue (no coordinated omission). Prints requests/s served and
  p50/p95/p99 per route. Target: p95 < 50 ms at 500 requests/s.
* **SSE delay**: ``--sse-clients`` clients hold ``GET /api/v1/events?types=alert``; once a
  second the coordinator acknowledges one open alert (``POST /api/v1/alerts/{id}/ack``) and each
  client's time from sending that request to receiving the alert's ``acknowledged`` event is
  one sample (so it includes the acknowledgement itself). Prints p50/p95/p99/max over all
  samples. Target: p99 < 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho  # noqa: E402
import yaml  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from sqlalchemy import update  # noqa: E402

from bench.inventory import database, fill  # noqa: E402
from dashboard_api.auth import Authenticator  # noqa: E402
from eqmon import db  # noqa: E402
from eqmon.config import Database  # noqa: E402
from eqmon.db.repos import UserRepo  # noqa: E402
from eqmon.db.schema import inventory_bins  # noqa: E402
from simulators.servers import MosquittoServer, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOCATIONS = 50
HOT = 30.0


def site_file(path: Path, devices: int, mqtt_port: int, api_port: int, db_url: str | None) -> None:
    data: dict[str, Any] = {
        "site": {"name": "Bench hospital", "timezone": "Europe/London"},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "client_id": "eqmon-bench"},
        "api": {"host": "127.0.0.1", "port": api_port},
        "devices": [
            {
                "id": f"sensor-{i:04d}", "name": f"Room sensor {i}", "kind": "room_sensor",
                "location": f"Ward {i % LOCATIONS:02d}", "protocol": "mqtt", "topic": f"bench/sensor-{i:04d}",
                "fields": [{"metric": "temperature_c", "path": "t", "unit": "°C"}], "stale_after": "10m",
            }
            for i in range(devices)
        ],
        "telemetry": {"embedded": {"path": "telemetry.sqlite", "retention": "1d"}},
        "alerts": {"rules": [{
            "id": "room-too-warm", "kind": "threshold", "device_kind": "room_sensor", "metric": "temperature_c",
            "above": HOT, "hysteresis": 0.5, "severity": "warning", "action": "check the room's ventilation",
        }]},
    }  # fmt: skip
    if db_url is not None:
        data["database"] = {"url": db_url}
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def prepare_state(db_url: str, data_dir: Path, rooms: int, items: int) -> tuple[list[int], dict[str, str]]:
    """Migrated and filled state database; (room location ids, tokens by role)."""
    engine = db.open_engine(Database(url=db_url), data_dir)
    try:
        db.upgrade(engine)
        filled = fill(engine, rooms, items, rows_per_bin=20)
        with engine.begin() as conn:  # no smart shelves here: the bins are counted
            conn.execute(update(inventory_bins).values(shelf_device_id=None))
        auth = Authenticator(UserRepo(engine))
        tokens = {}
        for role in ("viewer", "coordinator"):
            user = auth.add_user(f"bench-{role}", role, None)  # type: ignore[arg-type]
            tokens[role], _ = auth.issue(user, "api", label="bench")
        return list(filled["rooms"]), tokens
    finally:
        engine.dispose()


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(0, {cpu})


class Publisher:
    """Readings for every device: one each at once, then ``rate`` a second in the background."""

    def __init__(self, port: int, devices: int, hot: set[int]) -> None:
        self.devices, self.hot = devices, hot
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.sent = 0

    def value(self, i: int) -> float:
        return HOT + 5.0 if i in self.hot else 21.0 + random.random()

    def publish(self, i: int) -> None:
        payload = json.dumps({"t": round(self.value(i), 2), "ts": time.time()})
        self.client.publish(f"bench/sensor-{i:04d}", payload, qos=1)
        self.sent += 1

    async def background(self, per_second: int, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            for _ in range(per_second // 10):
                self.publish(i % self.devices)
                i += 1
            await asyncio.sleep(0.1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Connection:
    """One HTTP/1.1 keep-alive connection (this benchmark's own minimal client: an HTTP library
    in this process would cost more CPU than the server it measures)."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n"
                f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n\r\n")  # fmt: skip
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b""
        return status, payload


class SseClient:
    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.seen: dict[tuple[str, str], float] = {}  # (alert id, state) -> first receipt time
        self.connected = asyncio.Event()
        self.events = 0

    def on_event(self, block: str) -> None:
        event, data = "", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if event != "alert" or not data:
            return
        now = time.perf_counter()
        self.events += 1
        try:
            a = json.loads("\n".join(data))
            self.seen.setdefault((a["id"], a["state"]), now)
        except (ValueError, KeyError, TypeError):
            pass

    async def run(self, stop: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET /api/v1/events?types=alert HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())  # fmt: skip
        status = int((await reader.readline()).split()[1])
        assert status == 200, f"SSE answered {status}"
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            chunked |= line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower()
        self.connected.set()
        buf = b""
        try:
            while not stop.is_set():
                if chunked:  # one chunk: its size in hex, the bytes, CRLF
                    size = int((await reader.readline()).split(b";")[0], 16)
                    if size == 0:
                        break
                    buf += await reader.readexactly(size)
                    await reader.readexactly(2)
                else:
                    more = await reader.read(65536)
                    if not more:
                        break
                    buf += more
                buf = buf.replace(b"\r\n", b"\n")
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    self.on_event(block.decode("utf-8", "replace"))
        finally:
            writer.close()


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


async def load(args: argparse.Namespace, port: int, rooms: list[int], tokens: dict[str, str],
               publisher: Publisher) -> dict[str, Any]:
    stop = asyncio.Event()
    background = asyncio.create_task(publisher.background(args.devices // 10, stop))
    clients = [SseClient(port, tokens["viewer"]) for _ in range(args.sse_clients)]
    sse_tasks = [asyncio.create_task(c.run(stop)) for c in clients]
    await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), 30)

    coordinator = Connection(port, tokens["coordinator"])
    status, body = await coordinator.request("GET", "/api/v1/alerts?state=active&limit=1000")
    assert status == 200, body[:300]
    open_ids = [a["id"] for a in json.loads(body)["items"] if a["state"] == "active"]
    assert open_ids, "no open alert to acknowledge"

    # every page of the device list (its cursors walked once), three views of the alert list
    device_pages, cursor = [], None
    while True:
        path = "/api/v1/devices?limit=100" + (f"&cursor={cursor}" if cursor else "")
        device_pages.append(path)
        cursor = json.loads((await coordinator.request("GET", path))[1])["next_cursor"]
        if cursor is None:
            break
    alert_views = ["/api/v1/alerts?limit=100", "/api/v1/alerts?state=active&limit=100",
                   "/api/v1/alerts?state=resolved&limit=100"]  # fmt: skip
    routes = [
        ("devices", lambda: random.choice(device_pages)),
        ("alerts", lambda: random.choice(alert_views)),
        ("room status", lambda: f"/api/v1/inventory/rooms/{random.choice(rooms)}/status"),
    ]
    conns = [Connection(port, tokens["viewer"]) for _ in range(args.connections)]
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for c in conns:
        idle.put_nowait(c)
    lat: dict[str, list[float]] = {name: [] for name, _ in routes}
    errors: list[str] = []
    acks: list[tuple[str, float]] = []
    timeline: list[tuple[float, float]] = []  # (seconds into the run, latency)

    async def one(name: str, path: str, due: float) -> None:
        conn = await idle.get()
        try:
            status, payload = await conn.request("GET", path)
            if status != 200:
                errors.append(f"{name} {status} {payload[:200]!r}")
        finally:
            idle.put_nowait(conn)
        lat[name].append(time.perf_counter() - due)
        timeline.append((due - start, lat[name][-1]))

    async def acknowledger() -> None:
        while not stop.is_set() and open_ids:
            aid = open_ids.pop()
            sent = time.perf_counter()
            status, payload = await coordinator.request("POST", f"/api/v1/alerts/{aid}/ack", b'{"note": "bench"}')
            if status == 200:
                acks.append((aid, sent))
            await asyncio.sleep(1.0)

    ack_task = asyncio.create_task(acknowledger())
    start = time.perf_counter()
    total = int(args.rate * args.duration)
    pending = set()
    for i in range(total):
        due = start + i / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        name, path = routes[i % len(routes)]
        t = asyncio.create_task(one(name, path(), due))
        pending.add(t)
        t.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    elapsed = time.perf_counter() - start
    stop.set()
    ack_task.cancel()
    await asyncio.sleep(0.5)  # the last acknowledgement's events
    for t in sse_tasks:
        t.cancel()
    background.cancel()
    await asyncio.gather(*sse_tasks, background, ack_task, return_exceptions=True)

    metrics = (await coordinator.request("GET", "/metrics"))[1].decode()
    cache = {m: next((float(line.split()[-1]) for line in metrics.splitlines()
                      if line.startswith(f"eqmon_api_list_cache_{m}_total ")), float("nan"))
             for m in ("hits", "misses")}  # fmt: skip
    delays = [c.seen[(aid, "acknowledged")] - sent for aid, sent in acks for c in clients if (aid, "acknowledged") in c.seen]
    missing = sum(1 for aid, _ in acks for c in clients if (aid, "acknowledged") not in c.seen)
    return {"lat": lat, "elapsed": elapsed, "total": total, "errors": errors, "delays": delays,
            "acks": len(acks), "missing": missing, "cache": cache, "timeline": timeline}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rooms", type=int, default=40)
    ap.add_argument("--items", type=int, default=250)
    ap.add_argument("--sse-clients", type=int, default=100)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--timeline", action="store_true", help="also print the slowest seconds of the run")
    ap.add_argument("--postgres", default=None, help="a PostgreSQL server URL: the state database on a throwaway database there")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, database(args.postgres) as db_url, MosquittoServer() as broker:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        api_port = free_port()
        site = Path(tmp) / "site.yaml"
        site_file(site, args.devices, broker.port, api_port, db_url if args.postgres else None)
        if args.postgres is None:
            db_url = f"sqlite:///{data_dir / 'state.sqlite'}"
        t = time.perf_counter()
        rooms, tokens = prepare_state(db_url, data_dir, args.rooms, args.items)
        print(f"state database: {args.rooms * args.items} bins in {time.perf_counter() - t:.1f} s "
              f"({'PostgreSQL' if args.postgres else 'SQLite'})", flush=True)  # fmt: skip
        log = open(Path(tmp) / "run.log", "wb")
        server = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, "-m", "eqmon_app.cli", "--log-level", "warning", "run",
             "--config", str(site), "--data-dir", str(data_dir)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        pin(1)
        publisher = None
        try:
            deadline = time.monotonic() + 60
            probe = Connection(api_port, tokens["viewer"])
            while True:
                try:
                    if asyncio.run(probe.request("GET", "/healthz"))[0] == 200:
                        break
                except OSError:
                    probe = Connection(api_port, tokens["viewer"])
                assert server.poll() is None and time.monotonic() < deadline, (Path(tmp) / "run.log").read_text()
                time.sleep(0.3)
            hot = set(random.Random(1).sample(range(args.devices), max(1, args.devices // 20)))
            publisher = Publisher(broker.port, args.devices, hot)
            for i in range(args.devices):
                publisher.publish(i)

            async def settle() -> None:  # every device online, every hot one alerting
                conn = Connection(api_port, tokens["viewer"])
                while True:
                    _, body = await conn.request("GET", "/api/v1/alerts?state=active&limit=1000")
                    if len(json.loads(body)["items"]) >= len(hot):
                        return
                    await asyncio.sleep(0.5)

            asyncio.run(asyncio.wait_for(settle(), 60))
            print(f"{args.devices} devices online, {len(hot)} alerts open; load: {args.rate:g} requests/s for "
                  f"{args.duration:g} s on {args.connections} connections, {args.sse_clients} SSE clients", flush=True)  # fmt: skip
            try:
                import uvloop

                runner = uvloop.run
            except ImportError:
                runner = asyncio.run
            out = runner(load(args, api_port, rooms, tokens, publisher))
        finally:
            if publisher is not None:
                publisher.close()
            server.terminate()
            server.wait(timeout=30)
            log.close()
        served = sum(len(v) for v in out["lat"].values())
        print(f"served {served} requests in {out['elapsed']:.1f} s: {served / out['elapsed']:.0f} requests/s "
              f"(offered {args.rate:g}); errors: {len(out['errors'])}")  # fmt: skip
        print(f"list page cache: {out['cache']['hits']:.0f} hits, {out['cache']['misses']:.0f} misses "
              f"(device pages: {len(set(range(args.devices // 100 or 1)))}, alert views: 3)")
        for e in out["errors"][:5]:
            print("  error:", e)
        print(f"{'route':<12} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
        for name, xs in out["lat"].items():
            print(f"{name:<12} {len(xs):>6} {pct(xs, 50) * 1e3:>8.1f} {pct(xs, 95) * 1e3:>8.1f} {pct(xs, 99) * 1e3:>8.1f}")
        if args.timeline:  # the slowest seconds: when the tail happens
            by_second: dict[int, list[float]] = {}
            for at, x in out["timeline"]:
                by_second.setdefault(int(at), []).append(x)
            worst = sorted(by_second.items(), key=lambda kv: -max(kv[1]))[:8]
            print("slowest seconds:", ", ".join(f"{sec} s: max {max(xs) * 1e3:.0f} ms" for sec, xs in sorted(worst)))
        d = out["delays"]
        print(f"SSE: {out['acks']} acknowledgements × {args.sse_clients} clients = {len(d)} events "
              f"({out['missing']} missing); delay p50 {pct(d, 50) * 1e3:.1f} ms, p95 {pct(d, 95) * 1e3:.1f} ms, "
              f"p99 {pct(d, 99) * 1e3:.1f} ms, max {max(d, default=float('nan')) * 1e3:.1f} ms")  # fmt: skip
        if d:
            print(f"SSE delay median {statistics.median(d) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
