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
    input 10-11  compressor (warmer: heater) run hours, float32 big-endian (ABCD)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any

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
REG_RUN_HOURS = 10  # input, 2 words
SENTINEL = 0x7FFF

BIT_DOOR = 0
BIT_ACTIVE = 1  # compressor_on / heater_on
BIT_DEFROST = 2
BIT_FAULT = 3

MODEL_FAULTS = ("drift", "stuck", "sentinel", "fault_bit", "clear")
PROTOCOL_FAULTS = ("exception", "slow", "silence", "reset", "wrong_tid")
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
}


def _num(params: dict[str, Any], key: str, default: float | None = None) -> float:
    v = params.get(key, default)
    if v is None:
        raise ValueError(f"{key} is required")
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{key} must be a number, got {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"{key} must be finite")
    return float(v)


def protocol_fault(bank: RegisterBank, fault: str, params: dict[str, Any]) -> None:
    """Apply one protocol fault (exception, slow, silence, reset, wrong_tid) to a unit."""
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
    else:
        raise ValueError(f"unknown protocol fault {fault!r}; expected one of {PROTOCOL_FAULTS}")


class ThermalModel:
    """A thermostatic cabinet (refrigerator, freezer, warmer) with faults."""

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
        # faults
        self.drift: tuple[float, float] | None = None  # (target, °C per second)
        self.stuck_word: int | None = None
        self.sentinel = False
        self.fault_bits = 0
        self._reported = self.temperature

    # -- physics ------------------------------------------------------------------------------

    def _next_door(self, now: float) -> float:
        if self.spec.door_per_hour <= 0:
            return math.inf
        return now + self.rng.expovariate(self.spec.door_per_hour / 3600.0)

    @property
    def door_open(self) -> bool:
        return self.door_open_until is not None

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

    def inject(self, fault: str, params: dict[str, Any] | None = None) -> None:
        """Apply a model fault: drift, stuck, sentinel, fault_bit or clear."""
        params = dict(params or {})
        if fault == "drift":
            metric = params.get("metric", "temperature_c")
            if metric != "temperature_c":
                raise ValueError(f"drift supports metric temperature_c only, got {metric!r}")
            target = _num(params, "target")
            rate = _num(params, "rate_per_min", 0.1)
            if rate <= 0:
                raise ValueError("drift needs rate_per_min > 0")
            self.drift = (target, rate / 60.0)
        elif fault == "stuck":
            self.stuck_word = self.temperature_word(unfrozen=True)
        elif fault == "sentinel":
            self.sentinel = True
        elif fault == "fault_bit":
            bit = params.get("bit", BIT_FAULT)
            if isinstance(bit, bool) or not isinstance(bit, int) or not 0 <= bit <= 15:
                raise ValueError(f"fault_bit needs bit 0..15, got {bit!r}")
            self.fault_bits |= 1 << bit
        elif fault == "clear":
            self.drift = None
            self.stuck_word = None
            self.sentinel = False
            self.fault_bits = 0
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
        return out

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

    def read_setpoint(self, bank: RegisterBank) -> None:
        """Follow a setpoint written by a Modbus master into holding register 0."""
        self.setpoint = word_to_int16(bank.holding[REG_SETPOINT]) / 10.0

    def write(self, bank: RegisterBank) -> None:
        bank.input[REG_TEMPERATURE] = self.temperature_word()
        bank.holding[REG_SETPOINT] = int16_to_word(round(self.setpoint * 10))
        bank.input[REG_STATUS] = self.status_word
        hi, lo = float32_to_words(self.run_hours)
        bank.input[REG_RUN_HOURS] = hi
        bank.input[REG_RUN_HOURS + 1] = lo


def medication_refrigerator(rng: random.Random, params: dict[str, Any] | None = None) -> ThermalModel:
    return ThermalModel("medication_refrigerator", rng, params)


def vaccine_freezer(rng: random.Random, params: dict[str, Any] | None = None) -> ThermalModel:
    return ThermalModel("vaccine_freezer", rng, params)


def blanket_warmer(rng: random.Random, params: dict[str, Any] | None = None) -> ThermalModel:
    return ThermalModel("blanket_warmer", rng, params)


EQUIPMENT_MODELS = {
    "medication_refrigerator": medication_refrigerator,
    "vaccine_freezer": vaccine_freezer,
    "blanket_warmer": blanket_warmer,
}
