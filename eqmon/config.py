"""The site file: one YAML document describing devices, sinks, broker, alert rules and contacts.

It is validated once, at start-up, by the pydantic models below. Any error stops start-up with
``ConfigError``, whose lines read ``FILE: devices[3].registers[0].data_type: expected one of …``.
Secrets never live in the file: it names environment variables (``token_env``, ``password_env``).

The simulator sections (``devices[].simulator``, ``scenario[]``) are validated here too, against
the models, params and faults declared below (this module imports nothing of simulators/).

A bad file never costs more than its limits: at most ``MAX_SITE_BYTES`` (8 MiB) of UTF-8 text,
collections nested at most ``MAX_DEPTH`` (100) deep and at most ``MAX_NODES`` (1,000,000) YAML
nodes counting those that aliases repeat (a "billion laughs" file stops at the alias that passes
the limit). An error names the file and shows at most ``MAX_ISSUES`` problems, each cut to
``MAX_ISSUE_CHARS`` characters. The file is parsed once, by libyaml when PyYAML has it.

Valid but probably wrong (overlapping registers, a timeout longer than the poll interval) is a
warning: ``Site.warnings()``; ``load_site(path, warnings=list)`` fills the list with them, with
their line numbers.
"""

from __future__ import annotations

import csv
import gc
import io
import math
import os
import re
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# ---------------------------------------------------------------------------------------------
# Limits of a site file (README, "The site file").

MAX_SITE_BYTES = 8 * 1024 * 1024  # 8 MiB of UTF-8 text
MAX_DEPTH = 100  # collections (mappings, lists) nested in one another
MAX_NODES = 1_000_000  # YAML nodes (keys, values, lists, mappings), counting what aliases repeat
MAX_ISSUES = 50  # problems kept and shown; the rest are counted
MAX_ISSUE_CHARS = 500  # one problem's message, cut beyond this
_MAX_PATH_CHARS = 200

_short_repr = reprlib.Repr()
_short_repr.maxstring = 60
_short_repr.maxother = 60
_short_repr.maxlevel = 2
_short_repr.maxlist = _short_repr.maxtuple = _short_repr.maxdict = _short_repr.maxset = 4


def _short(value: Any) -> str:
    """A bounded repr: a value from the file may be huge, or a structure aliases repeat."""
    try:
        return _short_repr.repr(value)
    except Exception:  # a repr that fails is no reason to fail the message
        return f"<{type(value).__name__}>"


