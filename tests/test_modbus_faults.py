"""The Modbus collector against every fault the simulators inject: the right status, the right
log line once, no wrong value stored, and recovery within one backoff after the fault clears.
Also: status enums and bit maps, RTU over TCP, the pause between requests, the scheduler, the
control endpoint and mbpoll reading every documented register of every simulator model."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import subprocess
import time

import pytest

from collectors.errors import CollectorError
from collectors.health import DeviceHealth
from collectors.modbus import ModbusCollector, plan_reads
from collectors.scheduler import PollScheduler
from eqmon.config import ModbusDevice, parse_site
from eqmon.domain import DeviceStatusEvent, Reading
from simulators import SimulatedSite
from simulators.control import ControlServer
from simulators.modbus_server import ModbusServer, RegisterBank, crc16
from simulators.models import EQUIPMENT_MODELS, REGISTER_MAPS, protocol_fault

GOOD, POISON = 33, 777  # temperature words: 3.3 °C when healthy, 77.7 °C while a fault is on


def device(port: int, **over) -> ModbusDevice:  # type: ignore[no-untyped-def]
    data = {
        "id": "fridge-1", "kind": "medication_refrigerator", "protocol": "modbus",
        "host": "127.0.0.1", "port": port, "interval": 1, "timeout": 0.2, "offline_after": 2,
        "retries": 1, "backoff": 0.05, "misconfigured_retry": 0.4,
        "registers": [
            {"name": "temperature_c", "address": 0, "type": "input", "data_type": "int16", "scale": 0.1,
             "sentinels": [0x7FFF]},
            {"name": "status", "address": 2, "type": "input", "data_type": "uint16",
             "bits": {0: "door_open", 3: "compressor_fault"}},
            {"name": "state", "address": 3, "type": "input", "data_type": "uint16",
             "enum": {0: "idle", 1: "cooling", 2: "door_open", 4: "defrost", 5: "fault"}},
            {"name": "setpoint_c", "address": 0, "type": "holding", "data_type": "int16", "scale": 0.1},
        ],
    }  # fmt: skip
    data.update(over)
    return ModbusDevice.model_validate(data)


class Rig:
    def __init__(self, devices: list[ModbusDevice]) -> None:
        self.events: list[DeviceStatusEvent] = []
        self.health = {
            d.id: DeviceHealth(d.id, offline_after=d.offline_after, emit=self.events.append) for d in devices
        }
        self.collector = ModbusCollector(devices, self.health.__getitem__, clock=time.time)
        self.stored: list[Reading] = []

    async def poll(self, i: int = 0) -> bool:
        try:
            self.stored += await self.collector.pollers[i].poll()
            return True
        except CollectorError:
            return False


def temps(readings: list[Reading]) -> list[object]:
    return [r.value for r in readings if r.metric == "temperature_c"]


# (fault, params, state while on, log fragment expected exactly once)
FAULTS = [
    ("exception", {"code": 2}, "misconfigured", "is misconfigured: exception 0x02 (illegal data address)"),
    ("exception", {"code": 3}, "misconfigured", "is misconfigured: exception 0x03 (illegal data value)"),
    ("exception", {"code": 1}, "misconfigured", "is misconfigured: exception 0x01 (illegal function)"),
    ("exception", {"code": 6}, "offline", "is offline: exception 0x06 (server device busy)"),
    ("exception", {"code": 4}, "offline", "is offline: exception 0x04 (server device failure)"),
    ("exception", {"code": 10}, "offline", "is offline: exception 0x0A (gateway path unavailable)"),
    ("exception", {"code": 11}, "offline", "is offline: exception 0x0B (gateway target failed to respond)"),
    ("slow", {"delay_s": 0.5}, "offline", "no reply within 0.2 s"),
    ("silence", {}, "offline", "no reply within 0.2 s"),
    ("reset", {}, "offline", "connection reset"),
    ("wrong_tid", {}, "offline", "reply does not match the request"),
    ("wrong_function", {}, "offline", "reply with function 4 to function 3"),
    ("short_reply", {}, "offline", "reply holds 3 registers, expected 4"),
]


@pytest.mark.parametrize(("fault", "params", "state", "line"), FAULTS, ids=[f"{f[0]}-{f[1]}" for f in FAULTS])
def test_protocol_fault(fault, params, state, line, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="eqmon.devices")

    async def main() -> None:
        server = ModbusServer()
        bank = server.add_unit(1)
        bank.input[0] = GOOD
        port = await server.start()
        rig = Rig([device(port)])
        try:
            assert await rig.poll()
            bank.input[0] = POISON
            protocol_fault(bank, fault, params)
            t0 = time.monotonic()
            assert not await rig.poll()
            first_failure_s = time.monotonic() - t0
            requests = bank.requests
            for _ in range(2):
                ok = await rig.poll()
                assert not ok or state == "misconfigured"
            h = rig.health["fridge-1"]
            assert h.state == state
            if state == "misconfigured":
                assert bank.requests == requests  # no retry storm: nothing sent until the slow retry
            if fault in ("reset", "wrong_tid", "wrong_function", "short_reply"):
                assert first_failure_s < 0.2  # detected at once, not after a timeout
            bank.faults.clear()
            bank.input[0] = GOOD
            # recovery within one backoff (misconfigured: one slow retry)
            wait = 0.45 if state == "misconfigured" else 0.06
            await asyncio.sleep(wait)
            assert await rig.poll()
            assert h.state == "online"
        finally:
            rig.collector.close()
            await server.stop()
        assert 77.7 not in temps(rig.stored) and all(v == 3.3 for v in temps(rig.stored))
        msgs = [r.getMessage() for r in caplog.records if r.name == "eqmon.devices"]
        assert sum(line in m and f"is {state}" in m for m in msgs) == 1, msgs
        assert sum("back online" in m for m in msgs) == 1, msgs

    asyncio.run(main())


def test_busy_is_retried_and_succeeds_when_it_clears() -> None:
    async def main() -> None:
        server = ModbusServer()
        bank = server.add_unit(1)
        bank.input[0] = GOOD
        port = await server.start()
        rig = Rig([device(port, backoff=0.1)])
        bank.faults.exception_code = 0x06
        loop = asyncio.get_running_loop()
        loop.call_later(0.03, bank.faults.clear)
        try:
            assert await rig.poll()
        finally:
            rig.collector.close()
            await server.stop()
        assert rig.collector.pollers[0].retries == 1
        assert [e.state for e in rig.events] == ["online"]

    asyncio.run(main())


def test_reboot_drops_the_connection_and_recovers(caplog) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        server = ModbusServer()
        bank = server.add_unit(1)
        bank.input[0] = GOOD
        port = await server.start()
        rig = Rig([device(port)])
        try:
            assert await rig.poll()
            protocol_fault(bank, "reboot", {"down_s": 0.3})
            server.drop_connections()
            assert not await rig.poll()
            await asyncio.sleep(0.35)
            assert await rig.poll()
        finally:
            rig.collector.close()
            await server.stop()
        assert [e.state for e in rig.events] == ["online", "degraded", "online"]
        assert bank.faults.reboots == 1

    asyncio.run(main())


def test_model_faults_enum_bits_and_sentinel() -> None:
    async def main() -> None:
        server = ModbusServer()
        bank = server.add_unit(1)
        bank.input[0] = GOOD
        bank.input[2] = 0b1001
        bank.input[3] = 4
        port = await server.start()
        rig = Rig([device(port)])
        try:
            assert await rig.poll()
            got = {r.metric: r.value for r in rig.stored}
            assert got["door_open"] is True and got["compressor_fault"] is True and got["status"] == 9
            assert got["state"] == "defrost"
            bank.input[3] = 9
            bank.input[0] = 0x7FFF
            rig.stored.clear()
            assert await rig.poll()
            got = {r.metric: (r.value, str(r.quality)) for r in rig.stored}
            assert got["state"] == ("unknown_9", "good")
            assert got["temperature_c"] == (None, "bad")
        finally:
            rig.collector.close()
            await server.stop()

    asyncio.run(main())


def test_rtu_over_tcp_and_pause_between_requests() -> None:
    assert crc16(bytes.fromhex("010300000001")) == 0x0A84  # known frame 01 03 00 00 00 01 84 0A

    async def main() -> None:
        server = ModbusServer(framing="rtu_over_tcp")
        fill = server.add_unit(3)
        fill.input[0] = GOOD
        fill.holding[0] = 50
        port = await server.start()
        rig = Rig([device(port, unit_id=3, framing="rtu_over_tcp", pause=0.1)])
        try:
            t0 = time.monotonic()
            assert await rig.poll()
            assert await rig.poll()
            elapsed = time.monotonic() - t0
        finally:
            rig.collector.close()
            await server.stop()
        assert temps(rig.stored) == [3.3, 3.3]
        assert elapsed >= 0.3  # 4 requests, a pause of 0.1 s between each two
        # a Modbus TCP master on an RTU gateway gets nothing it could mistake for data
        server = ModbusServer(framing="rtu_over_tcp")
        server.add_unit(1).input[0] = GOOD
        port = await server.start()
        rig = Rig([device(port)])
        try:
            assert not await rig.poll()
        finally:
            rig.collector.close()
            await server.stop()
        assert rig.stored == []

    asyncio.run(main())


def test_config_checks_and_plan() -> None:
    base = device(502)
    assert [(r.table, r.address, r.count) for r in plan_reads(base.registers, max_gap=base.max_gap)] == [
        ("holding", 0, 1), ("input", 0, 4),
    ]
    assert len(plan_reads(base.registers, max_gap=0)) == 3  # input 0 | 2..3 | holding 0
    with pytest.raises(ValueError, match="enum and bits need an integer"):
        device(502, registers=[{"name": "x", "address": 0, "data_type": "float32", "bits": {1: "b"}}])
    with pytest.raises(ValueError, match="bit 16 is outside"):
        device(502, registers=[{"name": "x", "address": 0, "bits": {16: "b"}}])
    text = """
