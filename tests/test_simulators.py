"""Tests of simulators/: the hand-written Modbus TCP server and MQTT client, the equipment and
shelf models, the embedded broker and SimulatedSite on the example site file.

Plain functions running ``asyncio.run``; independent clients (raw sockets, pymodbus, paho) check
the hand-written protocol code.
"""

from __future__ import annotations

import asyncio
import json
import math
import queue
import random
import socket
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from pymodbus.client import AsyncModbusTcpClient

from eqmon.config import ConfigError, parse_site
from simulators import SimulatedSite
from simulators.broker import EmbeddedBroker, is_broker_task
from simulators.modbus_server import (
    ModbusServer,
    RegisterBank,
    float32_to_words,
    int16_to_word,
    word_to_int16,
    words_to_float32,
)
from simulators.models import EQUIPMENT_MODELS, ThermalModel
from simulators.mqtt_wire import (
    MqttPublisher,
    decode_remaining_length,
    encode_remaining_length,
)
from simulators.shelves import ShelfModel

REPO = Path(__file__).resolve().parent.parent
LOCAL = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


def other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


# ---------------------------------------------------------------------------------------------
# Raw Modbus TCP client


def mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def read_req(tid: int, unit: int, fc: int, address: int, count: int) -> bytes:
    return mbap(tid, unit, struct.pack(">BHH", fc, address, count))


async def recv_frame(reader: asyncio.StreamReader, timeout: float = 2.0) -> tuple[int, int, bytes]:
    header = await asyncio.wait_for(reader.readexactly(7), timeout)
    tid, proto, length, unit = struct.unpack(">HHHB", header)
    assert proto == 0
    pdu = await asyncio.wait_for(reader.readexactly(length - 1), timeout)
    return tid, unit, pdu


def words_of(pdu: bytes) -> list[int]:
    assert pdu[1] == len(pdu) - 2
    return list(struct.unpack(f">{pdu[1] // 2}H", pdu[2:]))


def sample_server() -> tuple[ModbusServer, RegisterBank, RegisterBank]:
    b1 = RegisterBank()
    b1.input[0:3] = [int16_to_word(-123), 7, 0b1010]
    b1.holding[0:2] = [int16_to_word(50), 0xBEEF]
    b1.coils[0:3] = [True, False, True]
    b1.discrete[5] = True
    b2 = RegisterBank()
    b2.holding[0] = 4242
    return ModbusServer({1: b1, 2: b2}), b1, b2


def test_raw_client_reads_fc3_fc4_fc1_fc2_and_writes() -> None:
    async def main() -> None:
        server, b1, _ = sample_server()
        port = await server.start(LOCAL, 0)
        assert port > 0
        reader, writer = await asyncio.open_connection(LOCAL, port)
        try:
            writer.write(read_req(7, 1, 4, 0, 3))
            tid, unit, pdu = await recv_frame(reader)
            assert (tid, unit, pdu[0]) == (7, 1, 4)
            words = words_of(pdu)
            assert words == [int16_to_word(-123), 7, 0b1010]
            assert word_to_int16(words[0]) == -123

            writer.write(read_req(8, 1, 3, 0, 2))
            tid, _, pdu = await recv_frame(reader)
            assert tid == 8 and words_of(pdu) == [50, 0xBEEF]

            writer.write(read_req(9, 2, 3, 0, 1))  # second unit behind the same "gateway"
            _, unit, pdu = await recv_frame(reader)
            assert unit == 2 and words_of(pdu) == [4242]

            writer.write(read_req(10, 1, 1, 0, 3))
            _, _, pdu = await recv_frame(reader)
            assert pdu == bytes([1, 1, 0b101])
            writer.write(read_req(11, 1, 2, 0, 8))
            _, _, pdu = await recv_frame(reader)
            assert pdu == bytes([2, 1, 0b100000])

            writer.write(mbap(12, 1, struct.pack(">BHH", 6, 1, 0x1234)))  # FC6
            _, _, pdu = await recv_frame(reader)
            assert pdu == struct.pack(">BHH", 6, 1, 0x1234) and b1.holding[1] == 0x1234
            writer.write(mbap(13, 1, struct.pack(">BHHB2H", 16, 3, 2, 4, 1, 2)))  # FC16
            _, _, pdu = await recv_frame(reader)
            assert pdu == struct.pack(">BHH", 16, 3, 2) and b1.holding[3:5] == [1, 2]
            writer.write(mbap(14, 1, struct.pack(">BHH", 5, 1, 0xFF00)))  # FC5
            _, _, pdu = await recv_frame(reader)
            assert pdu[0] == 5 and b1.coils[1] is True
            writer.write(mbap(15, 1, struct.pack(">BHHBB", 15, 8, 3, 1, 0b011)))  # FC15
            _, _, pdu = await recv_frame(reader)
            assert pdu == struct.pack(">BHH", 15, 8, 3) and b1.coils[8:11] == [True, True, False]
        finally:
            writer.close()
            await server.stop()
        assert not other_tasks()

    asyncio.run(main())


