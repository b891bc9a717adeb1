"""Polling schedule on APScheduler: one interval job per device.

Never two polls of one device at once (``max_instances=1``), late polls coalesced into one,
first runs spread over one interval so that many devices never fire together, and each poll is
its own job, so one slow or dead device never delays another.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from eqmon.domain import Reading

from .errors import CollectorError
from .modbus import ModbusPoller

log = logging.getLogger(__name__)


class PollScheduler:
    def __init__(
        self,
        pollers: Sequence[ModbusPoller],
        on_readings: Callable[[list[Reading]], Awaitable[None]],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._pollers = list(pollers)
        self._on_readings = on_readings
        self._rng = rng or random.Random()
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self.polls = 0
        self.failures = 0
        self._stopping = False
        self._running: set[asyncio.Task[object]] = set()

    async def _poll(self, poller: ModbusPoller) -> None:
        if self._stopping:
            return
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            self.polls += 1
            try:
                readings = await poller.poll()
            except CollectorError:
                self.failures += 1  # DeviceHealth has logged the change of state, once
                return
            await self._on_readings(readings)
        finally:
            self._running.discard(task)

    def start(self) -> None:
        now = datetime.now(UTC)
        for p in self._pollers:
            interval = p.device.interval
            first = now + timedelta(seconds=self._rng.uniform(0, interval))
            self._scheduler.add_job(
                self._poll,
                "interval",
                args=[p],
                seconds=interval,
                id=f"poll:{p.device.id}",
                next_run_time=first,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(interval)),
            )
        self._scheduler.start()

    async def stop(self) -> None:
        """Stop scheduling, then let polls under way finish and hand their readings on."""
        self._stopping = True
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        if self._running:
            await asyncio.wait(list(self._running), timeout=30)
