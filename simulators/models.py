"""Equipment models: simple thermal physics that produce Modbus register values over time.

A model is advanced with ``step(now)``, ``now`` being *simulated* seconds since the model
started (the caller applies any speed-up), and writes its state into a
:class:`~simulators.modbus_server.RegisterBank` with ``write(bank)``. Randomness comes only from
the ``random.Random`` handed in, so a model is deterministic given its seed.

Register map (same for every model, see docs/simulators.md)::

    input 0      temperature x10, int16 (two's complement); 0x7FFF = sensor failure
    holding 0    setpoint x10, int16 (writable: the model follows a new setpoint)
    input 2      status bits: 0 door_open, 1 compressor_on (warmer: heater_on), 2 defrost,
                 3 compressor_fault
    input 3      operating state (enum): 0 idle, 1 cooling (warmer: heating), 2 door_open,
                 4 defrost, 5 fault
    input 10-11  compressor (warmer: heater) run hours, float32 big-endian (ABCD)

The other models (negative-pressure room monitor, oxygen pipeline monitor, generator) have maps
of their own: docs/modbus.md has every map.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any

from eqmon.config import ADDRESS_SYNTAX, register_addresses

from .modbus_server import (
    EXCEPTION_CODES,
    RegisterBank,
    float32_to_words,
    int16_to_word,
    word_to_int16,
)

REG_TEMPERATURE = 0  # input
REG_SETPOINT = 0  # holding
REG_STATUS = 2  # input
REG_STATE = 3  # input, operating state enum
REG_RUN_HOURS = 10  # input, 2 words
STATE_IDLE, STATE_ACTIVE, STATE_DOOR, STATE_DEFROST, STATE_FAULT = 0, 1, 2, 4, 5
SENTINEL = 0x7FFF

BIT_DOOR = 0
BIT_ACTIVE = 1  # compressor_on / heater_on
BIT_DEFROST = 2
BIT_FAULT = 3

MODEL_FAULTS = ("drift", "stuck", "sentinel", "fault_bit", "door_open", "clear")
PROTOCOL_FAULTS = (
    "exception", "slow", "silence", "reset", "wrong_tid", "wrong_function", "short_reply", "reboot", "reject",
)  # fmt: skip
FAULTS = MODEL_FAULTS + PROTOCOL_FAULTS

_MAX_DT = 1.0  # integrate in steps of at most this many simulated seconds


@dataclass(frozen=True)
class ThermalSpec:
    """Physics of one kind of thermostatic equipment."""

    setpoint: float  # °C
    ambient: float  # °C, room around the unit
    tau_s: float  # time constant of the heat leak between cabinet and room
    active_rate: float  # °C/s added while compressor/heater runs (negative = cooling)
    hysteresis: float  # thermostat switches at setpoint ± hysteresis
    door_per_hour: float  # mean door openings per hour
    door_s: tuple[float, float]  # range of door-open durations
    door_rate: float  # °C/s pulled toward the room while the door is open
    defrost_every_s: float  # 0 = no defrost cycle
    defrost_s: float
    defrost_rate: float  # °C/s added by the defrost heater
    run_hours: tuple[float, float]  # range of initial run hours
    noise: float = 0.1  # ± °C on the reported value


SPECS: dict[str, ThermalSpec] = {
    # 2–8 °C, aim 5 °C: the thermostat cycles between 4 and 6 °C; a door opening or a defrost
    # warms it by at most about 1 °C.
    "medication_refrigerator": ThermalSpec(
        setpoint=5.0, ambient=22.0, tau_s=10_000.0, active_rate=-0.0070, hysteresis=1.0,
        door_per_hour=2.0, door_s=(10.0, 45.0), door_rate=0.012,
        defrost_every_s=6 * 3600.0, defrost_s=600.0, defrost_rate=0.0005,
        run_hours=(500.0, 20_000.0),
    ),
    # −50..−15 °C, aim −25 °C.
    "vaccine_freezer": ThermalSpec(
        setpoint=-25.0, ambient=22.0, tau_s=30_000.0, active_rate=-0.0060, hysteresis=2.0,
        door_per_hour=0.5, door_s=(10.0, 30.0), door_rate=0.030,
        defrost_every_s=12 * 3600.0, defrost_s=900.0, defrost_rate=0.0010,
        run_hours=(500.0, 20_000.0),
    ),
    # At most 54 °C, aim 49 °C: the heater cycles between 47.5 and 50.5 °C.
    "blanket_warmer": ThermalSpec(
        setpoint=49.0, ambient=22.0, tau_s=6_000.0, active_rate=0.0150, hysteresis=1.5,
        door_per_hour=4.0, door_s=(5.0, 30.0), door_rate=0.020,
        defrost_every_s=0.0, defrost_s=0.0, defrost_rate=0.0,
        run_hours=(100.0, 5_000.0),
    ),
}  # fmt: skip

# Simulator params a site file may give, with the type each must have.
_PARAMS: dict[str, type] = {
    "setpoint": float,
    "ambient": float,
    "hysteresis": float,
    "door_per_hour": float,
    "defrost_every_h": float,
    "initial": float,
    "run_hours": float,
    "reject_addresses": str,
}
# Every equipment model also takes ``reject_addresses`` (see parse_addresses).
REJECT_PARAM = "reject_addresses"


def _num(params: dict[str, Any], key: str, default: float | None = None) -> float:
    v = params.get(key, default)
    if v is None:
        raise ValueError(f"{key} is required")
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{key} must be a number, got {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"{key} must be finite")
    return float(v)


def parse_addresses(value: Any, what: str = REJECT_PARAM) -> frozenset[tuple[str, int]]:
    """Register addresses a simulated unit rejects with 0x02, as ``{(table, address)}``
    (syntax and parser: ``eqmon.config.register_addresses``), errors naming ``what``."""
    try:
        return register_addresses(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def protocol_fault(bank: RegisterBank, fault: str, params: dict[str, Any]) -> None:
    """Apply one protocol fault (exception, slow, silence, reset, wrong_tid, …, reject) to a
    unit. ``reject`` (``addresses``: see parse_addresses) makes the unit answer 0x02 to any
    request touching those addresses, until ``clear``."""
    f = bank.faults
    if fault == "exception":
        code = params.get("code", 0x04)
        if isinstance(code, str):
            code = int(code, 0)
        if isinstance(code, bool) or not isinstance(code, int) or code not in EXCEPTION_CODES:
            raise ValueError(
                f"exception needs code, one of {sorted(EXCEPTION_CODES)} (e.g. 2, 4, 6, 10, 11)"
            )
        f.exception_code = code
    elif fault == "slow":
        delay = _num(params, "delay_s", 5.0)
        if delay < 0:
            raise ValueError("slow needs delay_s >= 0")
        f.delay_s = delay
    elif fault == "silence":
        f.silent = True
    elif fault == "reset":
        f.reset = True
    elif fault == "wrong_tid":
        f.wrong_tid = True
    elif fault == "wrong_function":
        f.wrong_function = True
    elif fault == "short_reply":
        f.short_reply = True
    elif fault == "reboot":
        down = _num(params, "down_s", 3.0)
        if down < 0:
            raise ValueError("reboot needs down_s >= 0")
        f.reboot(down)
    elif fault == "reject":
        if "addresses" not in params:
            raise ValueError(f"reject needs addresses: {ADDRESS_SYNTAX}")
        f.reject |= parse_addresses(params["addresses"], "reject addresses")
    else:
        raise ValueError(f"unknown protocol fault {fault!r}; expected one of {PROTOCOL_FAULTS}")


class ModelFaults:
    """The model faults every equipment model takes: drift of its main metric toward a target,
    a stuck main register, the sensor-failure sentinel, fault bits, a door held open (models
    with a door), and clear. A model sets ``metric`` and ``drift_rate_default`` (per minute) and
    implements ``_stuck_word()``; a model with a door implements ``_hold_door``/``_shut_door``."""

    kind: str
    metric = "temperature_c"
    drift_rate_default = 1.0
    fault_bit_default = BIT_FAULT

    missing: frozenset[tuple[str, int]] = frozenset()  # the reject_addresses param

    def _init_missing(self, params: dict[str, Any]) -> None:
        """The ``reject_addresses`` param: addresses the unit's register map lacks (answered
        with 0x02), written into the bank with the registers. Not a fault: ``clear`` keeps it."""
        if REJECT_PARAM in params:
            self.missing = parse_addresses(params[REJECT_PARAM])

    def _write_missing(self, bank: RegisterBank) -> None:
        bank.missing = self.missing

    def write(self, bank: RegisterBank) -> None:
        """Write the model's state into its unit's registers (every model implements it)."""
        raise NotImplementedError

    def _init_faults(self) -> None:
        self.drift: tuple[float, float] | None = None  # (target, units per second)
        self.stuck_word: int | None = None
        self.sentinel = False
        self.fault_bits = 0
        self.door_held = False  # door_open: held open until it times out or clear

    def _stuck_word(self) -> int:
        raise NotImplementedError

    def _hold_door(self, minutes: float | None) -> None:
        """door_open: the door stays open for ``minutes`` (None: until clear)."""
        raise ValueError(f"{self.kind} has no door; door_open is for {', '.join(DOOR_MODELS)}")

    def _shut_door(self) -> None:
        """clear after door_open: someone shuts the door."""

    def inject(self, fault: str, params: dict[str, Any] | None = None) -> None:
        """Apply a model fault: drift, stuck, sentinel, fault_bit, door_open or clear."""
        params = dict(params or {})
        if fault == "drift":
            metric = params.get("metric", self.metric)
            if metric != self.metric:
                raise ValueError(f"drift supports metric {self.metric} only, got {metric!r}")
            target = _num(params, "target")
            rate = _num(params, "rate_per_min", self.drift_rate_default)
            if rate <= 0:
                raise ValueError("drift needs rate_per_min > 0")
            self.drift = (target, rate / 60.0)
        elif fault == "stuck":
            self.stuck_word = self._stuck_word()
        elif fault == "sentinel":
            self.sentinel = True
        elif fault == "fault_bit":
            bit = params.get("bit", self.fault_bit_default)
            if isinstance(bit, bool) or not isinstance(bit, int) or not 0 <= bit <= 15:
                raise ValueError(f"fault_bit needs bit 0..15, got {bit!r}")
            self.fault_bits |= 1 << bit
        elif fault == "door_open":
            minutes = None
            if "minutes" in params:
                minutes = _num(params, "minutes")
                if minutes <= 0:
                    raise ValueError("door_open needs minutes > 0 (or none: open until clear)")
            self._hold_door(minutes)
            self.door_held = True
        elif fault == "clear":
            if self.door_held:
                self._shut_door()
            self._init_faults()
        else:
            raise ValueError(f"unknown model fault {fault!r}; expected one of {MODEL_FAULTS}")

    @property
    def active_faults(self) -> list[str]:
        out = []
        if self.drift is not None:
            out.append(f"drift to {self.drift[0]:g}")
        if self.stuck_word is not None:
            out.append("stuck")
        if self.sentinel:
            out.append("sentinel")
        if self.fault_bits:
            out.append(f"fault bits 0x{self.fault_bits:04X}")
        if self.door_held:
            out.append("door held open")
        return out


class ThermalModel(ModelFaults):
    """A thermostatic cabinet (refrigerator, freezer, warmer) with faults."""

    drift_rate_default = 0.1

    def _stuck_word(self) -> int:
        return self.temperature_word(unfrozen=True)

    def __init__(self, kind: str, rng: random.Random, params: dict[str, Any] | None = None) -> None:
        if kind not in SPECS:
            raise ValueError(f"unknown equipment model {kind!r}; expected one of {sorted(SPECS)}")
        params = dict(params or {})
        unknown = sorted(set(params) - set(_PARAMS))
        if unknown:
            raise ValueError(
                f"unknown simulator params {unknown} for {kind}; expected some of {sorted(_PARAMS)}"
            )
        spec = SPECS[kind]
        changes: dict[str, Any] = {}
        for key in ("setpoint", "ambient", "hysteresis", "door_per_hour"):
            if key in params:
                changes[key] = _num(params, key)
        if "defrost_every_h" in params:
            changes["defrost_every_s"] = _num(params, "defrost_every_h") * 3600.0
        if changes.get("hysteresis", spec.hysteresis) <= 0:
            raise ValueError("hysteresis must be > 0")
        if changes.get("door_per_hour", spec.door_per_hour) < 0:
            raise ValueError("door_per_hour must be >= 0")
        self.kind = kind
        self.spec = replace(spec, **changes)
        self.rng = rng
        self.cooling = self.spec.active_rate < 0
        self.setpoint = self.spec.setpoint
        self.temperature = (
            _num(params, "initial")
            if "initial" in params
            else self.setpoint + rng.uniform(-0.5, 0.5) * self.spec.hysteresis
        )
        self.active = rng.random() < 0.3  # compressor / heater running
        self.run_hours = (
            _num(params, "run_hours") if "run_hours" in params else rng.uniform(*self.spec.run_hours)
        )
        self.door_open_until: float | None = None
        self.next_door = self._next_door(0.0)
        if self.spec.defrost_every_s > 0:
            self.next_defrost: float | None = rng.uniform(0.2, 1.0) * self.spec.defrost_every_s
        else:
            self.next_defrost = None
        self.defrost_until: float | None = None
        self.now = 0.0
        self._init_faults()
        self._init_missing(params)
        self._reported = self.temperature

    # -- physics ------------------------------------------------------------------------------

    def _next_door(self, now: float) -> float:
        if self.spec.door_per_hour <= 0:
            return math.inf
        return now + self.rng.expovariate(self.spec.door_per_hour / 3600.0)

    @property
    def door_open(self) -> bool:
        return self.door_open_until is not None

    def _hold_door(self, minutes: float | None) -> None:
        self.door_open_until = math.inf if minutes is None else self.now + minutes * 60.0

    def _shut_door(self) -> None:
        self.door_open_until = None
        self.next_door = self._next_door(self.now)

    @property
    def defrosting(self) -> bool:
        return self.defrost_until is not None

    def step(self, now: float) -> None:
        """Advance the model to ``now`` simulated seconds after its start."""
        while self.now < now:
            dt = min(_MAX_DT, now - self.now)
            self._advance(self.now + dt, dt)
        self._reported = self.temperature + self.rng.uniform(-self.spec.noise, self.spec.noise)

    def _advance(self, t: float, dt: float) -> None:
        s = self.spec
        self.now = t
        # door
        if self.door_open_until is not None and t >= self.door_open_until:
            self.door_open_until = None
            self.door_held = False
            self.next_door = self._next_door(t)
        if self.door_open_until is None and t >= self.next_door:
            self.door_open_until = t + self.rng.uniform(*s.door_s)
        # defrost
        if self.defrost_until is not None and t >= self.defrost_until:
            self.defrost_until = None
        if self.next_defrost is not None and t >= self.next_defrost:
            self.defrost_until = t + s.defrost_s
            self.next_defrost = t + s.defrost_every_s
        if self.drift is not None:
            target, rate = self.drift
            delta = target - self.temperature
            move = rate * dt
            self.temperature = target if abs(delta) <= move else self.temperature + math.copysign(move, delta)
            # the unit fights the excursion and fails: compressor/heater runs all the time
            self.active = True
        else:
            # thermostat with hysteresis
            sp, h = self.setpoint, s.hysteresis
            if self.cooling:
                if self.temperature >= sp + h:
                    self.active = True
                elif self.temperature <= sp - h:
                    self.active = False
            else:
                if self.temperature <= sp - h:
                    self.active = True
                elif self.temperature >= sp + h:
                    self.active = False
            if self.defrosting:
                self.active = False
            if self.fault_bits & (1 << BIT_FAULT):
                # the compressor (warmer: heater) has failed: it does not run, and the cabinet
                # drifts toward the room's temperature
                self.active = False
            rate = (s.ambient - self.temperature) / s.tau_s
            if self.active:
                rate += s.active_rate
            if self.door_open:
                rate += (s.ambient - self.temperature) * s.door_rate / max(1.0, abs(s.ambient - sp))
            if self.defrosting:
                rate += s.defrost_rate
            self.temperature += rate * dt
        if self.active:
            self.run_hours += dt / 3600.0

    # -- faults -------------------------------------------------------------------------------


    # -- registers ----------------------------------------------------------------------------

    @property
    def reported_temperature(self) -> float:
        """Temperature as the device reports it (with sensor noise), before faults."""
        return round(self._reported, 1)

    def temperature_word(self, *, unfrozen: bool = False) -> int:
        if self.sentinel and not unfrozen:
            return SENTINEL
        if self.stuck_word is not None and not unfrozen:
            return self.stuck_word
        return int16_to_word(round(self._reported * 10))

    @property
    def status_word(self) -> int:
        word = self.fault_bits
        if self.door_open:
            word |= 1 << BIT_DOOR
        if self.active:
            word |= 1 << BIT_ACTIVE
        if self.defrosting:
            word |= 1 << BIT_DEFROST
        return word

    @property
    def state_code(self) -> int:
        if self.fault_bits & (1 << BIT_FAULT):
            return STATE_FAULT
        if self.defrosting:
            return STATE_DEFROST
        if self.door_open:
            return STATE_DOOR
        return STATE_ACTIVE if self.active else STATE_IDLE

    def read_setpoint(self, bank: RegisterBank) -> None:
        """Follow a setpoint written by a Modbus master into holding register 0."""
        self.setpoint = word_to_int16(bank.holding[REG_SETPOINT]) / 10.0

    def write(self, bank: RegisterBank) -> None:
        self._write_missing(bank)
        bank.input[REG_TEMPERATURE] = self.temperature_word()
        bank.holding[REG_SETPOINT] = int16_to_word(round(self.setpoint * 10))
        bank.input[REG_STATUS] = self.status_word
        bank.input[REG_STATE] = self.state_code
        hi, lo = float32_to_words(self.run_hours)
        bank.input[REG_RUN_HOURS] = hi
        bank.input[REG_RUN_HOURS + 1] = lo


class ProcessModel(ModelFaults):
    """Equipment with one measured process value (a pressure) and status bits, for the room
    monitor and the oxygen pipeline monitor. Same fault interface as :class:`ThermalModel`.

    Register map: input 0 value × ``factor`` (int16; 0x7FFF = sensor failure), input 1 status
    bits, input 2 mode/state enum, input 4–5 value as float32 (ABCD), holding 0 alarm limit ×
    ``factor``."""

    metric = "value"
    factor = 10.0
    sentinel_word = SENTINEL

    def __init__(self, kind: str, rng: random.Random, params: dict[str, Any] | None) -> None:
        self.kind = kind
        self.rng = rng
        self.now = 0.0
        self._init_faults()
        self._init_missing(dict(params or {}))
        self.value = 0.0
        self._reported = 0.0

    # subclasses: _advance(t, dt), status bits, mode, limits
    def _advance(self, t: float, dt: float) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def step(self, now: float) -> None:
        while self.now < now:
            dt = min(_MAX_DT, now - self.now)
            self.now += dt
            if self.drift is not None:
                target, rate = self.drift
                delta = target - self.value
                move = rate * dt
                self.value = target if abs(delta) <= move else self.value + math.copysign(move, delta)
            else:
                self._advance(self.now, dt)
        self._reported = self.value + self.rng.uniform(-self.noise, self.noise)

    noise = 0.1


    def _stuck_word(self) -> int:
        return self.value_word(unfrozen=True)

    def value_word(self, *, unfrozen: bool = False) -> int:
        if self.sentinel and not unfrozen:
            return self.sentinel_word
        if self.stuck_word is not None and not unfrozen:
            return self.stuck_word
        return int16_to_word(round(self._reported * self.factor))

    def status_word(self) -> int:
        return self.fault_bits

    def mode(self) -> int:
        return 0

    def limit(self) -> float:
        return 0.0

    def read_setpoint(self, bank: RegisterBank) -> None:
        pass

    def write(self, bank: RegisterBank) -> None:
        self._write_missing(bank)
        word = self.value_word()
        bank.input[0] = word
        bank.input[1] = self.status_word()
        bank.input[2] = self.mode()
        shown = self._reported if not (self.sentinel or self.stuck_word is not None) else word_to_int16(word) / self.factor
        bank.input[4], bank.input[5] = float32_to_words(shown)
        bank.holding[0] = int16_to_word(round(self.limit() * self.factor))


class NegativePressureRoom(ProcessModel):
    """Isolation room monitor: differential pressure room − corridor in Pa (healthy: at most
    −2.5 Pa), × 100 in input 0. Door openings pull it toward 0 for a few seconds. Status bits:
    0 door_open, 1 pressure_alarm (above −2.5 Pa for 10 s), 3 sensor_fault. Mode (input 2):
    0 off, 1 negative (isolation), 2 positive, 3 neutral."""

    metric = "pressure_pa"
    factor = 100.0
    noise = 0.15

    def __init__(self, rng: random.Random, params: dict[str, Any] | None = None) -> None:
        params = dict(params or {})
        _only(params, {"setpoint", "door_per_hour", REJECT_PARAM}, "negative_pressure_room")
        super().__init__("negative_pressure_room", rng, params)
        self.setpoint = _num(params, "setpoint", -8.0)
        self.door_per_hour = _num(params, "door_per_hour", 6.0)
        self.value = self.setpoint
        self.door_until: float | None = None
        self.next_door = self._next(0.0)
        self.above_since: float | None = None

    def _next(self, now: float) -> float:
        return math.inf if self.door_per_hour <= 0 else now + self.rng.expovariate(self.door_per_hour / 3600.0)

    def _hold_door(self, minutes: float | None) -> None:
        self.door_until = math.inf if minutes is None else self.now + minutes * 60.0

    def _shut_door(self) -> None:
        self.door_until = None
        self.next_door = self._next(self.now)

    def _advance(self, t: float, dt: float) -> None:
        if self.door_until is not None and t >= self.door_until:
            self.door_until = None
            self.door_held = False
            self.next_door = self._next(t)
        if self.door_until is None and t >= self.next_door:
            self.door_until = t + self.rng.uniform(4.0, 15.0)
        target = -0.3 if self.door_until is not None else self.setpoint
        self.value += (target - self.value) * min(1.0, dt / 3.0)

    def step(self, now: float) -> None:
        super().step(now)
        if self.value > -2.5:
            self.above_since = self.now if self.above_since is None else self.above_since
        else:
            self.above_since = None

    def status_word(self) -> int:
        word = self.fault_bits
        if self.door_until is not None:
            word |= 1
        if self.above_since is not None and self.now - self.above_since >= 10.0:
            word |= 2
        return word

    def mode(self) -> int:
        return 1

    def limit(self) -> float:
        return -2.5


class OxygenPipeline(ProcessModel):
    """Medical oxygen pipeline area alarm panel: pressure in psig (healthy 50–55; area alarm at
    ±20 % of normal), × 10 in input 0. Status bits: 0 low_pressure_alarm, 1 high_pressure_alarm,
    3 sensor_fault. Input 2: 0 normal, 1 low, 2 high. Holding 0: normal pressure × 10."""

    metric = "pressure_psig"
    noise = 0.15

    def __init__(self, rng: random.Random, params: dict[str, Any] | None = None) -> None:
        params = dict(params or {})
        _only(params, {"normal", REJECT_PARAM}, "oxygen_pipeline_monitor")
        super().__init__("oxygen_pipeline_monitor", rng, params)
        self.normal = _num(params, "normal", 52.5)
        self.value = self.normal + rng.uniform(-1.0, 1.0)

    def _advance(self, t: float, dt: float) -> None:
        # demand swings slowly with the hour; a regulator pulls back toward normal
        demand = 1.2 * math.sin(2 * math.pi * t / 3600.0)
        self.value += (self.normal + demand - self.value) * min(1.0, dt / 30.0)

    def _band(self) -> int:
        if self.value < 0.8 * self.normal:
            return 1
        if self.value > 1.2 * self.normal:
            return 2
        return 0

    def status_word(self) -> int:
        band = self._band()
        return self.fault_bits | (1 if band == 1 else 0) | (2 if band == 2 else 0)

    def mode(self) -> int:
        return self._band()

    def limit(self) -> float:
        return self.normal


class Generator(ModelFaults):
    """Emergency generator controller. A weekly test run (every ``test_every_h``, 30 min):
    starting 10 s, running, cool-down 60 s. Register map:

    input 0    state (enum): 0 off, 1 starting, 2 running, 3 cooldown, 4 fault
    input 1    fault bits: 0 low_oil_pressure, 1 high_coolant_temp, 2 overspeed,
               3 fail_to_start, 4 low_fuel
    input 2    battery voltage × 100 (uint16; 0xFFFF = sensor failure)
    input 3    fuel level %, × 10 (uint16)
    input 4    engine speed rpm (uint16)
    input 10–11 run hours, float32 CDAB (word-swapped, as many controllers send it)
    """

    metric = "battery_v"

    def __init__(self, rng: random.Random, params: dict[str, Any] | None = None) -> None:
        params = dict(params or {})
        _only(params, {"test_every_h", "run_hours", "fuel_pct", REJECT_PARAM}, "generator")
        self.kind = "generator"
        self.rng = rng
        self.now = 0.0
        self.test_every = _num(params, "test_every_h", 168.0) * 3600.0
        self.run_hours = _num(params, "run_hours", rng.uniform(50.0, 2000.0))
        self.fuel = _num(params, "fuel_pct", 95.0)
        self.battery = 27.4
        self.state = 0
        self.state_until = math.inf
        self.next_test = rng.uniform(0.1, 1.0) * self.test_every
        self._init_faults()
        self._init_missing(params)

    fault_bit_default = 3  # fail_to_start

    def _stuck_word(self) -> int:
        return round(self.battery * 100) & 0xFFFF

    def step(self, now: float) -> None:
        while self.now < now:
            dt = min(_MAX_DT, now - self.now)
            self.now += dt
            t = self.now
            if self.state == 0 and t >= self.next_test:
                self.state, self.state_until = 1, t + 10.0
                self.next_test = t + self.test_every
            elif self.state == 1 and t >= self.state_until:
                self.state, self.state_until = 2, t + 1800.0
            elif self.state == 2 and t >= self.state_until:
                self.state, self.state_until = 3, t + 60.0
            elif self.state == 3 and t >= self.state_until:
                self.state, self.state_until = 0, math.inf
            if self.state == 2:
                self.run_hours += dt / 3600.0
                self.fuel = max(0.0, self.fuel - dt * 0.0005)
            target = 28.2 if self.state == 2 else (24.5 if self.state == 1 else 27.4)
            if self.drift is not None:
                target, rate = self.drift
                delta = target - self.battery
                self.battery = target if abs(delta) <= rate * dt else self.battery + math.copysign(rate * dt, delta)
            else:
                self.battery += (target - self.battery) * min(1.0, dt / 5.0)


    def read_setpoint(self, bank: RegisterBank) -> None:
        pass

    def write(self, bank: RegisterBank) -> None:
        self._write_missing(bank)
        bank.input[0] = 4 if self.fault_bits else self.state
        bank.input[1] = self.fault_bits
        if self.sentinel:
            bank.input[2] = 0xFFFF
        elif self.stuck_word is not None:
            bank.input[2] = self.stuck_word
        else:
            bank.input[2] = max(0, min(0xFFFE, round((self.battery + self.rng.uniform(-0.02, 0.02)) * 100)))
        bank.input[3] = round(self.fuel * 10)
        bank.input[4] = {0: 0, 1: 600, 2: 1800, 3: 1800}[self.state] if not self.fault_bits else 0
        bank.input[10], bank.input[11] = float32_to_words(self.run_hours, "CDAB")


def _only(params: dict[str, Any], allowed: set[str], kind: str) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"unknown simulator params {unknown} for {kind}; expected some of {sorted(allowed)}")


def medication_refrigerator(rng: random.Random, params: dict[str, Any] | None = None) -> ThermalModel:
    return ThermalModel("medication_refrigerator", rng, params)


def vaccine_freezer(rng: random.Random, params: dict[str, Any] | None = None) -> ThermalModel:
    return ThermalModel("vaccine_freezer", rng, params)


def blanket_warmer(rng: random.Random, params: dict[str, Any] | None = None) -> ThermalModel:
    return ThermalModel("blanket_warmer", rng, params)


# The models with a door (status bit 0), which the door_open fault holds open.
DOOR_MODELS = ("medication_refrigerator", "vaccine_freezer", "blanket_warmer", "negative_pressure_room")

EQUIPMENT_MODELS = {
    "medication_refrigerator": medication_refrigerator,
    "vaccine_freezer": vaccine_freezer,
    "blanket_warmer": blanket_warmer,
    "negative_pressure_room": NegativePressureRoom,
    "oxygen_pipeline_monitor": OxygenPipeline,
    "generator": Generator,
}


# Documented register maps (docs/modbus.md), one entry per register or register group:
# (table, address, words, name, encoding). The mbpoll test reads every entry of every model.
_THERMAL_MAP = [
    ("input", 0, 1, "temperature_c", "int16, °C × 10; 0x7FFF = sensor failure"),
    ("input", 2, 1, "status", "bits: 0 door_open, 1 compressor_on (warmer: heater_on), 2 defrost, 3 compressor_fault"),
    ("input", 3, 1, "state", "enum: 0 idle, 1 cooling (warmer: heating), 2 door_open, 4 defrost, 5 fault"),
    ("input", 10, 2, "run_hours", "float32 ABCD, hours the compressor (heater) ran"),
    ("holding", 0, 1, "setpoint_c", "int16, °C × 10, writable (FC 6/16)"),
]
_PROCESS_MAP = {
    "negative_pressure_room": [
        ("input", 0, 1, "pressure_pa", "int16, Pa × 100, room − corridor (healthy ≤ −2.5 Pa); 0x7FFF = sensor failure"),
        ("input", 1, 1, "status", "bits: 0 door_open, 1 pressure_alarm (above −2.5 Pa for 10 s), 3 sensor_fault"),
        ("input", 2, 1, "mode", "enum: 0 off, 1 negative (isolation), 2 positive, 3 neutral"),
        ("input", 4, 2, "pressure_pa_f", "float32 ABCD, Pa"),
        ("holding", 0, 1, "alarm_limit_pa", "int16, Pa × 100 (−250)"),
    ],
    "oxygen_pipeline_monitor": [
        ("input", 0, 1, "pressure_psig", "int16, psig × 10 (healthy 50–55); 0x7FFF = sensor failure"),
        ("input", 1, 1, "status", "bits: 0 low_pressure_alarm, 1 high_pressure_alarm (±20 % of normal), 3 sensor_fault"),
        ("input", 2, 1, "band", "enum: 0 normal, 1 low, 2 high"),
        ("input", 4, 2, "pressure_psig_f", "float32 ABCD, psig"),
        ("holding", 0, 1, "normal_psig", "int16, psig × 10 (525)"),
    ],
    "generator": [
        ("input", 0, 1, "state", "enum: 0 off, 1 starting, 2 running, 3 cooldown, 4 fault"),
        ("input", 1, 1, "faults", "bits: 0 low_oil_pressure, 1 high_coolant_temp, 2 overspeed, 3 fail_to_start, 4 low_fuel"),
        ("input", 2, 1, "battery_v", "uint16, V × 100; 0xFFFF = sensor failure"),
        ("input", 3, 1, "fuel_pct", "uint16, % × 10"),
        ("input", 4, 1, "engine_rpm", "uint16, rpm"),
        ("input", 10, 2, "run_hours", "float32 CDAB (word-swapped), hours"),
    ],
}
REGISTER_MAPS: dict[str, list[tuple[str, int, int, str, str]]] = {
    "medication_refrigerator": _THERMAL_MAP,
    "vaccine_freezer": _THERMAL_MAP,
    "blanket_warmer": _THERMAL_MAP,
    **_PROCESS_MAP,
}
