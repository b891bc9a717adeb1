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
  times with exponential backoff and jitter (eqmon.backoff), within the poll's interval;
* 0x06 busy (and 0x05 acknowledge): wait one backoff and retry;
* 0x02/0x03 (illegal data address, value) to a merged read: the read is split in two, and so on
  down to single registers, to find which registers the device rejects. Those are left out of
  the plan (the reads are planned again around them), named in the device's health (it stays
  ``online``, with a "misconfigured" warning naming them) and tried again, alone, every
  ``misconfigured_retry``; the others are read as usual. Merged reads that the device rejects
  although it accepts each part are not merged again. Only when it rejects every register is the
  device ``misconfigured``;
* 0x01 (illegal function), or every register rejected: the site file asks for something the
  device does not have. The device is marked ``misconfigured`` (logged once) and polled again
  only every ``misconfigured_retry`` — no retry storm;
* 0x0A/0x0B (gateway path unavailable, target failed to respond): the device is ``offline`` now;
  the reason says what to check (unit id, the gateway's routing, the serial line);
* any other exception code: a failed poll (``degraded``, then ``offline``).

pymodbus's own log lines (an ERROR and a hex dump for every unanswered request) are kept quiet
unless its logger was set to INFO or lower (``eqmon -v``): eqmon logs one line per change of a
device's state instead. What eqmon needs from pymodbus's internals sits in :class:`PymodbusHooks`.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import struct
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pymodbus
from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from eqmon.backoff import Backoff
from eqmon.config import ModbusDevice, Register
from eqmon.domain import Quality, Reading

from .errors import CollectorError
from .health import DeviceHealth, RejectedRegister, describe_rejected

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
    value: float | int = struct.unpack(_STRUCT[reg.data_type], words_to_bytes(words, reg.order))[0]
    if reg.enum:
        return reg.enum.get(int(value), f"unknown_{value}")
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
_TABLES = ("holding", "input", "coil", "discrete_input")


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


def _request(table: str, registers: Sequence[Register]) -> ReadRequest:
    """The one read covering ``registers`` (of one table), from the first to the last word."""
    start = min(r.address for r in registers)
    end = max(r.address + r.words for r in registers)
    return ReadRequest(table, start, end - start, tuple(registers))


def _crosses(cuts: Sequence[int], start: int, end: int) -> bool:
    """Whether the read [start, end) holds both sides of a cut (sorted addresses)."""
    i = bisect.bisect_right(cuts, start)
    return i < len(cuts) and cuts[i] < end


def plan_reads(
    registers: Sequence[Register],
    *,
    max_gap: int = 8,
    merge: bool = True,
    cuts: Mapping[str, Collection[int]] | None = None,
) -> list[ReadRequest]:
    """Merge registers into the fewest reads: same table, at most 125 words (2000 bits) a read,
    gaps of at most ``max_gap`` unused addresses read and discarded. Registers that overlap
    (several bits of one status word) share the read. ``cuts``: per table, addresses ``c`` that
    no read may span (holding both ``c - 1`` and ``c``): around registers the device rejects, and
    where it rejected a merged read. ``merge=False``: one read per register (for comparison in
    the benchmark)."""
    if not merge:
        return [ReadRequest(r.type, r.address, r.words, (r,)) for r in registers]
    plan: list[ReadRequest] = []
    for table in _TABLES:
        regs = sorted((r for r in registers if r.type == table), key=lambda r: (r.address, r.words))
        limit = MAX_BITS_PER_READ if table in ("coil", "discrete_input") else MAX_WORDS_PER_READ
        table_cuts = sorted(cuts.get(table, ())) if cuts else []
        start = end = -1  # end is exclusive
        group: list[Register] = []
        for r in regs:
            r_end = r.address + r.words
            new_end = max(end, r_end)
            if (
                group
                and r.address - end <= max_gap
                and new_end - start <= limit
                and not (table_cuts and _crosses(table_cuts, start, new_end))
            ):
                end = new_end
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
# Exceptions to a merged read that may concern only some of its registers: split it to find them.
SPLIT_CODES = frozenset({0x02, 0x03})


class ModbusReadError(CollectorError):
    """A read failed. ``kind``: connect | timeout | reset | mismatch | busy | config |
    unreachable | device. Transient kinds (connect, timeout, reset, mismatch, busy) are retried.
    ``rejected``: when every register of the device was rejected, which (for the device view)."""

    TRANSIENT = frozenset({"connect", "timeout", "reset", "mismatch", "busy"})

    def __init__(
        self,
        message: str,
        kind: str,
        *,
        exception_code: int | None = None,
        rejected: Sequence[RejectedRegister] = (),
    ) -> None:
        super().__init__(message, exception_code=exception_code)
        self.kind = kind
        self.rejected = tuple(rejected)

    @property
    def transient(self) -> bool:
        return self.kind in self.TRANSIENT

    @property
    def splittable(self) -> bool:
        """0x02/0x03: the device rejects some address or count in the read, maybe not all."""
        return self.kind == "config" and self.exception_code in SPLIT_CODES


def _gateway_hint(code: int, where: str, unit_id: int) -> str:
    """What a coordinator or integrator should check after a gateway's 0x0A/0x0B: behind a
    gateway these are as often a wrong unit id or a broken serial line as a dead device."""
    if code == 0x0A:
        return (
            f"the gateway at {where} has no path to unit {unit_id}: check that unit_id {unit_id} in "
            f"the site file is right and routed in the gateway's configuration, and that the gateway "
            f"is not overloaded"
        )
    return (
        f"the gateway at {where} answers but unit {unit_id} behind it does not: check unit_id "
        f"{unit_id} in the site file against the device's own address, the serial line from the "
        f"gateway to the device (wiring, baud rate, parity), then the device's power"
    )


def _exception_error(code: int, req: ReadRequest, where: str = "", unit_id: int | None = None) -> ModbusReadError:
    at = f"reading {req.table} {req.address}+{req.count}"
    for table, kind in (
        (CONFIG_ERRORS, "config"), (BUSY_ERRORS, "busy"), (GATEWAY_ERRORS, "unreachable"),
    ):  # fmt: skip
        if code in table:
            text = f"exception 0x{code:02X} ({table[code]}) {at}"
            if kind == "unreachable" and where and unit_id is not None:
                text += f"; {_gateway_hint(code, where, unit_id)}"
            return ModbusReadError(text, kind, exception_code=code)
    meaning = OTHER_ERRORS.get(code, "device error")
    return ModbusReadError(f"exception 0x{code:02X} ({meaning}) {at}", "device", exception_code=code)


# ---------------------------------------------------------------------------------------------
# pymodbus: its logging, and the hooks into its internals (the only code that knows them)

PYMODBUS_SERIES = "3.16"  # the hooks below are written for this minor (pinned in pyproject.toml)
_QUIET = logging.CRITICAL + 1  # above every level pymodbus logs at


def _pymodbus_loggers() -> list[logging.Logger]:
    names = [n for n in list(logging.Logger.manager.loggerDict) if n.startswith("pymodbus.")]
    return [logging.getLogger("pymodbus"), *(logging.getLogger(n) for n in sorted(names))]


def configure_pymodbus_logging(verbose: bool | None = None) -> bool:
    """Keep pymodbus's own logging quiet — the "pymodbus" logger, its children and any handler
    pymodbus installed on them — so that a silent device costs one eqmon line per change of
    state, not an ERROR and a hex dump per request. ``verbose`` None: leave pymodbus alone only
    when its logger was set to INFO or lower (``eqmon -v`` does). Returns whether pymodbus may
    log. Called by every :class:`ModbusCollector`."""
    top = logging.getLogger("pymodbus")
    if verbose is None:
        verbose = top.level != logging.NOTSET and top.level <= logging.INFO
    for lg in _pymodbus_loggers():
        if verbose:
            if lg.level == _QUIET:  # quietened before: inherit again
                lg.setLevel(logging.NOTSET)
            for h in lg.handlers:
                if h.level == _QUIET:
                    h.setLevel(logging.NOTSET)
            continue
        lg.setLevel(_QUIET)
        for h in lg.handlers:
            if not isinstance(h, logging.NullHandler):
                h.setLevel(_QUIET)
    return verbose


class PymodbusHooks:
    """Two hooks into pymodbus 3.16's transaction manager (``client.ctx``), which make faults
    fast instead of costing a whole timeout each:

    * a lost connection fails the pending request at once (pymodbus does not notice it during a
      request);
    * a reply whose transaction id or unit id is not the request's fails it too (pymodbus only
      logs "Skipping" and waits for the timeout).

    They reach into private attributes, so they are installed only on the pymodbus minor they
    were written for. On another version eqmon falls back to the public API (logged once as a
    warning): every fault is still detected, the two above only after ``timeout``."""

    _warned = False
    _NEEDED = ("callback_disconnected", "framer", "response_future", "request_transaction_id", "request_dev_id")

    def __init__(self, client: AsyncModbusTcpClient) -> None:
        self.version = str(getattr(pymodbus, "__version__", "unknown"))
        self.installed = False
        if not self.version.startswith(PYMODBUS_SERIES):
            if not PymodbusHooks._warned:
                PymodbusHooks._warned = True
                log.warning(
                    "pymodbus %s is installed but eqmon's hooks are written for %s.*: using its "
                    "public API only, so a lost connection or a mismatched reply is noticed only "
                    "after the timeout (install pymodbus==%s.* as pyproject.toml pins it)",
                    self.version, PYMODBUS_SERIES, PYMODBUS_SERIES,
                )
            return
        ctx: Any = getattr(client, "ctx", None)
        missing = [a for a in self._NEEDED if not hasattr(ctx, a)] if ctx is not None else ["ctx"]
        if missing or not hasattr(ctx.framer, "decode"):
            raise RuntimeError(
                f"pymodbus {self.version}: its transaction manager lacks {missing or ['framer.decode']}, "
                f"which collectors/modbus.py hooks (written for pymodbus {PYMODBUS_SERIES}.*)"
            )
        self._ctx = ctx
        self._on_disconnected = ctx.callback_disconnected
        ctx.callback_disconnected = self._disconnected
        self._decode = ctx.framer.decode
        ctx.framer.decode = self._checked_decode
        self.installed = True

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


# ---------------------------------------------------------------------------------------------
# Connections


class ModbusConnection:
    """One TCP connection to a host:port, shared by every unit id behind it.

    Reconnection is ours (on the next request), never pymodbus's background loop. pymodbus's
    client is used through its public API, plus :class:`PymodbusHooks`.
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
        self.hooks = PymodbusHooks(self._client)
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
            raise _exception_error(getattr(rr, "exception_code", 0), req, f"{self.host}:{self.port}", unit_id)
        if fc <= 2:
            bits = rr.bits
            if not req.count <= len(bits) < req.count + 8:
                self.reset()
                raise ModbusReadError(f"reply holds {len(bits)} bits, expected {req.count}", "mismatch")
            return [int(b) for b in bits[: req.count]]
        regs: list[int] = rr.registers
        if len(regs) != req.count:
            self.reset()
            raise ModbusReadError(f"reply holds {len(regs)} registers, expected {req.count}", "mismatch")
        return regs

    def close(self) -> None:
        self._client.close()


# ---------------------------------------------------------------------------------------------
# Polling


class ModbusPoller:
    """Polls one device: runs its read plan, retries what may succeed, splits reads the device
    rejects to find the registers it rejects, decodes the replies."""

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
        self._clock = clock
        self._rng = rng or random.Random()
        self._merge = merge
        # Retry delays: backoff × 2^attempt, ±50 % jitter; the interval bounds them anyway.
        self._backoff = (
            Backoff(device.backoff, max(device.backoff, device.interval), jitter=(0.5, 1.5), rng=self._rng)
            if device.backoff > 0
            else None
        )
        self._rejected: dict[str, tuple[Register, int]] = {}  # name -> (register, exception code)
        self._rejected_view: tuple[RejectedRegister, ...] = ()
        self._retry_rejected_at = 0.0  # monotonic: try the rejected registers again then
        self._cuts: dict[str, set[int]] = {}  # learnt: merged reads the device rejects, per table
        self.plan: list[ReadRequest] = []
        self._steps: list[tuple[ReadRequest, list[Decoder]]] = []
        self._replan()
        self._hold_until = 0.0  # misconfigured: no request before this (monotonic)
        self.retries = 0  # extra attempts made
        self.held = 0  # polls skipped while misconfigured
        self.splits = 0  # reads sent to find which registers the device rejects

    # -- plan ---------------------------------------------------------------------------------

    @property
    def rejected(self) -> tuple[RejectedRegister, ...]:
        """The registers the device rejects, left out of the plan until it accepts them."""
        return self._rejected_view

    def _decoders(self, req: ReadRequest) -> list[Decoder]:
        return [compile_register(self.device.id, r, r.address - req.address) for r in req.registers]

    def _replan(self) -> None:
        """Plan the reads of every register not rejected, never across a rejected register or a
        learnt cut; compile their decoders."""
        cuts: dict[str, set[int]] = {t: set(c) for t, c in self._cuts.items()}
        for reg, _ in self._rejected.values():
            cuts.setdefault(reg.type, set()).update((reg.address, reg.address + reg.words))
        active = [r for r in self.device.registers if r.name not in self._rejected]
        self.plan = plan_reads(active, max_gap=self.device.max_gap, merge=self._merge, cuts=cuts)
        self._steps = [(req, self._decoders(req)) for req in self.plan]
        self._rejected_view = tuple(
            RejectedRegister(reg.name, reg.type, reg.address, code)
            for reg, code in sorted(self._rejected.values(), key=lambda rc: (_TABLES.index(rc[0].type), rc[0].address))
        )

    # -- polling ------------------------------------------------------------------------------

    async def poll(self) -> list[Reading]:
        """One poll of the whole device. Raises ModbusReadError (a CollectorError); health is
        updated either way. While the device is misconfigured, polls in between slow retries
        send nothing and return no readings."""
        start = time.monotonic()
        if start < self._hold_until:
            self.held += 1
            return []
        dev = self.device
        try:
            readings = await self._run(start, dev.retries)
        except ModbusReadError as exc:
            now = self._clock()
            if exc.kind == "config":
                self._hold_until = time.monotonic() + dev.misconfigured_retry
                self.health.misconfigured(now, str(exc), rejected=exc.rejected)
            elif exc.kind == "unreachable":
                self.health.unreachable(now, str(exc))
            else:
                self.health.failure(now, str(exc))
            raise
        self._hold_until = 0.0
        self.health.success(self._clock(), rejected=self._rejected_view, registers=len(dev.registers))
        return readings

    async def _run(self, start: float, retries: int) -> list[Reading]:
        """Run the plan once: the readings, or ModbusReadError. A read rejected with 0x02/0x03
        is split to find the registers the device rejects; the plan is then made again without
        them. Every ``misconfigured_retry`` the rejected registers are tried again, alone."""
        readings: list[Reading] = []
        read, unit_id = self.connection.read, self.device.unit_id
        first_rejection: ModbusReadError | None = None
        for req, decoders in self._steps:
            try:
                words = await read(req, unit_id)
            except ModbusReadError as exc:
                try:
                    words = await self._retry(req, start, exc, retries)
                except ModbusReadError as final:
                    if not final.splittable:
                        raise
                    first_rejection = first_rejection or final
                    await self._split(req, final, start, retries, readings)
                    continue
            ts = self._clock()
            for decode in decoders:
                decode(words, ts, readings)
        if first_rejection is not None:
            self._replan()
            if not self.plan:  # every register rejected: the device is misconfigured
                rejected = self._rejected_view
                self._rejected.clear()  # after misconfigured_retry, the whole plan again
                self._replan()
                raise ModbusReadError(
                    f"{first_rejection}; {describe_rejected(rejected, len(self.device.registers))}",
                    "config",
                    exception_code=first_rejection.exception_code,
                    rejected=rejected,
                )
        if self._rejected and time.monotonic() >= self._retry_rejected_at:
            await self._retry_rejected(readings)
        return readings

    async def _read(self, req: ReadRequest, start: float, retries: int) -> list[int]:
        try:
            return await self.connection.read(req, self.device.unit_id)
        except ModbusReadError as exc:
            return await self._retry(req, start, exc, retries)

    async def _retry(self, req: ReadRequest, start: float, exc: ModbusReadError, retries: int) -> list[int]:
        """After a failed read: retry what may succeed, with backoff and jitter, within the
        poll's interval; raise the last error otherwise."""
        dev = self.device
        attempt = 0
        while True:
            if not exc.transient or attempt >= retries:
                raise exc
            delay = self._backoff.delay(attempt) if self._backoff is not None else 0.0
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

    # -- registers the device rejects -----------------------------------------------------------

    async def _split(
        self, req: ReadRequest, exc: ModbusReadError, start: float, retries: int, readings: list[Reading]
    ) -> None:
        """``req`` was rejected (0x02/0x03): find its registers that the device rejects, decode
        the others, and remember the rejected ones."""
        good, bad = await self._bisect(req, exc, start, retries)
        ts = self._clock()
        for sub, words in good:
            for decode in self._decoders(sub):
                decode(words, ts, readings)
        if bad and not self._rejected:
            self._retry_rejected_at = time.monotonic() + self.device.misconfigured_retry
        for reg, code in bad:
            self._rejected[reg.name] = (reg, code)

    async def _bisect(
        self, req: ReadRequest, exc: ModbusReadError, start: float, retries: int
    ) -> tuple[list[tuple[ReadRequest, list[int]]], list[tuple[Register, int]]]:
        """Split a rejected read in two (between registers, near the middle) and read each half,
        down to single registers: (accepted reads with their words, rejected registers with the
        exception code). A read that fails while both its halves succeed is remembered as a cut:
        it is not merged again. Any other failure is raised."""
        regs = sorted(req.registers, key=lambda r: (r.address, r.words))
        code = exc.exception_code or 0
        # Split points: indexes where every register before ends before the next one starts.
        points, end = [], -1
        for i, r in enumerate(regs):
            if i and end <= r.address:
                points.append(i)
            end = max(end, r.address + r.words)
        if not points:  # one register, or registers sharing words: rejected together
            return [], [(r, code) for r in regs]
        mid = min(points, key=lambda i: abs(2 * i - len(regs)))
        good: list[tuple[ReadRequest, list[int]]] = []
        bad: list[tuple[Register, int]] = []
        for part in (regs[:mid], regs[mid:]):
            sub = _request(req.table, part)
            self.splits += 1
            try:
                words = await self._read(sub, start, retries)
            except ModbusReadError as again:
                if not again.splittable:
                    raise
                g, b = await self._bisect(sub, again, start, retries)
                good += g
                bad += b
            else:
                good.append((sub, words))
        if not bad:
            self._cuts.setdefault(req.table, set()).add(regs[mid].address)
        return good, bad

    async def _retry_rejected(self, readings: list[Reading]) -> None:
        """Try each rejected register again, alone; one the device accepts is decoded and back in
        the plan. A failure other than a rejection ends the attempt until the next one."""
        dev = self.device
        self._retry_rejected_at = time.monotonic() + dev.misconfigured_retry
        back = False
        for name, (reg, _) in list(self._rejected.items()):
            sub = ReadRequest(reg.type, reg.address, reg.words, (reg,))
            try:
                words = await self.connection.read(sub, dev.unit_id)
            except ModbusReadError as exc:
                if not exc.splittable:
                    break
                self._rejected[name] = (reg, exc.exception_code or 0)
                continue
            ts = self._clock()
            for decode in self._decoders(sub):
                decode(words, ts, readings)
            del self._rejected[name]
            back = True
        if back or self._rejected:
            self._replan()

    # -- check-config --probe -------------------------------------------------------------------

    async def probe(self) -> list[str]:
        """Contact the device once: run the plan without retries (each request bounded by the
        device's timeout), and say which registers it rejects and the plan that results."""
        try:
            await self._run(time.monotonic(), 0)
        except ModbusReadError as exc:
            if exc.kind != "config":
                return [f"  probe: no usable answer: {exc}"]
            if exc.rejected:
                lines = [f"  probe: rejected: {r.describe()}" for r in exc.rejected]
                return [*lines, "  probe: nothing left to read (the device would be misconfigured)"]
            return [f"  probe: the device rejects the requests: {exc}"]
        if not self._rejected_view:
            return [f"  probe: every register read; the plan stands ({len(self.plan)} reads)"]
        active = len(self.device.registers) - len(self._rejected_view)
        lines = [f"  probe: rejected: {r.describe()}" for r in self._rejected_view]
        lines.append(f"  probe: resulting plan: {active} registers in {len(self.plan)} reads")
        lines += [f"    {req.describe()}" for req in self.plan]
        return lines


class ModbusCollector:
    """Builds one poller per Modbus device, sharing connections per host:port. Keeps pymodbus's
    own logging quiet (:func:`configure_pymodbus_logging`; ``pymodbus_logging`` None: as its
    logger's level says)."""

    def __init__(
        self,
        devices: Sequence[ModbusDevice],
        health: Callable[[str], DeviceHealth],
        *,
        clock: Callable[[], float],
        merge: bool = True,
        pymodbus_logging: bool | None = None,
    ) -> None:
        configure_pymodbus_logging(pymodbus_logging)
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


async def probe_plans(devices: Sequence[ModbusDevice]) -> list[list[str]]:
    """`eqmon check-config --plan --probe`: for each device, its static plan (describe_plan),
    then what one contact showed (:meth:`ModbusPoller.probe`). Devices are probed at once
    (devices behind one gateway one after another, as the gateway requires); each within its
    connect timeout plus its timeout per request, so a device that does not answer costs one
    line and about one timeout."""
    collector = ModbusCollector(devices, lambda device_id: DeviceHealth(device_id), clock=time.time)

    async def one(p: ModbusPoller) -> list[str]:
        d = p.device
        # The plan plus splitting every read down to single registers, and the connect.
        budget = d.connect_timeout_s + d.timeout * (2 * len(d.registers) + len(p.plan) + 1)
        try:
            lines = await asyncio.wait_for(p.probe(), budget)
        except TimeoutError:
            lines = [f"  probe: no answer within {budget:g} s"]
        return describe_plan(d) + lines

    try:
        return list(await asyncio.gather(*(one(p) for p in collector.pollers)))
    finally:
        collector.close()