def _clip(text: str, limit: int) -> str:
    """``text`` on one line (control characters escaped), at most ``limit`` characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Durations: "30s", "5m", "1h", "2d", "250ms" or a plain number of seconds.

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``"30s"``, ``"5m"``, ``"1h"``, ``"250ms"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("expected a duration that is not negative")
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float
            raise ValueError("expected a duration such as 30s, 5m or 1h") from None
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    raise ValueError("expected a duration such as 30s, 5m or 1h")


Duration = Annotated[float, BeforeValidator(parse_duration)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------
# Devices

RegisterType = Literal["holding", "input", "coil", "discrete_input"]
DataType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool", "string"
]
ByteOrder = Literal["ABCD", "DCBA", "BADC", "CDAB"]

REGISTER_WORDS = {
    "int16": 1, "uint16": 1, "bool": 1,
    "int32": 2, "uint32": 2, "float32": 2,
    "int64": 4, "uint64": 4, "float64": 4,
}  # fmt: skip


class Register(_Model):
    """One value read from a device: where it lives and how to decode it."""

    name: Identifier  # metric name, e.g. temperature_c
    address: int = Field(ge=0, le=65535)
    type: RegisterType = "holding"
    data_type: DataType = "uint16"
    order: ByteOrder = "ABCD"  # byte and word order of multi-byte values; ABCD is big-endian
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    bit: int | None = Field(default=None, ge=0, le=15)  # for data_type bool on a register
    length: int | None = Field(default=None, ge=1, le=125)  # words, for data_type string
    sentinels: list[int] = Field(default_factory=list)  # raw values meaning "sensor failure"
    # Status and fault codes. ``enum``: raw integer value → state name; the reading's value is
    # the name (an unlisted value reads "unknown_<n>"). ``bits``: bit number → metric name; each
    # becomes a reading of its own (true/false), besides the register's own reading.
    enum: dict[int, Identifier] = Field(default_factory=dict)
    bits: dict[int, Identifier] = Field(default_factory=dict)

    @property
    def words(self) -> int:
        if self.type in ("coil", "discrete_input"):
            return 1
        if self.data_type == "string":
            return self.length or 1
        return REGISTER_WORDS[self.data_type]

    @model_validator(mode="after")
    def _check(self) -> Register:
        if self.type in ("coil", "discrete_input") and self.data_type != "bool":
            raise ValueError(f"a {self.type} holds one bit: data_type must be bool")
        if self.data_type == "string" and self.length is None:
            raise ValueError("data_type string needs length (in registers)")
        integer = self.data_type in ("int16", "uint16", "int32", "uint32", "int64", "uint64")
        if (self.enum or self.bits) and not integer:
            raise ValueError(f"enum and bits need an integer data_type, not {self.data_type}")
        if self.enum and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError("an enum register takes no scale or offset: its values are codes")
        width = 16 * self.words
        for b in self.bits:
            if not 0 <= b < width:
                raise ValueError(f"bits: bit {b} is outside a {self.data_type} (0..{width - 1})")
        if len(set(self.bits.values())) != len(self.bits):
            raise ValueError("bits: a metric name appears twice")
        return self

    @property
    def metrics(self) -> list[str]:
        """Every metric this register yields: its own name, then one per named bit."""
        return [self.name, *self.bits.values()]


# ---------------------------------------------------------------------------------------------
# Simulator sections: `devices[].simulator` and `scenario[]`
#
# `eqmon demo` and `eqmon simulate` stand in for devices with the simulators of simulators/.
# Their models, params and faults are declared here, so that a bad one is a site-file error with
# its path like any other; simulators/ takes the validated values (``param_values()``, only the
# params the file gives: simulators/ applies its own defaults). These declarations follow
# simulators/models.py, shelves.py and sensors.py (docs/simulators.md): a model, param or fault
# added there is declared here too.

ThermalModelName = Literal["medication_refrigerator", "vaccine_freezer", "blanket_warmer"]
SensorModelName = Literal["room_environment", "differential_pressure"]
THERMAL_SIMULATORS: tuple[str, ...] = get_args(ThermalModelName)
EQUIPMENT_SIMULATORS: tuple[str, ...] = (
    *THERMAL_SIMULATORS, "negative_pressure_room", "oxygen_pipeline_monitor", "generator",
)  # fmt: skip
SENSOR_SIMULATORS: tuple[str, ...] = get_args(SensorModelName)
MQTT_SIMULATORS: tuple[str, ...] = ("smart_shelf", *SENSOR_SIMULATORS)
SIMULATOR_MODELS: tuple[str, ...] = EQUIPMENT_SIMULATORS + MQTT_SIMULATORS

# The param of every equipment model naming registers the unit lacks (answered with exception
# 0x02), and the fault that rejects registers at run time (simulators/models.py).
REJECT_PARAM = "reject_addresses"
REJECT_FAULT = "reject"

PlainFaultName = Literal[
    "stuck", "sentinel", "silence", "reset", "wrong_tid", "wrong_function", "short_reply",
    "malformed", "duplicate", "out_of_order", "lastwill", "clear", "negative",
]  # fmt: skip
EQUIPMENT_FAULTS: tuple[str, ...] = (
    "drift", "stuck", "sentinel", "fault_bit", "door_open", "clear",  # the model's
    "exception", "slow", "silence", "reset", "wrong_tid", "wrong_function", "short_reply",
    "reboot", REJECT_FAULT,  # the Modbus server's
)  # fmt: skip
LINK_FAULTS: tuple[str, ...] = ("malformed", "silence", "duplicate", "out_of_order", "burst", "lastwill", "clear")
# Faults each simulator model takes (scenario steps on its device).
# The equipment models with a door, which the door_open fault holds open.
DOOR_SIMULATORS: tuple[str, ...] = (*THERMAL_SIMULATORS, "negative_pressure_room")
SIMULATOR_FAULTS: dict[str, tuple[str, ...]] = {
    **{m: tuple(f for f in EQUIPMENT_FAULTS if f != "door_open" or m in DOOR_SIMULATORS) for m in EQUIPMENT_SIMULATORS},
    "smart_shelf": LINK_FAULTS + ("restock", "take", "set_count", "drift", "foreign", "negative"),
    **dict.fromkeys(SENSOR_SIMULATORS, LINK_FAULTS + ("drift", "stuck")),
}
# Metrics the drift fault moves, per model (the first is the default).
DRIFT_METRICS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(THERMAL_SIMULATORS, ("temperature_c",)),
    "negative_pressure_room": ("pressure_pa",),
    "oxygen_pipeline_monitor": ("pressure_psig",),
    "generator": ("battery_v",),
    "room_environment": ("temperature_c", "humidity_pct"),
    "differential_pressure": ("pressure_pa",),
    "smart_shelf": ("weight_g",),  # the scale's zero creeps (grams, grams a minute)
}
MODBUS_EXCEPTION_CODES = (1, 2, 3, 4, 5, 6, 8, 10, 11)  # codes the simulated server can answer
_TABLES = ("holding", "input", "coil", "discrete_input")


def _sim_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {_short(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("expected a finite number") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _sim_whole(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {_short(value)}")
    return value


def _exception_code(value: Any) -> int:
    code = value
    if isinstance(code, str):
        try:
            code = int(code.strip(), 0)
        except ValueError:
            code = None
    if isinstance(code, bool) or code not in MODBUS_EXCEPTION_CODES:
        raise ValueError(f"expected an exception code, one of {list(MODBUS_EXCEPTION_CODES)}, got {_short(value)}")
    return int(code)


ADDRESS_SYNTAX = (
    "an input register number, or items 'table:first-last' such as 'input:10-11,holding:0' "
    "(table: holding, input, coil or discrete_input; default input), or a list of either"
)


def _address(text: str) -> int:
    text = text.strip()
    return int(text, 16) if text.lower().startswith("0x") else int(text)


def register_addresses(value: Any) -> frozenset[tuple[str, int]]:
    """Register addresses as ``{(table, address)}`` from ``"input:10-11,holding:0"`` (the form a
    site file's scalar params can hold), an int (an input register) or a list of either; the
    one parser of this syntax (the simulators' ``reject_addresses`` and ``reject`` fault)."""
    items: list[Any]
    if isinstance(value, bool):
        raise ValueError(f"expected {ADDRESS_SYNTAX}; got {value!r}")
    if isinstance(value, int):
        items = [value]
    elif isinstance(value, str):
        items = [p for p in value.replace(" ", ",").split(",") if p]
    elif isinstance(value, list | tuple | set | frozenset):
        items = list(value)
    else:
        raise ValueError(f"expected {ADDRESS_SYNTAX}; got {_short(value)}")
    out: set[tuple[str, int]] = set()
    for item in items:
        table, first, last = "input", item, item
        if isinstance(item, str):
            spec = item.strip()
            if ":" in spec:
                table, _, spec = spec.partition(":")
                table = table.strip()
            lo, sep, hi = spec.partition("-")
            try:
                first = _address(lo)
                last = _address(hi) if sep else first
            except ValueError:
                raise ValueError(f"{_short(item)} is not {ADDRESS_SYNTAX}") from None
            if table not in _TABLES:
                raise ValueError(f"unknown table {_short(table)} in {_short(item)}; expected one of {list(_TABLES)}")
        elif isinstance(item, bool) or not isinstance(item, int):
            raise ValueError(f"{_short(item)} is not {ADDRESS_SYNTAX}")
        if not 0 <= first <= last <= 0xFFFF:
            raise ValueError(f"{_short(item)} is not an address or range within 0..65535")
        out.update((table, a) for a in range(first, last + 1))
    if not out:
        raise ValueError(f"names no address; expected {ADDRESS_SYNTAX}")
    return frozenset(out)


def _reject_addresses(value: Any) -> Any:
    """Check addresses with ``register_addresses``; the value itself is kept as written."""
    register_addresses(value)
    return value


_Number = Annotated[float, BeforeValidator(_sim_number)]
_Positive = Annotated[float, BeforeValidator(_sim_number), Field(gt=0)]
_NotNegative = Annotated[float, BeforeValidator(_sim_number), Field(ge=0)]
_Count = Annotated[int, BeforeValidator(_sim_whole), Field(ge=0)]
RejectAddresses = Annotated[int | str | list[int | str], BeforeValidator(_reject_addresses)]


class SimulatorParams(_Model):
    """The params of a simulator model or of a fault. Only those the file gives are handed to
    simulators/ (``model_dump(exclude_defaults=True)``), which applies its own defaults."""


class EquipmentParams(SimulatorParams):
    # Registers the unit lacks (exception 0x02), e.g. "input:10-11,holding:0".
    reject_addresses: RejectAddresses | None = None


class ThermalParams(EquipmentParams):
    """medication_refrigerator, vaccine_freezer, blanket_warmer."""

    setpoint: _Number | None = None  # °C
    ambient: _Number | None = None  # °C
    hysteresis: _Positive | None = None  # °C
    door_per_hour: _NotNegative | None = None
    defrost_every_h: _NotNegative | None = None
    initial: _Number | None = None  # °C at start
    run_hours: _NotNegative | None = None  # at start


class PressureRoomParams(EquipmentParams):
    """negative_pressure_room."""

    setpoint: _Number | None = None  # Pa
    door_per_hour: _NotNegative | None = None


class OxygenPipelineParams(EquipmentParams):
    """oxygen_pipeline_monitor."""

    normal: _Positive | None = None  # psig


class GeneratorParams(EquipmentParams):
    """generator."""

    test_every_h: _Positive | None = None
    run_hours: _NotNegative | None = None
    fuel_pct: Annotated[float, BeforeValidator(_sim_number), Field(ge=0, le=100)] | None = None


class _PublisherParams(SimulatorParams):
    hold_s: _NotNegative | None = None  # a changed value must hold this long to be published
    heartbeat_s: _Positive | None = None
    first_publish_s: _NotNegative | None = None
    qos: Literal[0, 1] | None = None


class SmartShelfParams(_PublisherParams):
    """smart_shelf: ``item``, ``unit_weight_g``, ``capacity`` and ``par`` are required."""

    item: Annotated[str, Field(min_length=1)]
    unit_weight_g: _Positive
    capacity: Annotated[int, BeforeValidator(_sim_whole), Field(ge=1)]
    par: _Count
    tare_g: _NotNegative | None = None
    use_per_hour: _NotNegative | None = None
    initial: Annotated[int, BeforeValidator(_sim_whole), Field(ge=-1)] | None = None  # -1: random
    restock_at: _NotNegative | None = None  # restock when count < restock_at × par …
    restock_delay_min: _NotNegative | None = None  # … this many minutes later
    noise_g: _NotNegative | None = None
    piece_sd: _NotNegative | None = None
    smoothing: Annotated[float, BeforeValidator(_sim_number), Field(gt=0, le=1)] | None = None
    settle_s: _NotNegative | None = None  # after a take or restock the scale wobbles this long …
    settle_publish_s: _NotNegative | None = None  # … publishing unstable readings this often

    @model_validator(mode="after")
    def _check(self) -> SmartShelfParams:
        if self.par > self.capacity:
            raise ValueError(f"par ({self.par}) is more than capacity ({self.capacity})")
        return self


class RoomEnvironmentParams(_PublisherParams):
    """room_environment."""

    temperature_c_aim: _Number | None = None
    humidity_pct_aim: _Number | None = None


class DifferentialPressureParams(_PublisherParams):
    """differential_pressure."""

    pressure_pa_aim: _Number | None = None


class SimulatorSpec(_Model):
    """How `eqmon simulate` / `eqmon demo` stand in for this device: one of the models below,
    by ``model``."""

    model: str
    seed: int = 0
    params: SimulatorParams = SimulatorParams()

    def param_values(self) -> dict[str, Any]:
        """The params the file gives, validated, for simulators/."""
        return self.params.model_dump(exclude_defaults=True)


class ThermalSimulator(SimulatorSpec):
    model: ThermalModelName
    params: ThermalParams = ThermalParams()


class PressureRoomSimulator(SimulatorSpec):
    model: Literal["negative_pressure_room"]
    params: PressureRoomParams = PressureRoomParams()


class OxygenPipelineSimulator(SimulatorSpec):
    model: Literal["oxygen_pipeline_monitor"]
    params: OxygenPipelineParams = OxygenPipelineParams()


class GeneratorSimulator(SimulatorSpec):
    model: Literal["generator"]
    params: GeneratorParams = GeneratorParams()


class SmartShelfSimulator(SimulatorSpec):
    model: Literal["smart_shelf"]
    params: SmartShelfParams


class RoomEnvironmentSimulator(SimulatorSpec):
    model: Literal["room_environment"]
    params: RoomEnvironmentParams = RoomEnvironmentParams()


class DifferentialPressureSimulator(SimulatorSpec):
    model: Literal["differential_pressure"]
    params: DifferentialPressureParams = DifferentialPressureParams()


# A Modbus device takes an equipment model, an MQTT device a shelf or sensor model.
EquipmentSimulator = Annotated[
    ThermalSimulator | PressureRoomSimulator | OxygenPipelineSimulator | GeneratorSimulator,
    Field(discriminator="model"),
]
MqttSimulator = Annotated[
    SmartShelfSimulator | RoomEnvironmentSimulator | DifferentialPressureSimulator,
    Field(discriminator="model"),
]


class _DeviceBase(_Model):
    id: Identifier
    name: str = ""
    kind: Identifier  # equipment kind, e.g. medication_refrigerator; the Influx measurement
    location: str = ""
    simulator: SimulatorSpec | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.id


Framing = Literal["tcp", "rtu_over_tcp"]


class ModbusDevice(_DeviceBase):
    protocol: Literal["modbus"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    interval: Duration = 10.0
    timeout: Duration = 3.0  # read timeout: a request unanswered this long has failed
    connect_timeout: Duration | None = None  # default: timeout
    offline_after: int = Field(default=3, ge=1)  # consecutive missed polls before "offline"
    # Gateways (shared by every device on one host:port, so they must agree):
    framing: Framing = "tcp"  # rtu_over_tcp: raw serial RTU frames (with CRC) tunnelled in TCP
    pause: Duration = 0.0  # quiet time between two requests on the connection (slow serial buses)
    # Reads: at most ``retries`` more attempts after a timeout, reset or busy reply, waiting
    # ``backoff`` × 2^attempt (±50 % jitter) between them; a poll never outlasts its interval.
    retries: int = Field(default=1, ge=0, le=10)
    backoff: Duration = 0.2
    # After 0x01/0x02/0x03 (the device rejects the register map): poll again only this often.
    misconfigured_retry: Duration = 300.0
    max_gap: int = Field(default=8, ge=0, le=124)  # unused registers a merged read may span
    registers: list[Register] = Field(min_length=1)
    simulator: EquipmentSimulator | None = None

    @property
    def connect_timeout_s(self) -> float:
        return self.timeout if self.connect_timeout is None else self.connect_timeout

    @property
    def address(self) -> str:
        """Where the device is reached: ``host:port/unit_id`` (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.unit_id}"

    def metric_units(self) -> dict[str, str]:
        """Metric name → unit of every reading the device yields: each register's (an enum's
        too), and the named bits of status registers (no unit)."""
        units: dict[str, str] = {}
        for r in self.registers:
            units.setdefault(r.name, r.unit)
            for metric in r.bits.values():
                units.setdefault(metric, "")
        return units

    @model_validator(mode="after")
    def _check_timing(self) -> ModbusDevice:
        if self.interval <= 0:
            raise ValueError("interval must be more than 0 s")
        if self.timeout <= 0:
            raise ValueError("timeout must be more than 0 s")
        return self


UNIT_CONVERSIONS = ("degF_to_degC", "kPa_to_Pa", "psi_to_kPa", "inH2O_to_Pa", "mV_to_V", "g_to_kg", "lb_to_kg", "pct_to_ratio")
PayloadFormat = Literal["json", "number", "bool", "enum"]
_TEMPLATE_PART = re.compile(r"^\{([a-z_]+)\}$")


class MqttField(_Model):
    metric: Identifier
    path: str = ""  # dotted path into a JSON payload; empty: the metric's own name
    unit: str = ""
    scale: float = 1.0
    convert: Literal[UNIT_CONVERSIONS] | None = None  # type: ignore[valid-type]


class PayloadSpec(_Model):
    """How a message's payload becomes readings (shared by devices and broker mappings)."""

    payload: PayloadFormat = "json"
    # json: metric ← dotted path; number/bool/enum: one field (or the topic's {metric} part)
    fields: list[MqttField] = Field(default_factory=list)
    timestamp_path: str | None = "ts"  # JSON field holding the time of measurement, if present
    timestamp_unit: Literal["s", "ms", "us", "ns", "iso8601"] = "s"
    unknown_fields: Literal["ignore", "store", "reject"] = "ignore"  # json: fields not listed
    values: dict[str, float | int | bool | str] = Field(default_factory=dict)  # enum: text → value
    unit: str = ""  # number payloads with {metric} in the topic

    def _check_payload(self, topic: str | None) -> None:
        has_metric = topic is not None and "{metric}" in topic
        if self.payload == "json" and not self.fields and self.unknown_fields != "store":
            raise ValueError("a json payload needs fields (or unknown_fields: store)")
        if self.payload != "json" and not self.fields and not has_metric:
            raise ValueError(f"a {self.payload} payload needs one field or {{metric}} in the topic")
        if self.payload != "json" and len(self.fields) > 1:
            raise ValueError(f"a {self.payload} payload carries one value: give at most one field")
        if self.payload == "enum" and not self.values:
            raise ValueError("an enum payload needs values (text → value)")


def check_topic_template(topic: str, *, require: tuple[str, ...] = ()) -> list[str]:
    """Named parts of a topic template such as ``site/{room}/shelf/{device_id}/weight``."""
    names: list[str] = []
    levels = topic.split("/")
    for i, level in enumerate(levels):
        m = _TEMPLATE_PART.match(level)
        if m:
            names.append(m.group(1))
        elif "{" in level or "}" in level:
            raise ValueError(f"topic level {level!r}: a named part fills a whole level, like {{device_id}}")
        elif level == "#" and i != len(levels) - 1:
            raise ValueError("'#' may only be the last topic level")
        elif ("#" in level or "+" in level) and level not in ("#", "+"):
            raise ValueError(f"topic level {level!r}: wildcards fill a whole level")
    if len(set(names)) != len(names):
        raise ValueError("a named part appears twice in the topic")
    for r in require:
        if r not in names:
            raise ValueError(f"the topic needs a {{{r}}} part")
    return names


class MqttMapping(PayloadSpec):
    """Messages on a topic template routed to devices by the template's {device_id} part."""

    topic: str

    @model_validator(mode="after")
    def _check(self) -> MqttMapping:
        check_topic_template(self.topic, require=("device_id",))
        self._check_payload(self.topic)
        return self


class MqttDevice(_DeviceBase, PayloadSpec):
    protocol: Literal["mqtt"]
    # The device's topic; may hold {metric} and wildcards. Omit it when a broker mapping
    # (mqtt.mappings) routes this device's messages.
    topic: str | None = None
    stale_after: Duration = 3600.0
    simulator: MqttSimulator | None = None
    # Without a topic: the site's mappings, which route this device's messages (set by Site).
    _mappings: tuple[MqttMapping, ...] = PrivateAttr(default=())

    @property
    def address(self) -> str:
        """Where the device is heard: its topic, or the broker mappings that route it with its
        id in their {device_id} part (``site/{room}/env/room-3/{metric}``), comma-separated."""
        if self.topic is not None:
            return self.topic
        routes = [m.topic.replace("{device_id}", self.id) for m in self._mappings]
        return ", ".join(routes) if routes else "(mqtt.mappings)"

    def metric_units(self) -> dict[str, str]:
        """Metric name → unit of the fields its messages carry: the device's own, or, routed by
        broker mappings, the mappings'. (A ``{metric}`` topic without fields names its metrics
        only in the topic: ``unit`` applies to each of them.)"""
        specs: list[PayloadSpec] = [self] if self.topic is not None or not self._mappings else list(self._mappings)
        units: dict[str, str] = {}
        for spec in specs:
            for f in spec.fields:
                units.setdefault(f.metric, f.unit)
        return units

    @model_validator(mode="after")
    def _check(self) -> MqttDevice:
        if self.topic is not None:
            names = check_topic_template(self.topic)
            if set(names) - {"metric"}:
                raise ValueError("a device topic may only name {metric}; use mqtt.mappings for more")
            self._check_payload(self.topic)
        return self


class MqttTls(_Model):
    ca_file: str | None = None  # None: the system's trusted CAs
    cert_file: str | None = None  # client certificate, for brokers that require one
    key_file: str | None = None
    key_password_env: str | None = None
    insecure: bool = False  # skip host-name verification (test benches only)

    def key_password(self) -> str | None:
        return os.environ.get(self.key_password_env) if self.key_password_env else None


Device = Annotated[ModbusDevice | MqttDevice, Field(discriminator="protocol")]


# ---------------------------------------------------------------------------------------------
# Infrastructure


class MqttBroker(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    # A stable client id: the broker keeps this session (and its queued messages) across
    # restarts of eqmon. Each eqmon instance needs its own.
    client_id: str = "eqmon"
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    session_expiry: Duration = 7 * 86400.0  # MQTT 5: how long the broker keeps the session
    username: str | None = None
    password_env: str | None = None
    tls: MqttTls | None = None
    qos: Literal[0, 1] = 1
    keepalive: int = Field(default=30, ge=5)
    reconnect_max: Duration = 30.0  # cap of the reconnect backoff
    shared_group: Identifier | None = None  # subscribe as $share/<group>/… to split the stream
    status_topic: str | None = None  # e.g. eqmon/status/{device_id}: payload online/offline
    max_payload_bytes: int = Field(default=65536, ge=64)
    dead_letters: int = Field(default=1000, ge=0)  # bad messages kept for inspection
    mappings: list[MqttMapping] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> MqttBroker:
        if self.status_topic is not None:
            check_topic_template(self.status_topic, require=("device_id",))
        return self

    def password(self) -> str | None:
        return os.environ.get(self.password_env, "") if self.password_env else None


_DB_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")


class Database(_Model):
    """The state database (eqmon/db/): alerts and their history, silences, the notification
    outbox, the audit log — everything eqmon keeps that is not telemetry.

    ``url``: ``sqlite:///state.sqlite`` (a relative path is under the data directory; the default,
    ``None``, is ``state.sqlite`` there) or ``postgresql+psycopg://user@host:5432/eqmon``
    (``postgresql://`` means the same: psycopg 3). The password never lives in the file: it is
    read from the environment variable ``password_env``."""

    url: str | None = None
    echo: bool = False  # log every SQL statement (debugging)
    password_env: str | None = None
    pool_size: int = Field(default=5, ge=1, le=100)  # PostgreSQL connections kept open

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        if url is None:
            return url
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in _DB_SCHEMES:
            raise ValueError(
                "expected sqlite:///FILE or postgresql+psycopg://USER@HOST:PORT/DATABASE"
                f", not {_short(scheme if sep else url)}"
            )
        if scheme == "sqlite":
            path = rest[1:] if rest.startswith("/") else None
            if path is None or path in ("", ":memory:") or "?" in path:
                raise ValueError(
                    "sqlite needs a file: sqlite:///state.sqlite (relative to the data directory) "
                    "or sqlite:////absolute/path"
                )
            return url
        netloc = rest.split("/", 1)[0]
        if ":" in netloc.rpartition("@")[0]:
            raise ValueError(
                "the password never lives in the site file: leave it out of the URL and name the "
                "environment variable that holds it in database.password_env"
            )
        if not rest.partition("/")[2].split("?")[0]:
            raise ValueError("name the database: postgresql+psycopg://USER@HOST:PORT/DATABASE")
        return url

    @model_validator(mode="after")
    def _check(self) -> Database:
        if self.password_env is not None and (self.url is None or self.url.startswith("sqlite:")):
            raise ValueError("password_env: a SQLite database has no password")
        return self

    def password(self) -> str | None:
        """The password from ``password_env``; None without one. A variable named but not set is
        an error (start-up stops rather than trying without)."""
        if self.password_env is None:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise ValueError(f"database.password_env: the environment variable {self.password_env} is not set")
        return value


class EmbeddedStore(_Model):
    path: str = "telemetry.sqlite"  # relative to the data directory
    retention: Duration = 30 * 86400.0  # raw readings
    rollup_retention: Duration = 2 * 365 * 86400.0  # 1-minute and 1-hour rollups


class InfluxDB(_Model):
    url: str
    org: str
    bucket: str
    token_env: str = "INFLUXDB_TOKEN"
    batch_size: int = Field(default=5000, ge=1)
    flush_interval: Duration = 1.0
    timeout: Duration = 10.0

    def token(self) -> str:
        return os.environ.get(self.token_env, "")


# Readings per second assumed for an MQTT device (its rate is not configured) when sizing the
# spool: one message every 10 s.
MQTT_ASSUMED_INTERVAL = 10.0
SPOOL_MIN_READINGS = 100_000


class Spool(_Model):
    """The durable spool between collectors and sinks (collectors/spool.py)."""

    path: str = "spool.sqlite"  # relative to the data directory
    # Bound in readings (about 100 bytes each on disk). Default: 24 h of the site's rate
    # (Modbus registers / interval, MQTT fields every 10 s), at least 100,000.
    max_readings: int | None = Field(default=None, ge=1)
    # reject: accept() raises SpoolFull (MQTT is not acknowledged, Modbus readings are counted as
    # lost); drop_oldest: the oldest spooled readings are deleted, counted and logged.
    full_policy: Literal["reject", "drop_oldest"] = "reject"
    warn_at: float = Field(default=0.8, gt=0, le=1)  # fill level raising a warning alert

    def capacity(self, site: Site) -> int:
        if self.max_readings is not None:
            return self.max_readings
        rate = 0.0
        for d in site.devices:
            if isinstance(d, ModbusDevice):
                rate += len(d.registers) / max(d.interval, 0.001)
            else:
                rate += max(len(d.fields), 1) / MQTT_ASSUMED_INTERVAL
        return max(SPOOL_MIN_READINGS, int(rate * 86400))


class Telemetry(_Model):
    embedded: EmbeddedStore | None = EmbeddedStore()
    influxdb: InfluxDB | None = None
    spool: Spool = Spool()
    self_metrics_interval: Duration = 60.0  # eqmon_internal points to the sinks; 0: never


class _RuleBase(_Model):
    """What every rule has: an id, the devices it watches (by id or by kind), the metric, how
    bad (severity) and what to do (action, shown in the alert line)."""

    id: Identifier
    metric: Identifier
    devices: list[Identifier] = Field(default_factory=list)  # explicit device ids …
    device_kind: Identifier | None = None  # … or every device of one kind
    severity: Literal["info", "warning", "critical"] = "warning"
    action: str = ""  # what the coordinator should do, shown in the alert line

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def _check_targets(self) -> None:
        if not self.devices and self.device_kind is None:
            raise ValueError("a rule needs devices or device_kind")


def _above_low(high: float | None, info: ValidationInfo) -> float | None:
    low = info.data.get("low")
    if high is not None and low is not None and high <= low:
        raise ValueError(f"high ({high:g}) must be above low ({low:g})")
    return high


class ThresholdRule(_RuleBase):
    """Raise when a metric stays beyond a limit for ``for``; resolve when back inside."""

    kind: Literal["threshold"]
    above: float | None = None
    below: float | None = None
    for_: Duration = Field(default=0.0, alias="for")
    hysteresis: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> ThresholdRule:
        if self.above is None and self.below is None:
            raise ValueError("a threshold rule needs above, below or both")
        self._check_targets()
        return self


class RangeRule(_RuleBase):
    """A healthy range: too cold (below ``low`` for ``low_for``) or too warm (above ``high`` for
    ``high_for``), one alert per device; resolved back inside by ``hysteresis``."""

    kind: Literal["range"]
    low: float | None = None
    high: float | None = None
    low_for: Duration = 0.0
    high_for: Duration = 0.0
    hysteresis: float = Field(default=0.0, ge=0)

    @field_validator("high")
    @classmethod
    def _check_high(cls, v: float | None, info: ValidationInfo) -> float | None:
        return _above_low(v, info)

    @field_validator("low_for")
    @classmethod
    def _low_for_needs_low(cls, v: float, info: ValidationInfo) -> float:
        if v and info.data.get("low") is None:
            raise ValueError("low_for without low")
        return v

    @field_validator("high_for")
    @classmethod
    def _high_for_needs_high(cls, v: float, info: ValidationInfo) -> float:
        if v and info.data.get("high") is None:
            raise ValueError("high_for without high")
        return v

    @field_validator("hysteresis")
    @classmethod
    def _hysteresis_inside(cls, v: float, info: ValidationInfo) -> float:
        low, high = info.data.get("low"), info.data.get("high")
        if low is not None and high is not None and v >= high - low:
            raise ValueError(f"hysteresis ({v:g}) must be smaller than high − low ({high - low:g}), or nothing resolves")
        return v

    @model_validator(mode="after")
    def _check(self) -> RangeRule:
        if self.low is None and self.high is None:
            raise ValueError("a range rule needs low, high or both")
        self._check_targets()
        return self


class CumulativeExcursionRule(_RuleBase):
    """Raise when the time out of range (below ``low`` or above ``high``) adds up to ``limit``
    within the last ``window`` (e.g. 60 min within 24 h: a reportable excursion)."""

    kind: Literal["cumulative_excursion"]
    low: float | None = None
    high: float | None = None
    window: Duration = 86400.0
    limit: Duration

    @field_validator("high")
    @classmethod
    def _check_high(cls, v: float | None, info: ValidationInfo) -> float | None:
        return _above_low(v, info)

    @field_validator("window")
    @classmethod
    def _window_positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("window must be longer than 0 s")
        return v

    @field_validator("limit")
    @classmethod
    def _limit_within_window(cls, v: float, info: ValidationInfo) -> float:
        window = info.data.get("window")
        if v <= 0:
            raise ValueError("limit must be longer than 0 s")
        if window is not None and v > window:
            raise ValueError(f"limit ({v:g} s) is longer than the window ({window:g} s): it could never be reached")
        return v

    @model_validator(mode="after")
    def _check(self) -> CumulativeExcursionRule:
        if self.low is None and self.high is None:
            raise ValueError("a cumulative_excursion rule needs low, high or both")
        self._check_targets()
        return self


class RateOfChangeRule(_RuleBase):
    """Raise when the metric moves more than ``max_change`` within ``per`` (e.g. 2 °C in
    10 min), upward (``rise``), downward (``fall``) or ``either``."""

    kind: Literal["rate_of_change"]
    max_change: float = Field(gt=0)
    per: Duration
    direction: Literal["rise", "fall", "either"] = "either"

    @field_validator("per")
    @classmethod
    def _per_positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("per must be longer than 0 s")
        return v

    @model_validator(mode="after")
    def _check(self) -> RateOfChangeRule:
        self._check_targets()
        return self


class StuckRule(_RuleBase):
    """Raise when the metric has not changed by more than ``tolerance`` for ``for`` while the
    device answers: a frozen sensor."""

    kind: Literal["stuck"]
    for_: Duration = Field(alias="for")
    tolerance: float = Field(default=0.0, ge=0)

    @field_validator("for_")
    @classmethod
    def _for_positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("a stuck rule needs for longer than 0 s")
        return v

    @model_validator(mode="after")
    def _check(self) -> StuckRule:
        self._check_targets()
        return self


StateValue = StrictBool | StrictInt | StrictFloat | StrictStr


class StateRule(_RuleBase):
    """Raise when a boolean or enum metric equals ``equals`` (or is one of ``in``) for ``for``
    (0: at once), e.g. a door open for 20 min, a compressor fault, a generator running on load."""

    kind: Literal["state"]
    equals: StateValue | None = None
    in_: list[StateValue] | None = Field(default=None, alias="in", min_length=1)
    for_: Duration = Field(default=0.0, alias="for")

    @field_validator("in_")
    @classmethod
    def _not_both(cls, v: list[StateValue] | None, info: ValidationInfo) -> list[StateValue] | None:
        if v is not None and info.data.get("equals") is not None:
            raise ValueError("give equals or in, not both")
        return v

    @model_validator(mode="after")
    def _check(self) -> StateRule:
        if self.equals is None and self.in_ is None:
            raise ValueError("a state rule needs equals or in")
        self._check_targets()
        return self

    @property
    def values(self) -> list[StateValue]:
        return [self.equals] if self.equals is not None else list(self.in_ or [])


class SensorFailureRule(_RuleBase):
    """Raise when the device reports the metric as invalid (quality bad: a sentinel value) for
    ``for``; resolved by a good reading."""

    kind: Literal["sensor_failure"]
    for_: Duration = Field(default=0.0, alias="for")

    @model_validator(mode="after")
    def _check(self) -> SensorFailureRule:
        self._check_targets()
        return self


AnyRule = (
    ThresholdRule | RangeRule | CumulativeExcursionRule | RateOfChangeRule | StuckRule | StateRule | SensorFailureRule
)
AlertRule = Annotated[AnyRule, Field(discriminator="kind")]
RULE_KINDS = ("threshold", "range", "cumulative_excursion", "rate_of_change", "stuck", "state", "sensor_failure")


class Alerts(_Model):
    rules: list[AlertRule] = Field(default_factory=list)
    # How long a device that stopped answering waits for the others behind its gateway, its
    # MQTT broker or in its location before it raises its own "device offline" alert: if they
    # all go quiet, one incident is raised for them instead (alerts/incidents.py). Devices
    # that share nothing with another device raise at once.
    incident_wait: Duration = 60.0


class Contact(_Model):
    """A person or desk. The addresses say where the notification channels reach them: ``email``
    (email channels), ``webhook`` (an https URL: webhook channels), ``mqtt_topic`` (mqtt
    channels, e.g. a pager or nurse-call gateway's topic)."""

    name: str = Field(min_length=1, max_length=200)
    role: str = "coordinator"
    email: str | None = None
    phone: str | None = None
    webhook: str | None = None
    mqtt_topic: str | None = None

    @field_validator("email")
    @classmethod
    def _check_email(cls, v: str | None) -> str | None:
        return None if v is None else check_email_address(v)

    @field_validator("webhook")
    @classmethod
    def _check_webhook(cls, v: str | None) -> str | None:
        return None if v is None else check_http_url(v)

    @field_validator("mqtt_topic")
    @classmethod
    def _check_topic(cls, v: str | None) -> str | None:
        return None if v is None else check_publish_topic(v)

    def address(self, channel_type: str) -> str | None:
        """Where a channel of that type reaches this contact (None: it does not)."""
        return {"email": self.email, "webhook": self.webhook, "mqtt": self.mqtt_topic}.get(channel_type)


# ---------------------------------------------------------------------------------------------
# Notifications (alerts/notify/): channels, and routes from alerts to contacts and channels

_EMAIL = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")


def check_email_address(v: str) -> str:
    if len(v) > 254 or not _EMAIL.match(v):
        raise ValueError(f"expected an e-mail address such as name@example.org, got {_short(v)}")
    return v


def check_http_url(v: str) -> str:
    scheme, sep, rest = v.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or any(c.isspace() for c in v) or len(v) > 2000:
        raise ValueError(f"expected an http:// or https:// URL, got {_short(v)}")
    return v


def check_publish_topic(v: str) -> str:
    if not v or "+" in v or "#" in v or "\0" in v or len(v.encode("utf-8")) > 1024:
        raise ValueError(f"expected an MQTT topic to publish to (no wildcards), got {_short(v)}")
    return v


ChannelId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=32)]
SeverityName = Literal["info", "warning", "critical"]


class _ChannelBase(_Model):
    id: ChannelId
    timeout: Duration = 10.0  # one delivery attempt (connect, send, answer)


class EmailChannel(_ChannelBase):
    """E-mail over SMTP (smtplib): STARTTLS and login supported; the password is read from the
    environment variable ``password_env``. ``to``: addresses for routes naming this channel."""

    type: Literal["email"]
    host: str
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    ca_file: str | None = None  # the CA that signs the server's certificate (None: the system's)
    username: str | None = None
    password_env: str | None = None
    from_: str = Field(alias="from")
    to: list[str] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("from_")
    @classmethod
    def _check_from(cls, v: str) -> str:
        return check_email_address(v)

    @field_validator("to")
    @classmethod
    def _check_to(cls, v: list[str]) -> list[str]:
        return [check_email_address(a) for a in v]

    @model_validator(mode="after")
    def _check(self) -> EmailChannel:
        if self.password_env is not None and self.username is None:
            raise ValueError("password_env needs a username")
        return self

    def password(self) -> str | None:
        """From ``password_env``; a variable named but not set is an error when sending."""
        if self.password_env is None:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise ValueError(f"the environment variable {self.password_env} (password_env) is not set")
        return value


class WebhookChannel(_ChannelBase):
    """An HTTP POST of the ``eqmon.alert.v1`` JSON document, signed with HMAC-SHA256 by the
    secret in the environment variable ``secret_env`` (header ``X-Eqmon-Signature``)."""

    type: Literal["webhook"]
    url: str | None = None  # for routes naming this channel; contacts have their own
    secret_env: str | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        return None if v is None else check_http_url(v)

    def secret(self) -> bytes | None:
        if self.secret_env is None:
            return None
        value = os.environ.get(self.secret_env)
        if value is None:
            raise ValueError(f"the environment variable {self.secret_env} (secret_env) is not set")
        return value.encode("utf-8")


class MqttChannel(_ChannelBase):
    """A JSON message (the webhook's document) published to an MQTT topic on the site's broker
    (``mqtt:``), for pager and nurse-call gateways; sent once the broker acknowledged it."""

    type: Literal["mqtt"]
    topic: str | None = None  # for routes naming this channel; contacts have their own
    qos: Literal[0, 1] = 1
    retain: bool = False

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, v: str | None) -> str | None:
        return None if v is None else check_publish_topic(v)


