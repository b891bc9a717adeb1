"""A minimal MQTT 3.1.1 publishing client on asyncio, written by hand.

Enough for simulated devices: CONNECT (client id, clean session, keepalive, username/password,
a retained last will), PUBLISH at QoS 0 and 1 (QoS 1 waits for PUBACK and is resent with DUP
after a reconnect), PINGREQ keepalive and DISCONNECT. If the broker goes away the client
reconnects with exponential backoff; messages published meanwhile wait in a bounded queue
(the oldest is dropped when it is full).

    pub = MqttPublisher("127.0.0.1", 1883, client_id="shelf-1")
    await pub.start()
    await pub.publish("a/b", b"42", qos=1)   # returns when the broker has acknowledged
    pub.publish("a/b", b"43")                # fire and forget: the future may be ignored
    await pub.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

from eqmon.backoff import Backoff

log = logging.getLogger(__name__)

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

CONNACK_ERRORS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


# ---------------------------------------------------------------------------------------------
# Encoding


def encode_remaining_length(n: int) -> bytes:
    """MQTT variable-length integer (1–4 bytes, 7 bits each, continuation bit 0x80)."""
    if not 0 <= n <= 268_435_455:
        raise ValueError(f"remaining length out of range: {n}")
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def decode_remaining_length(data: bytes) -> tuple[int, int]:
    """(value, bytes used) from the start of ``data``; ValueError if malformed or incomplete."""
    value, mult = 0, 1
    for i in range(4):
        if i >= len(data):
            raise ValueError("incomplete remaining length")
        b = data[i]
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, i + 1
        mult *= 128
    raise ValueError("remaining length longer than 4 bytes")


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    if len(b) > 65535:
        raise ValueError("string longer than 65535 bytes")
    return struct.pack(">H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + encode_remaining_length(len(body)) + body


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = True


def encode_connect(
    client_id: str,
    *,
    keepalive: int = 30,
    clean_session: bool = True,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
) -> bytes:
    flags = 0x02 if clean_session else 0
    payload = _str(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _str(will.topic) + _str(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _str(username)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
    body = _str("MQTT") + bytes([4, flags]) + struct.pack(">H", keepalive) + payload
    return _packet(CONNECT << 4, body)


def encode_publish(
    topic: str, payload: bytes, *, qos: int = 0, retain: bool = False, packet_id: int = 0, dup: bool = False
) -> bytes:
    first = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = _str(topic)
    if qos > 0:
        body += struct.pack(">H", packet_id)
    return _packet(first, body + payload)


PINGREQ_PACKET = bytes([PINGREQ << 4, 0])
DISCONNECT_PACKET = bytes([DISCONNECT << 4, 0])


# ---------------------------------------------------------------------------------------------
# Client


@dataclass
class _Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    future: asyncio.Future[None]
    packet_id: int = 0


class MqttError(Exception):
    pass


class MqttPublisher:
    """Publishing-only MQTT 3.1.1 client with reconnect, a bounded queue and QoS 1 retries."""

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        client_id: str,
        keepalive: int = 30,
        username: str | None = None,
        password: str | None = None,
        will: Will | None = None,
        queue_limit: int = 1000,
        max_inflight: int = 20,
        backoff_min: float = 0.1,
        backoff_max: float = 5.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if not client_id:
            raise ValueError("client_id must not be empty")
        self.host, self.port = host, port
        self.client_id = client_id
        self.keepalive = keepalive
        self.username, self.password = username, password
        self.will = will
        self.queue_limit = queue_limit
        self.max_inflight = max_inflight
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        # reconnect: backoff_min, doubling up to backoff_max, no jitter; reset after a session
        self._backoff = Backoff(backoff_min, backoff_max, jitter=(1.0, 1.0))
        self.connect_timeout = connect_timeout
        self._queue: deque[_Message] = deque()
        self._inflight: dict[int, _Message] = {}  # packet id → message awaiting PUBACK
        self._next_pid = 1
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._stopping = False
        self.dropped = 0  # messages dropped because the queue was full
        self.connects = 0  # successful CONNECTs
        self.last_error: str | None = None

    # -- public API ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def pending(self) -> int:
        """Messages queued or awaiting PUBACK."""
        return len(self._queue) + len(self._inflight)

    async def start(self) -> None:
        """Start the connection task (returns at once; see :meth:`wait_connected`)."""
        if self._task is not None:
            raise RuntimeError("publisher already started")
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"mqtt-publisher-{self.client_id}")

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    def publish(
        self, topic: str, payload: bytes | str, *, qos: int = 0, retain: bool = False
    ) -> asyncio.Future[None]:
        """Queue a message; the future completes when it was written (QoS 0) or acknowledged
        (QoS 1), and is cancelled if the message is dropped or the client stops first."""
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        if isinstance(payload, str):
            payload = payload.encode()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(self._queue) >= self.queue_limit:
            old = self._queue.popleft()
            old.future.cancel()
            self.dropped += 1
        self._queue.append(_Message(topic, payload, qos, retain, fut))
        self._wake.set()
        return fut

    async def flush(self, timeout: float = 2.0) -> bool:
        """Wait until nothing is queued or in flight; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.pending and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return not self.pending

    async def stop(self, flush_timeout: float = 1.0) -> None:
        """Send what can be sent within ``flush_timeout``, DISCONNECT and close."""
        if self._task is None:
            return
        if self.connected and flush_timeout > 0:
            await self.flush(flush_timeout)
        self._stopping = True
        writer = self._writer
        if writer is not None and self.connected:
            with contextlib.suppress(Exception):
                writer.write(DISCONNECT_PACKET)
                await asyncio.wait_for(writer.drain(), 1.0)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        for m in list(self._queue) + list(self._inflight.values()):
            m.future.cancel()
        self._queue.clear()
        self._inflight.clear()

    def drop_connection(self) -> None:
        """Close the socket without DISCONNECT (the broker then sends the will); reconnects."""
        if self._writer is not None:
            self._writer.transport.abort()

    # -- connection loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = self._backoff
        backoff.reset()
        while not self._stopping:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), self.connect_timeout
                )
            except (TimeoutError, OSError) as exc:
                self.last_error = f"connect to {self.host}:{self.port}: {exc or 'timeout'}"
                await asyncio.sleep(backoff.next())
                continue
            self._writer = writer
            connects = self.connects
            try:
                await self._session(reader, writer)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, MqttError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                log.debug("mqtt %s: connection lost: %s", self.client_id, self.last_error)
            finally:
                self._connected.clear()
                self._writer = None
                writer.transport.abort()
            if self.connects > connects:
                backoff.reset()  # the broker was there: retry soon
            if not self._stopping:
                await asyncio.sleep(backoff.next())

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            encode_connect(
                self.client_id,
                keepalive=self.keepalive,
                username=self.username,
                password=self.password,
                will=self.will,
            )
        )
        await writer.drain()
        ptype, _, body = await asyncio.wait_for(self._read_packet(reader), self.connect_timeout)
        if ptype != CONNACK or len(body) < 2:
            raise MqttError(f"expected CONNACK, got packet type {ptype}")
        if body[1] != 0:
            raise MqttError(f"connection refused: {CONNACK_ERRORS.get(body[1], body[1])}")
        self.connects += 1
        self._connected.set()
        # Resend what the broker has not acknowledged, in order, flagged as duplicates.
        # (a dict keeps insertion order, which is the order of first sending)
        for m in list(self._inflight.values()):
            writer.write(
                encode_publish(m.topic, m.payload, qos=1, retain=m.retain, packet_id=m.packet_id, dup=True)
            )
        await writer.drain()
        state: dict[str, Any] = {"last_rx": asyncio.get_running_loop().time()}
        reader_task = asyncio.create_task(self._reader(reader, state))
        sender_task = asyncio.create_task(self._sender(writer, state))
        try:
            done, _ = await asyncio.wait({reader_task, sender_task}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # re-raise the failure
            raise MqttError("connection closed")
        finally:
            for t in (reader_task, sender_task):
                t.cancel()
            await asyncio.gather(reader_task, sender_task, return_exceptions=True)

    async def _read_packet(self, reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
        first = (await reader.readexactly(1))[0]
        raw = bytearray()
        while True:
            b = (await reader.readexactly(1))[0]
            raw.append(b)
            if not b & 0x80:
                break
            if len(raw) >= 4:
                raise MqttError("malformed remaining length")
        length, _ = decode_remaining_length(bytes(raw))
        body = await reader.readexactly(length) if length else b""
        return first >> 4, first & 0x0F, body

    async def _reader(self, reader: asyncio.StreamReader, state: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            ptype, _, body = await self._read_packet(reader)
            state["last_rx"] = loop.time()
            if ptype == PUBACK and len(body) >= 2:
                pid = struct.unpack(">H", body[:2])[0]
                m = self._inflight.pop(pid, None)
                if m is not None and not m.future.done():
                    m.future.set_result(None)
                self._wake.set()
            elif ptype == PINGRESP:
                pass
            # Nothing else is expected by a publish-only client; ignore it.

    def _alloc_pid(self) -> int:
        while True:
            pid = self._next_pid
            self._next_pid = pid % 65535 + 1
            if pid not in self._inflight:
                return pid

    async def _sender(self, writer: asyncio.StreamWriter, state: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        last_tx = loop.time()
        ping_sent: float | None = None
        while True:
            self._wake.clear()
            while self._queue and len(self._inflight) < self.max_inflight:
                m = self._queue.popleft()
                if m.future.cancelled():
                    continue
                if m.qos == 1:
                    m.packet_id = self._alloc_pid()
                    self._inflight[m.packet_id] = m
                writer.write(
                    encode_publish(m.topic, m.payload, qos=m.qos, retain=m.retain, packet_id=m.packet_id)
                )
                try:
                    await writer.drain()
                except BaseException:
                    if m.qos == 0:
                        self._queue.appendleft(m)  # not known to be sent: try again later
                    raise
                last_tx = loop.time()
                if m.qos == 0 and not m.future.done():
                    m.future.set_result(None)
            now = loop.time()
            if self.keepalive:
                if ping_sent is not None and state["last_rx"] >= ping_sent:
                    ping_sent = None
                if ping_sent is not None and now - ping_sent > self.keepalive:
                    raise MqttError("no PINGRESP from broker")
                if ping_sent is None and now - last_tx >= self.keepalive * 0.75:
                    writer.write(PINGREQ_PACKET)
                    await writer.drain()
                    last_tx = ping_sent = now
            timeout = max(0.05, self.keepalive * 0.25) if self.keepalive else None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
