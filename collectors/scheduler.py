"""Polling schedule on APScheduler, in time slots.

Every device has its own interval. Devices of one interval are spread over that interval in
``slots`` (one every ``slot_s``, 20 ms by default), and each slot is ONE APScheduler interval job
that starts the polls of its devices as independent asyncio tasks and returns at once. So:

* thousands of devices never fire together (start times are spread over the interval), and the
  scheduler's own cost is per slot, not per device: an APScheduler job run costs about 190 µs,
  which at 5,000 devices/s would eat most of a core on its own (docs/performance.md);
* one slow or dead device never delays another: each poll is its own task; only devices behind
  one gateway connection wait for each other, as the gateway requires;
* never two polls of one device at once: a device whose previous poll is still running when its
  slot fires is skipped (counted in ``skipped``), which is also how late polls are coalesced —
  the slot jobs themselves run with ``max_instances=1`` and ``coalesce=True``;
* a failure of the hand-off (``on_readings`` raising, e.g. a full spool) is counted and logged
  once per episode; polling goes on;
* no garbage-collector pauses in the schedule: everything built before ``start()`` (site file,
  plans, compiled decoders, connections) lives as long as the service, and at thousands of devices
  it is about a million objects, which every full collection of CPython's cyclic GC walks —
  a 200–300 ms pause at 2,000 devices, the whole p99 lateness tail (docs/performance.md). So
  ``start()`` collects once and freezes what is left (``gc.freeze()``), and freezes again once
  the first round of polls is over, for the connections it opened (no collection then: a freeze
  costs nothing, and objects are still freed by reference counting). It also raises the
  youngest generation's threshold from 700 to 50,000 objects: each slot starts a burst of
  polls whose objects are freed by reference counting within milliseconds, but a young
  collection in the middle of the burst promoted whatever was in flight, which triggered a full
  collection every second or so at 5,000 devices (up to 150 ms each). ``stop()`` restores both.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from eqmon.domain import Reading

from .errors import CollectorError
from .modbus import ModbusPoller

log = logging.getLogger(__name__)

DEFAULT_SLOT_S = 0.02
GC_YOUNG_THRESHOLD = 50_000  # objects allocated (net) before a young collection, while polling


class _Slot:
    __slots__ = ("interval", "offset", "pollers")

    def __init__(self, interval: float, offset: float) -> None:
        self.interval = interval
        self.offset = offset  # seconds after the schedule's origin of this slot's first run
        self.pollers: list[ModbusPoller] = []


class PollScheduler:
    def __init__(
        self,
        pollers: Sequence[ModbusPoller],
        on_readings: Callable[[list[Reading]], Awaitable[None]],
        *,
        rng: random.Random | None = None,
        slot_s: float = DEFAULT_SLOT_S,
        record_lateness: bool = False,
        freeze_gc: bool = True,
    ) -> None:
        self._pollers = list(pollers)
        self._on_readings = on_readings
        self._rng = rng or random.Random()
        self._slot_s = slot_s
        self._freeze_gc = freeze_gc
        self._frozen = False
        self._gc_threshold: tuple[int, ...] | None = None
        self._refreeze: asyncio.TimerHandle | None = None
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self.polls = 0  # polls started
        self.failures = 0  # polls that failed (DeviceHealth logs the changes of state)
        self.skipped = 0  # polls not started because the device's previous poll still ran
        self.handoff_failures = 0  # polls whose readings on_readings refused
        self._handoff_failing = False
        self._stopping = False
        self._busy: set[int] = set()  # id() of pollers with a poll under way
        self._running: set[asyncio.Task[None]] = set()
        self.slots: list[_Slot] = []
        self._origin = 0.0  # loop time of the schedule's origin
        # Lateness of each poll's start against its schedule, in seconds (bench and tests only).
        self.record_lateness = record_lateness
        self.lateness: list[float] = []

    # -- plan -------------------------------------------------------------------------------

    def _build_slots(self) -> list[_Slot]:
        by_interval: dict[float, list[ModbusPoller]] = {}
        for p in self._pollers:
            by_interval.setdefault(p.device.interval, []).append(p)
        slots: list[_Slot] = []
        for interval, pollers in sorted(by_interval.items()):
            n = max(1, min(len(pollers), round(interval / self._slot_s)))
            width = interval / n
            phase = self._rng.uniform(0, width)
            group = [_Slot(interval, phase + k * width) for k in range(n)]
            order = list(pollers)
            self._rng.shuffle(order)
            for i, p in enumerate(order):
                group[i % n].pollers.append(p)
            slots += group
        return slots

    # -- running ----------------------------------------------------------------------------

    async def _fire(self, slot: _Slot) -> None:
        """One slot's turn: start its devices' polls and return."""
        if self._stopping:
            return
        loop = asyncio.get_running_loop()
        due = 0.0
        if self.record_lateness:
            now = loop.time()
            k = round((now - self._origin - slot.offset) / slot.interval)
            due = self._origin + slot.offset + k * slot.interval
        busy, running = self._busy, self._running
        for p in slot.pollers:
            key = id(p)
            if key in busy:
                self.skipped += 1
                continue
            busy.add(key)
            task = loop.create_task(self._poll(p, due))
            running.add(task)
            task.add_done_callback(running.discard)

    async def _poll(self, poller: ModbusPoller, due: float) -> None:
        if self.record_lateness:
            self.lateness.append(asyncio.get_running_loop().time() - due)
        try:
            self.polls += 1
            try:
                readings = await poller.poll()
            except CollectorError:
                self.failures += 1  # DeviceHealth has logged the change of state, once
                return
            except Exception:
                self.failures += 1
                log.exception("poll of %s failed unexpectedly", poller.device.id)
                return
            if not readings:
                return
            try:
                await self._on_readings(readings)
            except Exception as exc:  # e.g. a full spool: count it, keep polling
                self.handoff_failures += 1
                if not self._handoff_failing:
                    self._handoff_failing = True
                    log.warning("readings of %s not accepted: %s (counted; polling goes on)", poller.device.id, exc)
            else:
                if self._handoff_failing:
                    self._handoff_failing = False
                    log.info("readings are accepted again (%d polls refused)", self.handoff_failures)
        finally:
            self._busy.discard(id(poller))

    def start(self) -> None:
        self.slots = self._build_slots()
        if self._freeze_gc:
            gc.collect()  # so that no garbage is frozen with the rest
            gc.freeze()
            self._frozen = True
            self._gc_threshold = gc.get_threshold()
            young, *older = self._gc_threshold
            gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), *older)
        loop = asyncio.get_running_loop()
        # One origin for loop time (lateness) and wall time (APScheduler's triggers).
        self._origin = loop.time() + 0.05
        if self._frozen and self.slots:
            first_round = max(s.interval for s in self.slots) + 1.0
            self._refreeze = loop.call_at(self._origin + first_round, gc.freeze)
        wall0 = datetime.now(UTC) + timedelta(seconds=self._origin - loop.time())
        for i, slot in enumerate(self.slots):
            self._scheduler.add_job(
                self._fire,
                "interval",
                args=[slot],
                seconds=slot.interval,
                id=f"poll-slot:{slot.interval:g}:{i}",
                next_run_time=wall0 + timedelta(seconds=slot.offset),
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(slot.interval)),
            )
        self._scheduler.start()

    async def stop(self) -> None:
        """Stop scheduling, then let polls under way finish and hand their readings on."""
        self._stopping = True
        if self._refreeze is not None:
            self._refreeze.cancel()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        if self._running:
            await asyncio.wait(list(self._running), timeout=30)
        if self._frozen:
            self._frozen = False
            gc.unfreeze()
        if self._gc_threshold is not None:
            gc.set_threshold(*self._gc_threshold)
            self._gc_threshold = None
