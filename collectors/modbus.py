"""Modbus polling (TCP, and RTU frames tunnelled over TCP). The only module that imports pymodbus.

A device's registers are planned once, at start-up, into the fewest reads, and each register is
compiled into a decoder; every poll runs the plan, decodes each register into ``Reading``\\ s and
reports the outcome to the device's ``DeviceHealth``. Devices behind one host:port (a gateway)
share one connection, and requests on it are serialised (gateways handle one transaction at a
time), with an optional pause between requests for slow serial buses.

Faults, by meaning:

* connect failure, timeout, connection reset, a reply that does not match the request
  (transaction id, unit id, function code, count): the connection is closed (so a late reply can
  never be read as the answer to a later request) and the read is retried up to ``retries``
  times with exponential backoff and jitter, within the poll's interval;
* 0x06 busy (and 0x05 acknowledge): wait one backoff and retry;
* 0x01/0x02/0x03 (illegal function, address, value): the site file asks for something the device
  does not have. The device is marked ``misconfigured`` (logged once) and polled again only
  every ``misconfigured_retry`` — no retry storm;
* 0x0A/0x0B (gateway path unavailable, target failed to respond): the device is ``offline`` now;
* any other exception code: a failed poll (``degraded``, then ``offline``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from eqmon.config import ModbusDevice, Register
from eqmon.domain import Quality, Reading

from .errors import CollectorError
from .health import DeviceHealth

log = logging.getLogger(__name__)

MAX_WORDS_PER_READ = 125
MAX_BITS_PER_READ = 2000

# ---------------------------------------------------------------------------------------------
# Decoding (pure functions, table-tested)

_STRUCT = {
    "int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "int64": ">q", "uint64": ">Q",
    "float32": ">f", "float64": ">d",
}  # fmt: skip


def words_to_bytes(words: Sequence[int], order: str) -> bytes:
    """Big-endian bytes (A is the most significant) from register words in the device's order.

    ABCD: words most-significant first, each word big-endian (the Modbus default).
    CDAB: words least-significant first ("word swap"), each word big-endian.
    BADC: words most-significant first, bytes swapped inside each word.
    DCBA: words least-significant first, bytes swapped inside each word (little-endian).
    """
    ws = list(words)
    if order in ("CDAB", "DCBA"):
        ws.reverse()
    if order in ("BADC", "DCBA"):
        ws = [((w & 0xFF) << 8) | (w >> 8) for w in ws]
    return b"".join(w.to_bytes(2, "big") for w in ws)


def raw_value(words: Sequence[int], order: str) -> int:
    """The unsigned integer the words hold, for sentinel comparison and bit maps."""
    return int.from_bytes(words_to_bytes(words, order), "big")


def decode_register(reg: Register, words: Sequence[int]) -> float | int | bool | str:
    """Decode one register's words (or a single bit as [0]/[1]) into its engineering value."""
    if reg.type in ("coil", "discrete_input"):
        return bool(words[0])
    if reg.data_type == "bool":
        bit = reg.bit or 0
        return bool((words[0] >> bit) & 1)
    if reg.data_type == "string":
        raw = words_to_bytes(words, reg.order)
        return raw.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()
    value = struct.unpack(_STRUCT[reg.data_type], words_to_bytes(words, reg.order))[0]
    if reg.enum:
        return reg.enum.get(value, f"unknown_{value}")
    if reg.scale != 1.0 or reg.offset != 0.0:
        # Rounded to 9 decimals so that 33 × 0.1 reads 3.3, not 3.3000000000000003.
        return round(value * reg.scale + reg.offset, 9)
    return value


def decode_bits(reg: Register, words: Sequence[int]) -> list[tuple[str, bool]]:
    """The named bits of a status register: ``[(metric, set?), …]`` in bit order."""
    raw = raw_value(words, reg.order)
    return [(name, bool((raw >> bit) & 1)) for bit, name in sorted(reg.bits.items())]


# A compiled decoder: (words of the whole read, ts) → readings appended to ``out``.
Decoder = Callable[[list[int], float, list[Reading]], None]


# 1/scale for which ``v / inv`` equals ``round(v * scale, 9)`` for every 16-bit value v, signed
# or unsigned (checked exhaustively): the common ×0.1, ×0.01 … scales decode by one division.
_EXACT_DIVISORS = frozenset({2, 4, 5, 8, 10, 20, 25, 40, 50, 100, 1000, 10000})