site: {name: t}
devices:
  - {id: a, kind: k, protocol: modbus, host: h, port: 1, unit_id: 1, framing: rtu_over_tcp,
     registers: [{name: s, address: 0, bits: {0: door_open}}, {name: door_open, address: 1}]}
  - {id: b, kind: k, protocol: modbus, host: h, port: 1, unit_id: 1, registers: [{name: x, address: 0}]}
"""
    with pytest.raises(Exception) as info:
        parse_site(text)
    msg = str(info.value)
    assert "devices[0].registers[1].name: duplicate register name 'door_open'" in msg
    assert "devices[1].unit_id: unit id 1 on h:1 is already used by devices[0]" in msg
    assert "devices[1].framing: devices on h:1 share one connection: framing must match" in msg


def test_scheduler_isolates_a_dead_device_and_survives_a_failing_handoff() -> None:
    async def main() -> None:
        s1, s2 = ModbusServer(), ModbusServer()
        b1, b2 = s1.add_unit(1), s2.add_unit(1)
        b1.input[0] = b2.input[0] = GOOD
        p1, p2 = await s1.start(), await s2.start()
        b2.faults.silent = True
        devs = [device(p1, interval=0.2, retries=0), device(p2, id="dead", interval=0.2, timeout=0.5, retries=0)]
        rig = Rig(devs)
        got: list[Reading] = []
        calls = 0

        async def on_readings(readings: list[Reading]) -> None:
            nonlocal calls
            calls += 1
            if calls % 2:
                raise RuntimeError("spool full")
            got.extend(readings)

        sched = PollScheduler(rig.collector.pollers, on_readings, rng=random.Random(1), record_lateness=True)
        sched.start()
        await asyncio.sleep(1.3)
        await sched.stop()
        rig.collector.close()
        await s1.stop()
        await s2.stop()
        good_polls = b1.requests // 2
        assert good_polls >= 5  # every 0.2 s, never held up by the dead device's 0.5 s timeouts
        assert sched.skipped >= 1  # the dead device's polls overlapping its timeout were coalesced
        assert sched.handoff_failures >= 2 and got  # counted, and polling went on
        assert max(sched.lateness) < 0.1

    asyncio.run(main())


def test_control_endpoint_and_simulated_models() -> None:
    models = sorted(EQUIPMENT_MODELS)
    devices = "\n".join(
        f"  - {{id: d{i}, kind: {m}, protocol: modbus, host: 127.0.0.1, port: 1, unit_id: {i + 1},"
        f" registers: [{{name: x, address: 0, type: input}}], simulator: {{model: {m}, seed: {i}}}}}"
        for i, m in enumerate(models)
    )
    site = parse_site(f"site: {{name: t}}\ndevices:\n{devices}\n")

    async def http(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, object]:  # type: ignore[type-arg]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        data = json.dumps(body).encode() if body is not None else b""
        w.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        raw = await r.read()
        w.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(payload)

    async def main() -> None:
        sim = SimulatedSite(site, mqtt_host=None, mqtt_port=None)
        sim._servers = {("127.0.0.1", 0): sim._servers[("127.0.0.1", 1)]}  # any free port
        for s in sim._modbus.values():
            s.server_key = ("127.0.0.1", 0)
        await sim.start()
        ctl = ControlServer(sim)
        port = await ctl.start()
        try:
            status, devs = await http(port, "GET", "/devices")
            assert status == 200 and [d["id"] for d in devs] == [f"d{i}" for i in range(len(models))]  # type: ignore[index,union-attr]
            status, _ = await http(port, "POST", "/faults", {"device": "d0", "fault": "exception", "params": {"code": 6}})
            assert status == 200 and sim.bank("d0").faults.exception_code == 6
            body = {"device": "d0", "fault": "reject", "params": {"addresses": "input:10-11"}}
            assert (await http(port, "POST", "/faults", body))[0] == 200
            assert sim.bank("d0").faults.reject == {("input", 10), ("input", 11)}
            bad = {"device": "d0", "fault": "reject", "params": {"addresses": "tank:1"}}
            assert (await http(port, "POST", "/faults", bad))[0] == 400
            assert (await http(port, "POST", "/faults", {"device": "nope", "fault": "stuck"}))[0] == 404
            assert (await http(port, "POST", "/faults", {"device": "d0", "fault": "melt"}))[0] == 400
            for i in range(len(models)):
                for fault in ("drift", "stuck", "sentinel", "fault_bit", "clear"):
                    params = {"target": 1.0} if fault == "drift" else {}
                    assert (await http(port, "POST", "/faults", {"device": f"d{i}", "fault": fault, "params": params}))[0] == 200
        finally:
            await ctl.stop()
            await sim.stop()

    asyncio.run(main())


@pytest.mark.parametrize("model", sorted(REGISTER_MAPS))
def test_mbpoll_reads_every_documented_register(model: str) -> None:
    """Debian's mbpoll (an independent Modbus master) reads each model's documented map."""
    bank = RegisterBank()
    m = EQUIPMENT_MODELS[model](random.Random(1), {})
    m.write(bank)
    for t in range(0, 600, 10):
        m.read_setpoint(bank)
        m.step(t)
        m.write(bank)

    async def main() -> None:
        server = ModbusServer({1: bank})
        port = await server.start()
        try:
            for table, address, words, name, _ in REGISTER_MAPS[model]:
                kind = "3" if table == "input" else "4"
                cmd = ["mbpoll", "-m", "tcp", "-a", "1", "-0", "-r", str(address), "-c", str(words),
                       "-t", f"{kind}:hex", "-p", str(port), "-1", "-q", "127.0.0.1"]  # fmt: skip
                proc = await asyncio.create_subprocess_exec(
                    *cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                )
                out, _ = await asyncio.wait_for(proc.communicate(), 10)
                text = out.decode()
                assert proc.returncode == 0, (name, text)
                regs = bank.input if table == "input" else bank.holding
                for k in range(words):
                    assert f"[{address + k}]: \t0x{regs[address + k]:04X}" in text, (name, text)
        finally:
            await server.stop()

    asyncio.run(main())