class LogChannel(_ChannelBase):
    """One log line per notification (the console of `eqmon run` and `eqmon demo`)."""

    type: Literal["log"]


Channel = Annotated[EmailChannel | WebhookChannel | MqttChannel | LogChannel, Field(discriminator="type")]
CHANNEL_TYPES = ("email", "webhook", "mqtt", "log")


# Rotas: who is on shift, in the site's time zone (alerts/notify/rota.py finds the shifts in force).

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)  # in the order of date.weekday()
_TIME_OF_DAY = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")
MINUTES_PER_DAY = 24 * 60


class YamlBase60Int(int):
    """An int that YAML 1.1 read in base 60: an unquoted ``19:00`` is 1140 (``07:00``, with its
    leading zero, stays text). The loader keeps what was written, so a time of day reads the
    same quoted or not."""

    text: str

    def __new__(cls, value: int, text: str) -> YamlBase60Int:
        self = super().__new__(cls, value)
        self.text = text
        return self


def parse_time_of_day(value: Any, *, end: bool = False) -> int:
    """Minutes after midnight from ``"HH:MM"`` (``"07:00"`` → 420); ``"24:00"`` only as an
    end (1440: the end of the day)."""
    text = value.text if isinstance(value, YamlBase60Int) else value
    if isinstance(text, str):
        m = _TIME_OF_DAY.match(text.strip())
        if m:
            return int(m.group(1)) * 60 + int(m.group(2))
        if end and text.strip() == "24:00":
            return MINUTES_PER_DAY
    allowed = "00:00–24:00" if end else "00:00–23:59"
    raise ValueError(f'expected a time of day "HH:MM" ({allowed}) such as "07:00", got {_short(text)}')