def _divisor(reg: Register) -> int | None:
    if reg.offset != 0.0 or reg.scale in (0.0, 1.0):
        return None
    inv = round(1 / reg.scale)
    return inv if inv in _EXACT_DIVISORS and 1 / inv == reg.scale else None


def compile_register(device_id: str, reg: Register, index: int) -> Decoder:
    """A decoder for ``reg`` at ``index`` in its read, specialised once at start-up (this runs
    for every register of every poll): 16-bit registers skip all byte shuffling and the common
    decimal scales divide instead of multiply-and-round; 32/64-bit numbers are packed straight
    from the words in the register's order and unpacked once. The result is the same as
    :func:`decode_register` (and the same readings), only cheaper."""
    n = reg.words
    sentinels = frozenset(reg.sentinels)
    unit, name = reg.unit, reg.name
    bits = sorted(reg.bits.items())
    good, bad = Quality.GOOD, Quality.BAD
    R = Reading
    table_bits = reg.type in ("coil", "discrete_input")
    scale, offset = reg.scale, reg.offset
    scaled = scale != 1.0 or offset != 0.0

    if table_bits or reg.data_type == "bool":
        bit = 0 if table_bits else (reg.bit or 0)

        def decode_bit(words: list[int], ts: float, out: list[Reading]) -> None:
            out.append(R(device_id, name, bool((words[index] >> bit) & 1), ts, good, unit))

        return decode_bit

    if reg.data_type == "string":

        def decode_string(words: list[int], ts: float, out: list[Reading]) -> None:
            chunk = words[index : index + n]
            if sentinels and raw_value(chunk, reg.order) in sentinels:
                out.append(R(device_id, name, None, ts, bad, unit))
                return
            out.append(R(device_id, name, decode_register(reg, chunk), ts, good, unit))

        return decode_string

    swap = reg.order in ("BADC", "DCBA")  # bytes swapped inside each word
    reverse = reg.order in ("CDAB", "DCBA")  # least significant word first
    enum = reg.enum

    if reg.data_type in ("int16", "uint16") and not enum and not bits:
        signed = reg.data_type == "int16"
        inv = _divisor(reg)

        def decode16(words: list[int], ts: float, out: list[Reading]) -> None:
            w = words[index]
            if swap:
                w = ((w & 0xFF) << 8) | (w >> 8)
            if w in sentinels:
                out.append(R(device_id, name, None, ts, bad, unit))
                return
            v: float | int = w - 0x10000 if signed and w & 0x8000 else w
            if inv is not None:
                v = v / inv
            elif scaled:
                v = round(v * scale + offset, 9)
            out.append(R(device_id, name, v, ts, good, unit))

        return decode16

    # Numbers of 1, 2 or 4 words, with enums and named bits: the words of the register, most
    # significant first, packed into its big-endian bytes ('<' packing swaps each word's bytes).
    pack = struct.Struct(("<" if swap else ">") + "H" * n).pack
    unpack = struct.Struct(_STRUCT[reg.data_type]).unpack
    at = [index + k for k in range(n)]
    if reverse:
        at.reverse()
    i0, i1, i2, i3 = (at + [0, 0, 0])[:4]
    from_bytes = int.from_bytes
    need_raw = bool(sentinels or bits)

    def decode_number(words: list[int], ts: float, out: list[Reading]) -> None:
        if n == 1:
            b = pack(words[i0])
        elif n == 2:
            b = pack(words[i0], words[i1])
        else:
            b = pack(words[i0], words[i1], words[i2], words[i3])
        raw = from_bytes(b, "big") if need_raw else 0
        if raw in sentinels:
            out.append(R(device_id, name, None, ts, bad, unit))
            for _, metric in bits:
                out.append(R(device_id, metric, None, ts, bad, ""))
            return
        value = unpack(b)[0]
        if enum:
            value = enum.get(value, f"unknown_{value}")
        elif scaled:
            value = round(value * scale + offset, 9)
        out.append(R(device_id, name, value, ts, good, unit))
        for bit_no, metric in bits:
            out.append(R(device_id, metric, bool((raw >> bit_no) & 1), ts, good, ""))

    return decode_number


# ---------------------------------------------------------------------------------------------
# Request planning

