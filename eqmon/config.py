"""The site file: one YAML document describing devices, sinks, broker, alert rules and contacts.

It is validated once, at start-up, by the pydantic models below. Any error stops start-up with
``ConfigError``, whose lines read ``FILE: devices[3].registers[0].data_type: expected one of …``.
Secrets never live in the file: it names environment variables (``token_env``, ``password_env``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

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
        return float(value)
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


class SimulatorSpec(_Model):
    """How `eqmon simulate` / `eqmon demo` stand in for this device."""

    model: str  # e.g. medication_refrigerator, vaccine_freezer, blanket_warmer, smart_shelf
    seed: int = 0
    params: dict[str, float | int | str | bool] = Field(default_factory=dict)


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

    @property
    def connect_timeout_s(self) -> float:
        return self.timeout if self.connect_timeout is None else self.connect_timeout

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


class MqttDevice(_DeviceBase, PayloadSpec):
    protocol: Literal["mqtt"]
    # The device's topic; may hold {metric} and wildcards. Omit it when a broker mapping
    # (mqtt.mappings) routes this device's messages.
    topic: str | None = None
    stale_after: Duration = 3600.0

    @model_validator(mode="after")
    def _check(self) -> MqttDevice:
        if self.topic is not None:
            names = check_topic_template(self.topic)
            if set(names) - {"metric"}:
                raise ValueError("a device topic may only name {metric}; use mqtt.mappings for more")
            self._check_payload(self.topic)
        return self


class MqttMapping(PayloadSpec):
    """Messages on a topic template routed to devices by the template's {device_id} part."""

    topic: str

    @model_validator(mode="after")
    def _check(self) -> MqttMapping:
        check_topic_template(self.topic, require=("device_id",))
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


class ThresholdRule(_Model):
    """Raise when a metric stays beyond a limit for ``for``; resolve when back inside."""

    id: Identifier
    kind: Literal["threshold"]
    metric: Identifier
    devices: list[Identifier] = Field(default_factory=list)  # explicit device ids …
    device_kind: Identifier | None = None  # … or every device of one kind
    above: float | None = None
    below: float | None = None
    for_: Duration = Field(default=0.0, alias="for")
    hysteresis: float = Field(default=0.0, ge=0)
    severity: Literal["info", "warning", "critical"] = "warning"
    action: str = ""  # what the coordinator should do, shown in the alert line

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _check(self) -> ThresholdRule:
        if self.above is None and self.below is None:
            raise ValueError("a threshold rule needs above, below or both")
        if not self.devices and self.device_kind is None:
            raise ValueError("a rule needs devices or device_kind")
        return self


AlertRule = Annotated[ThresholdRule, Field(discriminator="kind")]


class Alerts(_Model):
    rules: list[AlertRule] = Field(default_factory=list)


class Contact(_Model):
    name: str
    role: str = "coordinator"
    email: str | None = None
    phone: str | None = None


