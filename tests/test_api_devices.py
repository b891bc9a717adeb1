"""Device views: latest values of a device that is not heard any more are served as quality
``stale`` with their age, never ``good``; a ``bad`` value stays bad; the dashboard marks them."""

from __future__ import annotations

from pathlib import Path

from dashboard_api.models import DeviceOut
from eqmon.domain import DeviceState, Quality, Reading
from tests.test_api_support import api_on_built_service

T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_latest_values_turn_stale_while_the_device_is_not_heard(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with api_on_built_service(tmp_path, clock=clock) as api:
        state, health = api.service.state, api.service.health["fridge-1"]

        def readings(device: str = "fridge-1") -> dict[str, dict[str, object]]:
            r = api.get(f"/api/v1/devices/{device}")
            assert r.status_code == 200, r.text
            DeviceOut.model_validate(r.json())
            listed = {d["id"]: d for d in api.get("/api/v1/devices").json()["items"]}
            assert listed[device]["readings"] == r.json()["readings"]
            return r.json()["readings"]  # type: ignore[no-any-return]

        health.success(T0)
        state.record([
            Reading("fridge-1", "temperature_c", 4.5, T0, unit="°C"),
            Reading("fridge-1", "door_open", None, T0, quality=Quality.BAD),
        ])  # fmt: skip
        clock.t = T0 + 2
        now = readings()
        assert now["temperature_c"] == {
            "value": 4.5, "unit": "°C", "ts": T0, "quality": "good", "age_s": 2.0, "maintenance": False}
        assert now["door_open"]["quality"] == "bad"

        # offline: the last values are stale, with their age; the bad one stays bad
        for i in range(health.offline_after):
            health.failure(T0 + 10 + i, "timed out")
        assert health.state == DeviceState.OFFLINE
        clock.t = T0 + 720
        now = readings()
        assert now["temperature_c"]["quality"] == "stale" and now["temperature_c"]["value"] == 4.5
        assert now["temperature_c"]["age_s"] == 720.0
        assert now["door_open"]["quality"] == "bad"

        # back online, with a new value: good again
        health.success(T0 + 730)
        state.record([Reading("fridge-1", "temperature_c", 4.0, T0 + 730, unit="°C")])
        clock.t = T0 + 731
        assert readings()["temperature_c"]["quality"] == "good"

        # stale, unknown and misconfigured after being seen: stale too
        for s in (DeviceState.STALE, DeviceState.UNKNOWN, DeviceState.MISCONFIGURED):
            health.reported(clock.t, s, "test")
            assert readings()["temperature_c"]["quality"] == "stale", s
            health.reported(clock.t, DeviceState.ONLINE)
            assert readings()["temperature_c"]["quality"] == "good", s

        # degraded (a missed poll, not yet offline): the values are still current
        health.failure(clock.t, "timed out")
        assert health.snapshot().state == DeviceState.DEGRADED
        assert readings()["temperature_c"]["quality"] == "good"

        # a device never seen has no readings at all
        assert readings("fridge-2") == {}


def test_dashboard_marks_stale_values_with_text_not_only_colour(tmp_path: Path) -> None:
    with api_on_built_service(tmp_path) as api:
        r = api.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert '<script type="module" src="/static/js/app.js">' in r.text
        ui = api.get("/static/js/ui.js")
        css = api.get("/static/css/app.css")
    assert ui.status_code == 200 and "javascript" in ui.headers["content-type"]
    assert 'r.quality === "stale"' in ui.text
    assert "(stale · ${ago(r.age_s)})" in ui.text  # the label, beside the greyed value
    assert ".stale-value { color:" in css.text
