"""The Modbus collector against the simulators' Modbus TCP server (a hand-written, independent
implementation), over real loopback TCP."""

from __future__ import annotations

import asyncio
import struct
import time

from collectors.errors import CollectorError
from collectors.health import DeviceHealth
from collectors.modbus import ModbusCollector
from eqmon.config import ModbusDevice
from eqmon.domain import DeviceState, DeviceStatusEvent, Quality
from simulators.modbus_server import ModbusServer, RegisterBank


def device(port: int, unit_id: int = 1, dev_id: str = "fridge-1", timeout: float = 0.5) -> ModbusDevice:
    return ModbusDevice.model_validate(
        {
            "id": dev_id, "kind": "medication_refrigerator", "protocol": "modbus",
            "host": "127.0.0.1", "port": port, "unit_id": unit_id, "interval": 1, "timeout": timeout,
            "offline_after": 2,
            "registers": [
                {"name": "temperature_c", "address": 0, "type": "input", "data_type": "int16",
                 "scale": 0.1, "unit": "°C", "sentinels": [0x7FFF]},
                {"name": "door_open", "address": 2, "type": "input", "data_type": "bool", "bit": 0},
                {"name": "run_hours", "address": 10, "type": "input", "data_type": "float32"},
                {"name": "setpoint_c", "address": 0, "type": "holding", "data_type": "int16", "scale": 0.1},
            ],
        }  # fmt: skip
    )


def fill(bank: RegisterBank, temp_c: float, door: bool = False, hours: float = 1234.5) -> None:
    bank.set_words("input", 0, round(temp_c * 10) & 0xFFFF)
    bank.set_words("input", 2, int(door))
    hi, lo = struct.unpack(">HH", struct.pack(">f", hours))
    bank.set_words("input", 10, hi, lo)
    bank.set_words("holding", 0, 50)


class Setup:
    def __init__(self, devices: list[ModbusDevice]) -> None:
        self.events: list[DeviceStatusEvent] = []
        self.health = {
            d.id: DeviceHealth(d.id, offline_after=d.offline_after, emit=self.events.append) for d in devices
        }
        self.collector = ModbusCollector(devices, self.health.__getitem__, clock=time.time)


def test_poll_decodes_the_plan_in_two_reads() -> None:
    async def main() -> None:
        server = ModbusServer()
        bank = server.add_unit(1)
        fill(bank, -3.5, door=True)
        port = await server.start()
        s = Setup([device(port)])
        try:
            readings = await s.collector.pollers[0].poll()
        finally:
            s.collector.close()
            await server.stop()
        values = {r.metric: r.value for r in readings}
        assert values == {"temperature_c": -3.5, "door_open": True, "run_hours": 1234.5, "setpoint_c": 5.0}
        assert bank.requests == 2  # input 0..11 in one read, holding 0 in another
        assert s.health["fridge-1"].state == DeviceState.ONLINE

    asyncio.run(main())


def test_sentinel_gives_bad_quality_not_a_number() -> None:
    async def main() -> None:
        server = ModbusServer()
        bank = server.add_unit(1)
        fill(bank, 5.0)
        bank.set_words("input", 0, 0x7FFF)
        port = await server.start()
        s = Setup([device(port)])
        try:
            readings = await s.collector.pollers[0].poll()
        finally:
            s.collector.close()
            await server.stop()
        temp = next(r for r in readings if r.metric == "temperature_c")
        assert (temp.value, temp.quality) == (None, Quality.BAD)

    asyncio.run(main())


def test_gateway_units_share_one_connection() -> None:
    async def main() -> None:
        server = ModbusServer()
        fill(server.add_unit(1), 4.0)
        fill(server.add_unit(7), 6.0)
        port = await server.start()
        s = Setup([device(port, 1, "fridge-1"), device(port, 7, "fridge-2")])
        try:
            results = await asyncio.gather(*(p.poll() for p in s.collector.pollers))
            assert server.connections_total == 1
        finally:
            s.collector.close()
            await server.stop()
        temps = [next(r.value for r in rs if r.metric == "temperature_c") for rs in results]
        assert temps == [4.0, 6.0]

    asyncio.run(main())


async def _poll_expecting_failure(poller) -> str:  # type: ignore[no-untyped-def]
    try:
        await poller.poll()
    except CollectorError as exc:
        return str(exc)
    raise AssertionError("poll should have failed")


def test_exception_code_then_offline_then_recovery() -> None:
    async def main() -> None:
        server = ModbusServer()
        bank = server.add_unit(1)
        fill(bank, 5.0)
        port = await server.start()
        s = Setup([device(port)])
        p = s.collector.pollers[0]
        try:
            await p.poll()
            bank.faults.exception_code = 0x04  # a failure of the device: not retried, counted
            err = await _poll_expecting_failure(p)
            assert "0x04" in err and "server device failure" in err
            assert s.health["fridge-1"].state == DeviceState.DEGRADED
            await _poll_expecting_failure(p)
            assert s.health["fridge-1"].state == DeviceState.OFFLINE
            bank.faults.clear()
            await p.poll()
        finally:
            s.collector.close()
            await server.stop()
        assert [e.state for e in s.events] == ["online", "degraded", "offline", "online"]

    asyncio.run(main())


def test_silent_device_times_out_and_a_wrong_reply_is_never_stored() -> None:
    async def main() -> None:
        server = ModbusServer()
        bank = server.add_unit(1)
        fill(bank, 5.0)
        port = await server.start()
        s = Setup([device(port, timeout=0.3)])
        p = s.collector.pollers[0]
        try:
            bank.faults.silent = True
            t0 = time.monotonic()
            await _poll_expecting_failure(p)
            assert time.monotonic() - t0 < 2.0
            bank.faults.clear()
            bank.faults.wrong_tid = True
            fill(bank, 7.7)
            await _poll_expecting_failure(p)
            bank.faults.clear()
            fill(bank, 3.3)
            readings = await p.poll()
        finally:
            s.collector.close()
            await server.stop()
        # Only the value present after the faults cleared; no late reply to an old request.
        assert next(r.value for r in readings if r.metric == "temperature_c") == 3.3

    asyncio.run(main())


def test_server_gone_then_back() -> None:
    async def main() -> None:
        server = ModbusServer()
        fill(server.add_unit(1), 5.0)
        port = await server.start()
        s = Setup([device(port)])
        p = s.collector.pollers[0]
        try:
            await p.poll()
            await server.stop()
            await _poll_expecting_failure(p)
            await _poll_expecting_failure(p)
            assert s.health["fridge-1"].state == DeviceState.OFFLINE
            server2 = ModbusServer()
            fill(server2.add_unit(1), 6.5)
            await server2.start(port=port)
            try:
                readings = await p.poll()
            finally:
                await server2.stop()
        finally:
            s.collector.close()
        assert next(r.value for r in readings if r.metric == "temperature_c") == 6.5
        assert s.health["fridge-1"].state == DeviceState.ONLINE

    asyncio.run(main())