def format_time_of_day(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _end_of_shift(value: Any) -> int:
    return parse_time_of_day(value, end=True)


ShiftStart = Annotated[int, BeforeValidator(parse_time_of_day)]
ShiftEnd = Annotated[int, BeforeValidator(_end_of_shift)]


class Shift(_Model):
    """Who is on duty on these ``days`` from ``from`` to ``to`` (local wall-clock time of the
    site's time zone), in escalation order. ``to`` at or before ``from`` runs past midnight into
    the next day (``from == to``: 24 hours); a shift belongs to the day it starts on."""

    name: str = Field(min_length=1, max_length=64)
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    from_: ShiftStart = Field(alias="from")
    to: ShiftEnd
    contacts: list[str] = Field(min_length=1)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def overnight(self) -> bool:
        """Ends on the next day (``to`` at or before ``from``)."""
        return self.to <= self.from_

    def spans(self) -> list[tuple[int, int, int]]:
        """(weekday, first minute, end minute) of wall-clock time it covers, per weekday
        (0 = mon), an overnight shift's morning on the next weekday."""
        out = []
        for day in sorted({WEEKDAYS.index(d) for d in self.days}):
            if self.overnight:
                out += [(day, self.from_, MINUTES_PER_DAY), ((day + 1) % 7, 0, self.to)]
            else:
                out.append((day, self.from_, self.to))
        return [s for s in out if s[1] < s[2]]


class Rota(_Model):
    """Shifts of contacts that routes name with ``rota:``; ``default``: who is called when no
    shift is in force (without it, nobody from the rota: ``eqmon check-config`` warns)."""

    id: Identifier
    shifts: list[Shift] = Field(min_length=1)
    default: list[str] | None = Field(default=None, min_length=1)

    def contact_names(self) -> list[str]:
        """Everyone the rota can call, once each, in the order of the file."""
        names = [n for s in self.shifts for n in s.contacts] + list(self.default or [])
        return list(dict.fromkeys(names))

    def uncovered(self) -> list[tuple[int, int, int]]:
        """(weekday, first minute, end minute) of wall-clock time no shift covers."""
        gaps = []
        for day in range(7):
            covered = sorted((a, b) for d, a, b in (s for sh in self.shifts for s in sh.spans()) if d == day)
            at = 0
            for a, b in covered:
                if a > at:
                    gaps.append((day, at, a))
                at = max(at, b)
            if at < MINUTES_PER_DAY:
                gaps.append((day, at, MINUTES_PER_DAY))
        return gaps


_DEFAULT_ROUTE_SEVERITY: list[SeverityName] = ["critical", "warning"]


class Route(_Model):
    """Alerts of these severities (and locations: all when absent) go to these contacts (on
    every channel the contact has an address for, or only ``via`` those channels) and to these
    channels (their own address). With ``escalate_after``, the contacts are called in turn:
    the first at once, the next when the alert is still unacknowledged that much later.
    ``rota``: the contacts of the shift in force come first, then ``contacts``
    (alerts/notify/routing.py)."""

    severity: list[SeverityName] = Field(default_factory=lambda: _DEFAULT_ROUTE_SEVERITY.copy(), min_length=1)
    locations: list[str] | None = None
    rota: str | None = None
    contacts: list[str] = Field(default_factory=list)
    channels: list[ChannelId] = Field(default_factory=list)
    via: list[ChannelId] | None = None
    escalate_after: Duration | None = None
    resolved: bool = True  # send a notice when the alert resolves

    @model_validator(mode="after")
    def _check(self) -> Route:
        if not self.contacts and not self.channels and self.rota is None:
            raise ValueError("a route needs contacts, a rota or channels")
        if self.escalate_after is not None and self.escalate_after <= 0:
            raise ValueError("escalate_after: expected a duration above 0")
        return self


class NotificationRetry(_Model):
    """Delivery attempts: capped, jittered exponential backoff; a permanent refusal (an e-mail
    address refused, HTTP 4xx other than 408/429) fails after ``permanent_attempts``; anything
    not delivered after ``expire_after`` is given up."""

    initial: Duration = 5.0
    max: Duration = 300.0
    permanent_attempts: int = Field(default=3, ge=1)
    expire_after: Duration = 86400.0

    @model_validator(mode="after")
    def _check(self) -> NotificationRetry:
        if self.initial <= 0 or self.max < self.initial:
            raise ValueError("expected 0 < initial <= max")
        return self


class StormLimit(_Model):
    """More than ``max_alerts`` raised within ``window``: the rest of that window become one
    digest per recipient, sent when the window ends."""

    max_alerts: int = Field(default=10, ge=1)
    window: Duration = 60.0


class Notifications(_Model):
    channels: list[Channel] = Field(default_factory=list)
    rotas: list[Rota] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    # Sent again while unacknowledged, every so often by severity (absent: never).
    repeat: dict[SeverityName, Duration] = Field(default_factory=dict)
    retry: NotificationRetry = NotificationRetry()
    storm: StormLimit | None = None
    poll_interval: Duration = 1.0  # how often the dispatcher looks for due rows

    @field_validator("repeat")
    @classmethod
    def _check_repeat(cls, v: dict[str, float]) -> dict[str, float]:
        for sev, every in v.items():
            if every <= 0:
                raise ValueError(f"repeat.{sev}: expected a duration above 0")
        return v

    def channel(self, channel_id: str) -> EmailChannel | WebhookChannel | MqttChannel | LogChannel:
        for c in self.channels:
            if c.id == channel_id:
                return c
        raise KeyError(channel_id)

    def rota(self, rota_id: str) -> Rota:
        for r in self.rotas:
            if r.id == rota_id:
                return r
        raise KeyError(rota_id)


# Without a `notifications:` section: every alert change is one log line (as before the outbox).
DEFAULT_NOTIFICATIONS = Notifications(
    channels=[LogChannel(id="log", type="log")],
    routes=[Route(severity=["critical", "warning", "info"], channels=["log"])],
)


class Api(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


# Scenario steps: a fault by name, with the params that fault takes.


class DriftParams(SimulatorParams):
    metric: Identifier | None = None  # default: the model's main metric
    target: _Number
    rate_per_min: _Positive | None = None


class FaultBitParams(SimulatorParams):
    bit: Annotated[int, BeforeValidator(_sim_whole), Field(ge=0, le=15)] | None = None


class DoorOpenParams(SimulatorParams):
    minutes: _Positive | None = None  # default: open until clear


class ExceptionParams(SimulatorParams):
    code: Annotated[int, BeforeValidator(_exception_code)] | None = None  # default 4


class SlowParams(SimulatorParams):
    delay_s: _NotNegative | None = None


class RebootParams(SimulatorParams):
    down_s: _NotNegative | None = None


class RejectParams(SimulatorParams):
    addresses: RejectAddresses


class BurstParams(SimulatorParams):
    factor: Annotated[float, BeforeValidator(_sim_number), Field(ge=1)] | None = None


class RestockParams(SimulatorParams):
    count: _Count | None = None  # default: par


class CountParams(SimulatorParams):
    count: _Count


class ForeignParams(SimulatorParams):
    weight_g: _Positive | None = None  # default: 2.5 pieces' weight


class ScenarioStep(_Model):
    """A fault injected into a simulated device at a time after start: one of the steps below,
    by ``fault``."""

    at: Duration
    device: Identifier
    fault: str
    params: SimulatorParams = SimulatorParams()

    def param_values(self) -> dict[str, Any]:
        """The params the file gives, validated, for simulators/."""
        return self.params.model_dump(exclude_defaults=True)


class PlainFaultStep(ScenarioStep):
    fault: PlainFaultName  # no params


class DriftStep(ScenarioStep):
    fault: Literal["drift"]
    params: DriftParams


class FaultBitStep(ScenarioStep):
    fault: Literal["fault_bit"]
    params: FaultBitParams = FaultBitParams()


class DoorOpenStep(ScenarioStep):
    fault: Literal["door_open"]
    params: DoorOpenParams = DoorOpenParams()


class ExceptionStep(ScenarioStep):
    fault: Literal["exception"]
    params: ExceptionParams = ExceptionParams()


class SlowStep(ScenarioStep):
    fault: Literal["slow"]
    params: SlowParams = SlowParams()


class RebootStep(ScenarioStep):
    fault: Literal["reboot"]
    params: RebootParams = RebootParams()


class RejectStep(ScenarioStep):
    fault: Literal["reject"]
    params: RejectParams


class BurstStep(ScenarioStep):
    fault: Literal["burst"]
    params: BurstParams = BurstParams()


class RestockStep(ScenarioStep):
    fault: Literal["restock"]
    params: RestockParams = RestockParams()


class CountStep(ScenarioStep):
    fault: Literal["take", "set_count"]
    params: CountParams


class ForeignStep(ScenarioStep):
    fault: Literal["foreign"]
    params: ForeignParams = ForeignParams()


AnyScenarioStep = Annotated[
    PlainFaultStep | DriftStep | FaultBitStep | DoorOpenStep | ExceptionStep | SlowStep | RebootStep
    | RejectStep | BurstStep | RestockStep | CountStep | ForeignStep,
    Field(discriminator="fault"),
]
SCENARIO_FAULTS: tuple[str, ...] = (
    *get_args(PlainFaultName), "drift", "fault_bit", "door_open", "exception", "slow", "reboot", REJECT_FAULT,
    "burst", "restock", "take", "set_count", "foreign",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Inventory (`inventory:`): supply items, locations (a tree), bins (the par settings of one item
# at one location, its tare and smart shelf), declared here and/or in CSV files (`import:`).
# inventory/setup.py puts them into the state database; docs/inventory.md.

LocationKind = Literal["building", "floor", "room", "shelf", "bin"]
INVENTORY_LOCATION_KINDS: tuple[LocationKind, ...] = get_args(LocationKind)  # coarse to fine
LOCATION_SEPARATOR = "/"  # a location path: Main building/Floor 4/Ward 4B supply room
SHELF_DEVICE_KIND = "smart_shelf"  # the device kind of a smart shelf (an MQTT device)
MAX_LEAD_TIME_S = 365 * 86400.0


def _sku(value: Any) -> Any:
    if isinstance(value, str) and (not value or any(c.isspace() for c in value)):
        raise ValueError(f"expected a SKU without spaces, got {_short(value)}")
    return value


def _location_name(value: Any) -> Any:
    if isinstance(value, str):
        if LOCATION_SEPARATOR in value:
            raise ValueError(f"a location's name may not hold {LOCATION_SEPARATOR!r}, which separates the levels of a location path: got {_short(value)}")
        if value != value.strip() or not value:
            raise ValueError(f"expected a name without leading or trailing spaces, got {_short(value)}")
    return value


def _lead_time(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds > MAX_LEAD_TIME_S:
        raise ValueError(f"expected a lead time of at most 365 days, got {_short(value)}")
    return seconds


Sku = Annotated[str, BeforeValidator(_sku), Field(max_length=64)]
LocationName = Annotated[str, BeforeValidator(_location_name), Field(max_length=200)]
_Grams = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class InventoryItem(_Model):
    """A supply item: quantities are whole ``unit``s; a pack (``pack_size`` units) is what is
    ordered and brought; ``unit_weight_g`` lets a smart shelf count it (None: not weighed)."""

    sku: Sku
    name: Annotated[str, Field(min_length=1)]
    category: Annotated[str, Field(max_length=100)] = ""
    unit: Annotated[str, Field(min_length=1, max_length=32)] = "each"
    pack_size: Annotated[int, Field(ge=1)] = 1
    unit_weight_g: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    critical: bool = False  # its stock alerts may be critical (out of stock, out within the lead time)
    # Where it was declared when not in the site file itself: (CSV file, line).
    _source: tuple[str, int] | None = PrivateAttr(default=None)


class InventoryLocation(_Model):
    """A place stock is kept, and the places inside it (``children``): building > floor >
    room > shelf > bin, each child finer than its parent (a level may be skipped)."""

    name: LocationName
    kind: LocationKind
    children: list[InventoryLocation] = Field(default_factory=list)


class InventoryLocationRow(_Model):
    """A location as one row of a locations CSV file: its whole ``path`` from the root, and its kind."""

    path: Annotated[str, Field(min_length=1)]
    kind: LocationKind
    _source: tuple[str, int] | None = PrivateAttr(default=None)

    @field_validator("path")
    @classmethod
    def _check_path(cls, v: str) -> str:
        return LOCATION_SEPARATOR.join(split_location_path(v))

    @property
    def parts(self) -> tuple[str, ...]:
        return split_location_path(self.path)


def split_location_path(text: str) -> tuple[str, ...]:
    """``"Main/Floor 4/ Ward 4B supply room"`` -> its names, coarse to fine (spaces around each
    name dropped; a leading ``/`` is allowed: a path from the root). ValueError for an empty name."""
    body = text.strip()
    body = body[1:] if body.startswith(LOCATION_SEPARATOR) else body
    parts = tuple(p.strip() for p in body.split(LOCATION_SEPARATOR))
    if not body or any(not p for p in parts):
        raise ValueError(f"expected a location path such as Main building/Floor 4/Ward 4B supply room, got {_short(text)}")
    for p in parts:
        _location_name(p)
    return parts


def format_location_path(parts: tuple[str, ...]) -> str:
    return LOCATION_SEPARATOR.join(parts)


class InventoryBin(_Model):
    """The par settings of one item at one location: ``min`` <= ``reorder_point`` <= ``par``
    (the maximum, what a restock fills up to); ``reorder_qty`` (0: up to par) and ``lead_time``
    (how long a reorder takes to arrive); ``tare_g`` (the empty bin's weight) and ``shelf`` (the
    id of the smart shelf, an MQTT device of kind smart_shelf, that weighs it)."""

    item: Sku  # the item's SKU
    location: Annotated[str, Field(min_length=1)]  # its path, or the end of it that names one location
    min: Annotated[int, Field(ge=0)] = 0
    reorder_point: Annotated[int, Field(ge=0)] = 0
    par: Annotated[int, Field(ge=0)]
    reorder_qty: Annotated[int, Field(ge=0)] = 0
    lead_time: Annotated[float, BeforeValidator(_lead_time)] = 0.0
    tare_g: _Grams = 0.0
    shelf: Identifier | None = None
    _source: tuple[str, int] | None = PrivateAttr(default=None)

    @field_validator("location")
    @classmethod
    def _check_location(cls, v: str) -> str:
        prefix = LOCATION_SEPARATOR if v.strip().startswith(LOCATION_SEPARATOR) else ""
        return prefix + LOCATION_SEPARATOR.join(split_location_path(v))

    @field_validator("reorder_point")
    @classmethod
    def _above_min(cls, v: int, info: ValidationInfo) -> int:
        low = info.data.get("min")
        if low is not None and v < low:
            raise ValueError(f"reorder_point ({v}) is below min ({low}): need min <= reorder_point <= par")
        return v

    @field_validator("par")
    @classmethod
    def _above_reorder_point(cls, v: int, info: ValidationInfo) -> int:
        rop, low = info.data.get("reorder_point"), info.data.get("min")
        if rop is not None and v < rop:
            raise ValueError(f"par ({v}) is below reorder_point ({rop}): need min <= reorder_point <= par")
        if rop is None and low is not None and v < low:  # reorder_point itself was wrong
            raise ValueError(f"par ({v}) is below min ({low}): need min <= reorder_point <= par")
        return v


class InventoryImport(_Model):
    """CSV files read with the site file (paths relative to it), in the formats of
    ``eqmon inventory import``; their entries join those written in the site file."""

    items: str | None = None
    locations: str | None = None
    bins: str | None = None


class Inventory(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    items: list[InventoryItem] = Field(default_factory=list)
    locations: list[InventoryLocation] = Field(default_factory=list)
    bins: list[InventoryBin] = Field(default_factory=list)
    import_: InventoryImport | None = Field(default=None, alias="import")
    # Locations of a locations CSV (`import:`), kept as rows; load_site fills it.
    _location_rows: tuple[InventoryLocationRow, ...] = PrivateAttr(default=())

    def location_paths(self) -> list[tuple[tuple[str, ...], LocationKind]]:
        """Every location, as (its path, its kind), each after its parent: the tree written
        here, then the rows of an imported locations file."""
        out: list[tuple[tuple[str, ...], LocationKind]] = []

        def walk(nodes: list[InventoryLocation], above: tuple[str, ...]) -> None:
            for n in nodes:
                out.append(((*above, n.name), n.kind))
                walk(n.children, (*above, n.name))

        walk(self.locations, ())
        out += sorted(((r.parts, r.kind) for r in self._location_rows), key=lambda p: len(p[0]))
        return out

    def bin_locations(self) -> list[tuple[InventoryBin, tuple[str, ...]]]:
        """Each bin with the whole path of its location (ValueError for a location that names
        none or several: load_site has reported those)."""
        index = LocationIndex(p for p, _ in self.location_paths())
        out = []
        for b in self.bins:
            path, problem = index.resolve(b.location)
            if path is None:
                raise ValueError(f"bin of {b.item}: {problem}")
            out.append((b, path))
        return out

    def summary(self) -> str:
        """One line: ``inventory: 3 items, 7 locations (2 rooms), 3 bins (3 on smart shelves)``."""
        paths = self.location_paths()
        rooms = sum(1 for _, k in paths if k == "room")
        shelved = sum(1 for b in self.bins if b.shelf)
        critical = sum(1 for i in self.items if i.critical)
        return (
            f"inventory: {_plural(len(self.items), 'item')}" + (f" ({critical} critical)" if critical else "")
            + f", {_plural(len(paths), 'location')} ({_plural(rooms, 'supply room')})"
            + f", {_plural(len(self.bins), 'bin')} ({shelved} on smart shelves)"
        )  # fmt: skip


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class LocationIndex:
    """Finds a location by its path, or by the end of its path when only one location's path
    ends that way (``Ward 4B supply room/Shelf A``); a leading ``/`` asks for the whole path."""

    def __init__(self, paths: Iterable[tuple[str, ...]] = ()) -> None:
        self._paths: set[tuple[str, ...]] = set()
        self._by_name: dict[str, list[tuple[str, ...]]] = {}
        for p in paths:
            self.add(p)

    def add(self, path: tuple[str, ...]) -> None:
        if path not in self._paths:
            self._paths.add(path)
            self._by_name.setdefault(path[-1], []).append(path)

    def __contains__(self, path: object) -> bool:
        return path in self._paths

    def resolve(self, ref: str) -> tuple[tuple[str, ...] | None, str]:
        """(the path, "") or (None, why not)."""
        try:
            want = split_location_path(ref)
        except ValueError as exc:
            return None, str(exc)
        if ref.strip().startswith(LOCATION_SEPARATOR):
            found = [want] if want in self._paths else []
        else:
            n = len(want)
            found = [p for p in self._by_name.get(want[-1], ()) if p[-n:] == want]
        if len(found) == 1:
            return found[0], ""
        shown = format_location_path(want)
        if not found:
            return None, f"no location {shown!r}"
        names = ", ".join(sorted(format_location_path(p) for p in found)[:3]) + (", …" if len(found) > 3 else "")
        return None, f"{shown!r} names {len(found)} locations ({names}): write more of its path"


def check_timezone(v: str) -> str:
    """An IANA time zone name that this machine knows (``Europe/London``, ``UTC``)."""
    try:
        ZoneInfo(v)
    except (KeyError, ValueError, OSError):  # not found (a KeyError), a directory ("Europe"), a path
        raise ValueError(f"unknown time zone {_short(v)}: expected an IANA name such as Europe/London or UTC") from None
    return v


class SiteInfo(_Model):
    name: str
    # Alert times, shift reports and notification rotas are in this time zone.
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, v: str) -> str:
        return check_timezone(v)


class Site(_Model):
    site: SiteInfo
    devices: list[Device] = Field(min_length=1)
    mqtt: MqttBroker | None = None
    telemetry: Telemetry = Telemetry()
    alerts: Alerts = Alerts()
    contacts: list[Contact] = Field(default_factory=list)
    notifications: Notifications | None = None
    api: Api = Api()
    database: Database = Database()
    scenario: list[AnyScenarioStep] = Field(default_factory=list)
    inventory: Inventory | None = None
    _device_index: tuple[list[Device], int, dict[str, Device]] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _route_mqtt_devices(self) -> Site:
        # An MQTT device without a topic is heard through the broker mappings (its address and
        # metric units come from them).
        mappings = tuple(self.mqtt.mappings) if self.mqtt else ()
        for d in self.devices:
            if isinstance(d, MqttDevice) and d.topic is None:
                d._mappings = mappings
        return self

    def device(self, device_id: str) -> ModbusDevice | MqttDevice:
        """The device with this id (KeyError if none): a dict lookup, the index rebuilt when the
        device list was replaced or changed length (``model_copy(update={"devices": …})``)."""
        index = self._device_index
        if index is None or index[0] is not self.devices or index[1] != len(self.devices):
            index = (self.devices, len(self.devices), {d.id: d for d in self.devices})
            self._device_index = index
        return index[2][device_id]

    def modbus_devices(self) -> list[ModbusDevice]:
        return [d for d in self.devices if isinstance(d, ModbusDevice)]

    def mqtt_devices(self) -> list[MqttDevice]:
        return [d for d in self.devices if isinstance(d, MqttDevice)]

    def warnings(self) -> list[ConfigIssue]:
        """What is valid but probably wrong, with its path (no line numbers: ``load_site`` and
        ``parse_site`` give those): Modbus registers of one device that overlap (same table,
        overlapping addresses; bools on different bits of one register do not), a poll
        timeout (or connect timeout) longer than the poll interval, and a notification rota
        without ``default`` whose shifts leave hours of the week uncovered."""
        return [ConfigIssue(_format_loc(loc)[0], msg) for loc, msg in _warning_checks(self)]


# ---------------------------------------------------------------------------------------------
# Loading and error reporting


@dataclass(frozen=True)
class ConfigIssue:
    path: str  # e.g. devices[3].registers[0].data_type
    message: str
    line: int | None = None

    def __post_init__(self) -> None:
        # Bounded and on one line, whatever the file holds.
        object.__setattr__(self, "path", _clip(self.path, _MAX_PATH_CHARS))
        object.__setattr__(self, "message", _clip(self.message, MAX_ISSUE_CHARS))

    def render(self, file: str, *, warning: bool = False) -> str:
        """``FILE: [warning: ]PATH: MESSAGE (line N)``."""
        head = f"{file}: warning" if warning else file
        where = f"{head}: {self.path}" if self.path else head
        line = f" (line {self.line})" if self.line else ""
        return f"{where}: {self.message}{line}"


def render_issues(file: str, issues: list[ConfigIssue], *, warning: bool = False, omitted: int = 0) -> list[str]:
    """One line per issue, at most MAX_ISSUES of them, then how many more there are."""
    lines = [i.render(file, warning=warning) for i in issues[:MAX_ISSUES]]
    more = omitted + max(0, len(issues) - MAX_ISSUES)
    if more:
        lines.append(f"{file}: … and {more:,} more {'warnings' if warning else 'problems'}")
    return lines


class ConfigError(Exception):
    """The site file is not usable; ``str()`` gives one line per problem (at most MAX_ISSUES,
    then how many more: ``omitted``)."""

    def __init__(self, file: str | os.PathLike[str], issues: Iterable[ConfigIssue], *, omitted: int = 0) -> None:
        self.file = str(file)
        issues = list(issues)
        self.issues = issues[:MAX_ISSUES]
        self.omitted = omitted + len(issues) - len(self.issues)
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(render_issues(self.file, self.issues, omitted=self.omitted))


# The tags pydantic puts into the location of a tagged union's member, by the union's place.
_DEVICE_TAGS = frozenset(("modbus", "mqtt"))
_RULE_TAGS = frozenset(RULE_KINDS)
_MODEL_TAGS = frozenset(SIMULATOR_MODELS)
_FAULT_TAGS = frozenset(SCENARIO_FAULTS)
_CHANNEL_TAGS = frozenset(CHANNEL_TYPES)


def _union_tags(clean: list[Any]) -> frozenset[str]:
    n = len(clean)
    if n == 2 and isinstance(clean[1], int):
        return _DEVICE_TAGS if clean[0] == "devices" else _FAULT_TAGS if clean[0] == "scenario" else frozenset()
    if n == 3 and clean[0] == "alerts" and clean[1] == "rules" and isinstance(clean[2], int):
        return _RULE_TAGS
    if n == 3 and clean[0] == "devices" and clean[2] == "simulator":
        return _MODEL_TAGS
    if n == 3 and clean[0] == "notifications" and clean[1] == "channels" and isinstance(clean[2], int):
        return _CHANNEL_TAGS
    return frozenset()


def _format_loc(loc: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    parts: list[str] = []
    clean: list[Any] = []
    tags: frozenset[str] = frozenset()
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            clean.append(item)
            tags = _union_tags(clean)
            continue
        # pydantic puts the discriminator's value into the location of a tagged union member.
        if item in tags:
            tags = frozenset()
            continue
        if item in ("for_", "in_"):
            item = item[:-1]
        text = _clip(str(item), 60)
        parts.append(f".{text}" if parts else text)
        clean.append(item)
        tags = _union_tags(clean)
    return "".join(parts), tuple(clean)


def _message(err: dict[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected')}, got {_short(err.get('input'))}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        return f"expected one of {ctx.get('expected_tags')}, got {_short(ctx.get('tag'))}"
    if kind == "union_tag_not_found":
        return f"required key {ctx.get('discriminator')} is missing"
    msg: str = err["msg"]
    if msg.startswith("Input should be "):
        head = msg[len("Input should be ") :].split(",")[0]
        return f"expected {head}, got {_short(err.get('input'))}"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg[:1].lower() + msg[1:] if msg else kind


def _line_of(root: Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line in the YAML source of the node at ``loc`` (or its nearest parent)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, MappingNode):
            nxt = None
            for k, v in node.value:
                if isinstance(k, ScalarNode) and k.value == str(key):
                    nxt = (k, v)
                    break
            if nxt is None:
                break
            line = nxt[0].start_mark.line + 1
            node = nxt[1]
        elif isinstance(node, SequenceNode) and isinstance(key, int):
            if key >= len(node.value):
                break
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


_GATEWAY_KEYS = ("framing", "pause", "timeout", "connect_timeout")


def _gateway_checks(site: Site) -> list[tuple[tuple[Any, ...], str]]:
    """Devices on one host:port share one connection: they must agree on how it is driven,
    and no two may claim the same unit id."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    first: dict[tuple[str, int], int] = {}
    units: dict[tuple[str, int, int], int] = {}
    for i, d in enumerate(site.devices):
        if not isinstance(d, ModbusDevice):
            continue
        key = (d.host, d.port)
        unit = (d.host, d.port, d.unit_id)
        if unit in units:
            problems.append(
                (("devices", i, "unit_id"), f"unit id {d.unit_id} on {d.host}:{d.port} is already used by devices[{units[unit]}]")
            )
        units.setdefault(unit, i)
        if key not in first:
            first[key] = i
            continue
        other = site.devices[first[key]]
        assert isinstance(other, ModbusDevice)
        for k in _GATEWAY_KEYS:
            if getattr(d, k) != getattr(other, k):
                problems.append(
                    (("devices", i, k), f"devices on {d.host}:{d.port} share one connection: {k} must match devices[{first[key]}] ({getattr(other, k)!r})")
                )
    return problems


def _simulator_checks(site: Site) -> list[tuple[tuple[Any, ...], str]]:
    """Simulator sections and scenario steps against the devices they simulate."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    by_id: dict[str, ModbusDevice | MqttDevice] = {}
    for i, d in enumerate(site.devices):
        by_id.setdefault(d.id, d)
        if isinstance(d, MqttDevice) and d.simulator is not None:
            if d.topic is None or any(c in d.topic for c in "{+#"):
                problems.append(
                    (("devices", i, "simulator"), "a simulated MQTT device needs a plain topic of its own (no {metric}, + or #)")
                )
    for i, step in enumerate(site.scenario):
        dev = by_id.get(step.device)
        if dev is None:
            continue  # reported by _cross_checks
        if dev.simulator is None:
            problems.append(
                (("scenario", i, "device"), f"device {step.device!r} has no simulator section, so it is not simulated")
            )
            continue
        model = dev.simulator.model
        allowed = SIMULATOR_FAULTS[model]
        if step.fault not in allowed:
            problems.append(
                (("scenario", i, "fault"), f"{step.device} ({model}) does not take fault {step.fault!r}; expected one of {allowed}")
            )
        elif isinstance(step, DriftStep) and step.params.metric is not None:
            metrics = DRIFT_METRICS[model]
            if step.params.metric not in metrics:
                problems.append(
                    (("scenario", i, "params", "metric"), f"drift on {model} moves {' or '.join(metrics)}, not {step.params.metric!r}")
                )
    return problems


def _cross_checks(site: Site) -> list[tuple[tuple[Any, ...], str]]:
    """Checks that span several parts of the file, with the path of the offending entry."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    first_seen: dict[str, int] = {}
    for i, d in enumerate(site.devices):
        if d.id in first_seen:
            problems.append(
                (("devices", i, "id"), f"duplicate device id {d.id!r} (first at devices[{first_seen[d.id]}])")
            )
        else:
            first_seen[d.id] = i
        if isinstance(d, ModbusDevice):
            names: dict[str, int] = {}
            for j, r in enumerate(d.registers):
                for k, metric in enumerate(r.metrics):
                    where = ("devices", i, "registers", j, "name") if k == 0 else ("devices", i, "registers", j, "bits")
                    if metric in names:
                        problems.append((where, f"duplicate register name {metric!r} (first at registers[{names[metric]}])"))
                    names.setdefault(metric, j)
                if r.type in ("coil", "discrete_input"):
                    limit = 65535
                else:
                    limit = 65536 - r.words
                if r.address > limit:
                    problems.append(
                        (("devices", i, "registers", j, "address"), "register runs past address 65535")
                    )
    problems += _gateway_checks(site)
    kinds = {d.kind for d in site.devices}
    rule_ids: set[str] = set()
    for i, rule in enumerate(site.alerts.rules):
        if rule.id in rule_ids:
            problems.append((("alerts", "rules", i, "id"), f"duplicate rule id {rule.id!r}"))
        rule_ids.add(rule.id)
        for j, dev in enumerate(rule.devices):
            if dev not in first_seen:
                problems.append((("alerts", "rules", i, "devices", j), f"no device with id {dev!r}"))
        if rule.device_kind is not None and rule.device_kind not in kinds:
            problems.append(
                (("alerts", "rules", i, "device_kind"), f"no device of kind {rule.device_kind!r}")
            )
    for i, step in enumerate(site.scenario):
        if step.device not in first_seen:
            problems.append((("scenario", i, "device"), f"no device with id {step.device!r}"))
    problems += _simulator_checks(site)
    # MQTT devices without a topic of their own must be reached by a broker mapping.
    # (MQTT devices without any `mqtt:` section are allowed: `eqmon demo` embeds a broker and
    # `eqmon run` refuses them, see eqmon_app/service.py.)
    mappings = site.mqtt.mappings if site.mqtt else []
    for i, d in enumerate(site.devices):
        if isinstance(d, MqttDevice) and d.topic is None and not mappings:
            problems.append((("devices", i, "topic"), "required key is missing (no mqtt.mappings route this device)"))
    return problems


def _notification_checks(site: Site) -> list[tuple[tuple[Any, ...], str]]:
    """Contacts, channels and routes refer to each other by name and id."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    contacts: dict[str, Contact] = {}
    for i, c in enumerate(site.contacts):
        if c.name in contacts:
            problems.append((("contacts", i, "name"), f"duplicate contact name {c.name!r}"))
        contacts.setdefault(c.name, c)
    n = site.notifications
    if n is None:
        return problems
    channels: dict[str, Any] = {}
    for i, ch in enumerate(n.channels):
        if ch.id in channels:
            problems.append((("notifications", "channels", i, "id"), f"duplicate channel id {ch.id!r}"))
        channels.setdefault(ch.id, ch)
        if ch.type == "mqtt" and site.mqtt is None:
            problems.append(
                (("notifications", "channels", i, "type"), "an mqtt channel publishes on the site's broker: add the mqtt: section")
            )
    rotas: dict[str, Rota] = {}
    for i, rota in enumerate(n.rotas):
        where = ("notifications", "rotas", i)
        if rota.id in rotas:
            problems.append(((*where, "id"), f"duplicate rota id {rota.id!r}"))
        rotas.setdefault(rota.id, rota)
        shift_names: set[str] = set()
        for j, shift in enumerate(rota.shifts):
            if shift.name in shift_names:
                problems.append(((*where, "shifts", j, "name"), f"duplicate shift name {shift.name!r} in rota {rota.id!r}"))
            shift_names.add(shift.name)
            for k, name in enumerate(shift.contacts):
                if name not in contacts:
                    problems.append(((*where, "shifts", j, "contacts", k), f"no contact named {name!r}"))
        for k, name in enumerate(rota.default or []):
            if name not in contacts:
                problems.append(((*where, "default", k), f"no contact named {name!r}"))
    for i, r in enumerate(n.routes):
        where = ("notifications", "routes", i)
        for j, cid in enumerate(r.channels):
            found = channels.get(cid)
            if found is None:
                problems.append(((*where, "channels", j), f"no channel with id {cid!r}"))
                continue
            ch = found
            if ch.type != "log" and not (ch.to if ch.type == "email" else ch.url if ch.type == "webhook" else ch.topic):
                key = {"email": "to", "webhook": "url", "mqtt": "topic"}[ch.type]
                problems.append(
                    ((*where, "channels", j), f"channel {cid!r} has no {key} of its own: route contacts to it instead")
                )
        via = r.via if r.via is not None else list(channels)
        for j, cid in enumerate(r.via or []):
            if cid not in channels:
                problems.append(((*where, "via", j), f"no channel with id {cid!r}"))
        for j, name in enumerate(r.contacts):
            person = contacts.get(name)
            if person is None:
                problems.append(((*where, "contacts", j), f"no contact named {name!r}"))
            elif not any(cid in channels and person.address(channels[cid].type) for cid in via):
                problems.append(
                    ((*where, "contacts", j), f"contact {name!r} has no address (email, webhook, mqtt_topic) for the route's channels")
                )
        if r.rota is not None:
            named = rotas.get(r.rota)
            if named is None:
                problems.append(((*where, "rota"), f"no rota named {r.rota!r}"))
                continue
            for name in named.contact_names():
                person = contacts.get(name)
                if person is not None and not any(cid in channels and person.address(channels[cid].type) for cid in via):
                    problems.append(
                        ((*where, "rota"), f"contact {name!r} of rota {r.rota!r} has no address (email, webhook, mqtt_topic) for the route's channels")
                    )
    return problems


# -- warnings ---------------------------------------------------------------------------------

_WHOLE_WORD = 0xFFFF


def _register_span(r: Register) -> tuple[str, int, int, int]:
    """(table, first address, last address, bits of the word read): a bool on a register reads
    one bit of it (bit 0 when ``bit`` is not given, as the collector decodes it)."""
    if r.type in ("coil", "discrete_input"):
        return r.type, r.address, r.address, _WHOLE_WORD
    if r.data_type == "bool":
        return r.type, r.address, r.address, 1 << (r.bit or 0)
    return r.type, r.address, r.address + r.words - 1, _WHOLE_WORD


def _describe_span(table: str, first: int, last: int, mask: int) -> str:
    text = f"{table} {first}" if first == last else f"{table} {first}–{last}"
    return text if mask == _WHOLE_WORD else f"{text} bit {mask.bit_length() - 1}"


def _register_overlaps(registers: list[Register]) -> list[tuple[int, int, str]]:
    """(later index, earlier index, what both read) for registers of one device that read the
    same address (in one table): one pair per register at most, in O(n log n). Named ``bits``
    of a register are part of it, not registers of their own."""
    spans = [(*_register_span(r), j) for j, r in enumerate(registers)]
    spans.sort()  # by table, first address, last address, mask, index
    pairs: dict[int, tuple[int, str]] = {}
    table = ""
    reach, reach_j = -1, -1  # the whole-word register reaching furthest so far in this table
    bits_at: dict[int, list[tuple[int, int]]] = {}  # word → [(mask, index)] of one-bit registers
    for t, first, last, mask, j in spans:
        if t != table:
            table, reach, reach_j, bits_at = t, -1, -1, {}
        other, shared = -1, ""
        if mask == _WHOLE_WORD:
            if first <= reach:
                other, shared = reach_j, _describe_span(t, first, min(last, reach), _WHOLE_WORD)
            elif bits_at.get(first):
                m, other = bits_at[first][0]
                shared = _describe_span(t, first, first, m)
            if last > reach:
                reach, reach_j = last, j
        else:
            if first <= reach:
                other, shared = reach_j, _describe_span(t, first, first, mask)
            else:
                for m, k in bits_at.get(first, ()):
                    if m & mask:
                        other, shared = k, _describe_span(t, first, first, mask)
                        break
            bits_at.setdefault(first, []).append((mask, j))
        if other >= 0:
            later, earlier = max(j, other), min(j, other)
            pairs.setdefault(later, (earlier, shared))
    return [(later, earlier, shared) for later, (earlier, shared) in sorted(pairs.items())]


def _describe_gaps(gaps: list[tuple[int, int, int]]) -> str:
    """``mon–fri 19:00–24:00; sat, sun all day``: weekdays with the same gaps grouped."""
    by_day: dict[int, list[str]] = {d: [] for d in range(7)}
    for day, first, end in gaps:
        whole = first == 0 and end == MINUTES_PER_DAY
        by_day[day].append("all day" if whole else f"{format_time_of_day(first)}–{format_time_of_day(end)}")
    groups: list[tuple[list[int], list[str]]] = []
    for day in range(7):
        if not by_day[day]:
            continue
        if groups and groups[-1][1] == by_day[day] and groups[-1][0][-1] == day - 1:
            groups[-1][0].append(day)
        else:
            groups.append(([day], by_day[day]))
    parts = []
    for days, spans in groups:
        if len(days) == 7:
            names = "every day"
        elif len(days) > 2:
            names = f"{WEEKDAYS[days[0]]}–{WEEKDAYS[days[-1]]}"
        else:
            names = ", ".join(WEEKDAYS[d] for d in days)
        parts.append(f"{names} {' and '.join(spans)}")
    return "; ".join(parts)


def _rota_warnings(site: Site) -> list[tuple[tuple[Any, ...], str]]:
    """A rota without ``default`` that leaves hours of the week to nobody: alerts routed to it
    then reach only the route's own contacts and channels."""
    warnings: list[tuple[tuple[Any, ...], str]] = []
    for i, rota in enumerate(site.notifications.rotas if site.notifications else []):
        gaps = rota.uncovered()
        if rota.default is None and gaps:
            warnings.append(
                (("notifications", "rotas", i), f"no shift of rota {rota.id!r} covers {_describe_gaps(gaps)} ({site.site.timezone}): alerts routed to it then reach only their route's own contacts and channels; add shifts, or default: [contacts]")
            )
    return warnings


def _warning_checks(site: Site) -> list[tuple[tuple[Any, ...], str]]:
    warnings: list[tuple[tuple[Any, ...], str]] = []
    for i, d in enumerate(site.devices):
        if not isinstance(d, ModbusDevice):
            continue
        for later, earlier, shared in _register_overlaps(d.registers):
            span = _describe_span(*_register_span(d.registers[earlier]))
            warnings.append(
                (("devices", i, "registers", later), f"overlaps devices[{i}].registers[{earlier}] ({span}): both read {shared}")
            )
        for key in ("timeout", "connect_timeout"):
            value = getattr(d, key)
            if value is not None and value > d.interval:
                default = "" if key in d.model_fields_set else " (the default)"
                warnings.append(
                    (("devices", i, key), f"{key} {value:g} s{default} is longer than the poll interval ({d.interval:g} s): a request that times out runs into the next poll")
                )
    return warnings + _rota_warnings(site) + _inventory_warnings(site)


# -- reading the YAML -------------------------------------------------------------------------


class _LimitError(Exception):
    """The file passes one of the limits above."""

    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.line = mark.line + 1 if mark is not None else None


# libyaml's parser when PyYAML was built with it (the C parser is about 10× faster), else
# PyYAML's own. Either way only its events are used: the composer below builds the nodes.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _loader_class(base: Any) -> Any:
    class Loader(base):  # type: ignore[misc]
        def construct_object(self, node: Node, deep: bool = False) -> Any:
            # PyYAML lets a bad date (2024-13-01), "!!int x" or "!!float x" escape as a bare
            # ValueError: give it the node's position like any other YAML error.
            try:
                return super().construct_object(node, deep)
            except (ValueError, TypeError, OverflowError) as exc:
                raise ConstructorError(None, None, f"cannot read this value: {exc}", node.start_mark) from None

        def construct_base60_int(self, node: ScalarNode) -> int:
            # YAML 1.1 reads an unquoted 19:00 as the int 1140: still that int everywhere, but
            # one that remembers its text, for times of day (shifts: from: 19:00).
            value: int = self.construct_yaml_int(node)
            return YamlBase60Int(value, node.value) if ":" in node.value else value

    Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_base60_int)
    return Loader


_Loader: Any = _loader_class(_BaseLoader)


def _add_anchor(anchors: dict[str, tuple[Node, int | None]], event: Any, node: Node, size: int | None) -> None:
    anchor = event.anchor
    if anchor in anchors:
        first = anchors[anchor][0].start_mark.line + 1
        raise ComposerError(None, None, f"anchor &{anchor} is defined twice (first on line {first})", event.start_mark)
    anchors[anchor] = (node, size)


def _compose(loader: Any) -> Node | None:
    """The single document's node tree, from the parser's events, within the limits: nesting
    at most MAX_DEPTH, at most MAX_NODES nodes counting each node an alias repeats (the tree
    itself shares them: an alias is the anchored node). Iterative: no recursion to exhaust."""
    get = loader.get_event
    resolve = loader.resolve
    get()  # StreamStartEvent
    event = get()
    if isinstance(event, StreamEndEvent):
        return None
    anchors: dict[str, tuple[Node, int | None]] = {}
    # Open collections: [node, nodes so far (aliases expanded), pending mapping key, anchor]
    stack: list[list[Any]] = []
    total = 0
    node: Node
    while True:
        event = get()
        cls = event.__class__
        if cls is ScalarEvent:
            tag = event.tag
            if tag is None or tag == "!":
                tag = resolve(ScalarNode, event.value, event.implicit)
            node = ScalarNode(tag, event.value, event.start_mark, None, style=event.style)
            size = 1
            total += 1
            if event.anchor is not None:
                _add_anchor(anchors, event, node, 1)
        elif cls is AliasEvent:
            entry = anchors.get(event.anchor)
            if entry is None:
                raise ComposerError(None, None, f"found undefined alias {event.anchor!r}", event.start_mark)
            node, repeated = entry
            if repeated is None:
                raise ComposerError(None, None, f"alias *{event.anchor} is inside the collection it names", event.start_mark)
            size = repeated
            total += size
            if total > MAX_NODES:
                raise _LimitError(f"too many alias expansions: aliases repeat more than {MAX_NODES:,} nodes", event.start_mark)
        elif cls is MappingStartEvent or cls is SequenceStartEvent:
            if len(stack) >= MAX_DEPTH:
                raise _LimitError(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
            kind = MappingNode if cls is MappingStartEvent else SequenceNode
            tag = event.tag
            if tag is None or tag == "!":
                tag = resolve(kind, None, event.implicit)
            node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
            total += 1
            if event.anchor is not None:
                _add_anchor(anchors, event, node, None)  # no alias may name it until it ends
            stack.append([node, 1, None, event.anchor])
            continue
        elif cls is MappingEndEvent or cls is SequenceEndEvent:
            node, size, _, anchor = stack.pop()
            if anchor is not None:
                anchors[anchor] = (node, size)
        else:  # pragma: no cover - the parser only gives the events above inside a document
            raise ComposerError(None, None, f"unexpected {cls.__name__}", event.start_mark)
        if total > MAX_NODES:
            raise _LimitError(f"more than {MAX_NODES:,} YAML nodes", event.start_mark)
        if not stack:
            break
        frame = stack[-1]
        frame[1] += size
        parent = frame[0]
        if parent.__class__ is SequenceNode:
            parent.value.append(node)
        elif frame[2] is None:
            frame[2] = node
        else:
            parent.value.append((frame[2], node))
            frame[2] = None
    get()  # DocumentEndEvent
    event = get()
    if not isinstance(event, StreamEndEvent):
        raise ComposerError(None, None, "a second document: a site file is one YAML document", event.start_mark)
    return node


def _read_yaml(text: str) -> tuple[Node | None, Any]:
    """Parse once: the node tree (kept for line numbers) and the data built from it."""
    loader = _Loader(text)
    root = _compose(loader)
    data = loader.construct_document(root) if root is not None else None
    return root, data


def _too_large(size: int) -> ConfigIssue:
    return ConfigIssue("", f"larger than {MAX_SITE_BYTES // (1024 * 1024)} MiB ({size:,} bytes): a site file may be at most {MAX_SITE_BYTES:,} bytes")


def _truncated(data: Any, memo: dict[int, Any]) -> Any:
    """``data`` with every list cut to its first MAX_ISSUES items and every mapping to its first
    2 × MAX_ISSUES keys: enough to find the first problems of a file that has thousands."""
    if not isinstance(data, list | dict):
        return data
    done = memo.get(id(data))
    if done is not None:
        return done
    if isinstance(data, list):
        out: Any = [_truncated(v, memo) for v in data[:MAX_ISSUES]]
    else:
        out = {k: _truncated(v, memo) for k, v in list(data.items())[: 2 * MAX_ISSUES]}
    memo[id(data)] = out
    return out


def _validation_issues(exc: ValidationError, data: Any, root: Node | None) -> tuple[list[ConfigIssue], int]:
    """The first MAX_ISSUES problems, with their lines, and how many more there are. A file
    with thousands of problems is validated again cut short, for its first ones: listing them
    all would cost about 1 KB of memory each."""
    count = exc.error_count()
    if count <= 20 * MAX_ISSUES:
        errors = exc.errors(include_url=False)
    else:
        try:
            Site.model_validate(_truncated(data, {}))
            errors = []
        except ValidationError as first:
            errors = first.errors(include_url=False)
    issues = []
    for err in errors[:MAX_ISSUES]:
        loc = tuple(err["loc"])
        if err["type"] == "union_tag_invalid":  # point at the tag itself
            loc += (str((err.get("ctx") or {}).get("discriminator", "")).strip("'"),)
        path, clean = _format_loc(loc)
        issues.append(ConfigIssue(path, _message(dict(err)), _line_of(root, clean)))
    if not issues:
        issues.append(ConfigIssue("", f"{count:,} problems"))
    return issues, max(0, count - len(issues))


def parse_site(
    text: str, file: str = "<site>", *, warnings: list[ConfigIssue] | None = None, base_dir: str | os.PathLike[str] | None = None
) -> Site:
    """Validate a site document; raise ConfigError naming every problem (the first MAX_ISSUES).
    ``warnings``, when given, receives the site's warnings with their line numbers. The
    inventory's CSV files (``inventory.import``) are read relative to ``base_dir`` (default: the
    directory of ``file``)."""
    if len(text) > MAX_SITE_BYTES // 4:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_SITE_BYTES:
            raise ConfigError(file, [_too_large(size)])
    # Hundreds of thousands of nodes and objects, all kept until the end: the cyclic garbage
    # collector would only walk them again and again (a third of the time of a large file).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _parse_site(text, file, warnings, Path(file).parent if base_dir is None else Path(base_dir))
    finally:
        if collecting:
            gc.enable()


def _parse_site(text: str, file: str, warnings: list[ConfigIssue] | None, base_dir: Path) -> Site:
    try:
        root, data = _read_yaml(text)
    except _LimitError as exc:
        raise ConfigError(file, [ConfigIssue("", exc.message, exc.line)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if "maximum nesting depth" in (exc.problem or ""):  # libyaml's own limit (1000)
            raise ConfigError(file, [ConfigIssue("", f"nested deeper than {MAX_DEPTH} levels", mark.line + 1 if mark else None)]) from None
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "unreadable"
        raise ConfigError(file, [ConfigIssue("", f"{where}not valid YAML: {problem}")]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        raise ConfigError(file, [ConfigIssue("", _reader_problem(text, exc))]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, [ConfigIssue("", f"not valid YAML: {exc}")]) from None
    except UnicodeEncodeError as exc:  # a str with lone surrogates: not from a UTF-8 file
        raise ConfigError(file, [ConfigIssue("", f"not UTF-8 text: {exc.reason}")]) from None
    if not isinstance(data, dict):
        raise ConfigError(file, [ConfigIssue("", "expected a mapping at the top level")])
    try:
        site = Site.model_validate(data)
    except ValidationError as exc:
        issues, omitted = _validation_issues(exc, data, root)
        raise ConfigError(file, issues, omitted=omitted) from None
    site, imported = _inventory_imports(site, base_dir)
    problems = _cross_checks(site) + _notification_checks(site) + (imported or _inventory_checks(site))
    if problems:
        raise ConfigError(
            file,
            [ConfigIssue(_format_loc(loc)[0], msg, _line_of(root, loc)) for loc, msg in problems[:MAX_ISSUES]],
            omitted=max(0, len(problems) - MAX_ISSUES),
        )
    if warnings is not None:
        warnings.extend(
            ConfigIssue(_format_loc(loc)[0], msg, _line_of(root, loc)) for loc, msg in _warning_checks(site)
        )
    return site


def _reader_problem(text: str, exc: yaml.reader.ReaderError) -> str:
    # libyaml counts the position in bytes of UTF-8, PyYAML's reader in characters.
    position = exc.position if isinstance(exc.position, int) else 0
    if issubclass(_Loader, yaml.SafeLoader):
        before = text[:position]
    else:
        before = text.encode("utf-8", "surrogatepass")[:position].decode("utf-8", "replace")
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    char = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "\0")
    return f"line {line}, column {column}: not valid YAML: character #x{char:04x}: {exc.reason}"


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    start = exc.start
    line = raw.count(b"\n", 0, start) + 1
    line_start = raw.rfind(b"\n", 0, start) + 1
    column = len(raw[line_start:start].decode("utf-8", "replace")) + 1
    return f"not UTF-8 text: invalid byte 0x{raw[start]:02x} at line {line}, column {column}"


def load_site(path: str | os.PathLike[str], *, warnings: list[ConfigIssue] | None = None) -> Site:
    """Read and validate the site file at ``path`` (UTF-8, at most MAX_SITE_BYTES).
    ``warnings``, when given, receives the site's warnings with their line numbers."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_SITE_BYTES + 1)
            size = os.fstat(f.fileno()).st_size if len(raw) > MAX_SITE_BYTES else len(raw)
    except OSError as exc:
        raise ConfigError(p, [ConfigIssue("", f"cannot read: {exc.strerror or exc}")]) from None
    if len(raw) > MAX_SITE_BYTES:
        raise ConfigError(p, [_too_large(max(size, len(raw)))])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(p, [ConfigIssue("", _not_utf8(raw, exc))]) from None
    return parse_site(text, str(p), warnings=warnings, base_dir=p.parent)


# ---------------------------------------------------------------------------------------------
# Inventory: checks across entries, and the CSV formats (site-file `import:` and
# `eqmon inventory import|export`: docs/inventory.md)


@dataclass(frozen=True)
class InventorySource:
    """Where an inventory entry was declared: its path in the site file, or a line of a CSV file."""

    path: tuple[Any, ...] = ()  # ("inventory", "bins", 3)
    file: str | None = None
    line: int | None = None

    def describe(self) -> str:
        return f"{self.file} line {self.line}" if self.file is not None else _format_loc(self.path)[0]


@dataclass(frozen=True)
class KnownInventory:
    """What the state database holds already: entries declared again are changed, not doubled."""

    items: dict[str, float | None] = dataclass_field(default_factory=dict)  # SKU -> unit_weight_g
    locations: dict[tuple[str, ...], str] = dataclass_field(default_factory=dict)  # path -> kind
    bins: dict[tuple[str, tuple[str, ...]], str | None] = dataclass_field(default_factory=dict)  # (SKU, path) -> shelf


# (where, the field or column, the message)
InventoryProblem = tuple[InventorySource, str, str]
LocationEntry = tuple[InventorySource, tuple[str, ...], str, str]  # where, path, kind, field naming it


def check_inventory(
    items: list[tuple[InventorySource, InventoryItem]],
    locations: list[LocationEntry],
    bins: list[tuple[InventorySource, InventoryBin]],
    devices: list[ModbusDevice | MqttDevice] | None,
    known: KnownInventory | None = None,
) -> tuple[list[InventoryProblem], list[tuple[InventorySource, tuple[str, ...]]]]:
    """Checks across entries: SKUs and locations declared once, each location finer than the
    one it is in and under one that exists, bins naming an item and one location (resolved
    here: returned as (where, path) per bin), each item once per location, shelves that are
    MQTT devices of kind smart_shelf, each weighing one bin, of an item with a unit weight.
    ``devices``: the site's (None: shelves are not checked against devices); ``known``: the
    state database's entries (declared again: changed)."""
    known = known or KnownInventory()
    problems: list[InventoryProblem] = []
    # Items: declared once; the unit weights as they will be.
    weights = dict(known.items)
    first_item: dict[str, InventorySource] = {}
    for src, item in items:
        if item.sku in first_item:
            problems.append((src, "sku", f"duplicate SKU {item.sku!r} (first at {first_item[item.sku].describe()})"))
            continue
        first_item[item.sku] = src
        weights[item.sku] = item.unit_weight_g
    # Locations: declared once, under a location that exists, finer than it.
    kinds = dict(known.locations)
    first_loc: dict[tuple[str, ...], InventorySource] = {}
    declared: list[LocationEntry] = []
    for entry in locations:
        src, path, kind, named_by = entry
        if path in first_loc:
            problems.append((src, named_by, f"duplicate location {format_location_path(path)!r} (first at {first_loc[path].describe()})"))
            continue
        first_loc[path] = src
        kinds[path] = kind
        declared.append(entry)
    children: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for path in kinds:
        children.setdefault(path[:-1], []).append(path)
    for src, path, kind, named_by in declared:
        parent = path[:-1]
        if parent and parent not in kinds:
            problems.append((src, named_by, f"no location {format_location_path(parent)!r} to hold {path[-1]!r}: declare it first"))
        elif parent and _finer(kinds[parent], kind) is False:
            problems.append((src, "kind", f"a {kind} cannot be inside a {kinds[parent]} ({format_location_path(parent)}): {_KIND_ORDER}"))
        for child in children.get(path, ()):
            if child not in first_loc and _finer(kind, kinds[child]) is False:
                problems.append((src, "kind", f"a {kind} cannot hold a {kinds[child]} ({format_location_path(child)}): {_KIND_ORDER}"))
    # Bins: an item at one location, once; a shelf weighs one bin of an item with a unit weight.
    index = LocationIndex(kinds)
    by_id = {d.id: d for d in devices or ()}
    resolved: list[tuple[InventorySource, tuple[str, ...]]] = []
    first_bin: dict[tuple[str, tuple[str, ...]], InventorySource] = {}
    shelves: dict[tuple[str, tuple[str, ...]], str | None] = dict(known.bins)
    for src, b in bins:
        if b.item not in weights:
            problems.append((src, "item", f"no item with SKU {b.item!r}"))
        at, why = index.resolve(b.location)
        if at is None:
            problems.append((src, "location", why))
            continue
        key = (b.item, at)
        if key in first_bin:
            problems.append((src, "location", f"a second bin of {b.item} at {format_location_path(at)} (first at {first_bin[key].describe()})"))
            continue
        first_bin[key] = src
        resolved.append((src, at))
        shelves[key] = b.shelf
        if b.shelf is not None:
            d = by_id.get(b.shelf)
            if devices is None:
                pass
            elif d is None:
                problems.append((src, "shelf", f"no device with id {b.shelf!r}"))
            elif not isinstance(d, MqttDevice) or d.kind != SHELF_DEVICE_KIND:
                problems.append((src, "shelf", f"device {b.shelf!r} is not a smart shelf (an MQTT device of kind {SHELF_DEVICE_KIND}; it is a {d.protocol} {d.kind})"))
            if b.item in weights and weights[b.item] is None:
                problems.append((src, "shelf", f"item {b.item} has no unit_weight_g: a smart shelf counts its bin by weight"))
    used: dict[str, tuple[str, tuple[str, ...]]] = {}
    for key, shelf in shelves.items():
        if shelf is None:
            continue
        other = used.setdefault(shelf, key)
        if other == key:
            continue
        blamed, theirs = (key, other) if key in first_bin else (other, key)
        if blamed in first_bin:
            where = first_bin[theirs].describe() if theirs in first_bin else "the state database"
            problems.append((first_bin[blamed], "shelf", f"shelf {shelf!r} already weighs the bin of {theirs[0]} at {format_location_path(theirs[1])} ({where}): a shelf weighs one bin"))
    # An item whose unit weight goes while a shelf weighs one of its bins.
    for sku, src in first_item.items():
        if weights[sku] is None:
            for (of, path), shelf in shelves.items():
                if of == sku and shelf is not None and (of, path) not in first_bin:
                    problems.append((src, "unit_weight_g", f"smart shelf {shelf!r} weighs its bin at {format_location_path(path)}: it needs a unit weight"))
                    break
    return problems, resolved


_KIND_ORDER = " > ".join(INVENTORY_LOCATION_KINDS)


def _finer(outer: str, inner: str) -> bool | None:
    """Whether ``inner`` is a finer kind than ``outer`` (None: an unknown kind)."""
    if outer not in INVENTORY_LOCATION_KINDS or inner not in INVENTORY_LOCATION_KINDS:
        return None
    return INVENTORY_LOCATION_KINDS.index(inner) > INVENTORY_LOCATION_KINDS.index(outer)


def inventory_entries(inv: Inventory) -> tuple[list[tuple[InventorySource, InventoryItem]], list[LocationEntry], list[tuple[InventorySource, InventoryBin]]]:
    """The site file's inventory entries with where each was declared."""

    def source(path: tuple[Any, ...], entry: Any) -> InventorySource:
        where: tuple[str, int] | None = getattr(entry, "_source", None)
        return InventorySource(file=where[0], line=where[1]) if where else InventorySource(path=path)

    items = [(source(("inventory", "items", i), it), it) for i, it in enumerate(inv.items)]
    bins = [(source(("inventory", "bins", i), b), b) for i, b in enumerate(inv.bins)]
    locations: list[LocationEntry] = []

    def walk(nodes: list[InventoryLocation], loc: tuple[Any, ...], above: tuple[str, ...]) -> None:
        for i, n in enumerate(nodes):
            here = (*loc, i)
            locations.append((InventorySource(path=here), (*above, n.name), n.kind, "name"))
            walk(n.children, (*here, "children"), (*above, n.name))

    walk(inv.locations, ("inventory", "locations"), ())
    for r in inv._location_rows:
        locations.append((source((), r), r.parts, r.kind, "path"))
    return items, locations, bins


def _site_problem(p: InventoryProblem, kind_of: dict[str, str]) -> tuple[tuple[Any, ...], str]:
    """A problem as the site file reports it: at its path, or at the `import:` of its CSV file."""
    src, key, message = p
    if src.file is None:
        return (*src.path, key), message
    kind = kind_of.get(src.file, "items")
    return ("inventory", "import", kind), f"{src.file}: line {src.line}, column {key}: {message}"


def _inventory_checks(site: Site) -> list[tuple[tuple[Any, ...], str]]:
    inv = site.inventory
    if inv is None:
        return []
    problems, _ = check_inventory(*inventory_entries(inv), site.devices)
    files = inv.import_ or InventoryImport()
    kind_of = {str(getattr(files, k)): k for k in INVENTORY_CSV_KINDS if getattr(files, k)}
    return [_site_problem(p, kind_of) for p in problems]


def _inventory_warnings(site: Site) -> list[tuple[tuple[Any, ...], str]]:
    """A smart shelf whose simulator weighs other pieces (or another empty bin) than its item
    and bin declare: its simulated counts would be off; a shelf without a weight_g field."""
    inv = site.inventory
    if inv is None:
        return []
    weights = {i.sku: i.unit_weight_g for i in inv.items}
    by_id = {d.id: d for d in site.devices}
    out: list[tuple[tuple[Any, ...], str]] = []
    for i, b in enumerate(inv.bins):
        d = by_id.get(b.shelf or "")
        if not isinstance(d, MqttDevice) or b._source is not None:
            continue
        units = d.metric_units()
        if units and "weight_g" not in units:
            out.append((("inventory", "bins", i, "shelf"), f"shelf {d.id!r} carries no weight_g field: the inventory counts a bin by its weight"))
        sim = d.simulator
        if not isinstance(sim, SmartShelfSimulator):
            continue
        w = weights.get(b.item)
        if w is not None and not math.isclose(w, sim.params.unit_weight_g, rel_tol=1e-9):
            out.append((("inventory", "bins", i, "shelf"), f"the simulator of {d.id} weighs pieces of {sim.params.unit_weight_g:g} g, item {b.item} says {w:g} g: its simulated counts will be off"))
        if sim.params.tare_g is not None and not math.isclose(b.tare_g, sim.params.tare_g, rel_tol=1e-9):
            out.append((("inventory", "bins", i, "tare_g"), f"the simulator of {d.id} has a bin of {sim.params.tare_g:g} g, this bin says {b.tare_g:g} g: its simulated counts will be off"))
    return out


# -- CSV files ---------------------------------------------------------------------------------

INVENTORY_CSV_KINDS = ("items", "locations", "bins")
INVENTORY_CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "items": ("sku", "name", "category", "unit", "pack_size", "unit_weight_g", "critical"),
    "locations": ("path", "kind"),
    "bins": ("item", "location", "min", "reorder_point", "par", "reorder_qty", "lead_time", "tare_g", "shelf"),
}
INVENTORY_CSV_REQUIRED: dict[str, tuple[str, ...]] = {
    "items": ("sku", "name"), "locations": ("path", "kind"), "bins": ("item", "location", "par"),
}  # fmt: skip
_CSV_MODELS: dict[str, type[InventoryItem] | type[InventoryLocationRow] | type[InventoryBin]] = {
    "items": InventoryItem, "locations": InventoryLocationRow, "bins": InventoryBin,
}  # fmt: skip
MAX_CSV_BYTES = 64 * 1024 * 1024

CsvEntry = InventoryItem | InventoryLocationRow | InventoryBin


@dataclass(frozen=True)
class CsvIssue:
    line: int
    column: str | None  # its header name
    message: str
    position: int | None = None  # 0-based: shown as a spreadsheet's letter

    def render(self, file: str) -> str:
        """``FILE: line N, column NAME (C): MESSAGE``."""
        col = ""
        if self.column is not None:
            col = f", column {self.column}" + (f" ({column_letter(self.position)})" if self.position is not None else "")
        return f"{file}: line {self.line}{col}: {_clip(self.message, MAX_ISSUE_CHARS)}"


def column_letter(i: int) -> str:
    """A spreadsheet's name of the 0-based column ``i``: A … Z, AA …"""
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(65 + r) + out
    return out


@dataclass(frozen=True)
class InventoryCsv:
    """A CSV file of one kind read: its header, its valid rows (line, entry), every problem."""

    kind: str
    columns: tuple[str, ...]
    rows: tuple[tuple[int, CsvEntry], ...]
    issues: tuple[CsvIssue, ...]


def read_inventory_csv(text: str, kind: str) -> InventoryCsv:
    """Read a CSV file of ``kind`` (items, locations, bins): a header row naming columns of
    INVENTORY_CSV_COLUMNS (in any order, the required ones present), then one entry a row.
    Cells are trimmed; an empty cell takes the column's default; blank rows are skipped. Every
    bad row is reported (its line, its column), not just the first."""
    if kind not in _CSV_MODELS:
        raise ValueError(f"kind must be one of {', '.join(INVENTORY_CSV_KINDS)}, not {kind!r}")
    model, allowed = _CSV_MODELS[kind], INVENTORY_CSV_COLUMNS[kind]
    issues: list[CsvIssue] = []
    rows: list[tuple[int, CsvEntry]] = []
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    header: list[str] | None = None
    line = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            issues.append(CsvIssue(line, None, f"not valid CSV: {exc}"))
            break
        start, line = line, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            for i, name in enumerate(header):
                if name not in allowed:
                    issues.append(CsvIssue(start, name, f"unknown column; the columns of {kind} are {', '.join(allowed)}", i))
                elif header.index(name) != i:
                    issues.append(CsvIssue(start, name, "this column appears twice", i))
            for name in INVENTORY_CSV_REQUIRED[kind]:
                if name not in header:
                    issues.append(CsvIssue(start, None, f"required column {name!r} is missing"))
            if issues:
                break
            continue
        if len(cells) > len(header):
            extra = [c for c in cells[len(header):] if c.strip()]
            if extra:
                issues.append(CsvIssue(start, None, f"{len(cells)} values, but the header names {len(header)} columns"))
                continue
        values = {name: c.strip() for name, c in zip(header, cells, strict=False) if c.strip()}
        try:
            rows.append((start, model.model_validate(values)))
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                col = str(err["loc"][0]) if err["loc"] else None
                msg = "a value is required" if err["type"] == "missing" else _message(dict(err))
                issues.append(CsvIssue(start, col, msg, header.index(col) if col in header else None))
    if header is None and not issues:
        issues.append(CsvIssue(1, None, f"no header row: expected the columns {', '.join(allowed)}"))
    return InventoryCsv(kind, tuple(header or ()), tuple(rows), tuple(issues))


def format_duration(seconds: float) -> str:
    """Seconds as parse_duration reads them back exactly: ``2d``, ``4h``, ``90m``, ``45s``, ``0.25s``."""
    if seconds.is_integer():
        whole = int(seconds)
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if whole and whole % size == 0:
                return f"{whole // size}{unit}"
        return f"{whole}s"
    return f"{Decimal(repr(seconds)):f}s"


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    return str(value)


def inventory_csv_row(entry: CsvEntry) -> list[str]:
    """One entry as a row of its CSV format (the columns of INVENTORY_CSV_COLUMNS, in order)."""
    kind = next(k for k, m in _CSV_MODELS.items() if isinstance(entry, m))
    out = []
    for name in INVENTORY_CSV_COLUMNS[kind]:
        value = getattr(entry, name)
        out.append(format_duration(value) if name == "lead_time" else _csv_value(value))
    return out


def format_inventory_csv(kind: str, entries: Iterable[CsvEntry]) -> str:
    """A CSV file of ``kind``: the header, then a row per entry (read back by read_inventory_csv)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(INVENTORY_CSV_COLUMNS[kind])
    for e in entries:
        w.writerow(inventory_csv_row(e))
    return buf.getvalue()


def read_csv_file(path: str | os.PathLike[str]) -> str:
    """The text of a CSV file (UTF-8, a BOM allowed); ValueError naming what is wrong."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_CSV_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CSV_BYTES:
        raise ValueError(f"larger than {MAX_CSV_BYTES // (1024 * 1024)} MiB")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(_not_utf8(raw, exc)) from None


def _inventory_imports(site: Site, base_dir: Path) -> tuple[Site, list[tuple[tuple[Any, ...], str]]]:
    """The site with the entries of its inventory's CSV files (`import:`) joined to those of the
    file, each remembering its CSV line; or the problems of those files."""
    inv = site.inventory
    if inv is None or inv.import_ is None:
        return site, []
    problems: list[tuple[tuple[Any, ...], str]] = []
    items, bins = list(inv.items), list(inv.bins)
    location_rows: list[InventoryLocationRow] = []
    for kind in INVENTORY_CSV_KINDS:
        name = getattr(inv.import_, kind)
        if name is None:
            continue
        where = ("inventory", "import", kind)
        try:
            text = read_csv_file(base_dir / name)  # an absolute name stays itself
        except ValueError as exc:
            problems.append((where, f"{name}: {exc}"))
            continue
        table = read_inventory_csv(text, kind)
        problems += [(where, i.render(name)) for i in table.issues]
        for line, entry in table.rows:
            entry._source = (name, line)
            if isinstance(entry, InventoryItem):
                items.append(entry)
            elif isinstance(entry, InventoryBin):
                bins.append(entry)
            else:
                location_rows.append(entry)
    merged = inv.model_copy(update={"items": items, "bins": bins})
    merged._location_rows = tuple(location_rows)
    return site.model_copy(update={"inventory": merged}), problems