_FUNCTION = {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read covering several registers of one table."""

    table: str  # holding | input | coil | discrete_input
    address: int
    count: int
    registers: tuple[Register, ...]

    @property
    def function_code(self) -> int:
        return _FUNCTION[self.table]

    def describe(self) -> str:
        used = len({r.address + i for r in self.registers for i in range(r.words)})
        names = ", ".join(r.name for r in self.registers)
        return (
            f"FC{self.function_code} {self.table:<14} {self.address:>5} count {self.count:>3}"
            f" ({self.count - used} unused): {names}"
        )


def plan_reads(
    registers: Sequence[Register], *, max_gap: int = 8, merge: bool = True
) -> list[ReadRequest]:
    """Merge registers into the fewest reads: same table, at most 125 words (2000 bits) a read,
    gaps of at most ``max_gap`` unused addresses read and discarded. Registers that overlap
    (several bits of one status word) share the read. ``merge=False``: one read per register
    (for comparison in the benchmark)."""
    if not merge:
        return [ReadRequest(r.type, r.address, r.words, (r,)) for r in registers]
    plan: list[ReadRequest] = []
    for table in ("holding", "input", "coil", "discrete_input"):
        regs = sorted((r for r in registers if r.type == table), key=lambda r: (r.address, r.words))
        limit = MAX_BITS_PER_READ if table in ("coil", "discrete_input") else MAX_WORDS_PER_READ
        start = end = -1  # end is exclusive
        group: list[Register] = []
        for r in regs:
            r_end = r.address + r.words
            if group and r.address - end <= max_gap and max(end, r_end) - start <= limit:
                end = max(end, r_end)
                group.append(r)
                continue
            if group:
                plan.append(ReadRequest(table, start, end - start, tuple(group)))
            start, end, group = r.address, r_end, [r]
        if group:
            plan.append(ReadRequest(table, start, end - start, tuple(group)))
    return plan


# ---------------------------------------------------------------------------------------------
# Errors

# Exception codes by meaning (Modbus application protocol spec, section 7).
CONFIG_ERRORS = {0x01: "illegal function", 0x02: "illegal data address", 0x03: "illegal data value"}
BUSY_ERRORS = {0x05: "acknowledge (busy)", 0x06: "server device busy"}
GATEWAY_ERRORS = {0x0A: "gateway path unavailable", 0x0B: "gateway target failed to respond"}
OTHER_ERRORS = {0x04: "server device failure", 0x08: "memory parity error"}


class ModbusReadError(CollectorError):
    """A read failed. ``kind``: connect | timeout | reset | mismatch | busy | config |
    unreachable | device. Transient kinds (connect, timeout, reset, mismatch, busy) are retried."""

    TRANSIENT = frozenset({"connect", "timeout", "reset", "mismatch", "busy"})

    def __init__(self, message: str, kind: str, *, exception_code: int | None = None) -> None:
        super().__init__(message, exception_code=exception_code)
        self.kind = kind

    @property
    def transient(self) -> bool:
        return self.kind in self.TRANSIENT


def _exception_error(code: int, req: ReadRequest) -> ModbusReadError:
    where = f"reading {req.table} {req.address}+{req.count}"
    for table, kind in (
        (CONFIG_ERRORS, "config"), (BUSY_ERRORS, "busy"), (GATEWAY_ERRORS, "unreachable"),
    ):  # fmt: skip
        if code in table:
            return ModbusReadError(f"exception 0x{code:02X} ({table[code]}) {where}", kind, exception_code=code)
    meaning = OTHER_ERRORS.get(code, "device error")
    return ModbusReadError(f"exception 0x{code:02X} ({meaning}) {where}", "device", exception_code=code)


# ---------------------------------------------------------------------------------------------
# Connections


class ModbusConnection:
    """One TCP connection to a host:port, shared by every unit id behind it.

    Reconnection is ours (on the next request), never pymodbus's background loop. Two hooks into
    pymodbus 3.16's transaction manager (pinned in pyproject.toml) make faults fast instead of
    costing a whole timeout each: a lost connection fails the pending request at once, and a
    reply whose transaction id or unit id is not the request's fails it too (pymodbus itself
    only logs "Skipping" and waits for the timeout).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        connect_timeout: float | None = None,
        framing: str = "tcp",
        pause: float = 0.0,
    ) -> None:
        self.host, self.port = host, port
        self.framing = framing
        self.pause = pause
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self._client = AsyncModbusTcpClient(
            host,
            port=port,
            framer=FramerType.RTU if framing == "rtu_over_tcp" else FramerType.SOCKET,
            timeout=timeout,
            retries=0,
            reconnect_delay=0,
            reconnect_delay_max=0,
        )
        self._client.set_max_no_responses(1 << 30)  # closing after timeouts is ours to decide
        ctx = self._client.ctx
        self._ctx = ctx
        self._on_disconnected = ctx.callback_disconnected
        ctx.callback_disconnected = self._disconnected  # type: ignore[method-assign]
        self._decode = ctx.framer.decode
        ctx.framer.decode = self._checked_decode  # type: ignore[method-assign]
        self._calls = {
            "holding": self._client.read_holding_registers,
            "input": self._client.read_input_registers,
            "coil": self._client.read_coils,
            "discrete_input": self._client.read_discrete_inputs,
        }
        self._lock = asyncio.Lock()
        self._last_done = 0.0
        self.requests = 0  # requests sent
        self.resets = 0  # connections closed because of a fault

    # -- pymodbus hooks ---------------------------------------------------------------------

    def _fail_pending(self, exc: Exception) -> None:
        fut = self._ctx.response_future
        if not fut.done():
            fut.set_exception(exc)

    def _disconnected(self, exc: Exception | None) -> None:
        self._fail_pending(ConnectionException(f"connection lost ({exc or 'closed by peer'})"))
        self._on_disconnected(exc)

    def _checked_decode(self, data: bytes) -> tuple[int, int, int, bytes]:
        used, dev_id, tid, frame = self._decode(data)
        if used and frame:
            exp_tid, exp_dev = self._ctx.request_transaction_id, self._ctx.request_dev_id
            if (exp_tid and tid and tid != exp_tid) or (exp_dev and dev_id != exp_dev):
                self._fail_pending(
                    ModbusIOException(
                        f"reply for transaction {tid} unit {dev_id} to request {exp_tid} unit {exp_dev}"
                    )
                )
                return used, dev_id, tid, b""  # discarded
        return used, dev_id, tid, frame

    # -- requests ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Close the connection after a fault, so that no late reply is ever read."""
        self.resets += 1
        self._client.close()

    async def _connect(self) -> None:
        try:
            ok = await asyncio.wait_for(self._client.connect(), self.connect_timeout)
        except (TimeoutError, OSError, ModbusException) as exc:
            self._client.close()
            raise ModbusReadError(f"cannot connect to {self.host}:{self.port}: {exc or 'timeout'}", "connect") from None
        if not ok:
            self._client.close()
            raise ModbusReadError(f"cannot connect to {self.host}:{self.port}", "connect")

    async def read(self, req: ReadRequest, unit_id: int) -> list[int]:
        """The words (or bits, as 0/1) of one read; ModbusReadError on any failure."""
        async with self._lock:
            if self.pause > 0:
                wait = self._last_done + self.pause - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            try:
                if not self._client.connected:
                    await self._connect()
                self.requests += 1
                try:
                    rr = await self._calls[req.table](req.address, count=req.count, device_id=unit_id)
                except ConnectionException as exc:
                    self.reset()
                    raise ModbusReadError(f"{self.host}:{self.port}: connection reset ({exc})", "reset") from None
                except ModbusIOException as exc:
                    self.reset()
                    text = str(exc)
                    kind = "mismatch" if "reply for transaction" in text else "timeout"
                    what = "reply does not match the request" if kind == "mismatch" else f"no reply within {self.timeout:g} s"
                    raise ModbusReadError(f"{self.host}:{self.port} unit {unit_id}: {what}", kind) from None
                except ModbusException as exc:
                    self.reset()
                    raise ModbusReadError(f"{self.host}:{self.port}: {exc}", "mismatch") from None
                return self._check(rr, req, unit_id)
            finally:
                if self.pause > 0:
                    self._last_done = time.monotonic()

    def _check(self, rr: Any, req: ReadRequest, unit_id: int) -> list[int]:
        fc = req.function_code
        if rr.function_code & 0x7F != fc:
            self.reset()
            raise ModbusReadError(
                f"{self.host}:{self.port} unit {unit_id}: reply with function {rr.function_code} to function {fc}",
                "mismatch",
            )
        if rr.isError():
            raise _exception_error(getattr(rr, "exception_code", 0), req)
        if fc <= 2:
            bits = rr.bits
            if not req.count <= len(bits) < req.count + 8:
                self.reset()
                raise ModbusReadError(f"reply holds {len(bits)} bits, expected {req.count}", "mismatch")
            return [int(b) for b in bits[: req.count]]
        regs = rr.registers
        if len(regs) != req.count:
            self.reset()
            raise ModbusReadError(f"reply holds {len(regs)} registers, expected {req.count}", "mismatch")
        return regs

    def close(self) -> None:
        self._client.close()