def test_exception_replies() -> None:
    async def main() -> None:
        server, b1, _ = sample_server()
        port = await server.start(LOCAL, 0)
        reader, writer = await asyncio.open_connection(LOCAL, port)
        try:
            cases = [
                (mbap(1, 1, bytes([0x2B, 0x0E, 0x01, 0x00])), bytes([0xAB, 0x01])),  # illegal fn
                (read_req(2, 1, 3, 127, 2), bytes([0x83, 0x02])),  # runs past the table
                (read_req(3, 1, 4, 0, 0), bytes([0x84, 0x03])),  # count 0
                (read_req(4, 1, 4, 0, 126), bytes([0x84, 0x03])),  # count > 125
                (read_req(5, 1, 1, 0, 2001), bytes([0x81, 0x03])),
                (mbap(6, 1, struct.pack(">BHH", 5, 0, 0x1234)), bytes([0x85, 0x03])),
                (read_req(7, 9, 3, 0, 1), bytes([0x83, 0x0B])),  # unit not behind this gateway
            ]
            for req, expected in cases:
                writer.write(req)
                tid, _, pdu = await recv_frame(reader)
                assert pdu == expected, (req, pdu)
            for code in (0x02, 0x03, 0x04, 0x06, 0x0A, 0x0B):
                b1.faults.exception_code = code
                writer.write(read_req(20, 1, 4, 0, 1))
                _, _, pdu = await recv_frame(reader)
                assert pdu == bytes([0x84, code])
            b1.faults.clear()
            writer.write(read_req(21, 1, 4, 1, 1))
            _, _, pdu = await recv_frame(reader)
            assert words_of(pdu) == [7]
        finally:
            writer.close()
            await server.stop()

    asyncio.run(main())


