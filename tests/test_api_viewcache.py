"""The device and alert lists' page cache (dashboard_api/viewcache.py): a change that the
lists show as an event (an alert, a status, a silence) is served at once; a reading may be up
to the cache's ttl behind; the cache is bounded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dashboard_api.viewcache import ViewCache
from eqmon.domain import Quality, Reading, Severity
from tests.test_api_support import api_on_built_service


def test_alerts_and_statuses_show_at_once_readings_within_the_ttl(tmp_path: Path) -> None:
    now = [1000.0]
    with api_on_built_service(tmp_path) as api:
        state = api.service.state
        state.views = ViewCache(ttl=1.0, clock=lambda: now[0])

        def fridge() -> dict:
            items = api.get("/api/v1/devices", params={"q": "fridge-1"}).json()["items"]
            return items[0]

        state.record([Reading("fridge-1", "temperature_c", 4.0, time.time(), Quality.GOOD, "°C")])
        assert fridge()["readings"]["temperature_c"]["value"] == 4.0
        state.record([Reading("fridge-1", "temperature_c", 5.0, time.time(), Quality.GOOD, "°C")])
        assert fridge()["readings"]["temperature_c"]["value"] == 4.0  # the page of a moment ago
        now[0] += 1.01
        assert fridge()["readings"]["temperature_c"]["value"] == 5.0  # past the ttl: built afresh

        # an alert: in the alert list and on its device at once, the ttl notwithstanding
        assert api.get("/api/v1/alerts").json()["items"] == []
        api.service.engine.raise_system("cache-test", Severity.WARNING, "WARNING eqmon: test", time.time())
        assert [a["rule_id"] for a in api.get("/api/v1/alerts").json()["items"]] == ["cache-test"]
        # a status change (the bus's status event) drops the device pages
        before = fridge()["status"]
        api.service.health["fridge-1"].success(time.time())
        assert before == "unknown" and fridge()["status"] == "online"
        assert state.views.hits >= 1 and state.views.misses >= 4


def test_the_cache_is_bounded_and_dropped_whole_on_a_change() -> None:
    now = [0.0]
    cache = ViewCache(ttl=5.0, max_entries=3, clock=lambda: now[0])
    for k in range(5):
        cache.put(("page", k), b"%d" % k)
    assert [cache.get(("page", k)) for k in range(5)] == [None, None, b"2", b"3", b"4"]
    cache.changed()
    assert cache.get(("page", 4)) is None
    cache.put("x", b"x")
    now[0] = 5.0
    assert cache.get("x") is None


def test_requests_for_a_room_being_built_wait_for_that_one_build(tmp_path: Path, monkeypatch: Any) -> None:
    import asyncio

    from dashboard_api.routers import inventory as routes

    calls: list[int] = []
    build = routes._room_status

    def slow_build(*args: Any) -> bytes:
        calls.append(args[1])
        time.sleep(0.3)  # long enough for the other requests to arrive while it runs
        return build(*args)

    monkeypatch.setattr(routes, "_room_status", slow_build)
    with api_on_built_service(tmp_path) as api:
        room = api.get("/api/v1/inventory/locations?kind=room").json()["items"][0]["id"]

        async def together(url: str, n: int) -> list[Any]:
            return await asyncio.gather(*(api.client.get(url) for _ in range(n)))

        answers = api.run(together(f"/api/v1/inventory/rooms/{room}/status", 6))
        assert [r.status_code for r in answers] == [200] * 6
        assert len({r.content for r in answers}) == 1
        assert calls == [room]  # one build for six requests
        # a location that is not a room: the error reaches every waiter, and nothing is kept
        calls.clear()
        answers = api.run(together("/api/v1/inventory/rooms/999999/status", 3))
        assert [r.status_code for r in answers] == [404] * 3 and calls == [999999]
        assert api.service.state.stock_building == {}
