"""Gateway exceptions say what to check (a wrong unit id or a broken serial line as often as a
dead device); the hooks into pymodbus's internals are installed only on the version they were
written for, with the public API as the fallback; retries wait as eqmon.backoff says. Against
the simulators' Modbus TCP server over loopback."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pymodbus
import pytest

from alerts.engine import AlertEngine
from collectors.errors import CollectorError
from collectors.health import DeviceHealth
from collectors.modbus import (
    PYMODBUS_SERIES,
    ModbusCollector,
    ModbusConnection,
    ModbusPoller,
    PymodbusHooks,
)
from eqmon.backoff import Backoff
from eqmon.config import Site, parse_site
from eqmon.domain import Alert, DeviceState, DeviceStatusEvent
from simulators.modbus_server import ModbusServer
from simulators.models import protocol_fault


def site_for(port: int, unit_id: int = 1, **over: object) -> Site:
    extra = "".join(f"\n    {k}: {v}" for k, v in over.items())
    return parse_site(
        f"""
site: {{name: t, timezone: UTC}}
devices:
  - id: fridge-1
    name: Fridge 1
    kind: medication_refrigerator
    location: Pharmacy
    protocol: modbus
    host: 127.0.0.1
    port: {port}
    unit_id: {unit_id}
    interval: 2s
    timeout: 200ms
    retries: 0{extra}
    registers:
      - {{name: temperature_c, address: 0, type: input, data_type: int16, scale: 0.1}}
"""
    )


async def _offline_alert(site: Site) -> tuple[DeviceHealth, list[DeviceStatusEvent], list[Alert]]:
    events: list[DeviceStatusEvent] = []
    alerts: list[Alert] = []
    engine = AlertEngine(site, on_change=alerts.append)

    def emit(e: DeviceStatusEvent) -> None:
        events.append(e)
        engine.on_status(e)

    health = DeviceHealth("fridge-1", offline_after=3, emit=emit)
    collector = ModbusCollector(site.modbus_devices(), lambda _: health, clock=time.time)
    try:
        with pytest.raises(CollectorError):
            await collector.pollers[0].poll()
    finally:
        collector.close()
    return health, events, alerts


def test_gateway_target_failed_names_unit_id_and_serial_line() -> None:
    async def main() -> None:
        server = ModbusServer()
        server.add_unit(1).input[0] = 33
        port = await server.start()
        try:  # the gateway holds unit 1; the site file says 5: the gateway answers 0x0B
            health, events, alerts = await _offline_alert(site_for(port, unit_id=5))
        finally:
            await server.stop()
        assert health.state == DeviceState.OFFLINE  # at once: the gateway says so
        [alert] = alerts
        assert alert.message.startswith("WARNING Fridge 1 (Pharmacy): not responding since ")
        assert "exception 0x0B (gateway target failed to respond)" in alert.message
        assert (
            f"the gateway at 127.0.0.1:{port} answers but unit 5 behind it does not: check unit_id 5 in the "
            "site file against the device's own address, the serial line from the gateway to the device "
            "(wiring, baud rate, parity), then the device's power"
        ) in alert.message
        assert events[-1].reason in alert.message

    asyncio.run(main())


def test_gateway_path_unavailable_names_the_gateways_routing() -> None:
    async def main() -> None:
        server = ModbusServer()
        bank = server.add_unit(3)
        protocol_fault(bank, "exception", {"code": 10})
        port = await server.start()
        try:
            health, _, alerts = await _offline_alert(site_for(port, unit_id=3))
        finally:
            await server.stop()
        assert health.state == DeviceState.OFFLINE
        [alert] = alerts
        assert "exception 0x0A (gateway path unavailable)" in alert.message
        assert (
            f"the gateway at 127.0.0.1:{port} has no path to unit 3: check that unit_id 3 in the site file "
            "is right and routed in the gateway's configuration"
        ) in alert.message

    asyncio.run(main())


def test_hooks_on_the_pinned_pymodbus_detect_a_mismatched_reply_at_once() -> None:
    assert pymodbus.__version__.startswith(PYMODBUS_SERIES)

    async def main() -> None:
        server = ModbusServer()
        bank = server.add_unit(1)
        bank.input[0] = 33
        port = await server.start()
        site = site_for(port)
        health = DeviceHealth("fridge-1")
        collector = ModbusCollector(site.modbus_devices(), lambda _: health, clock=time.time)
        try:
            assert collector.connections[0].hooks.installed
            bank.faults.wrong_tid = True
            t0 = time.monotonic()
            with pytest.raises(CollectorError, match="reply does not match the request"):
                await collector.pollers[0].poll()
            assert time.monotonic() - t0 < 0.2  # not the 0.2 s timeout
        finally:
            collector.close()
            await server.stop()

    asyncio.run(main())


def test_other_pymodbus_version_falls_back_to_the_public_api(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pymodbus, "__version__", "3.17.0")
    monkeypatch.setattr(PymodbusHooks, "_warned", False)
    caplog.set_level(logging.WARNING, logger="collectors.modbus")

    async def main() -> None:
        server = ModbusServer()
        bank = server.add_unit(1)
        bank.input[0] = 33
        port = await server.start()
        site = site_for(port)
        health = DeviceHealth("fridge-1")
        collector = ModbusCollector(site.modbus_devices(), lambda _: health, clock=time.time)
        again = ModbusConnection("127.0.0.1", port, timeout=0.2)  # warned once, not per connection
        try:
            assert not collector.connections[0].hooks.installed and not again.hooks.installed
            poller = collector.pollers[0]
            assert [r.value for r in await poller.poll()] == [3.3]
            # without the hooks a reply to another transaction is noticed at the timeout, and
            # still never taken for the answer
            bank.faults.wrong_tid = True
            bank.input[0] = 777
            with pytest.raises(CollectorError, match="no reply within 0.2 s"):
                await poller.poll()
            bank.faults.clear()
            bank.input[0] = 34
            assert [r.value for r in await poller.poll()] == [3.4]
        finally:
            again.close()
            collector.close()
            await server.stop()

    asyncio.run(main())
    warnings = [r.getMessage() for r in caplog.records if r.name == "collectors.modbus"]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"pymodbus 3.17.0 is installed but eqmon's hooks are written for {PYMODBUS_SERIES}.*")


def test_busy_retries_wait_as_eqmon_backoff_says() -> None:
    """dev.backoff × 2^attempt, ±50 % jitter: Backoff(backoff, cap, jitter=(0.5, 1.5))."""

    async def main() -> None:
        server = ModbusServer()
        bank = server.add_unit(1)
        protocol_fault(bank, "exception", {"code": 6})  # busy, and it stays busy
        port = await server.start()
        dev = site_for(port, retries=3, backoff="20ms").modbus_devices()[0]
        conn = ModbusConnection("127.0.0.1", port, timeout=dev.timeout)
        poller = ModbusPoller(dev, conn, DeviceHealth(dev.id), clock=time.time, rng=random.Random(7))
        expected = Backoff(0.02, dev.interval, jitter=(0.5, 1.5), rng=random.Random(7))
        delays = [expected.delay(n) for n in range(3)]
        try:
            t0 = time.monotonic()
            with pytest.raises(CollectorError, match="server device busy"):
                await poller.poll()
            elapsed = time.monotonic() - t0
        finally:
            conn.close()
            await server.stop()
        assert poller.retries == 3 and bank.requests == 4
        assert elapsed >= sum(delays) - 0.005  # asyncio may wake a timer a hair early
        assert 0.01 * 7 / 2 <= sum(delays) <= 0.03 * 7  # 20, 40, 80 ms, each ±50 %

    asyncio.run(main())
