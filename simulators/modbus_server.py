"""A small Modbus TCP server on asyncio, written by hand for the simulators.

It is deliberately independent of pymodbus (which eqmon's collector uses), so that the tests
exercise two separate implementations of the protocol against each other, and so that every
fault a field device shows can be injected: exception replies, slow replies, silence, dropped
connections and wrong transaction ids.

One server can stand for a gateway: it holds one :class:`RegisterBank` per unit id. A request
for a unit id it does not hold gets exception 0x0B (gateway target device failed to respond).

Frame (MBAP header, 7 bytes, then the PDU)::

    transaction id (2) | protocol id (2, = 0) | length (2, = 1 + len(PDU)) | unit id (1) | PDU
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# Exception codes (Modbus Application Protocol v1.1b3, section 7).
ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03
SERVER_DEVICE_FAILURE = 0x04
SERVER_DEVICE_BUSY = 0x06
GATEWAY_PATH_UNAVAILABLE = 0x0A
GATEWAY_TARGET_FAILED = 0x0B
EXCEPTION_CODES = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x08, 0x0A, 0x0B}

MAX_READ_BITS = 2000
MAX_READ_REGS = 125
MAX_WRITE_BITS = 1968
MAX_WRITE_REGS = 123

# Table names as in the site file (``registers[].type``), by function code.
TABLE_OF_FUNCTION = {1: "coil", 2: "discrete_input", 3: "holding", 4: "input",
                     5: "coil", 6: "holding", 15: "coil", 16: "holding"}  # fmt: skip
TABLES = ("holding", "input", "coil", "discrete_input")

_MBAP = struct.Struct(">HHHB")


# ---------------------------------------------------------------------------------------------
# Value helpers


def int16_to_word(value: int) -> int:
    """Two's complement of a signed 16-bit value as an unsigned word (clamped to int16)."""
    value = max(-32768, min(32767, int(value)))
    return value & 0xFFFF


def word_to_int16(word: int) -> int:
    word &= 0xFFFF
    return word - 0x10000 if word & 0x8000 else word


def float32_to_words(value: float, order: str = "ABCD") -> tuple[int, int]:
    """Two words of an IEEE-754 float32 in the given byte/word order (ABCD = big-endian)."""
    a, b, c, d = struct.pack(">f", value)
    arranged = {
        "ABCD": (a, b, c, d),
        "DCBA": (d, c, b, a),
        "BADC": (b, a, d, c),
        "CDAB": (c, d, a, b),
    }[order]
    return (arranged[0] << 8) | arranged[1], (arranged[2] << 8) | arranged[3]