# ---------------------------------------------------------------------------------------------
# Polling


class ModbusPoller:
    """Polls one device: runs its read plan, retries what may succeed, decodes the replies."""

    def __init__(
        self,
        device: ModbusDevice,
        connection: ModbusConnection,
        health: DeviceHealth,
        *,
        clock: Callable[[], float],
        rng: random.Random | None = None,
        merge: bool = True,
    ) -> None:
        self.device = device
        self.connection = connection
        self.health = health
        self.plan = plan_reads(device.registers, max_gap=device.max_gap, merge=merge)
        self._steps = [
            (req, [compile_register(device.id, r, r.address - req.address) for r in req.registers])
            for req in self.plan
        ]
        self._clock = clock
        self._rng = rng or random.Random()
        self._hold_until = 0.0  # misconfigured: no request before this (monotonic)
        self.retries = 0  # extra attempts made
        self.held = 0  # polls skipped while misconfigured

    async def poll(self) -> list[Reading]:
        """One poll of the whole device. Raises ModbusReadError (a CollectorError); health is
        updated either way. While the device is misconfigured, polls in between slow retries
        send nothing and return no readings."""
        start = time.monotonic()
        if start < self._hold_until:
            self.held += 1
            return []
        dev = self.device
        readings: list[Reading] = []
        read, unit_id = self.connection.read, dev.unit_id
        try:
            for req, decoders in self._steps:
                try:
                    words = await read(req, unit_id)
                except ModbusReadError as exc:
                    words = await self._retry(req, start, exc)
                ts = self._clock()
                for decode in decoders:
                    decode(words, ts, readings)
        except ModbusReadError as exc:
            now = self._clock()
            if exc.kind == "config":
                self._hold_until = time.monotonic() + dev.misconfigured_retry
                self.health.misconfigured(now, str(exc))
            elif exc.kind == "unreachable":
                self.health.unreachable(now, str(exc))
            else:
                self.health.failure(now, str(exc))
            raise
        self._hold_until = 0.0
        self.health.success(self._clock())
        return readings

    async def _retry(self, req: ReadRequest, start: float, exc: ModbusReadError) -> list[int]:
        """After a failed read: retry what may succeed, with backoff and jitter, within the
        poll's interval; raise the last error otherwise."""
        dev = self.device
        attempt = 0
        while True:
            if not exc.transient or attempt >= dev.retries:
                raise exc
            delay = dev.backoff * (2**attempt) * self._rng.uniform(0.5, 1.5)
            # Never past the interval: the next poll is due then.
            if time.monotonic() + delay + dev.timeout > start + dev.interval:
                raise exc
            attempt += 1
            self.retries += 1
            await asyncio.sleep(delay)
            try:
                return await self.connection.read(req, dev.unit_id)
            except ModbusReadError as again:
                exc = again


