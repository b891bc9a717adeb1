"""Small helpers shared by the tests and benchmarks (servers live in tests/servers.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

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
