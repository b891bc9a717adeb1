"""Device availability on a fake clock: degraded, offline after missed polls, stale when silent,
each change logged and emitted once."""

from __future__ import annotations

import logging

import pytest

from collectors.health import DeviceHealth, RejectedRegister, describe_rejected
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
    assert events[2].since == 1.0  # offline since the first of the failed polls, seen at the third
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
    # seen at 1601, silent since its last message (the alert says "silent since" that time)
    assert (events[1].ts, events[1].since, events[1].reason) == (1601.0, 1000.0, "nothing received for 10 min")
    quick = DeviceHealth("sensor-1", stale_after=60, emit=events.append)
    quick.success(0.0)
    quick.check_stale(90.0)
    assert events[-1].reason == "nothing received for 90 s"


def test_rejected_registers_keep_the_device_online_and_are_announced_once(caplog: pytest.LogCaptureFixture) -> None:
    events: list[DeviceStatusEvent] = []
    h = DeviceHealth("fridge-1", offline_after=1, emit=events.append)
    caplog.set_level(logging.INFO, "eqmon.devices")
    run_hours = RejectedRegister("run_hours", "input", 10, 2)
    h.success(0.0, rejected=[run_hours], registers=4)
    h.success(1.0, rejected=[run_hours], registers=4)  # no change: nothing
    h.failure(2.0, "no reply within 3 s")
    h.success(3.0, rejected=[run_hours], registers=4)  # back: "online" resolves, so again
    h.success(4.0, rejected=[], registers=4)
    h.success(5.0)  # not tracked (MQTT): nothing
    assert [(e.state, e.ts) for e in events] == [
        (DeviceState.ONLINE, 0.0), (DeviceState.MISCONFIGURED, 0.0), (DeviceState.OFFLINE, 2.0),
        (DeviceState.ONLINE, 3.0), (DeviceState.MISCONFIGURED, 3.0), (DeviceState.ONLINE, 4.0),
    ]  # fmt: skip
    reason = "1 of 4 registers rejected: run_hours (input 10, exception 0x02); the other 3 are still read"
    assert events[1].reason == events[4].reason == reason
    assert h.state == DeviceState.ONLINE and h.snapshot().rejected == ()
    assert [r.getMessage() for r in caplog.records] == [
        f"device fridge-1 is online but rejects some registers: {reason}",
        "device fridge-1 is offline: no reply within 3 s",
        "device fridge-1 is back online (was offline)",
        "device fridge-1: every register is read again",
    ]


def test_every_register_rejected_is_misconfigured_then_partly_back() -> None:
    events: list[DeviceStatusEvent] = []
    h = DeviceHealth("fridge-1", emit=events.append)
    regs = [RejectedRegister("a", "input", 0, 2), RejectedRegister("b", "holding", 7, 3)]
    h.misconfigured(0.0, "exception 0x02 …; every register rejected: …", rejected=regs)
    assert h.state == DeviceState.MISCONFIGURED and h.snapshot().rejected == tuple(regs)
    h.success(300.0, rejected=regs[1:], registers=2)
    assert [e.state for e in events] == [DeviceState.MISCONFIGURED, DeviceState.ONLINE, DeviceState.MISCONFIGURED]
    assert events[-1].reason == "1 of 2 registers rejected: b (holding 7, exception 0x03); the other 1 is still read"
    assert h.rejected == (regs[1],)
    assert describe_rejected(regs * 3) == (
        "6 registers rejected: a (input 0, exception 0x02), b (holding 7, exception 0x03), "
        "a (input 0, exception 0x02), b (holding 7, exception 0x03), a (input 0, exception 0x02) and 1 more"
    )
