"""The live updates (GET /api/v1/events, Server-Sent Events; dashboard_api/events.py) against a
running service: uvicorn in the service's loop, real HTTP over loopback, httpx streaming.

Every wait is bounded (``asyncio.wait_for`` / ``wait_until``); none sleeps for a fixed time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from dashboard_api.events import EventHub
from dashboard_api.models import AlertOut, DeviceEventOut, StockEventOut
from eqmon.domain import AlertState, DeviceState, DeviceStatusEvent, Severity
from eqmon_app.service import Service
from inventory.catalog import Catalog
from inventory.ledger import Ledger
from simulators.servers import free_port
from tests.sitefiles import example_on_free_ports, site
from tests.test_api_support import (
    NO_AUTH,
    api_client,
    auth_headers,
    modbus_only_site,
    running_service,
)

URL = "/api/v1/events"


@dataclass
class Sse:
    id: int | None
    type: str
    data: Any


class SseReader:
    """Reads one ``text/event-stream`` response: events (``next``), comments, the retry hint."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.retry: int | None = None

    async def next(self, timeout: float = 10.0, *, comments: bool = False) -> Sse:
        """The next event (or comment, as type ``:``); StopAsyncIteration at the end."""
        return await asyncio.wait_for(self._next(comments), timeout)

    async def _next(self, comments: bool) -> Sse:
        fields: dict[str, str] = {}
        data: list[str] = []
        while True:
            line = await anext(self.lines)
            if line == "":
                if data:
                    ident = fields.get("id")
                    return Sse(int(ident) if ident else None, fields.get("event", "message"), json.loads("\n".join(data)))
                fields.clear()
                continue
            if line.startswith(":"):
                if comments:
                    return Sse(None, ":", line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "retry":
                self.retry = int(value)
            else:
                fields[name] = value

    async def until(self, pred: Callable[[Sse], bool], timeout: float = 20.0) -> list[Sse]:
        """Events up to and including the first for which ``pred`` holds."""
        seen: list[Sse] = []

        async def run() -> list[Sse]:
            while True:
                ev = await self._next(False)
                seen.append(ev)
                if pred(ev):
                    return seen

        return await asyncio.wait_for(run(), timeout)


@contextlib.asynccontextmanager
async def sse(
    client: httpx.AsyncClient, *, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> AsyncIterator[SseReader]:
    async with client.stream("GET", URL, params=params, headers=headers, timeout=httpx.Timeout(10.0, read=None)) as r:
        assert r.status_code == 200, (await r.aread()).decode()
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-store"
        yield SseReader(r)


async def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def alert_of(service: Service, rule_id: str) -> Any:
    (a,) = [a for a in service.engine.active() if a.rule_id == rule_id]
    return a


def raise_alert(service: Service, key: str) -> Any:
    service.engine.raise_system(key, Severity.WARNING, f"WARNING eqmon: {key}", time.time())
    return alert_of(service, key)


def marker(service: Service, reason: str) -> None:
    """A ``device`` event of fridge-1 carrying ``reason`` (as the bus would hand it over)."""
    service.state.publish_device(DeviceStatusEvent("fridge-1", DeviceState.OFFLINE, time.time(), reason))


# -- alerts, devices, auth ---------------------------------------------------------------------


def test_alert_raised_acknowledged_resolved_arrive_in_order_for_a_viewer(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_service(tmp_path) as service:
            hub = service.state.events
            async with api_client(service, "viewer") as viewer, api_client(service, "coordinator", "Nurse Joy") as coord:
                # no token, a wrong token: 401 in the error shape, nothing streamed
                for headers in (NO_AUTH, {"Authorization": "Bearer nope"}):
                    r = await viewer.get(URL, headers=headers)
                    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text
                    assert r.headers["www-authenticate"] == "Bearer"
                async with sse(viewer, params={"types": "alert"}) as stream:
                    ready = await stream.next()
                    assert (ready.type, ready.data) == ("ready", {"last_event_id": ready.id})
                    assert ready.id is not None and ready.id <= hub.last_id and stream.retry == 3000
                    alert = raise_alert(service, "sse-test")
                    r = await coord.post(f"/api/v1/alerts/{alert.id}/ack", json={"note": "on my way"})
                    assert r.status_code == 200, r.text
                    r = await coord.post(f"/api/v1/alerts/{alert.id}/resolve", json={"note": "door closed"})
                    assert r.status_code == 200, r.text
                    seen = await stream.until(lambda e: e.data["id"] == alert.id and e.data["state"] == "resolved")
                # the same body as the alert's REST view
                listed = (await viewer.get("/api/v1/alerts", params={"limit": 1000})).json()["items"]
            # (the service may raise alerts of its own meanwhile: its devices go offline)
            assert {e.type for e in seen} == {"alert"}
            got = [e for e in seen if e.data["id"] == alert.id]
            bodies = [AlertOut.model_validate(e.data) for e in got]
            assert [b.state for b in bodies] == [AlertState.ACTIVE, AlertState.ACKNOWLEDGED, AlertState.RESOLVED]
            assert bodies[1].acknowledged_by == "Nurse Joy" and bodies[1].note == "on my way"
            assert bodies[2].resolved_by == "Nurse Joy" and bodies[2].note == "door closed"
            ids = [e.id for e in seen]
            assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids[0] > ready.id
            assert [a for a in listed if a["id"] == alert.id] == [got[2].data]

    asyncio.run(main())


def test_a_device_going_offline_arrives_and_a_resume_from_the_start_replays_it(tmp_path: Path) -> None:
    # The example's Modbus devices run without their simulators: each fails its polls and goes
    # offline within seconds of the start. Resuming after the hub's first id replays all of it.
    async def main() -> None:
        async with running_service(tmp_path) as service:
            start = service.state.events.oldest_id
            async with api_client(service, "viewer") as client, sse(client, params={"last_event_id": str(start)}) as stream:
                assert (await stream.next()).data == {"last_event_id": start}
                seen = await stream.until(lambda e: e.type == "device" and e.data["id"] == "fridge-1" and e.data["status"] == "offline")
            offline = DeviceEventOut.model_validate(seen[-1].data)
            assert offline.last_error and "cannot connect" in offline.last_error
            assert offline.status_since is not None and offline.last_seen is None
            fridge = [DeviceEventOut.model_validate(e.data).status for e in seen if e.type == "device" and e.data["id"] == "fridge-1"]
            assert fridge[0] == DeviceState.DEGRADED and fridge[-1] == DeviceState.OFFLINE
            ids = [e.id for e in seen]
            assert ids == sorted(ids) and ids[0] == start + 1  # from the very first event on

    asyncio.run(main())


# -- resume ------------------------------------------------------------------------------------


def test_reconnect_with_last_event_id_gets_exactly_the_missed_events(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_service(tmp_path) as service:
            hub = service.state.events
            async with api_client(service, "viewer") as client:
                async with sse(client, params={"types": "alert"}) as stream:
                    await stream.next()
                    a1 = raise_alert(service, "sse-one")
                    e1 = await stream.next()
                    assert e1.data["id"] == a1.id and e1.id is not None
                # the client left: its stream is cleaned up promptly
                await wait_until(lambda: hub.clients == 0, 5.0, "the stream to end")
                # missed while away (one of them published from a worker thread)
                a2 = raise_alert(service, "sse-two")
                service.engine.acknowledge(a1.id, "Nurse Joy", time.time(), "seen")
                resolved = service.engine.resolve(a2.id, "Nurse Joy", time.time())
                assert resolved is not None
                last = hub.last_id
                body = AlertOut.model_validate(service.state.alert_view(resolved))
                await asyncio.to_thread(hub.publish, "alert", body)
                await wait_until(lambda: hub.last_id > last, 5.0, "the thread's event")
                ours = [(a2.id, "active"), (a1.id, "acknowledged"), (a2.id, "resolved"), (a2.id, "resolved")]

                # the header (as EventSource sends it) wins over the query parameter
                for how in ({"headers": {"Last-Event-ID": str(e1.id)}, "params": {"types": "alert", "last_event_id": "0"}},
                            {"params": {"types": "alert", "last_event_id": str(e1.id)}}):  # fmt: skip
                    async with sse(client, **how) as stream:
                        assert (await stream.next()).data == {"last_event_id": e1.id}
                        a3 = raise_alert(service, f"sse-live-{len(how)}")
                        got = await stream.until(lambda e: e.data["id"] == a3.id)  # noqa: B023
                    # exactly the alert events published after e1, in order, each once (the
                    # service's own alerts among them), up to the live one
                    kept = [e for e in hub.events_after(e1.id, ["alert"]) if got[-1].id is not None and e.id <= got[-1].id]
                    assert [e.id for e in got] == [e.id for e in kept]
                    assert [json.loads(e.data) for e in kept] == [e.data for e in got]
                    assert [(e.data["id"], e.data["state"]) for e in got if e.data["rule_id"].startswith("sse-")] == [
                        *ours, (a3.id, "active")
                    ]
                    ours.append((a3.id, "active"))  # missed too by the next reconnection from e1
                    await wait_until(lambda: hub.clients == 0, 5.0, "the stream to end")

    asyncio.run(main())


def test_an_id_no_longer_kept_gets_reset_then_live_events(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_service(tmp_path) as service:
            hub = service.state.events
            first = hub.last_id
            for i in range(hub.capacity + 1):
                marker(service, f"filler {i}")
            assert hub.oldest_id > first
            async with api_client(service, "viewer") as client:
                # older than the ring, from before a restart (ids start at the start time), from
                # the future: reset, with the id to go on from
                for gone in (first, 5, hub.last_id + 1000):
                    before = hub.last_id
                    async with sse(client, headers={"Last-Event-ID": str(gone)}, params={"types": "alert"}) as stream:
                        reset = await stream.next()
                        assert reset.type == "reset" and reset.id is not None and before <= reset.id <= hub.last_id
                        assert reset.data["last_event_id"] == reset.id and "reload" in reset.data["reason"]
                        a = raise_alert(service, f"sse-after-reset-{gone}")
                        after = await stream.until(lambda e: e.data["id"] == a.id)  # noqa: B023
                        assert {e.type for e in after} == {"alert"} and (after[0].id or 0) > reset.id
                # an id near the oldest kept (a margin for the events the devices publish
                # meanwhile): everything after it, from the ring
                edge = hub.oldest_id + 100
                async with sse(client, headers={"Last-Event-ID": str(edge)}) as stream:
                    assert (await stream.next()).type == "ready"
                    nxt = await stream.next()
                    assert nxt.id == edge + 1
            assert hub.resets >= 3

    asyncio.run(main())


# -- slow clients, filters, many clients -------------------------------------------------------


async def raw_stream(service: Service, token_headers: dict[str, str]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that reads only when told: a raw socket with a small receive buffer (no
    kernel autotuning), so that what the server can push ahead of it is bounded."""
    url = urlsplit(service.api_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (url.hostname, url.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
    auth = token_headers["Authorization"]
    writer.write(f"GET {URL} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: {auth}\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"event: ready"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head
    return reader, writer


def test_a_client_that_stops_reading_does_not_stall_the_others_and_is_reset(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_service(tmp_path) as service:
            hub = EventHub(capacity=100)  # small, so that falling behind it is quick to reach
            hub.bind(asyncio.get_running_loop())
            service.state.events = hub
            slow_reader, slow_writer = await raw_stream(service, auth_headers(service.state, "viewer"))
            try:
                async with api_client(service, "viewer") as client, sse(client) as fast:
                    ready = await fast.next()
                    received: list[Sse] = []

                    async def read_fast() -> None:
                        while True:
                            received.append(await fast._next(False))

                    reader_task = asyncio.create_task(read_fast())
                    try:
                        pad = "x" * 4000  # 3,000 events of 4 kB: far more than the slow one's buffers hold
                        for _ in range(60):
                            for i in range(50):
                                marker(service, f"{i} {pad}")
                            target = hub.last_id
                            await wait_until(lambda t=target: bool(received) and (received[-1].id or 0) >= t, 10.0,
                                             "the fast client to keep up")  # fmt: skip
                    finally:
                        reader_task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await reader_task
                    ids = [e.id for e in received]
                    assert ready.id is not None and ids == list(range(ready.id + 1, hub.last_id + 1))
                    assert "reset" not in {e.type for e in received}  # it never fell behind
                    assert hub.clients == 2

                    # the slow one reads again: what its buffers held, in order, then reset, then live
                    data = b""
                    while b"\nevent: reset\n" not in data:
                        data += await asyncio.wait_for(slow_reader.read(1 << 16), 10)
                    *before, reset_id = [int(x) for x in re.findall(rb"^id: (\d+)$", data.split(b"\nevent: reset\n")[0], re.M)]
                    assert before == list(range(before[0], before[0] + len(before)))  # no gap before the reset
                    assert before[-1] < reset_id - hub.capacity  # it had fallen behind the ring
                    marker(service, "after the reset")
                    live = hub.last_id
                    while f"id: {live}\n".encode() not in data:
                        data += await asyncio.wait_for(slow_reader.read(1 << 16), 10)
                    assert hub.resets == 1
            finally:
                slow_writer.close()
                with contextlib.suppress(Exception):
                    await slow_writer.wait_closed()
            await wait_until(lambda: hub.clients == 0, 5.0, "both streams to end")

    asyncio.run(main())


def test_types_filter_and_parameter_validation(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_service(tmp_path) as service:
            async with api_client(service, "viewer") as client:
                async with sse(client, params={"types": "device,stock"}) as devices, sse(client, params={"types": "alert"}) as alerts:
                    await devices.next()
                    await alerts.next()
                    raise_alert(service, "sse-filtered")
                    marker(service, "the marker")
                    seen = await devices.until(lambda e: e.data.get("reason") == "the marker")
                    assert all(e.type == "device" for e in seen)
                    only = await alerts.until(lambda e: e.data["rule_id"] == "sse-filtered")
                    assert {e.type for e in only} == {"alert"}
                for params, headers, field in [
                    ({"types": "alert,bogus"}, {}, "query.types"),
                    ({"types": ","}, {}, "query.types"),
                    ({"types": "x" * 101}, {}, "query.types"),
                    ({"last_event_id": "-1"}, {}, "query.last_event_id"),
                    ({"last_event_id": str(2**53)}, {}, "query.last_event_id"),
                    ({"last_event_id": "1e400"}, {}, "query.last_event_id"),
                    ({"last_event_id": "nan"}, {}, "query.last_event_id"),
                    ({}, {"Last-Event-ID": "abc"}, "header.Last-Event-ID"),
                ]:
                    r = await client.get(URL, params=params, headers=headers)
                    assert r.status_code == 422, (params, headers, r.text)
                    assert r.json()["error"]["field"] == field, r.text

    asyncio.run(main())


def test_hundred_clients_each_get_the_alert_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_service(tmp_path) as service:
            hub = service.state.events
            limits = httpx.Limits(max_connections=200)
            async with httpx.AsyncClient(base_url=service.api_url, headers=auth_headers(service.state, "viewer"), limits=limits) as client:
                async with contextlib.AsyncExitStack() as stack:
                    streams = [await stack.enter_async_context(sse(client, params={"types": "alert"})) for _ in range(100)]
                    for s in streams:
                        await s.next()
                    assert hub.clients == 100
                    metrics = (await client.get("/metrics")).text
                    assert "eqmon_api_event_streams 100.0" in metrics, metrics
                    a = raise_alert(service, "sse-hundred")
                    # (the service may raise alerts of its own meanwhile: its devices go offline)
                    got = await asyncio.gather(*(s.until(lambda e: e.data["id"] == a.id) for s in streams))
                    assert len({seen[-1].id for seen in got}) == 1  # the same event, once each
                await wait_until(lambda: hub.clients == 0, 10.0, "100 streams to end")

    asyncio.run(main())


# -- keep-alive, token checks, shutdown --------------------------------------------------------


def test_keepalive_and_a_revoked_token_ends_the_stream(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_service(tmp_path) as service:
            hub = service.state.events
            hub.heartbeat = 0.2
            hub.recheck = 0.2
            auth = service.state.auth
            user = auth.users.get("test-viewer") or auth.add_user("test-viewer", "viewer", None)
            token, record = auth.issue(user, "session")
            async with httpx.AsyncClient(base_url=service.api_url) as client:
                async with sse(client, params={"types": "stock"}, headers={"Authorization": f"Bearer {token}"}) as stream:
                    assert (await stream.next()).type == "ready"
                    for _ in range(2):
                        assert await stream.next(5.0, comments=True) == Sse(None, ":", "keepalive")
                    assert auth.revoke(record.id)
                    with pytest.raises(StopAsyncIteration):  # ended, cleanly (not cut)
                        while True:
                            await stream.next(5.0, comments=True)
                r = await client.get(URL, headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 401

    asyncio.run(main())


def test_stopping_the_service_ends_open_streams(tmp_path: Path) -> None:
    async def main() -> None:
        service = Service(modbus_only_site(), data_dir=tmp_path)
        await service.start()
        stopped = False
        try:
            async with api_client(service, "viewer") as client, sse(client) as stream:
                assert (await stream.next()).type == "ready"
                await asyncio.wait_for(service.stop(), 30)
                stopped = True
                with pytest.raises(StopAsyncIteration):  # the stream ended cleanly (its last chunk)
                    while True:
                        await stream.next(5.0, comments=True)
        finally:
            if not stopped:
                await service.stop()

    asyncio.run(main())


# -- stock -------------------------------------------------------------------------------------


def test_stock_review_publishes_the_bins_whose_level_or_count_changed(tmp_path: Path) -> None:
    # the built service (not started) of the example site, with its inventory
    s = site(example_on_free_ports(mqtt_port=free_port()))

    async def main() -> None:
        service = Service(s, data_dir=tmp_path)
        try:
            hub = service.state.events
            hub.bind(asyncio.get_running_loop())
            start = hub.last_id
            cat = Catalog(service.db)
            gloves = cat.item("GLV-NIT-M")
            assert gloves is not None
            (glove_bin,) = [b for b in cat.bins() if b.item_id == gloves.id]
            now = time.time()
            await service._review_stock(now)  # the first review learns the bins (none counted)
            assert hub.events_after(start, ["stock"]) == []
            ledger = Ledger(service.db)
            ledger.receive(gloves.id, glove_bin.location_id, 120, who="Sam", key="r1", at=now)
            await service._review_stock(now + 1)
            await service._review_stock(now + 2)  # nothing changed: nothing more
            (ev,) = hub.events_after(start, ["stock"])
            low = StockEventOut.model_validate_json(ev.data)
            assert (low.sku, low.location_id, low.on_hand, low.level) == ("GLV-NIT-M", glove_bin.location_id, 120, "below_reorder")
            assert low.name and low.room and low.par == 500
            # the stock alert came with it, as an alert event
            assert [json.loads(e.data)["rule_id"] for e in hub.events_after(start, ["alert"])] == ["stock-level"]

            ledger.receive(gloves.id, glove_bin.location_id, 380, who="Sam", key="r2", at=now + 3)
            await service._review_stock(now + 4)
            restocked = StockEventOut.model_validate_json(hub.events_after(ev.id, ["stock"])[0].data)
            assert (restocked.on_hand, restocked.level) == (500, "in_stock")

            # the hook for stock changes made elsewhere (the inventory API): from any thread,
            # only what changed
            statuses, _ = service.stock_review.review(now + 5) if service.stock_review else ([], [])
            (st,) = [x for x in statuses if x.item_id == gloves.id]
            assert service.state.publish_stock([st]) == 0  # published already
            moved = type(st)(**{**{f: getattr(st, f) for f in st.__dataclass_fields__}, "on_hand": 499})
            last = hub.last_id
            await asyncio.to_thread(service.state.publish_stock, [moved])
            await wait_until(lambda: hub.last_id == last + 1, 5.0, "the thread's stock event")
            assert json.loads(hub.events_after(last, ["stock"])[0].data)["on_hand"] == 499
        finally:
            await service.stop()

    asyncio.run(main())


# -- the hub on its own (fake clock) -----------------------------------------------------------


def test_hub_keeps_at_most_capacity_events_and_max_age() -> None:
    now = [1000.0]
    hub = EventHub(capacity=5, max_age=60.0, start_id=100, clock=lambda: now[0])
    assert (hub.last_id, hub.oldest_id) == (100, 100) and hub.resumable(100) and not hub.resumable(99)
    for i in range(7):
        hub.publish("device", {"n": i})
    assert [e.id for e in hub.events_after(0)] == [103, 104, 105, 106, 107]
    assert hub.oldest_id == 102 and hub.resumable(102) and not hub.resumable(101) and not hub.resumable(108)
    assert hub.events_after(104)[0].frame == b'id: 105\nevent: device\ndata: {"n":4}\n\n'
    now[0] += 61  # an hour later nothing older than max_age is kept
    hub.publish("alert", {"value": float("nan")})
    assert [e.id for e in hub.events_after(0)] == [108] and hub.oldest_id == 107
    assert hub.events_after(107)[0].data == b'{"value":null}'  # valid JSON for JSON.parse
    with pytest.raises(ValueError):
        hub.publish("other", {})
    hub.close()
    hub.publish("alert", {})
    assert hub.last_id == 108  # closed: nothing more