class Api(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class ScenarioStep(_Model):
    """A fault injected into a simulated device at a time after start."""

    at: Duration
    device: Identifier
    fault: str  # drift | stuck | sentinel | fault_bit | silence | clear | … (simulators/)
    params: dict[str, float | int | str | bool] = Field(default_factory=dict)


class SiteInfo(_Model):
    name: str
    timezone: str = "UTC"


class Site(_Model):
    site: SiteInfo
    devices: list[Device] = Field(min_length=1)
    mqtt: MqttBroker | None = None
    telemetry: Telemetry = Telemetry()
    alerts: Alerts = Alerts()
    contacts: list[Contact] = Field(default_factory=list)
    api: Api = Api()
    scenario: list[ScenarioStep] = Field(default_factory=list)

    def device(self, device_id: str) -> ModbusDevice | MqttDevice:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise KeyError(device_id)

    def modbus_devices(self) -> list[ModbusDevice]:
        return [d for d in self.devices if isinstance(d, ModbusDevice)]

    def mqtt_devices(self) -> list[MqttDevice]:
        return [d for d in self.devices if isinstance(d, MqttDevice)]


# ---------------------------------------------------------------------------------------------
# Loading and error reporting


@dataclass(frozen=True)
class ConfigIssue:
    path: str  # e.g. devices[3].registers[0].data_type
    message: str
    line: int | None = None


class ConfigError(Exception):
    """The site file is not usable; ``str()`` gives one line per problem."""

    def __init__(self, file: str | os.PathLike[str], issues: Iterable[ConfigIssue]) -> None:
        self.file = str(file)
        self.issues = list(issues)
        super().__init__(self.render())

    def render(self) -> str:
        lines = []
        for i in self.issues:
            where = f"{self.file}: {i.path}" if i.path else self.file
            line = f" (line {i.line})" if i.line else ""
            lines.append(f"{where}: {i.message}{line}")
        return "\n".join(lines)


_UNION_TAGS = {"modbus", "mqtt", "threshold"}


def _format_loc(loc: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    parts: list[str] = []
    clean: list[Any] = []
    prev_was_index = False
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            clean.append(item)
            prev_was_index = True
            continue
        # pydantic puts the discriminator's value into the location of a tagged union member.
        if prev_was_index and item in _UNION_TAGS:
            prev_was_index = False
            continue
        if item == "for_":
            item = "for"
        parts.append(f".{item}" if parts else str(item))
        clean.append(item)
        prev_was_index = False
    return "".join(parts), tuple(clean)


def _message(err: dict[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected')}, got {err.get('input')!r}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        return f"expected one of {ctx.get('expected_tags')}, got {ctx.get('tag')!r}"
    if kind == "union_tag_not_found":
        return f"required key {ctx.get('discriminator')} is missing"
    msg: str = err["msg"]
    if msg.startswith("Input should be "):
        head = msg[len("Input should be ") :].split(",")[0]
        return f"expected {head}, got {err.get('input')!r}"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg[:1].lower() + msg[1:] if msg else kind


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line in the YAML source of the node at ``loc`` (or its nearest parent)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                    nxt = (k, v)
                    break
            if nxt is None:
                break
            line = nxt[0].start_mark.line + 1
            node = nxt[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
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
    # MQTT devices without a topic of their own must be reached by a broker mapping.
    # (MQTT devices without any `mqtt:` section are allowed: `eqmon demo` embeds a broker and
    # `eqmon run` refuses them, see eqmon_app/service.py.)
    mappings = site.mqtt.mappings if site.mqtt else []
    for i, d in enumerate(site.devices):
        if isinstance(d, MqttDevice) and d.topic is None and not mappings:
            problems.append((("devices", i, "topic"), "required key is missing (no mqtt.mappings route this device)"))
    return problems


def parse_site(text: str, file: str = "<site>") -> Site:
    """Validate a site document; raise ConfigError naming every problem."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(file, [ConfigIssue("", f"{where}not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if not isinstance(data, dict):
        raise ConfigError(file, [ConfigIssue("", "expected a mapping at the top level")])
    try:
        site = Site.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            if err["type"] == "union_tag_invalid":  # point at the tag itself
                loc += (str((err.get("ctx") or {}).get("discriminator", "")).strip("'"),)
            path, clean = _format_loc(loc)
            issues.append(ConfigIssue(path, _message(dict(err)), _line_of(root, clean)))
        raise ConfigError(file, issues) from None
    problems = _cross_checks(site)
    if problems:
        raise ConfigError(
            file,
            [ConfigIssue(_format_loc(loc)[0], msg, _line_of(root, loc)) for loc, msg in problems],
        )
    return site


def load_site(path: str | os.PathLike[str]) -> Site:
    """Read and validate the site file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(p, [ConfigIssue("", f"cannot read: {exc.strerror}")]) from None
    return parse_site(text, str(p))
