"""MQTT subscription. The only module of eqmon that imports paho-mqtt.

Delivery contract: QoS 1 on a persistent session with a stable client id, so that the broker
keeps what is published while eqmon is away; a message is acknowledged to the broker only after
its readings were handed on (``accept`` returned, i.e. they are in the durable spool), so a crash
means redelivery, never loss. Redelivered duplicates are harmless: stores keep one value per
device, metric and timestamp.

The client is "lean": no paho background thread. paho's socket is driven by this asyncio loop
(``add_reader``/``add_writer``), messages read in one wake-up are decoded and handed on as one
batch, and their acknowledgements are sent in the order the messages arrived (MQTT 3.1.1
§4.6). TCP_NODELAY is set on the socket (paho 2.2 does not set it, which costs tens of ms of
latency per acknowledgement round).

Bad input — invalid JSON, wrong types, missing fields, oversized payloads, unknown topics — is
counted by reason, the first of each reason is logged, the raw message is kept in a bounded
dead-letter list, and the collector goes on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import ssl
import threading
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from eqmon.backoff import Backoff
from eqmon.config import MqttBroker, MqttDevice, MqttMapping, PayloadSpec
from eqmon.domain import DeviceState, Quality, Reading

from .health import DeviceHealth

log = logging.getLogger(__name__)

RECONNECT_JITTER = (0.8, 1.0)  # reconnect delays are cut by up to 20 %, never lengthened
MIN_RECONNECT = 0.01  # reconnect_max 0 would retry in a busy loop: at least 10 ms between attempts


class PayloadError(ValueError):
    """A message that cannot become readings; ``reason`` is the counter it is filed under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Payload decoding (pure; table-tested)

_CONVERT: dict[str, Callable[[float], float]] = {
    "degF_to_degC": lambda v: (v - 32.0) * 5.0 / 9.0,
    "kPa_to_Pa": lambda v: v * 1000.0,
    "psi_to_kPa": lambda v: v * 6.894757293168361,
    "inH2O_to_Pa": lambda v: v * 249.08891,
    "mV_to_V": lambda v: v / 1000.0,
    "g_to_kg": lambda v: v / 1000.0,
    "lb_to_kg": lambda v: v * 0.45359237,
    "pct_to_ratio": lambda v: v / 100.0,
}
_TS_DIVISOR = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
_TRUE = {"true", "on", "1", "yes", "open", "online"}
_FALSE = {"false", "off", "0", "no", "closed", "offline"}


def _lookup(doc: Any, path: str) -> Any:
    node = doc
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise PayloadError("missing_field", f"no field {path!r}")
    return node


def _number(value: float | int, scale: float, convert: str | None) -> float | int:
    if convert is not None:
        value = _CONVERT[convert](float(value))
    if scale != 1.0:
        value = value * scale
    if isinstance(value, float):
        value = round(value, 9)  # 33 × 0.1 reads 3.3, not 3.3000000000000003
    return value


def _timestamp(doc: dict[str, Any], spec: PayloadSpec, received_at: float) -> float:
    path = spec.timestamp_path
    if not path:
        return received_at
    try:
        raw = _lookup(doc, path)
    except PayloadError:
        return received_at  # no timestamp in this message: the time it arrived
    if spec.timestamp_unit == "iso8601":
        if not isinstance(raw, str):
            raise PayloadError("wrong_type", f"field {path!r} is not an ISO 8601 string")
        try:
            t = datetime.fromisoformat(raw)
        except ValueError:
            raise PayloadError("bad_timestamp", f"field {path!r}: {raw[:40]!r}") from None
        if t.tzinfo is None:
            raise PayloadError("bad_timestamp", f"field {path!r} has no time zone")
        return t.timestamp()
    if not isinstance(raw, int | float) or isinstance(raw, bool):
        raise PayloadError("wrong_type", f"field {path!r} is not a number")
    return float(raw) / _TS_DIVISOR[spec.timestamp_unit]


