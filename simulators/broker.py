"""An embedded MQTT broker (amqtt) for `eqmon demo` and tests, when no broker is configured.

This is the only module of simulators/ that imports an MQTT library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import amqtt
from amqtt.broker import Broker

_AMQTT_DIR = os.path.dirname(amqtt.__file__) + os.sep

_QUIET = ("amqtt", "transitions")


class EmbeddedBroker:
    """amqtt's broker on ``host:port`` (port 0 = a free port), anonymous access, quiet logs.

    >>> broker = EmbeddedBroker(); port = await broker.start(); ...; await broker.stop()
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True) -> None:
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.quiet = quiet
        self._broker: Broker | None = None

    async def start(self) -> int:
        """Start listening; return the bound port."""
        if self._broker is not None:
            raise RuntimeError("broker already started")
        if self.quiet:
            for name in _QUIET:
                logging.getLogger(name).setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.requested_port}"}},
            # Only anonymous authentication: no $SYS publisher task, no packet logging.
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = Broker(config)
        await broker.start()
        self._broker = broker
        server = broker._servers["default"].instance  # amqtt 0.12 keeps the asyncio.Server here
        self.port = server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        with contextlib.suppress(Exception):
            await broker.shutdown()
        # amqtt 0.12 can leave per-client handler tasks behind (a client that disconnected just
        # before shutdown); cancel whatever of its tasks is still pending.
        await asyncio.sleep(0)
        leftovers = [t for t in asyncio.all_tasks() if is_broker_task(t)]
        for t in leftovers:
            t.cancel()
        if leftovers:
            await asyncio.gather(*leftovers, return_exceptions=True)

    @property
    def running(self) -> bool:
        return self._broker is not None


def is_broker_task(task: asyncio.Task[object]) -> bool:
    if task is asyncio.current_task() or task.done():
        return False
    coro = task.get_coro()
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    return code is not None and code.co_filename.startswith(_AMQTT_DIR)