def test_split_and_merged_frames_and_many_clients() -> None:
    async def main() -> None:
        server, _, _ = sample_server()
        port = await server.start(LOCAL, 0)
        conns = [await asyncio.open_connection(LOCAL, port) for _ in range(3)]
        try:
            reader, writer = conns[0]
            frame = read_req(100, 1, 4, 1, 1)
            for i in range(len(frame)):  # one byte per segment
                writer.write(frame[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0.005)
            tid, _, pdu = await recv_frame(reader)
            assert tid == 100 and words_of(pdu) == [7]
            # two and a half frames in one segment, the rest later
            f1, f2, f3 = read_req(101, 1, 4, 0, 1), read_req(102, 2, 3, 0, 1), read_req(103, 1, 3, 1, 1)
            writer.write(f1 + f2 + f3[:4])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(f3[4:])
            got = [await recv_frame(reader) for _ in range(3)]
            assert [g[0] for g in got] == [101, 102, 103]
            assert words_of(got[1][2]) == [4242] and words_of(got[2][2]) == [0xBEEF]
            # every client gets its own answers
            for n, (_, w) in enumerate(conns):
                w.write(read_req(200 + n, 1, 4, 1, 1))
            for n, (r, _) in enumerate(conns):
                assert (await recv_frame(r))[0] == 200 + n
            assert server.connections == 3
        finally:
            for _, w in conns:
                w.close()
            await server.stop()
        assert not other_tasks()

    asyncio.run(main())


def test_protocol_fault_hooks() -> None:
    async def main() -> None:
        server, b1, _ = sample_server()
        port = await server.start(LOCAL, 0)
        reader, writer = await asyncio.open_connection(LOCAL, port)
        try:
            b1.faults.wrong_tid = True
            writer.write(read_req(500, 1, 4, 1, 1))
            tid, _, _ = await recv_frame(reader)
            assert tid == 501
            b1.faults.clear()

            b1.faults.delay_s = 0.3
            t0 = time.monotonic()
            writer.write(read_req(501, 1, 4, 1, 1))
            assert (await recv_frame(reader))[0] == 501
            assert time.monotonic() - t0 >= 0.28
            b1.faults.clear()

            b1.faults.silent = True
            writer.write(read_req(502, 1, 4, 1, 1))
            with pytest.raises(asyncio.TimeoutError):
                await recv_frame(reader, timeout=0.3)
            assert b1.requests >= 1
            b1.faults.clear()

            b1.faults.reset = True
            writer.write(read_req(503, 1, 4, 1, 1))
            assert await asyncio.wait_for(reader.read(100), 2) == b""  # connection closed
        finally:
            writer.close()
            await server.stop()

    asyncio.run(main())


def test_pymodbus_client_reads_and_writes() -> None:
    async def main() -> None:
        server, b1, _ = sample_server()
        hi, lo = float32_to_words(1234.5)
        b1.input[10:12] = [hi, lo]
        port = await server.start(LOCAL, 0)
        client = AsyncModbusTcpClient(LOCAL, port=port, timeout=2, retries=0)
        try:
            assert await client.connect()
            rr = await client.read_input_registers(0, count=3, device_id=1)
            assert not rr.isError()
            assert rr.registers == [int16_to_word(-123), 7, 0b1010]
            rr = await client.read_input_registers(10, count=2, device_id=1)
            decoded = client.convert_from_registers(rr.registers, client.DATATYPE.FLOAT32)
            assert decoded == pytest.approx(1234.5)
            rr = await client.read_holding_registers(0, count=1, device_id=2)
            assert rr.registers == [4242]
            rr = await client.read_coils(0, count=3, device_id=1)
            assert rr.bits[:3] == [True, False, True]
            wr = await client.write_register(0, 61, device_id=1)
            assert not wr.isError() and b1.holding[0] == 61
            b1.faults.exception_code = 0x06
            rr = await client.read_input_registers(0, count=1, device_id=1)
            assert rr.isError() and rr.exception_code == 0x06
            b1.faults.clear()
            rr = await client.read_holding_registers(200, count=1, device_id=1)
            assert rr.isError() and rr.exception_code == 0x02
        finally:
            client.close()
            await server.stop()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# Equipment models


def test_value_helpers() -> None:
    assert int16_to_word(-1) == 0xFFFF and word_to_int16(0xFFFF) == -1
    assert int16_to_word(-250) == 65286 and word_to_int16(65286) == -250
    assert words_to_float32(*float32_to_words(3.5)) == 3.5
    assert float32_to_words(1.0) == (0x3F80, 0x0000)
    assert float32_to_words(1.0, "CDAB") == (0x0000, 0x3F80)


@pytest.mark.parametrize("seed", range(6))
def test_fridge_stays_in_range_for_an_hour(seed: int) -> None:
    model = ThermalModel("medication_refrigerator", random.Random(seed), {"door_per_hour": 4})
    bank = RegisterBank()
    temps, states, doors = [], set(), 0
    for t in range(0, 3601, 5):
        model.step(t)
        model.write(bank)
        temps.append(word_to_int16(bank.input[0]) / 10)
        states.add(bool(bank.input[2] & 0b10))
        doors += bank.input[2] & 1
    assert 2.0 <= min(temps) and max(temps) <= 8.0, (min(temps), max(temps))
    assert states == {True, False}  # the compressor cycles
    assert max(temps) - min(temps) > 1.0  # … and the temperature moves with it
    assert word_to_int16(bank.holding[0]) == 50
    assert words_to_float32(bank.input[10], bank.input[11]) > 0


def test_models_are_deterministic_given_seed() -> None:
    def run(seed: int) -> list[int]:
        m = ThermalModel("medication_refrigerator", random.Random(seed))
        bank = RegisterBank()
        out = []
        for t in range(0, 600, 10):
            m.step(t)
            m.write(bank)
            out.append(bank.input[0])
        return out

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_freezer_and_warmer_ranges() -> None:
    freezer = ThermalModel("vaccine_freezer", random.Random(1))
    warmer = ThermalModel("blanket_warmer", random.Random(1))
    bank = RegisterBank()
    ft, wt = [], []
    for t in range(0, 2 * 3600, 10):
        freezer.step(t)
        freezer.write(bank)
        ft.append(word_to_int16(bank.input[0]) / 10)
        warmer.step(t)
        wt.append(warmer.reported_temperature)
    assert -50 <= min(ft) and max(ft) <= -15
    assert bank.input[0] > 0x8000  # negative temperature in two's complement
    assert 40 <= min(wt) and max(wt) <= 54 and sum(wt) / len(wt) == pytest.approx(49, abs=1.5)


def test_drift_stuck_sentinel_fault_bit_and_clear() -> None:
    m = ThermalModel("medication_refrigerator", random.Random(0))
    bank = RegisterBank()
    m.step(60)
    m.inject("drift", {"metric": "temperature_c", "target": 12.0, "rate_per_min": 0.5})
    start = m.temperature
    m.step(60 + 600)  # 10 min at 0.5 °C/min: 5 °C up, not yet at the target
    assert m.temperature == pytest.approx(start + 5.0, abs=0.01)
    m.step(60 + 3600)
    m.write(bank)
    assert word_to_int16(bank.input[0]) / 10 == pytest.approx(12.0, abs=0.15)
    m.step(60 + 7200)
    assert m.temperature == pytest.approx(12.0)  # holds at the target
    assert bank.input[2] & 0b10  # compressor runs flat out

    m.inject("stuck")
    m.write(bank)
    frozen = bank.input[0]
    m.inject("clear")
    m.inject("stuck")
    for t in range(7300, 9000, 100):
        m.step(t)
        m.write(bank)
        assert bank.input[0] == frozen
    m.inject("sentinel")
    m.inject("fault_bit")
    m.write(bank)
    assert bank.input[0] == 0x7FFF and bank.input[2] & 0b1000
    m.inject("clear")
    m.step(9000 + 3 * 3600)  # back under normal control
    m.write(bank)
    assert 2.0 <= word_to_int16(bank.input[0]) / 10 <= 8.0
    assert not bank.input[2] & 0b1000

    with pytest.raises(ValueError, match="target"):
        m.inject("drift", {"metric": "temperature_c"})
    with pytest.raises(ValueError, match="temperature_c"):
        m.inject("drift", {"metric": "humidity", "target": 1})
    with pytest.raises(ValueError, match="expected one of"):
        m.inject("explode")


def test_a_compressor_fault_stops_the_compressor_and_the_freezer_warms() -> None:
    m = ThermalModel("vaccine_freezer", random.Random(0), {"door_per_hour": 0, "defrost_every_h": 0})
    bank = RegisterBank()
    m.step(600)
    m.inject("fault_bit")  # bit 3, compressor_fault
    start, temps = m.temperature, []
    for t in range(660, 600 + 3 * 3600 + 1, 60):
        m.step(t)
        m.write(bank)
        assert bank.input[2] & 0b1010 == 0b1000 and bank.input[3] == 5  # fault, compressor off
        temps.append(m.temperature)
    assert temps == sorted(temps)  # only the heat leak: warmer every minute
    # the leak's exponential toward the room (22 °C, time constant 30 000 s), nothing else
    assert temps[-1] == pytest.approx(22 - (22 - start) * math.exp(-3 * 3600 / 30_000), abs=0.01)
    assert temps[-1] > -15.0
    m.inject("clear")
    m.step(600 + 4 * 3600)
    m.write(bank)
    assert m.temperature < -20.0 and bank.input[2] & 0b1000 == 0


def test_door_open_holds_the_door_open_for_minutes_or_until_clear() -> None:
    m = ThermalModel("medication_refrigerator", random.Random(1), {"door_per_hour": 0})
    bank = RegisterBank()
    m.step(600)
    m.inject("door_open", {"minutes": 30})
    assert m.active_faults == ["door held open"]
    for t in range(610, 600 + 30 * 60, 10):
        m.step(t)
        m.write(bank)
        assert bank.input[2] & 0b1 and bank.input[3] == 2  # door open, for all of the 30 min
    assert 11.0 < m.temperature < 14.0  # the compressor loses against the open door
    m.step(600 + 30 * 60 + 10)
    m.write(bank)
    assert not bank.input[2] & 0b1 and m.active_faults == []  # shut after 30 min
    m.inject("door_open")
    m.step(600 + 5 * 3600)
    assert m.door_open
    m.inject("clear")
    m.step(600 + 5 * 3600 + 10)
    assert not m.door_open
    with pytest.raises(ValueError, match="minutes > 0"):
        m.inject("door_open", {"minutes": 0})
    with pytest.raises(ValueError, match="has no door"):
        EQUIPMENT_MODELS["oxygen_pipeline_monitor"](random.Random(0)).inject("door_open")
    room = EQUIPMENT_MODELS["negative_pressure_room"](random.Random(0), {"door_per_hour": 0})
    room.inject("door_open", {"minutes": 5})
    room.step(60)
    room.step(80)
    room.write(bank)
    assert room.value > -2.5 and bank.input[1] & 0b11 == 0b11  # door open, pressure alarm
    room.step(400)
    assert room.value < -2.5


def test_setpoint_written_by_master_is_followed() -> None:
    m = ThermalModel("medication_refrigerator", random.Random(0))
    bank = RegisterBank()
    m.write(bank)
    bank.holding[0] = int16_to_word(30)  # a master writes 3.0 °C
    for t in range(0, 3 * 3600, 10):
        m.read_setpoint(bank)
        m.step(t)
        m.write(bank)
    assert m.setpoint == 3.0
    assert word_to_int16(bank.input[0]) / 10 < 4.5


def test_shelf_model_use_and_restock() -> None:
    params = {"item": "masks", "unit_weight_g": 3.2, "tare_g": 380, "capacity": 500, "par": 400,
              "use_per_hour": 60, "initial": 400, "restock_delay_min": 10}  # fmt: skip
    shelf = ShelfModel(random.Random(1), params)
    assert shelf.count == 400
    assert abs(shelf.weight_g - (380 + 400 * 3.2)) < 20
    day = night = 0
    for hour in range(24):
        before = shelf.taken
        for s in range(1, 3601, 10):
            shelf.step(hour * 3600 + s, hour=hour)
        if 7 <= hour < 19:
            day += shelf.taken - before
        else:
            night += shelf.taken - before
    assert day > 2 * night > 0
    assert shelf.restocks >= 1
    # count as the firmware computes it matches the items on the bin
    for _ in range(20):
        shelf.step(shelf.now + 1, hour=12)
    assert abs(shelf.count - shelf.count_true) <= 1
    with pytest.raises(ValueError, match="unit_weight_g"):
        ShelfModel(random.Random(1), {"item": "x", "capacity": 5, "par": 5})


# ---------------------------------------------------------------------------------------------
# MQTT


def test_remaining_length_encoding() -> None:
    vectors = {
        0: b"\x00", 127: b"\x7f", 128: b"\x80\x01", 16383: b"\xff\x7f",
        16384: b"\x80\x80\x01", 2097151: b"\xff\xff\x7f", 2097152: b"\x80\x80\x80\x01",
        268435455: b"\xff\xff\xff\x7f",
    }  # fmt: skip
    for n, enc in vectors.items():
        assert encode_remaining_length(n) == enc
        assert decode_remaining_length(enc + b"junk") == (n, len(enc))
    with pytest.raises(ValueError):
        encode_remaining_length(268435456)
    with pytest.raises(ValueError):
        decode_remaining_length(b"\xff\xff\xff\xff\x01")


class Subscriber:
    """A paho client on a thread, collecting messages of one topic filter."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.subscribed = False
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4()}")
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: setattr(self, "subscribed", True)
        self.client.connect(LOCAL, port)
        self.client.loop_start()

    async def ready(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.subscribed:
            assert time.monotonic() < deadline, "subscriber never subscribed"
            await asyncio.sleep(0.02)

    async def get(self, timeout: float = 5.0) -> paho.MQTTMessage:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.messages.get_nowait()
            except queue.Empty:
                assert time.monotonic() < deadline, "no message arrived"
                await asyncio.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def _publish_and_check(port: int) -> None:
    topic = f"eqmon-test/{uuid.uuid4()}"
    sub = Subscriber(port, topic + "/#")
    pub = MqttPublisher(LOCAL, port, client_id=f"sim-{uuid.uuid4().hex[:8]}", keepalive=5)
    try:
        await sub.ready()
        await pub.start()
        await pub.wait_connected(5)
        big = b"x" * 20000  # remaining length needs 3 bytes
        acks = [pub.publish(f"{topic}/{i}", f"m{i}".encode(), qos=1) for i in range(5)]
        acks.append(pub.publish(f"{topic}/big", big, qos=1))
        await asyncio.wait_for(asyncio.gather(*acks), 5)
        got = {}
        for _ in range(6):
            msg = await sub.get()
            got[msg.topic] = msg
        assert {t: m.payload for t, m in got.items() if not t.endswith("big")} == {
            f"{topic}/{i}": f"m{i}".encode() for i in range(5)
        }
        assert got[f"{topic}/big"].payload == big
        assert all(m.qos == 1 for m in got.values())
        assert pub.pending == 0
    finally:
        await pub.stop()
        sub.close()


def test_mqtt_publisher_qos1_to_mosquitto(mosquitto) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        await _publish_and_check(mosquitto.port)
        assert not other_tasks()

    asyncio.run(main())


def test_mqtt_publisher_qos1_to_embedded_broker() -> None:
    async def main() -> None:
        broker = EmbeddedBroker()
        port = await broker.start()
        try:
            await _publish_and_check(port)
        finally:
            await broker.stop()
        assert not other_tasks()
        with pytest.raises(OSError):
            await asyncio.open_connection(LOCAL, port)

    asyncio.run(main())


def test_mqtt_publisher_resends_with_dup_after_reconnect() -> None:
    """A fake broker drops the connection before acknowledging: the message comes again, DUP."""

    async def main() -> None:
        seen: list[tuple[int, int, bytes]] = []  # (connection no, flags, body)
        conns = 0
        handlers: list[Any] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal conns
            conns += 1
            me = conns
            handlers.append(asyncio.current_task())
            try:
                while True:
                    first = (await reader.readexactly(1))[0]
                    raw = b""
                    while True:
                        raw += await reader.readexactly(1)
                        if not raw[-1] & 0x80:
                            break
                    n, _ = decode_remaining_length(raw)
                    body = await reader.readexactly(n)
                    if first >> 4 == 14:  # DISCONNECT
                        return
                    if first >> 4 == 1:
                        writer.write(b"\x20\x02\x00\x00")  # CONNACK accepted
                    elif first >> 4 == 3:
                        seen.append((me, first & 0x0F, body))
                        if me == 1:
                            writer.transport.abort()  # vanish without PUBACK
                            return
                        pid = body[2 + body[1] : 4 + body[1]]  # after the 2-byte-length topic
                        writer.write(b"\x40\x02" + pid)
            except asyncio.IncompleteReadError:
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, LOCAL, 0)
        port = server.sockets[0].getsockname()[1]
        pub = MqttPublisher(LOCAL, port, client_id="dup-test", backoff_min=0.05)
        await pub.start()
        try:
            await asyncio.wait_for(pub.publish("a/b", b"hello", qos=1), 5)
            late = pub.publish("a/c", b"queued", qos=1)
            await asyncio.wait_for(late, 5)
        finally:
            await pub.stop()
            server.close()
            await asyncio.wait_for(asyncio.gather(*handlers), 2)
            await server.wait_closed()
        first, again = seen[0], seen[1]
        assert first[0] == 1 and first[1] == 0b0010  # QoS 1, not DUP
        assert again[0] == 2 and again[1] == 0b1010 and again[2] == first[2]  # DUP, same packet id
        assert pub.connects == 2

    asyncio.run(main())


def test_mqtt_publisher_queues_while_broker_is_down() -> None:
    async def main() -> None:
        port = free_port()
        pub = MqttPublisher(LOCAL, port, client_id="q-test", backoff_min=0.05, backoff_max=0.2,
                            queue_limit=3)  # fmt: skip
        await pub.start()
        futs = [pub.publish("q/t", str(i).encode(), qos=1) for i in range(5)]
        await asyncio.sleep(0.2)
        assert not pub.connected and pub.dropped == 2 and futs[0].cancelled()
        broker = EmbeddedBroker(port=port)
        await broker.start()
        try:
            await asyncio.wait_for(asyncio.gather(*futs[2:]), 5)
        finally:
            await pub.stop()
            await broker.stop()
        assert not other_tasks()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# SimulatedSite


def example_site_text(ports: dict[int, int]) -> str:
    text = (REPO / "examples" / "site.yaml").read_text(encoding="utf-8")
    for old, new in ports.items():
        assert f"port: {old}" in text
        text = text.replace(f"port: {old}", f"port: {new}")
    return text


SHELF_FAST = "heartbeat_s: 0.5, hold_s: 0.2, first_publish_s: 0.1, "


def test_simulated_site_on_example_site() -> None:
    async def main() -> None:
        ports = {p: free_port() for p in (15021, 15022, 15023, 15024)}
        text = example_site_text(ports)
        text = text.replace("params: {item:", "params: {" + SHELF_FAST + "item:")
        text = text.replace("{at: 20s,", "{at: 40s,")  # at speed 20: 2 s after start
        site = parse_site(text)
        broker = EmbeddedBroker()
        mport = await broker.start()
        sub = Subscriber(mport, "eqmon/#")
        await sub.ready()
        sim = SimulatedSite(site, mqtt_host=LOCAL, mqtt_port=mport, speed=20)
        lines = sim.describe()
        assert len(lines) == 7
        assert lines[0].split() == ["fridge-1", "medication_refrigerator", "modbus",
                                    f"127.0.0.1:{ports[15021]}", "unit", "1"]  # fmt: skip
        client = AsyncModbusTcpClient(LOCAL, port=ports[15021], timeout=2, retries=0)
        await sim.start()
        try:
            assert await client.connect()
            rr = await client.read_input_registers(0, count=3, device_id=1)
            assert 2.0 <= word_to_int16(rr.registers[0]) / 10 <= 8.0
            rr = await client.read_input_registers(10, count=2, device_id=1)
            assert client.convert_from_registers(rr.registers, client.DATATYPE.FLOAT32) > 0
            rr = await client.read_holding_registers(0, count=1, device_id=1)
            assert word_to_int16(rr.registers[0]) == 50
            freezer = AsyncModbusTcpClient(LOCAL, port=ports[15023], timeout=2, retries=0)
            assert await freezer.connect()
            rr = await freezer.read_input_registers(0, count=1, device_id=1)
            freezer.close()
            assert -50 <= word_to_int16(rr.registers[0]) / 10 <= -15

            # shelves: status online (retained) and a JSON state message per shelf
            states: dict[str, dict[str, Any]] = {}
            online: set[str] = set()
            deadline = time.monotonic() + 5
            while (len(states) < 3 or len(online) < 3) and time.monotonic() < deadline:
                msg = await sub.get()
                if msg.topic.startswith("eqmon/status/") and msg.payload == b"online":
                    online.add(msg.topic)
                elif msg.topic.endswith("/state"):
                    states[msg.topic.split("/")[-2]] = json.loads(msg.payload)
            assert online == {f"eqmon/status/shelf-{n}" for n in ("gloves", "masks", "linens")}
            gloves = states["shelf-gloves"]
            assert set(gloves) == {"ts", "weight_g", "count", "item", "stable"}
            assert gloves["item"] == "exam gloves M"
            assert gloves["count"] == round((gloves["weight_g"] - 410) / 5.6)
            assert abs(gloves["ts"] - time.time()) < 10

            # the scenario drifts fridge-1 to 12 °C from 40 simulated seconds (2 s real)
            deadline = time.monotonic() + 8
            temp = 0.0
            while time.monotonic() < deadline:
                rr = await client.read_input_registers(0, count=1, device_id=1)
                temp = word_to_int16(rr.registers[0]) / 10
                if temp >= 11.8:
                    break
                await asyncio.sleep(0.2)
            assert temp >= 11.8
            assert any(d == "fridge-1" and f == "drift" for _, d, f, _ in sim.injected)

            # run-time faults
            sim.inject("fridge-2", "exception", {"code": 0x0B})
            c2 = AsyncModbusTcpClient(LOCAL, port=ports[15022], timeout=2, retries=0)
            assert await c2.connect()
            rr = await c2.read_input_registers(0, count=1, device_id=1)
            assert rr.isError() and rr.exception_code == 0x0B
            sim.inject("fridge-2", "clear")
            rr = await c2.read_input_registers(0, count=1, device_id=1)
            assert not rr.isError()
            c2.close()
            sim.inject("fridge-1", "sentinel")
            await asyncio.sleep(0.01)
            rr = await client.read_input_registers(0, count=1, device_id=1)
            assert rr.registers[0] == 0x7FFF
            assert "sentinel" in sim.describe()[0]

            sim.inject("shelf-masks", "malformed")
            deadline = time.monotonic() + 5
            bad = None
            while bad is None and time.monotonic() < deadline:
                msg = await sub.get()
                if msg.topic.endswith("shelf-masks/state"):
                    try:
                        json.loads(msg.payload)
                    except ValueError:
                        bad = msg.payload
            assert bad is not None
        finally:
            client.close()
            await sim.stop()
        assert not {t for t in other_tasks() if not is_broker_task(t)}
        # the server sockets are closed
        with pytest.raises(OSError):
            await asyncio.open_connection(LOCAL, ports[15021])
        msgs = []
        while not sub.messages.empty():
            msgs.append(sub.messages.get_nowait())
        assert any(m.topic == "eqmon/status/shelf-gloves" and m.payload == b"offline" for m in msgs)
        sub.close()
        await broker.stop()
        assert not other_tasks()

    asyncio.run(main())


def test_simulated_site_errors(mosquitto) -> None:  # type: ignore[no-untyped-def]
    base = example_site_text({p: free_port() for p in (15021, 15022, 15023, 15024)})
    site = parse_site(base)
    # without a broker the shelves are left out, the Modbus equipment still runs
    no_broker = SimulatedSite(site, mqtt_host=None, mqtt_port=None)
    assert no_broker.device_ids == ["fridge-1", "fridge-2", "freezer-1", "warmer-1"]
    assert "not simulated: no MQTT broker" in no_broker.describe()[4]
    with pytest.raises(KeyError, match="no MQTT broker"):
        no_broker.inject("shelf-gloves", "malformed")
    sim = SimulatedSite(site, mqtt_host=LOCAL, mqtt_port=mosquitto.port)
    with pytest.raises(KeyError, match="nope"):
        sim.inject("nope", "drift")
    with pytest.raises(ValueError, match="fridge-1.*unknown fault 'melt'"):
        sim.inject("fridge-1", "melt")
    with pytest.raises(ValueError, match="fridge-1.*target"):
        sim.inject("fridge-1", "drift", {"metric": "temperature_c"})
    with pytest.raises(ValueError, match="fridge-1.*code"):
        sim.inject("fridge-1", "exception", {"code": 99})
    with pytest.raises(ValueError, match="shelf-masks.*take needs count"):
        sim.inject("shelf-masks", "take")
    sim.inject("fridge-1", "slow", {"delay_s": 2})
    assert sim.bank("fridge-1").faults.delay_s == 2

    # Bad simulator sections never reach the simulators: the site file's models refuse them,
    # with their path (tests/test_config_simulators.py has the full table).
    with pytest.raises(ConfigError, match=r"simulator.*ice_cream_van"):
        parse_site(base.replace("model: vaccine_freezer", "model: ice_cream_van"))
    with pytest.raises(ConfigError, match=r"unit_weight_g"):
        parse_site(base.replace("unit_weight_g: 3.2", "unit_weight_g: heavy"))
    with pytest.raises(ConfigError, match=r"scenario\[0\].*melt"):
        parse_site(base.replace("fault: drift", "fault: melt"))
    # a device without a simulator section is not simulated
    no_sim = parse_site(base.replace("simulator: {model: blanket_warmer, seed: 4}", ""))
    sim = SimulatedSite(no_sim, mqtt_host=LOCAL, mqtt_port=mosquitto.port)
    assert "warmer-1" not in sim.device_ids and len(sim.describe()) == 6
    with pytest.raises(KeyError, match="not simulated"):
        sim.inject("warmer-1", "stuck")


def test_devices_sharing_a_port_share_one_server(mosquitto) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        port = free_port()
        text = example_site_text({15021: port, 15022: port, 15023: free_port(), 15024: free_port()})
        fridge2 = f"port: {port}\n    unit_id: 1\n    interval: 2s\n    registers: *fridge"
        text = text.replace(fridge2, fridge2.replace("unit_id: 1", "unit_id: 2"))
        site = parse_site(text)
        assert site.device("fridge-2").unit_id == 2
        sim = SimulatedSite(site, mqtt_host=LOCAL, mqtt_port=mosquitto.port, speed=1)
        sim._shelves.clear()  # Modbus only in this test
        await sim.start()
        client = AsyncModbusTcpClient(LOCAL, port=port, timeout=2, retries=0)
        try:
            assert await client.connect()
            sim.inject("fridge-2", "stuck")
            sim.bank("fridge-2").input[0] = int16_to_word(33)
            sim.model("fridge-2").stuck_word = int16_to_word(33)
            r1 = await client.read_input_registers(0, count=1, device_id=1)
            r2 = await client.read_input_registers(0, count=1, device_id=2)
            assert word_to_int16(r2.registers[0]) == 33
            assert r1.registers[0] != r2.registers[0]
        finally:
            client.close()
            await sim.stop()
        assert not other_tasks()

    asyncio.run(main())
