"""Device availability on a fake clock: degraded, offline after missed polls, stale when silent,
each change logged and emitted once."""

from __future__ import annotations

import logging

import pytest

from collectors.health import DeviceHealth
from eqmon.domain import DeviceState, DeviceStatusEvent


def test_offline_after_missed_polls_and_one_log_line_per_change(caplog: pytest.LogCaptureFixture) -> None:
    events: list[DeviceStatusEvent] = []
    h = DeviceHealth("fridge-1", offline_after=3, emit=events.append)
    caplog.set_level(logging.INFO, "eqmon.devices")
    h.success(0.0)
    for t in range(1, 10):
        h.failure(float(t), "cannot connect to 127.0.0.1:15021")
    h.success(10.0)
    assert [(e.state, e.ts) for e in events] == [
        (DeviceState.ONLINE, 0.0), (DeviceState.DEGRADED, 1.0), (DeviceState.OFFLINE, 3.0), (DeviceState.ONLINE, 10.0),
    ]  # fmt: skip
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "device fridge-1 is degraded: cannot connect to 127.0.0.1:15021",
        "device fridge-1 is offline: cannot connect to 127.0.0.1:15021",
        "device fridge-1 is back online (was offline)",
    ]
    snap = h.snapshot()
    assert (snap.consecutive_failures, snap.last_success, snap.last_error_at) == (0, 10.0, 9.0)


def test_silent_mqtt_device_goes_stale_once_and_recovers() -> None:
    events: list[DeviceStatusEvent] = []
    h = DeviceHealth("shelf-1", stale_after=600, emit=events.append)
    h.check_stale(1000.0)  # nothing heard yet: unknown, not stale
    h.success(1000.0)
    h.check_stale(1599.0)
    h.check_stale(1601.0)
    h.check_stale(1700.0)
    h.success(1750.0)
    assert [e.state for e in events] == [DeviceState.ONLINE, DeviceState.STALE, DeviceState.ONLINE]
    assert events[1].ts == 1601.0 and "nothing received for 601 s" in events[1].reason
