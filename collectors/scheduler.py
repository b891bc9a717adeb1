"""Polling schedule on APScheduler: one interval job per device.

Never two polls of one device at once (``max_instances=1``), late polls coalesced into one,
first runs spread over one interval so that many devices never fire together, and each poll is
its own job, so one slow or dead device never delays another.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
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
        on_readings: Callable[[list[Reading]], None],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._pollers = list(pollers)
        self._on_readings = on_readings
        self._rng = rng or random.Random()
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self.polls = 0
        self.failures = 0

    async def _poll(self, poller: ModbusPoller) -> None:
        self.polls += 1
        try:
            readings = await poller.poll()
        except CollectorError:
            self.failures += 1  # DeviceHealth has logged the change of state, once
            return
        self._on_readings(readings)

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

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