def parse_payload(
    spec: PayloadSpec,
    device_id: str,
    payload: bytes | bytearray,
    received_at: float,
    *,
    topic_metric: str | None = None,
    max_bytes: int = 65536,
) -> list[Reading]:
    """Readings from one message; raises PayloadError naming what was wrong."""
    if len(payload) > max_bytes:
        raise PayloadError("oversized", f"{len(payload)} bytes (limit {max_bytes})")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("not_utf8", "payload is not UTF-8 text") from None

    if spec.payload != "json":
        f = spec.fields[0] if spec.fields else None
        metric = f.metric if f is not None else topic_metric
        unit = f.unit if f is not None else spec.unit
        assert metric is not None  # the site file checks: a field or {metric} in the topic
        word = text.strip()
        value: float | int | bool | str
        if spec.payload == "number":
            try:
                value = float(word)
            except ValueError:
                raise PayloadError("not_a_number", repr(word[:40])) from None
            if f is not None:
                value = _number(value, f.scale, f.convert)
        elif spec.payload == "bool":
            low = word.lower()
            if low in _TRUE:
                value = True
            elif low in _FALSE:
                value = False
            else:
                raise PayloadError("not_a_bool", repr(word[:40]))
        else:
            if word not in spec.values:
                raise PayloadError("unknown_enum", repr(word[:40]))
            value = spec.values[word]
        return [Reading(device_id, metric, value, received_at, Quality.GOOD, unit)]

    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError("invalid_json", str(exc)) from None
    if not isinstance(doc, dict):
        raise PayloadError("wrong_type", "expected a JSON object")
    ts = _timestamp(doc, spec, received_at)
    readings = []
    for f in spec.fields:
        v = _lookup(doc, f.path or f.metric)
        if isinstance(v, bool) or isinstance(v, str):
            readings.append(Reading(device_id, f.metric, v, ts, Quality.GOOD, f.unit))
        elif isinstance(v, int | float):
            readings.append(Reading(device_id, f.metric, _number(v, f.scale, f.convert), ts, Quality.GOOD, f.unit))
        elif v is None:
            readings.append(Reading(device_id, f.metric, None, ts, Quality.BAD, f.unit))
        else:
            raise PayloadError("wrong_type", f"field {f.path or f.metric!r} is {type(v).__name__}")
    if spec.unknown_fields != "ignore":
        known = {(f.path or f.metric).split(".")[0] for f in spec.fields}
        if spec.timestamp_path:
            known.add(spec.timestamp_path.split(".")[0])
        extra = [k for k in doc if k not in known]
        if extra and spec.unknown_fields == "reject":
            raise PayloadError("unknown_field", f"fields not in the mapping: {', '.join(sorted(extra))[:200]}")
        for k in extra:
            v = doc[k]
            if isinstance(v, int | float | bool | str) and len(k) <= 64:
                readings.append(Reading(device_id, k, v, ts, Quality.GOOD, ""))
    return readings


# ---------------------------------------------------------------------------------------------
# Topic routing


@dataclass(frozen=True, slots=True)
class _Route:
    levels: tuple[str, ...]  # literal text, "+", "#", or "{name}"
    spec: PayloadSpec
    device_id: str | None  # None: taken from the topic's {device_id}


@dataclass(slots=True)
class Routed:
    spec: PayloadSpec
    device_id: str
    metric: str | None


class TopicRouter:
    """Maps a message's topic to a device, a payload spec and (optionally) a metric."""

    def __init__(self, devices: Sequence[MqttDevice], mappings: Sequence[MqttMapping]) -> None:
        self.devices = {d.id: d for d in devices}
        self._exact: dict[str, MqttDevice] = {}
        self._routes: list[_Route] = []
        for d in devices:
            if d.topic is None:
                continue
            if "{" in d.topic or "+" in d.topic or "#" in d.topic:
                self._routes.append(_Route(tuple(d.topic.split("/")), d, d.id))
            else:
                self._exact[d.topic] = d
        for m in mappings:
            self._routes.append(_Route(tuple(m.topic.split("/")), m, None))

    def filters(self) -> list[str]:
        """The subscription filters: templates with their named parts as '+'."""
        out = dict.fromkeys(self._exact)
        for r in self._routes:
            out["/".join("+" if p.startswith("{") else p for p in r.levels)] = None
        return list(out)

    def route(self, topic: str) -> Routed | None:
        d = self._exact.get(topic)
        if d is not None:
            return Routed(d, d.id, None)
        levels = topic.split("/")
        for r in self._routes:
            names = _match(r.levels, levels)
            if names is None:
                continue
            device_id = r.device_id or names.get("device_id")
            if device_id is None or device_id not in self.devices:
                continue
            return Routed(r.spec, device_id, names.get("metric"))
        return None