def words_to_float32(hi: int, lo: int) -> float:
    """Inverse of :func:`float32_to_words` for ABCD order."""
    return float(struct.unpack(">f", struct.pack(">HH", hi, lo))[0])


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """Modbus RTU CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    """unit id | PDU | CRC (little-endian)."""
    body = bytes([unit]) + pdu
    return body + crc16(body).to_bytes(2, "little")


# ---------------------------------------------------------------------------------------------
# Register bank and fault hooks


@dataclass
class UnitFaults:
    """Protocol faults of one unit; all off by default."""

    exception_code: int | None = None  # reply to every request with this exception code
    delay_s: float = 0.0  # wait this long before every reply
    silent: bool = False  # read requests, never answer
    reset: bool = False  # close the connection on every request, without an answer
    wrong_tid: bool = False  # answer with transaction id + 1
    wrong_function: bool = False  # answer a read with the other register table's function code
    short_reply: bool = False  # answer a register read with one register fewer
    down_until: float = 0.0  # rebooting: connections refused/closed until this monotonic time
    reboots: int = 0
    # (table, address) answered with 0x02 when a request touches them (the ``reject`` fault)
    reject: set[tuple[str, int]] = field(default_factory=set)

    def clear(self) -> None:
        self.reject = set()
        self.exception_code = None
        self.delay_s = 0.0
        self.silent = False
        self.reset = False
        self.wrong_tid = False
        self.wrong_function = False
        self.short_reply = False

    def reboot(self, down_s: float) -> None:
        """The unit restarts: every connection to its server is dropped and requests go
        unanswered (the connection is closed) for ``down_s`` seconds; other faults clear."""
        self.clear()
        self.down_until = time.monotonic() + down_s
        self.reboots += 1

    @property
    def rebooting(self) -> bool:
        return self.down_until > time.monotonic()

    @property
    def active(self) -> list[str]:
        out = []
        if self.exception_code is not None:
            out.append(f"exception 0x{self.exception_code:02X}")
        if self.delay_s:
            out.append(f"slow {self.delay_s:g}s")
        if self.silent:
            out.append("silence")
        if self.reset:
            out.append("reset")
        if self.wrong_tid:
            out.append("wrong_tid")
        if self.wrong_function:
            out.append("wrong_function")
        if self.short_reply:
            out.append("short_reply")
        if self.rebooting:
            out.append("rebooting")
        if self.reject:
            out.append(f"reject {format_addresses(self.reject)}")
        return out


def format_addresses(addresses: set[tuple[str, int]] | frozenset[tuple[str, int]]) -> str:
    """``input:10-11,holding:0``: runs of addresses per table (the syntax parse_addresses reads)."""
    parts = []
    for table in TABLES:
        run: list[int] = []
        for a in sorted(a for t, a in addresses if t == table):
            if run and a == run[-1] + 1:
                run.append(a)
                continue
            if run:
                parts.append(f"{table}:{run[0]}" + (f"-{run[-1]}" if len(run) > 1 else ""))
            run = [a]
        if run:
            parts.append(f"{table}:{run[0]}" + (f"-{run[-1]}" if len(run) > 1 else ""))
    return ",".join(parts)


@dataclass
class RegisterBank:
    """The data of one Modbus unit: holding/input words (uint16) and coil/discrete bits.

    Addresses are 0-based PDU addresses. A read past the end of a table is answered with
    exception 0x02 (illegal data address).
    """

    holding_size: int = 128
    input_size: int = 128
    coil_size: int = 64
    discrete_size: int = 64
    holding: list[int] = field(default_factory=list)
    input: list[int] = field(default_factory=list)
    coils: list[bool] = field(default_factory=list)
    discrete: list[bool] = field(default_factory=list)
    faults: UnitFaults = field(default_factory=UnitFaults)
    # (table, address) this unit does not have although inside its tables: a request touching
    # one gets 0x02 (a model's ``reject_addresses`` param); unlike faults, ``clear`` keeps them
    missing: frozenset[tuple[str, int]] = frozenset()
    requests: int = 0  # requests received (including unanswered ones), for tests and stats
    writes: int = 0  # successful write requests

    def __post_init__(self) -> None:
        for name, size, fill in (
            ("holding", self.holding_size, 0),
            ("input", self.input_size, 0),
            ("coils", self.coil_size, False),
            ("discrete", self.discrete_size, False),
        ):
            table = getattr(self, name)
            if len(table) < size:
                table.extend([fill] * (size - len(table)))

    def set_words(self, table: str, address: int, *words: int) -> None:
        regs = self.holding if table == "holding" else self.input
        for i, w in enumerate(words):
            regs[address + i] = int(w) & 0xFFFF

    def get_words(self, table: str, address: int, count: int = 1) -> list[int]:
        regs = self.holding if table == "holding" else self.input
        return list(regs[address : address + count])


# ---------------------------------------------------------------------------------------------
# PDU handling


class _ModbusError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _pack_bits(bits: list[bool]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def _addr_count(pdu: bytes) -> tuple[int, int]:
    if len(pdu) != 5:
        raise _ModbusError(ILLEGAL_DATA_VALUE)
    address, count = struct.unpack(">HH", pdu[1:5])
    return address, count


def process_pdu(bank: RegisterBank, pdu: bytes) -> bytes:
    """Answer one request PDU from ``bank``; exceptions come back as exception PDUs."""
    fc = pdu[0]
    try:
        if (bank.missing or bank.faults.reject) and _touches_rejected(bank, fc, pdu):
            raise _ModbusError(ILLEGAL_DATA_ADDRESS)
        return _process(bank, fc, pdu)
    except _ModbusError as exc:
        return bytes([(fc | 0x80) & 0xFF, exc.code])


def _touches_rejected(bank: RegisterBank, fc: int, pdu: bytes) -> bool:
    """Whether a read or write touches an address the unit rejects (missing or ``reject``)."""
    table = TABLE_OF_FUNCTION.get(fc)
    if table is None or len(pdu) < 5:
        return False
    address, count = struct.unpack(">HH", pdu[1:5])
    if fc in (5, 6):
        count = 1
    rejected = bank.missing | bank.faults.reject
    return any((table, a) in rejected for a in range(address, address + min(count, MAX_READ_BITS)))


def _process(bank: RegisterBank, fc: int, pdu: bytes) -> bytes:
    if fc in (1, 2):
        address, count = _addr_count(pdu)
        if not 1 <= count <= MAX_READ_BITS:
            raise _ModbusError(ILLEGAL_DATA_VALUE)
        table = bank.coils if fc == 1 else bank.discrete
        if address + count > len(table):
            raise _ModbusError(ILLEGAL_DATA_ADDRESS)
        data = _pack_bits(table[address : address + count])
        return bytes([fc, len(data)]) + data
    if fc in (3, 4):
        address, count = _addr_count(pdu)
        if not 1 <= count <= MAX_READ_REGS:
            raise _ModbusError(ILLEGAL_DATA_VALUE)
        regs = bank.holding if fc == 3 else bank.input
        if address + count > len(regs):
            raise _ModbusError(ILLEGAL_DATA_ADDRESS)
        words = regs[address : address + count]
        return bytes([fc, 2 * count]) + struct.pack(f">{count}H", *words)
    if fc == 5:
        address, value = _addr_count(pdu)
        if value not in (0x0000, 0xFF00):
            raise _ModbusError(ILLEGAL_DATA_VALUE)
        if address >= len(bank.coils):
            raise _ModbusError(ILLEGAL_DATA_ADDRESS)
        bank.coils[address] = value == 0xFF00
        bank.writes += 1
        return pdu
    if fc == 6:
        address, value = _addr_count(pdu)
        if address >= len(bank.holding):
            raise _ModbusError(ILLEGAL_DATA_ADDRESS)
        bank.holding[address] = value
        bank.writes += 1
        return pdu
    if fc == 15:
        if len(pdu) < 6:
            raise _ModbusError(ILLEGAL_DATA_VALUE)
        address, count, nbytes = struct.unpack(">HHB", pdu[1:6])
        if not 1 <= count <= MAX_WRITE_BITS or nbytes != (count + 7) // 8 or len(pdu) != 6 + nbytes:
            raise _ModbusError(ILLEGAL_DATA_VALUE)
        if address + count > len(bank.coils):
            raise _ModbusError(ILLEGAL_DATA_ADDRESS)
        data = pdu[6:]
        for i in range(count):
            bank.coils[address + i] = bool(data[i // 8] & (1 << (i % 8)))
        bank.writes += 1
        return pdu[:5]
    if fc == 16:
        if len(pdu) < 6:
            raise _ModbusError(ILLEGAL_DATA_VALUE)
        address, count, nbytes = struct.unpack(">HHB", pdu[1:6])
        if not 1 <= count <= MAX_WRITE_REGS or nbytes != 2 * count or len(pdu) != 6 + nbytes:
            raise _ModbusError(ILLEGAL_DATA_VALUE)
        if address + count > len(bank.holding):
            raise _ModbusError(ILLEGAL_DATA_ADDRESS)
        bank.holding[address : address + count] = list(struct.unpack(f">{count}H", pdu[6:]))
        bank.writes += 1
        return pdu[:5]
    raise _ModbusError(ILLEGAL_FUNCTION)


# ---------------------------------------------------------------------------------------------
# Server


class ModbusServer:
    """Modbus TCP server for one host:port, serving one :class:`RegisterBank` per unit id."""

    def __init__(self, units: dict[int, RegisterBank] | None = None, *, framing: str = "tcp") -> None:
        if framing not in ("tcp", "rtu_over_tcp"):
            raise ValueError(f"framing must be tcp or rtu_over_tcp, got {framing!r}")
        self.framing = framing
        self.units: dict[int, RegisterBank] = dict(units or {})
        self._server: asyncio.Server | None = None
        self._conn_tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.host: str | None = None
        self.port: int | None = None
        self.connections_total = 0

    def add_unit(self, unit_id: int, bank: RegisterBank | None = None) -> RegisterBank:
        if unit_id in self.units:
            raise ValueError(f"unit id {unit_id} is already served")
        bank = bank or RegisterBank()
        self.units[unit_id] = bank
        return bank

    @property
    def connections(self) -> int:
        return len(self._writers)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on host:port (0 = any free port); return the bound port."""
        if self._server is not None:
            raise RuntimeError("server already started")
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening, close every connection and wait for their tasks."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for w in list(self._writers):
            w.transport.abort()
        tasks = list(self._conn_tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conn_tasks.add(task)
        self._writers.add(writer)
        self.connections_total += 1
        try:
            await self._connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Cancelled by stop(). End normally: asyncio's stream callback (3.11) would log a
            # cancelled connection task as an error.
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._conn_tasks.discard(task)

    def drop_connections(self) -> None:
        """Abort every open connection (a reboot of the device or gateway)."""
        for w in list(self._writers):
            w.transport.abort()

    def _answer(self, unit: int, pdu: bytes) -> tuple[bytes | None, RegisterBank | None, bool]:
        """(reply PDU or None for no answer, the bank, close the connection?)"""
        bank = self.units.get(unit)
        if bank is None:
            return bytes([(pdu[0] | 0x80) & 0xFF, GATEWAY_TARGET_FAILED]), None, False
        bank.requests += 1
        f = bank.faults
        if f.reset or f.rebooting:
            return None, bank, True
        if f.silent:
            return None, bank, False
        if f.exception_code is not None:
            return bytes([(pdu[0] | 0x80) & 0xFF, f.exception_code]), bank, False
        reply = process_pdu(bank, pdu)
        if f.wrong_function and reply[0] in (3, 4):
            reply = bytes([7 - reply[0]]) + reply[1:]
        if f.short_reply and reply[0] in (3, 4) and reply[1] >= 4:
            reply = bytes([reply[0], reply[1] - 2]) + reply[2:-2]
        return reply, bank, False

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if any(b.faults.rebooting for b in self.units.values()):
            return  # still booting: the connection is closed at once
        if self.framing == "rtu_over_tcp":
            await self._rtu_connection(reader, writer)
            return
        while True:
            # readexactly copes with frames split across TCP segments and with several frames
            # in one segment: the stream buffers the rest for the next call.
            header = await reader.readexactly(_MBAP.size)
            tid, proto, length, unit = _MBAP.unpack(header)
            if length < 2 or length > 254:
                log.debug("bad MBAP length %d; closing connection", length)
                return
            pdu = await reader.readexactly(length - 1)
            if proto != 0:
                continue  # not Modbus: discard silently, as the spec asks
            reply, bank, close = self._answer(unit, pdu)
            if close:
                return
            if reply is None:
                continue
            if bank is not None:
                if bank.faults.delay_s > 0:
                    await asyncio.sleep(bank.faults.delay_s)
                if bank.faults.wrong_tid:
                    tid = (tid + 1) & 0xFFFF
            writer.write(_MBAP.pack(tid, 0, len(reply) + 1, unit) + reply)
            if writer.transport.get_write_buffer_size() > 65536:
                await writer.drain()

    async def _rtu_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Raw RTU frames in the TCP stream (a serial gateway in transparent mode). Requests
        carry no length: it follows from the function code. A frame with a bad CRC is dropped,
        as a serial device does (the master times out)."""
        while True:
            head = await reader.readexactly(2)
            unit, fc = head[0], head[1]
            if fc in (1, 2, 3, 4, 5, 6):
                rest = await reader.readexactly(6)  # address, count/value, CRC
            elif fc in (15, 16):
                more = await reader.readexactly(5)
                rest = more + await reader.readexactly(more[4] + 2)
            else:
                log.debug("RTU function %d has no known length; closing connection", fc)
                return
            frame = head + rest
            if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
                log.debug("RTU frame with a bad CRC dropped")
                continue
            reply, bank, close = self._answer(unit, frame[1:-2])
            if close:
                return
            if reply is None:
                continue
            if bank is not None and bank.faults.delay_s > 0:
                await asyncio.sleep(bank.faults.delay_s)
            writer.write(rtu_frame(unit, reply))
            if writer.transport.get_write_buffer_size() > 65536:
                await writer.drain()
