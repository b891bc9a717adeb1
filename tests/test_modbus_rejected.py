"""A device that rejects some of its registers (Modbus 0x02/0x03) is not blinded: the collector
splits the rejected read to find them, keeps reading the others, names the rejected ones in the
device's health, the device view and the "misconfigured" alert, tries them again every
``misconfigured_retry`` and takes them back when the device accepts them. Against the
simulators' Modbus TCP server over loopback, as the collector meets a real device."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import sys
import time
from pathlib import Path

import pytest
import yaml

from alerts.engine import AlertEngine
from collectors.errors import CollectorError
from collectors.health import DeviceHealth, RejectedRegister
from collectors.modbus import ModbusCollector, ModbusPoller, plan_reads
from dashboard_api.state import MonitorState
from eqmon.config import Site, parse_site
from eqmon.domain import Alert, AlertState, DeviceState, DeviceStatusEvent, Reading
from simulators import SimulatedSite
from simulators.harness import wait_until
from simulators.modbus_server import ModbusServer, RegisterBank, process_pdu
from simulators.models import EQUIPMENT_MODELS, protocol_fault

REGISTERS = """
      - {name: temperature_c, address: 0, type: input, data_type: int16, scale: 0.1, unit: "°C"}
      - {name: status, address: 2, type: input, bits: {0: door_open}}
      - {name: state, address: 3, type: input, enum: {0: idle, 1: cooling}}
      - {name: run_hours, address: 10, type: input, data_type: float32}
      - {name: setpoint_c, address: 0, type: holding, data_type: int16, scale: 0.1}
"""


def site_for(port: int, *, retry: str = "300ms", extra: str = "") -> Site:
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
    interval: 1s
    timeout: 300ms
    offline_after: 2
    retries: 0
    misconfigured_retry: {retry}
    registers:{REGISTERS}{extra}
"""
    )


