"""Small helpers for driving eqmon against the servers of :mod:`simulators.servers`, shared by
the tests and the benchmarks."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


async def wait_until(pred: Callable[[], object], timeout: float, what: str, *, every: float = 0.05) -> None:
    """Poll ``pred`` on the event loop until it is true; AssertionError naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


def create_mqtt_session(port: int, client_id: str, topic: str, qos: int = 1) -> None:
    """A persistent MQTT session as a previous run of a subscriber left it: subscribed, then
    gone, so the broker keeps what is published for it. (Messages published before a session
    subscribed are not for it, so tests and benchmarks of backlogs start with one.)"""
    done = threading.Event()
    c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    c.on_subscribe = lambda *a: done.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.subscribe(topic, qos)
        assert done.wait(10), "the broker never confirmed the subscription"
    finally:
        c.disconnect()
        c.loop_stop()


def clear_retained(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> list[str]:
    """Delete every retained message on the broker (an empty retained message to each topic
    that holds one), so that what one test's simulated devices left behind does not reach the
    next test's subscribers; returns the topics cleared. ``$SYS`` topics are left alone."""
    marker = f"eqmon-clear-retained/{uuid.uuid4().hex}"
    topics: list[str] = []
    subscribed, done = threading.Event(), threading.Event()

    def on_message(c: paho.Client, userdata: object, m: paho.MQTTMessage) -> None:
        if m.topic == marker:
            done.set()
        elif m.retain and m.payload:
            topics.append(m.topic)

    c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"eqmon-clear-{marker[-12:]}")
    c.on_message = on_message
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect(host, port)
    c.loop_start()
    try:
        c.subscribe("#", 1)
        assert subscribed.wait(timeout), "the broker never confirmed the subscription"
        # The broker queues the retained messages at the subscription, so they all come before
        # a message published after its acknowledgement.
        c.publish(marker, b"marker", qos=1)
        assert done.wait(timeout), "the marker message never came back"
        for topic in topics:
            c.publish(topic, b"", qos=1, retain=True).wait_for_publish(timeout)
    finally:
        c.disconnect()
        c.loop_stop()
    return topics


HttpHandle = Callable[[BaseHTTPRequestHandler, bytes], tuple[int, dict[str, str], bytes]]


@contextmanager
def http_server(handle: HttpHandle) -> Iterator[str]:
    """A real HTTP/1.1 server on a free loopback port whose POSTs are answered by
    ``handle(request, body) -> (status, headers, body)`` (which may sleep to play a hung
    server); yields its base URL. A client that gave up before the answer is not an error."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, headers, out = handle(self, body)
            try:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
            except OSError:  # the client gave up (a hung answer)
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        t.join()