def _match(pattern: tuple[str, ...], levels: list[str]) -> dict[str, str] | None:
    names: dict[str, str] = {}
    for i, p in enumerate(pattern):
        if p == "#":
            return names
        if i >= len(levels):
            return None
        if p == "+":
            continue
        if p.startswith("{"):
            names[p[1:-1]] = levels[i]
        elif p != levels[i]:
            return None
    return names if len(levels) == len(pattern) else None


def status_from_template(template: str, topic: str) -> str | None:
    names = _match(tuple(template.split("/")), topic.split("/"))
    return None if names is None else names.get("device_id")


# ---------------------------------------------------------------------------------------------
# The collector


@dataclass(slots=True)
class DeadLetter:
    received_at: float
    topic: str
    reason: str
    detail: str
    payload: bytes

    def as_dict(self) -> dict[str, Any]:
        try:
            text: str | None = self.payload[:4096].decode("utf-8")
            b64 = None
        except UnicodeDecodeError:
            text, b64 = None, base64.b64encode(self.payload[:4096]).decode()
        return {
            "received_at": self.received_at, "topic": self.topic, "reason": self.reason,
            "detail": self.detail, "size": len(self.payload), "payload": text, "payload_base64": b64,
        }  # fmt: skip


@dataclass(slots=True)
class _Batch:
    generation: int
    readings: list[Reading] = field(default_factory=list)
    acks: list[tuple[int, int]] = field(default_factory=list)  # (mid, qos) in arrival order
    seen: dict[str, float] = field(default_factory=dict)  # device id → received at
    retained: dict[str, float] = field(default_factory=dict)  # device id → ts of a retained state
    good: int = 0  # messages that became readings


def _authenticate(client: paho.Client, broker: MqttBroker) -> None:
    """The broker section's credentials and TLS on a paho client (collector and publisher)."""
    if broker.username:
        client.username_pw_set(broker.username, broker.password())
    if broker.tls is not None:
        t = broker.tls
        client.tls_set(
            ca_certs=t.ca_file, certfile=t.cert_file, keyfile=t.key_file,
            keyfile_password=t.key_password(), cert_reqs=ssl.CERT_REQUIRED,
        )  # fmt: skip
        client.tls_insecure_set(t.insecure)