class Rig:
    """One collector over real loopback TCP, its device health, and an alert engine fed from
    the health's events (as the service wires them)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.events: list[DeviceStatusEvent] = []
        self.alerts: list[Alert] = []
        self.engine = AlertEngine(site, on_change=self.alerts.append)
        devices = site.modbus_devices()
        self.health = {d.id: DeviceHealth(d.id, offline_after=d.offline_after, emit=self._emit) for d in devices}
        self.collector = ModbusCollector(devices, self.health.__getitem__, clock=time.time)
        self.poller: ModbusPoller = self.collector.pollers[0]
        self.latest: dict[str, Reading] = {}

    def _emit(self, e: DeviceStatusEvent) -> None:
        self.events.append(e)
        self.engine.on_status(e)

    async def poll(self) -> list[Reading]:
        got = await self.poller.poll()
        self.latest.update({r.metric: r for r in got})
        return got

    def open_misconfigured(self) -> list[Alert]:
        return [a for a in self.engine.active() if a.rule_id == "device-misconfigured"]


def fill(bank: RegisterBank) -> None:
    bank.set_words("input", 0, 45)  # 4.5 °C
    bank.set_words("input", 2, 1)
    bank.set_words("input", 3, 1)
    bank.set_words("input", 10, 0x4480, 0x0000)  # 1024.0 h
    bank.set_words("holding", 0, 50)


def test_one_rejected_register_leaves_the_others_watched_then_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="eqmon.devices")

    async def main() -> None:
        server = ModbusServer()
        bank = server.add_unit(1)
        fill(bank)
        protocol_fault(bank, "reject", {"addresses": "input:10-11"})  # the device lacks run_hours
        port = await server.start()
        rig = Rig(site_for(port))
        h = rig.health["fridge-1"]
        try:
            first = {r.metric: r.value for r in await rig.poll()}
            # The temperature is still watched; only run_hours is missing.
            assert first == {"temperature_c": 4.5, "status": 1, "door_open": True, "state": "cooling",
                             "setpoint_c": 5.0}  # fmt: skip
            assert h.state == DeviceState.ONLINE
            assert h.rejected == (RejectedRegister("run_hours", "input", 10, 2),)
            # The plan is made again around run_hours: two reads a poll, no more splitting.
            assert [(r.table, r.address, r.count) for r in rig.poller.plan] == [("holding", 0, 1), ("input", 0, 4)]
            before, splits = bank.requests, rig.poller.splits
            assert len(await rig.poll()) == 5
            assert (bank.requests - before, rig.poller.splits) == (2, splits)

            # One "misconfigured" alert, naming the register, while the device stays online.
            [alert] = rig.open_misconfigured()
            assert "run_hours (input 10, exception 0x02)" in alert.message
            assert "1 of 5 registers rejected" in alert.message and "other 4 are still read" in alert.message
            assert [e.state for e in rig.events] == ["online", "misconfigured"]

            # The device view names it.
            state = MonitorState(rig.site, rig.health, rig.engine, None, None, time.time)  # type: ignore[arg-type]
            view = state.device_view("fridge-1")
            assert view["status"] == "online"
            assert view["rejected_registers"] == [
                {"name": "run_hours", "table": "input", "address": 10, "exception": 2}
            ]

            # The device is fixed: within one misconfigured_retry run_hours is read again.
            bank.faults.clear()
            assert "run_hours" not in rig.latest

            async def keep_polling() -> None:  # as the scheduler does, every 50 ms
                while True:
                    await rig.poll()
                    await asyncio.sleep(0.05)

            poller = asyncio.create_task(keep_polling())
            try:
                await wait_until(lambda: "run_hours" in rig.latest, 3, "run_hours read again")
            finally:
                poller.cancel()
            assert rig.latest["run_hours"].value == 1024.0
            assert h.rejected == () and rig.open_misconfigured() == []
            assert [(r.table, r.address, r.count) for r in rig.poller.plan] == [("holding", 0, 1), ("input", 0, 12)]
            assert rig.events[-1].state == "online" and rig.alerts[-1].state == AlertState.RESOLVED
        finally:
            rig.collector.close()
            await server.stop()
        lines = [r.getMessage() for r in caplog.records if r.name == "eqmon.devices"]
        assert lines == [
            "device fridge-1 is online but rejects some registers: 1 of 5 registers rejected: "
            "run_hours (input 10, exception 0x02); the other 4 are still read",
            "device fridge-1: every register is read again",
        ]

    asyncio.run(main())


def test_rejected_register_between_others_and_a_rejected_gap_are_never_read_again() -> None:
    """A rejected register in the middle of a read splits it in two around it; an unused
    address the device lacks (no register there) only stops that merge."""

    async def main() -> None:
        server = ModbusServer()
        bank = server.add_unit(1)
        fill(bank)
        bank.missing = frozenset({("input", 2), ("holding", 5)})  # status, and an unused address
        port = await server.start()
        extra = "\n      - {name: mode, address: 7, type: holding}"
        rig = Rig(site_for(port, extra=extra))
        try:
            got = {r.metric for r in await rig.poll()}
            assert got == {"temperature_c", "state", "run_hours", "setpoint_c", "mode"}
            assert rig.health["fridge-1"].rejected == (RejectedRegister("status", "input", 2, 2),)
            plan = [(r.table, r.address, r.count) for r in rig.poller.plan]
            assert plan == [("holding", 0, 1), ("holding", 7, 1), ("input", 0, 1), ("input", 3, 9)]
            before = bank.requests
            for _ in range(3):
                await rig.poll()
            assert bank.requests - before == 3 * 4  # the learnt plan: no rejected read any more
        finally:
            rig.collector.close()
            await server.stop()

    asyncio.run(main())


def test_every_register_rejected_is_misconfigured_as_before() -> None:
    async def main() -> None:
        server = ModbusServer()
        bank = server.add_unit(1)
        fill(bank)
        protocol_fault(bank, "reject", {"addresses": "input:0-20,holding:0"})
        port = await server.start()
        rig = Rig(site_for(port, retry="5s"))
        h = rig.health["fridge-1"]
        try:
            with pytest.raises(CollectorError, match=r"exception 0x02 \(illegal data address\)"):
                await rig.poll()
            assert h.state == DeviceState.MISCONFIGURED
            assert [r.name for r in h.rejected] == ["setpoint_c", "temperature_c", "status", "state", "run_hours"]
            assert "every register rejected" in (h.last_error or "")
            requests = bank.requests
            assert await rig.poll() == []  # held until misconfigured_retry: nothing sent
            assert bank.requests == requests
            [alert] = rig.open_misconfigured()
            assert "setpoint_c (holding 0, exception 0x02)" in alert.message
        finally:
            rig.collector.close()
            await server.stop()

    asyncio.run(main())


def test_partly_rejected_device_offline_and_back_raises_the_warning_again() -> None:
    """The engine resolves "misconfigured" on every "online" event: a device back from offline
    with the same register still rejected has the warning raised again (no new log line)."""

    async def main() -> None:
        server = ModbusServer()
        bank = server.add_unit(1)
        fill(bank)
        protocol_fault(bank, "reject", {"addresses": "input:10"})
        port = await server.start()
        rig = Rig(site_for(port, retry="1h"))
        try:
            await rig.poll()
            assert len(rig.open_misconfigured()) == 1
            bank.faults.silent = True
            for _ in range(2):
                with pytest.raises(CollectorError):
                    await rig.poll()
            assert rig.health["fridge-1"].state == DeviceState.OFFLINE
            bank.faults.silent = False
            await rig.poll()
            assert [e.state for e in rig.events] == ["online", "misconfigured", "degraded", "offline", "online",
                                                    "misconfigured"]  # fmt: skip
            [alert] = rig.open_misconfigured()
            assert "run_hours (input 10, exception 0x02)" in alert.message
            assert [a.rule_id for a in rig.engine.active()] == ["device-misconfigured"]
        finally:
            rig.collector.close()
            await server.stop()

    asyncio.run(main())


def test_simulator_reject_addresses_param_and_reject_fault() -> None:
    data = site_for(1).model_dump(by_alias=True)
    data["devices"][0]["simulator"] = {"model": "medication_refrigerator", "seed": 1,
                                       "params": {"reject_addresses": "input:10-11"}}  # fmt: skip
    sim_site = Site.model_validate(data)
    sim = SimulatedSite(sim_site, mqtt_host=None, mqtt_port=None)
    bank = sim.bank("fridge-1")
    assert bank.missing == {("input", 10), ("input", 11)}
    # 0x02 for a read touching them, alone or merged; the rest answers
    assert process_pdu(bank, bytes.fromhex("04000a0001")) == b"\x84\x02"
    assert process_pdu(bank, bytes.fromhex("040000000c")) == b"\x84\x02"
    assert process_pdu(bank, bytes.fromhex("040000000a"))[0] == 4
    assert process_pdu(bank, bytes.fromhex("0300000001"))[0] == 3
    # the fault adds addresses; clear ends the fault but not the model's own missing addresses
    sim.inject("fridge-1", "reject", {"addresses": "holding:0"})
    assert process_pdu(bank, bytes.fromhex("0300000001")) == b"\x83\x02"
    assert "reject holding:0" in " ".join(sim.describe())
    sim.inject("fridge-1", "clear")
    assert process_pdu(bank, bytes.fromhex("0300000001"))[0] == 3
    assert process_pdu(bank, bytes.fromhex("04000b0001")) == b"\x84\x02"
    # every model takes the param; a bad one is an error naming the device
    for model in EQUIPMENT_MODELS.values():
        m = model(random.Random(0), {"reject_addresses": "holding:0"})
        b = RegisterBank()
        m.write(b)
        assert b.missing == {("holding", 0)}
    data["devices"][0]["simulator"]["params"] = {"reject_addresses": "inputs:10"}
    # the site file refuses a bad one, with its path; the model itself too, naming the table
    with pytest.raises(ValueError, match=r"reject_addresses[\s\S]*unknown table 'inputs'"):
        Site.model_validate(data)
    with pytest.raises(ValueError, match="unknown table 'inputs'"):
        EQUIPMENT_MODELS["medication_refrigerator"](random.Random(0), {"reject_addresses": "inputs:10"})
    with pytest.raises(ValueError, match="reject needs addresses"):
        sim.inject("fridge-1", "reject", {})


def test_plan_reads_never_spans_a_cut() -> None:
    site = site_for(1)
    regs = site.modbus_devices()[0].registers
    assert [(r.table, r.address, r.count) for r in plan_reads(regs)] == [("holding", 0, 1), ("input", 0, 12)]
    cut = plan_reads(regs, cuts={"input": {3}})
    assert [(r.table, r.address, r.count) for r in cut] == [("holding", 0, 1), ("input", 0, 3), ("input", 3, 9)]
    # a cut at a read's own edge changes nothing
    assert len(plan_reads(regs, cuts={"input": {0, 12}, "holding": {1}})) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_config_plan_probe(tmp_path: Path) -> None:
    """`eqmon check-config FILE --plan --probe`: the registers each device rejects and the plan
    that results; a silent device and a closed port are one line each, within their timeout."""

    async def main() -> None:
        server = ModbusServer()
        fill(server.add_unit(1))
        protocol_fault(server.units[1], "reject", {"addresses": "input:10"})
        server.add_unit(2).faults.silent = True
        port = await server.start()
        closed = _free_port()
        text = site_for(port).model_dump(by_alias=True)
        d = text["devices"][0]
        devs = [d, {**d, "id": "fridge-2", "unit_id": 2}, {**d, "id": "fridge-3", "port": closed}]
        path = tmp_path / "site.yaml"
        path.write_text(yaml.safe_dump({"site": {"name": "t", "timezone": "UTC"}, "devices": devs}, allow_unicode=True))
        t0 = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "eqmon_app", "check-config", str(path), "--plan", "--probe",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        elapsed = time.monotonic() - t0
        await server.stop()
        lines = out.decode().splitlines()
        assert proc.returncode == 0, (out, err)
        assert err.decode() == ""  # no traceback, no pymodbus noise
        blocks: dict[str, list[str]] = {}
        for line in lines[:-1]:
            if not line.startswith(" "):
                blocks[line.split(":")[0]] = []
            else:
                blocks[list(blocks)[-1]].append(line)
        assert list(blocks) == ["fridge-1", "fridge-2", "fridge-3"] and lines[-1] == "ok"
        assert blocks["fridge-1"][2:] == [
            "  probe: rejected: run_hours (input 10, exception 0x02)",
            "  probe: resulting plan: 4 registers in 2 reads",
            "    FC3 holding            0 count   1 (0 unused): setpoint_c",
            "    FC4 input              0 count   4 (1 unused): temperature_c, status, state",
        ]
        # a device that does not answer: one line each, after the static plan
        assert blocks["fridge-2"][2:] == [f"  probe: no usable answer: 127.0.0.1:{port} unit 2: no reply within 0.3 s"]
        assert len(blocks["fridge-3"]) == 3
        assert blocks["fridge-3"][2].startswith(f"  probe: no usable answer: cannot connect to 127.0.0.1:{closed}")
        assert elapsed < 30  # bounded by the timeouts (0.3 s here), not by a hang

    asyncio.run(main())
