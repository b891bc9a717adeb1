"""Modbus TCP polling. The only module of eqmon that imports pymodbus.

A device's registers are planned once, at start-up, into the fewest reads; every poll runs the
plan, decodes each register into a ``Reading`` and reports success or failure to the device's
``DeviceHealth``. Devices behind one host:port (a gateway) share one connection, and requests on
it are serialised, because gateways handle one transaction at a time.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

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
    """The unsigned integer the words hold, for sentinel comparison."""
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
    if reg.scale != 1.0 or reg.offset != 0.0:
        # Rounded to 9 decimals so that 33 × 0.1 reads 3.3, not 3.3000000000000003.
        return round(value * reg.scale + reg.offset, 9)
    return value


# ---------------------------------------------------------------------------------------------
# Request planning


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read covering several registers of one table."""

    table: str  # holding | input | coil | discrete_input
    address: int
    count: int
    registers: tuple[Register, ...]

    def describe(self) -> str:
        names = ", ".join(r.name for r in self.registers)
        return f"{self.table:<14} {self.address:>5} count {self.count:>3}: {names}"


def plan_reads(registers: Sequence[Register], *, max_gap: int = 8) -> list[ReadRequest]:
    """Merge registers into the fewest reads: same table, at most 125 words (2000 bits) a read,
    gaps of at most ``max_gap`` unused addresses read and discarded."""
    plan: list[ReadRequest] = []
    for table in ("holding", "input", "coil", "discrete_input"):
        regs = sorted((r for r in registers if r.type == table), key=lambda r: r.address)
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
# Connections and polling

# Exception codes by meaning (Modbus application protocol spec, section 7).
_CONFIG_ERRORS = {0x01: "illegal function", 0x02: "illegal data address", 0x03: "illegal data value"}
_GATEWAY_ERRORS = {0x0A: "gateway path unavailable", 0x0B: "gateway target failed to respond"}


class ModbusConnection:
    """One TCP connection to a host:port, shared by every unit id behind it."""

    def __init__(self, host: str, port: int, *, timeout: float) -> None:
        self.host, self.port = host, port
        # Reconnection is ours (on the next poll), not pymodbus's background loop.
        self._client = AsyncModbusTcpClient(
            host, port=port, timeout=timeout, retries=0, reconnect_delay=0, reconnect_delay_max=0
        )
        self._lock = asyncio.Lock()

    async def read(self, req: ReadRequest, unit_id: int) -> list[int]:
        async with self._lock:
            if not self._client.connected:
                if not await self._client.connect():
                    raise CollectorError(f"cannot connect to {self.host}:{self.port}")
            try:
                if req.table == "holding":
                    rr = await self._client.read_holding_registers(
                        req.address, count=req.count, device_id=unit_id
                    )
                elif req.table == "input":
                    rr = await self._client.read_input_registers(
                        req.address, count=req.count, device_id=unit_id
                    )
                elif req.table == "coil":
                    rr = await self._client.read_coils(req.address, count=req.count, device_id=unit_id)
                else:
                    rr = await self._client.read_discrete_inputs(
                        req.address, count=req.count, device_id=unit_id
                    )
            except ModbusException as exc:
                # A timeout or a reply that does not match: reset so no stale reply is read later.
                self._client.close()
                raise CollectorError(f"{self.host}:{self.port}: {exc}") from None
            if rr.isError():
                code = getattr(rr, "exception_code", 0)
                meaning = _CONFIG_ERRORS.get(code) or _GATEWAY_ERRORS.get(code) or "device error"
                raise CollectorError(
                    f"exception 0x{code:02X} ({meaning}) reading {req.table} {req.address}+{req.count}",
                    exception_code=code,
                )
            if req.table in ("coil", "discrete_input"):
                bits = list(rr.bits)[: req.count]
                if len(bits) < req.count:
                    raise CollectorError("short reply")
                return [int(b) for b in bits]
            regs = list(rr.registers)
            if len(regs) != req.count:
                self._client.close()
                raise CollectorError(f"reply holds {len(regs)} registers, expected {req.count}")
            return regs

    def close(self) -> None:
        self._client.close()


class ModbusPoller:
    """Polls one device: runs its read plan and decodes the replies into readings."""

    def __init__(
        self,
        device: ModbusDevice,
        connection: ModbusConnection,
        health: DeviceHealth,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.device = device
        self.connection = connection
        self.health = health
        self.plan = plan_reads(device.registers)
        self._clock = clock

    async def poll(self) -> list[Reading]:
        """One poll of the whole device. Raises CollectorError; health is updated either way."""
        readings: list[Reading] = []
        try:
            for req in self.plan:
                words = await self.connection.read(req, self.device.unit_id)
                ts = self._clock()
                for reg in req.registers:
                    i = reg.address - req.address
                    chunk = words[i : i + reg.words]
                    readings.append(self._reading(reg, chunk, ts))
        except CollectorError as exc:
            self.health.failure(self._clock(), str(exc))
            raise
        except (TimeoutError, OSError) as exc:
            self.health.failure(self._clock(), f"{type(exc).__name__}: {exc}")
            raise CollectorError(str(exc)) from exc
        self.health.success(self._clock())
        return readings

    def _reading(self, reg: Register, words: Sequence[int], ts: float) -> Reading:
        dev = self.device.id
        if reg.sentinels and raw_value(words, reg.order) in reg.sentinels:
            return Reading(dev, reg.name, None, ts, Quality.BAD, reg.unit)
        return Reading(dev, reg.name, decode_register(reg, words), ts, Quality.GOOD, reg.unit)


class ModbusCollector:
    """Builds one poller per Modbus device, sharing connections per host:port."""

    def __init__(
        self,
        devices: Sequence[ModbusDevice],
        health: Callable[[str], DeviceHealth],
        *,
        clock: Callable[[], float],
    ) -> None:
        self._connections: dict[tuple[str, int], ModbusConnection] = {}
        self.pollers: list[ModbusPoller] = []
        for d in devices:
            key = (d.host, d.port)
            conn = self._connections.get(key)
            if conn is None:
                conn = self._connections[key] = ModbusConnection(d.host, d.port, timeout=d.timeout)
            self.pollers.append(ModbusPoller(d, conn, health(d.id), clock=clock))

    def close(self) -> None:
        for c in self._connections.values():
            c.close()