class ModbusCollector:
    """Builds one poller per Modbus device, sharing connections per host:port."""

    def __init__(
        self,
        devices: Sequence[ModbusDevice],
        health: Callable[[str], DeviceHealth],
        *,
        clock: Callable[[], float],
        merge: bool = True,
    ) -> None:
        self._connections: dict[tuple[str, int], ModbusConnection] = {}
        self.pollers: list[ModbusPoller] = []
        for d in devices:
            key = (d.host, d.port)
            conn = self._connections.get(key)
            if conn is None:
                conn = self._connections[key] = ModbusConnection(
                    d.host,
                    d.port,
                    timeout=d.timeout,
                    connect_timeout=d.connect_timeout_s,
                    framing=d.framing,
                    pause=d.pause,
                )
            self.pollers.append(ModbusPoller(d, conn, health(d.id), clock=clock, merge=merge))

    @property
    def connections(self) -> list[ModbusConnection]:
        return list(self._connections.values())

    def close(self) -> None:
        for c in self._connections.values():
            c.close()


def describe_plan(device: ModbusDevice) -> list[str]:
    """Lines for `eqmon check-config --plan`."""
    plan = plan_reads(device.registers, max_gap=device.max_gap)
    framing = "" if device.framing == "tcp" else f", {device.framing}"
    lines = [
        f"{device.id}: {len(device.registers)} registers in {len(plan)} reads "
        f"({device.host}:{device.port} unit {device.unit_id}{framing}, every {device.interval:g} s, max_gap {device.max_gap})"
    ]
    lines += [f"  {req.describe()}" for req in plan]
    return lines
