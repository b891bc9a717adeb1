"""MQTT subscription. The only module of eqmon that imports paho-mqtt.

Each MQTT device names a topic and how its payload maps to metrics. Messages are decoded into
``Reading`` objects on paho's network thread and handed to the event loop; a bad payload is
counted by reason, its first occurrence logged, and never stops the collector.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from eqmon.config import MqttBroker, MqttDevice
from eqmon.domain import Quality, Reading

from .health import DeviceHealth

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 64 * 1024


class PayloadError(ValueError):
    """A message that cannot become readings; ``reason`` is the counter it is filed under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _lookup(doc: Any, path: str) -> Any:
    node = doc
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise PayloadError("missing_field", f"no field {path!r}")
    return node


def parse_payload(device: MqttDevice, payload: bytes, received_at: float) -> list[Reading]:
    """Readings from one message of ``device``; raises PayloadError naming what was wrong."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError("oversized", f"{len(payload)} bytes")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("not_utf8", "payload is not UTF-8 text") from None
    ts = received_at
    if device.payload == "number":
        try:
            value = float(text.strip())
        except ValueError:
            raise PayloadError("not_a_number", repr(text[:40])) from None
        f = device.fields[0]
        return [Reading(device.id, f.metric, round(value * f.scale, 9), ts, Quality.GOOD, f.unit)]
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError("invalid_json", str(exc)) from None
    if not isinstance(doc, dict):
        raise PayloadError("wrong_type", "expected a JSON object")
    if "ts" in doc:
        raw_ts = doc["ts"]
        if not isinstance(raw_ts, int | float) or isinstance(raw_ts, bool):
            raise PayloadError("wrong_type", "field 'ts' is not a number")
        ts = float(raw_ts)
    readings = []
    for f in device.fields:
        value = _lookup(doc, f.path or f.metric)
        if isinstance(value, bool) or isinstance(value, str):
            readings.append(Reading(device.id, f.metric, value, ts, Quality.GOOD, f.unit))
        elif isinstance(value, int | float):
            value = round(value * f.scale, 9) if f.scale != 1.0 else value
            readings.append(Reading(device.id, f.metric, value, ts, Quality.GOOD, f.unit))
        else:
            raise PayloadError("wrong_type", f"field {f.path!r} is {type(value).__name__}")
    return readings


class MqttCollector:
    """Subscribes to every MQTT device's topic and hands readings to ``on_readings``.

    paho runs its network loop on its own thread; readings cross to the asyncio loop with
    ``call_soon_threadsafe``, so everything downstream stays single-threaded.
    """

    def __init__(
        self,
        broker: MqttBroker,
        devices: Sequence[MqttDevice],
        health: Callable[[str], DeviceHealth],
        on_readings: Callable[[list[Reading]], Awaitable[None]],
        *,
        clock: Callable[[], float],
    ) -> None:
        self.broker = broker
        self._by_topic = {d.topic: d for d in devices}
        self._health = {d.id: health(d.id) for d in devices}
        self._on_readings = on_readings
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bad_payloads: Counter[str] = Counter()
        self.messages = 0
        self.connected = False
        self._stopping = False
        self._tasks: set[asyncio.Future[None]] = set()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=broker.client_id,
            clean_session=False,  # a persistent session: messages sent while we were away arrive
            protocol=paho.MQTTv311,
        )
        if broker.username:
            password = os.environ.get(broker.password_env, "") if broker.password_env else None
            self._client.username_pw_set(broker.username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive)
        self._client.loop_start()

    async def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    # paho callbacks, on paho's thread -----------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            log.error("MQTT broker %s:%s refused the connection: %s", self.broker.host, self.broker.port, rc)
            return
        self.connected = True
        log.info("connected to MQTT broker %s:%s", self.broker.host, self.broker.port)
        if self._by_topic:
            client.subscribe([(t, self.broker.qos) for t in self._by_topic])

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if self.connected and not self._stopping:
            log.warning("lost the MQTT broker %s:%s (%s); reconnecting", self.broker.host, self.broker.port, rc)
        self.connected = False

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        received = self._clock()
        device = self._by_topic.get(msg.topic)
        if device is None:
            self._count_bad("unknown_topic", f"{msg.topic}")
            return
        try:
            readings = parse_payload(device, msg.payload, received)
        except PayloadError as exc:
            self._count_bad(exc.reason, f"{device.id} on {msg.topic}: {exc}")
            return
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._deliver, device.id, readings, received)

    def _deliver(self, device_id: str, readings: list[Reading], received: float) -> None:
        self.messages += 1
        self._health[device_id].success(received)
        task = asyncio.ensure_future(self._on_readings(readings))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _count_bad(self, reason: str, detail: str) -> None:
        self.bad_payloads[reason] += 1
        if self.bad_payloads[reason] == 1:
            log.warning("bad MQTT message (%s), first of its kind, counted from now on: %s", reason, detail)

    def check_stale(self, now: float) -> None:
        for h in self._health.values():
            h.check_stale(now)