class MqttCollector:
    """Subscribes to the site's MQTT devices and hands their readings to ``accept``."""

    MAX_QUEUED_BATCHES = 64  # past this, stop reading the socket until the spool catches up

    def __init__(
        self,
        broker: MqttBroker,
        devices: Sequence[MqttDevice],
        health: Callable[[str], DeviceHealth],
        accept: Callable[[list[Reading]], Awaitable[None]],
        *,
        clock: Callable[[], float],
    ) -> None:
        self.broker = broker
        self.router = TopicRouter(devices, broker.mappings)
        self._health = {d.id: health(d.id) for d in devices}
        self._accept = accept
        self._clock = clock
        self.bad_payloads: Counter[str] = Counter()
        self.dead_letters: deque[DeadLetter] = deque(maxlen=broker.dead_letters or None)
        self.messages = 0  # messages whose readings were handed on
        self.duplicates_redelivered = 0
        self.accept_failures = 0
        self.connected = False
        self.disconnected_since: float | None = clock()  # None while connected
        self.connects = 0
        self.refusals = 0  # CONNACKs refusing us (bad credentials, not authorised …)
        # After a lost connection: 1 s, 2 s, 4 s … up to reconnect_max, -20 % jitter; reset on connect.
        self._reconnect_cap = max(broker.reconnect_max, MIN_RECONNECT)
        self._disconnect_backoff = Backoff(min(1.0, self._reconnect_cap), self._reconnect_cap, jitter=RECONNECT_JITTER)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._sock: Any = None
        self._reading_paused = False
        self._generation = 0
        self._pending = _Batch(0)
        self._queue: asyncio.Queue[_Batch] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._reconnect_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._received = 0

        v5 = broker.protocol == "5"
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=broker.client_id,
            # A persistent session: what is published while we are away is kept for us.
            clean_session=None if v5 else False,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            manual_ack=True,
        )
        _authenticate(self._client, broker)
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = int(broker.session_expiry)
        if v5:
            self._client.connect_async(
                broker.host, broker.port, keepalive=broker.keepalive, clean_start=False, properties=props
            )
        else:
            self._client.connect_async(broker.host, broker.port, keepalive=broker.keepalive)
        c = self._client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_register_write
        c.on_socket_unregister_write = self._on_unregister_write

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._tasks = [
            asyncio.create_task(self._consume(), name="mqtt:consume"),
            asyncio.create_task(self._misc(), name="mqtt:keepalive"),
        ]
        self._schedule_connect(0.0)

    async def stop(self, *, drain_timeout: float = 10.0) -> None:
        """Hand on and acknowledge what was received, then disconnect."""
        self._stopping = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
        self._pause_reading()
        self._flush_pending()
        try:
            await asyncio.wait_for(self._queue.join(), drain_timeout)
        except TimeoutError:
            log.error("MQTT: %d batches not handed on at shutdown; the broker will redeliver them", self._queue.qsize())
        if self.connected:
            self._client.disconnect()
            for _ in range(50):  # let the loop write DISCONNECT out
                if self._sock is None:
                    break
                await asyncio.sleep(0.01)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._drop_socket()

    # -- connection management --------------------------------------------------------------

    def _schedule_connect(self, delay: float) -> None:
        if self._stopping:
            return
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.create_task(self._connect_loop(delay), name="mqtt:connect")

    async def _connect_loop(self, delay: float) -> None:
        # Connection attempts failing: from max(delay, 0.5 s), doubling up to reconnect_max.
        cap = self._reconnect_cap
        backoff = Backoff(min(max(delay, 0.5), cap), cap, jitter=RECONNECT_JITTER)
        if delay:
            await asyncio.sleep(delay)
        assert self._loop is not None
        while not self._stopping:
            try:
                # paho's connect is blocking (DNS, TCP, TLS handshake): off the event loop.
                rc = await self._loop.run_in_executor(None, self._client.reconnect)
                if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return
                err = str(rc)
            except (OSError, ssl.SSLError, ValueError) as exc:
                err = f"{type(exc).__name__}: {exc}"
            if self.connects == 0 or backoff.at_cap:
                log.warning("cannot reach MQTT broker %s:%s (%s); retrying", self.broker.host, self.broker.port, err)
            await asyncio.sleep(backoff.next())

    def _in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Run fn on the event loop thread (paho calls socket callbacks from connect's thread)."""
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._in_loop(self._add_socket, sock)

    def _add_socket(self, sock: Any) -> None:
        assert self._loop is not None
        self._sock = sock
        self._reading_paused = False
        self._loop.add_reader(sock, self._readable)
        if self._client.want_write():
            self._loop.add_writer(sock, self._writable)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._remove_socket, sock)

    def _remove_socket(self, sock: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(Exception):
            self._loop.remove_reader(sock)
        with contextlib.suppress(Exception):
            self._loop.remove_writer(sock)
        if self._sock is sock:
            self._sock = None

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._remove_socket(self._sock)

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._add_writer, sock)

    def _add_writer(self, sock: Any) -> None:
        if self._loop is not None and sock is self._sock:
            self._loop.add_writer(sock, self._writable)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._remove_writer, sock)

    def _remove_writer(self, sock: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_writer(sock)

    def _writable(self) -> None:
        self._client.loop_write()

    def _readable(self) -> None:
        # Read every message that is already here, then hand them on as one batch.
        for _ in range(2000):
            before = self._received
            rc = self._client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._received == before:
                break
        self._flush_pending()

    def _pause_reading(self) -> None:
        if self._sock is not None and self._loop is not None and not self._reading_paused:
            self._loop.remove_reader(self._sock)
            self._reading_paused = True

    def _resume_reading(self) -> None:
        if self._sock is not None and self._loop is not None and self._reading_paused and not self._stopping:
            self._loop.add_reader(self._sock, self._readable)
            self._reading_paused = False

    async def _misc(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._sock is not None:
                self._client.loop_misc()  # keepalive pings; notices a silent broker

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            self.refusals += 1
            if self.refusals == 1:
                log.error("MQTT broker %s:%s refused the connection: %s", self.broker.host, self.broker.port, rc)
            return
        self._disconnect_backoff.reset()
        self.connected = True
        self.disconnected_since = None
        self.connects += 1
        self._generation += 1
        self._pending = _Batch(self._generation)
        log.info(
            "connected to MQTT broker %s:%s as %s (session %s)",
            self.broker.host, self.broker.port, self.broker.client_id,
            "resumed" if getattr(flags, "session_present", False) else "new",
        )  # fmt: skip
        group = self.broker.shared_group
        subs = self.router.filters()
        if self.broker.status_topic:
            subs.append("/".join("+" if p.startswith("{") else p for p in self.broker.status_topic.split("/")))
        topics: list[tuple[str, int]] = [(f"$share/{group}/{t}" if group else t, self.broker.qos) for t in subs]
        if topics:
            client.subscribe(topics)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        was = self.connected
        self.connected = False
        if was:
            self.disconnected_since = self._clock()
        if self._stopping:
            return
        if was:
            log.warning("lost the MQTT broker %s:%s (%s); reconnecting", self.broker.host, self.broker.port, rc)
        self._schedule_connect(self._disconnect_backoff.next())

    # -- messages ---------------------------------------------------------------------------

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._received += 1
        now = self._clock()
        batch = self._pending
        if msg.qos:
            batch.acks.append((msg.mid, msg.qos))
        topic = msg.topic
        routed = self.router.route(topic)
        if routed is None:
            if self.broker.status_topic and self._status(topic, msg.payload, now):
                return
            self._bad("unknown_topic", topic, f"no device or mapping for topic {topic!r}", msg.payload, now)
            return
        try:
            readings = parse_payload(
                routed.spec, routed.device_id, msg.payload, now,
                topic_metric=routed.metric, max_bytes=self.broker.max_payload_bytes,
            )  # fmt: skip
        except PayloadError as exc:
            self._bad(exc.reason, topic, f"{routed.device_id}: {exc}", msg.payload, now)
            return
        if msg.dup:
            self.duplicates_redelivered += 1
        batch.readings.extend(readings)
        if msg.retain and readings:
            # The state the broker kept for us, maybe from long ago: the device was heard at the
            # message's own time, not now (a shelf that died yesterday is not "online").
            heard = min(now, max(r.ts for r in readings))
            batch.retained[routed.device_id] = max(heard, batch.retained.get(routed.device_id, heard))
        else:
            batch.seen[routed.device_id] = now
        batch.good += 1

    def _status(self, topic: str, payload: bytes | bytearray, now: float) -> bool:
        assert self.broker.status_topic is not None
        device_id = status_from_template(self.broker.status_topic, topic)
        if device_id is None:
            return False
        h = self._health.get(device_id)
        if h is None:
            return False
        word = payload.decode("utf-8", "replace").strip().lower()
        if word in ("online", "1", "true"):
            h.reported(now, DeviceState.ONLINE, "device reports online")
        elif word in ("offline", "0", "false"):
            h.reported(now, DeviceState.OFFLINE, "device reports offline (or its last will)")
        else:
            self._bad("bad_status", topic, f"status {word[:40]!r}", payload, now)
        return True

    def _bad(self, reason: str, topic: str, detail: str, payload: bytes | bytearray, now: float) -> None:
        self.bad_payloads[reason] += 1
        if self.dead_letters.maxlen != 0:
            self.dead_letters.append(DeadLetter(now, topic, reason, detail, bytes(payload[:65536])))
        if self.bad_payloads[reason] == 1:
            log.warning("bad MQTT message (%s), first of its kind, counted from now on: %s", reason, detail)

    def _flush_pending(self) -> None:
        b = self._pending
        if not b.acks and not b.readings and not b.seen and not b.retained:
            return
        self._queue.put_nowait(b)
        self._pending = _Batch(self._generation)
        if self._queue.qsize() >= self.MAX_QUEUED_BATCHES:
            self._pause_reading()  # back-pressure: the broker holds what we do not read

    async def _consume(self) -> None:
        while True:
            batch = await self._queue.get()
            try:
                await self._hand_on(batch)
            finally:
                self._queue.task_done()
                if self._queue.qsize() < self.MAX_QUEUED_BATCHES // 2:
                    self._resume_reading()

    async def _hand_on(self, batch: _Batch) -> None:
        if batch.readings:
            try:
                await self._accept(batch.readings)
            except Exception as exc:  # not handed on: no ack, so the broker redelivers
                self.accept_failures += 1
                if self.accept_failures == 1 or self.accept_failures % 1000 == 0:
                    log.error("MQTT readings not accepted (%s); reconnecting so the broker redelivers them", exc)
                if batch.generation == self._generation and self.connected:
                    self._generation += 1  # later batches of this connection must not be acked
                    self._client.disconnect()
                return
        self.messages += batch.good
        for device_id, ts in batch.seen.items():
            self._health[device_id].success(ts)
        if batch.retained:
            now = self._clock()
            for device_id, ts in batch.retained.items():
                h = self._health[device_id]
                if device_id in batch.seen or (h.last_success is not None and ts <= h.last_success):
                    continue  # nothing newer: a retained state sent again on resubscribe
                if h.stale_after is not None and now - ts > h.stale_after:
                    h.last_success = ts  # heard of, but long ago: check_stale judges it
                    h.check_stale(now)
                    continue
                h.success(ts)
        if batch.generation == self._generation and self._sock is not None:
            for mid, qos in batch.acks:
                self._client.ack(mid, qos)

    def check_stale(self, now: float) -> None:
        """Mark devices that published nothing for their ``stale_after`` as stale. Not while the
        broker is out of reach: then nothing is heard from anyone, and that is one incident (the
        service raises "MQTT broker unreachable"), not one alert per device."""
        if not self.connected:
            return
        for h in self._health.values():
            h.check_stale(now)


# ---------------------------------------------------------------------------------------------
# Publishing (the MQTT notification channel, alerts/notify/channels.py, is handed ``publish``)


class MqttPublisher:
    """Publishes notifications on the site's broker for pager and nurse-call gateways: a paho
    client of its own (client id ``<client_id>-notify``, clean session), its network loop in
    paho's (daemon) thread, reconnecting with backoff up to ``reconnect_max``. ``publish``
    returns once the broker acknowledged the message (PUBACK at QoS 1), and raises
    ``ConnectionError`` when not connected or ``TimeoutError`` without an acknowledgement."""

    def __init__(self, broker: MqttBroker, *, timeout: float = 10.0) -> None:
        self.broker = broker
        self.timeout = timeout
        v5 = broker.protocol == "5"
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{broker.client_id}-notify",
            clean_session=None if v5 else True,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        )
        _authenticate(self._client, broker)
        self._client.reconnect_delay_set(1, max(1, int(broker.reconnect_max)))
        self.published = 0
        self._started = False

    def start(self) -> None:
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive)
        self._client.loop_start()
        self._started = True

    def stop(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False

    @property
    def connected(self) -> bool:
        return bool(self._client.is_connected())

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        if not self._client.is_connected():
            raise ConnectionError(f"not connected to the MQTT broker {self.broker.host}:{self.broker.port}")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"MQTT publish refused: {paho.error_string(info.rc)}")
        if qos > 0:
            # paho's thread sets the flag on PUBACK; wait for it off the event loop.
            await asyncio.to_thread(info.wait_for_publish, self.timeout)
            if not info.is_published():
                raise TimeoutError("no PUBACK from the MQTT broker in time")
        self.published += 1
