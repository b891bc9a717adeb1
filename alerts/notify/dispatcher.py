"""The dispatcher: an asyncio task (owned by the service) that sends the outbox's due rows.

A row is marked sent only after its channel's server accepted it; a failure records the attempt,
its error and when to try again (capped, jittered exponential backoff, eqmon/backoff.py); a
permanent refusal fails the row after ``retry.permanent_attempts`` attempts, and any row not
delivered ``retry.expire_after`` after it was queued is given up (both logged once per row).
Rows being sent are never picked again while in flight, so the dispatcher itself sends nothing
twice; after a restart it sends what is still pending. Database calls run in worker threads.

What it counts (eqmon's /metrics): notifications sent, failed attempts and rows given up, per
channel; and, read from the outbox at most every ``stats_every`` seconds while it runs, how many
rows are pending and when the oldest of them was queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from eqmon.backoff import Backoff
from eqmon.config import NotificationRetry
from eqmon.db.repos import OutboxMessage, OutboxRepo

from .channels import DeliveryError, Sender

log = logging.getLogger("eqmon.notify")


class Dispatcher:
    def __init__(
        self,
        repo: OutboxRepo,
        senders: dict[str, Sender],
        retry: NotificationRetry,
        *,
        clock: Callable[[], float],
        poll_interval: float = 1.0,
        max_in_flight: int = 8,
        batch: int = 100,
        stats_every: float = 5.0,
    ) -> None:
        self.repo = repo
        self.senders = senders
        self.retry = retry
        self._clock = clock
        self._poll = poll_interval
        self._backoff = Backoff(retry.initial, retry.max)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._batch = batch
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing: set[str] = set()  # channels whose last attempt failed (logged once)
        self.sent = 0
        self.failed_attempts = 0  # a last attempt that gives up counts here too
        self.given_up = 0
        # The same per channel, every configured one present from the start (at 0).
        self.sent_by_channel: dict[str, int] = dict.fromkeys(senders, 0)
        self.failed_by_channel: dict[str, int] = dict.fromkeys(senders, 0)
        self.given_up_by_channel: dict[str, int] = dict.fromkeys(senders, 0)
        # The outbox's pending rows (count, oldest created_at), read every ``stats_every`` s.
        self.stats_every = stats_every
        self.pending = 0
        self.oldest_pending_at: float | None = None
        self._stats_read_at = -float("inf")  # time.monotonic()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="notify:dispatcher")

    def wake(self) -> None:
        """New rows were queued: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop looking for rows; let sends in flight finish (and be marked) for up to ``grace``
        seconds, then cancel them: a cancelled row stays pending and is sent after a restart
        (its receiver may then see its message id twice)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        tasks = list(self._in_flight.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    async def _run(self) -> None:
        while True:
            # Cleared before looking: a wake() while run_once() reads the outbox (a row queued
            # after the read began) makes the next round start at once, not a poll later.
            self._wake.clear()
            try:
                await self.run_once()
                if time.monotonic() - self._stats_read_at >= self.stats_every:
                    await self.read_stats()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notification dispatcher: cannot read the outbox; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    async def run_once(self) -> int:
        """Start sending every due row not in flight; returns how many were started."""
        now = self._clock()
        # Rows in flight now may be read below as they were before their send was marked (the
        # mark commits while the read runs) and be done by the time they are looked at: skip
        # them all, the next round reads them as they are then.
        busy = set(self._in_flight)
        rows = await asyncio.to_thread(self.repo.list, due_at=now, limit=self._batch)
        started = 0
        for row in rows:
            if row.message_id in busy or row.message_id in self._in_flight:
                continue
            await self._slots.acquire()
            task = asyncio.create_task(self._deliver(row), name=f"notify:{row.channel}")
            self._in_flight[row.message_id] = task
            task.add_done_callback(self._done_callback(row.message_id))
            started += 1
        return started

    async def read_stats(self) -> None:
        """Read the outbox's pending count and oldest pending row (``pending``,
        ``oldest_pending_at``); the running dispatcher does it every ``stats_every`` seconds."""
        self._stats_read_at = time.monotonic()
        self.pending, self.oldest_pending_at = await asyncio.to_thread(self.repo.pending_stats)

    def oldest_pending_age(self, now: float) -> float:
        """Seconds since the oldest pending row was queued, as of the last read (0: none)."""
        return 0.0 if self.oldest_pending_at is None else max(0.0, now - self.oldest_pending_at)

    @staticmethod
    def _count(by_channel: dict[str, int], channel: str) -> None:
        by_channel[channel] = by_channel.get(channel, 0) + 1

    def _done_callback(self, message_id: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._in_flight.pop(message_id, None)
            self._slots.release()

        return done

    async def idle(self) -> None:
        """Wait until nothing is in flight (tests)."""
        while self._in_flight:
            await asyncio.wait(list(self._in_flight.values()))

    async def _deliver(self, row: OutboxMessage) -> None:
        now = self._clock()
        sender = self.senders.get(row.channel)
        if now - row.created_at > self.retry.expire_after:
            await self._give_up(row, f"not delivered within {self.retry.expire_after:g}s: {row.last_error or 'no attempt'}")
            return
        if sender is None:
            await self._fail(row, DeliveryError(f"channel {row.channel!r} is not configured (or has no broker)"))
            return
        try:
            await sender.send(row)
        except DeliveryError as exc:
            await self._fail(row, exc)
            return
        except Exception as exc:  # a sender bug must not stop the dispatcher
            log.exception("notification %s on %s: unexpected error", row.message_id, row.channel)
            await self._fail(row, DeliveryError(f"{type(exc).__name__}: {exc}"))
            return
        # Accepted by the server: from here on the row must be marked, even during stop().
        await asyncio.shield(asyncio.to_thread(self.repo.mark_sent, row.message_id, self._clock()))
        self.sent += 1
        self._count(self.sent_by_channel, row.channel)
        if row.channel in self._failing:
            self._failing.discard(row.channel)
            log.info("notifications on channel %s are delivered again", row.channel)

    async def _fail(self, row: OutboxMessage, exc: DeliveryError) -> None:
        self.failed_attempts += 1
        self._count(self.failed_by_channel, row.channel)
        attempts = row.attempts + 1
        error = str(exc)[:500]
        if exc.permanent and attempts >= self.retry.permanent_attempts:
            await self._give_up(row, error)
            return
        if row.channel not in self._failing:
            self._failing.add(row.channel)
            log.warning(
                "notification on channel %s to %s not delivered (%s); retrying with backoff",
                row.channel, row.recipient, error,
            )  # fmt: skip
        retry_at = self._clock() + self._backoff.delay(row.attempts)
        await asyncio.to_thread(self.repo.mark_failed, row.message_id, error, retry_at=retry_at)

    async def _give_up(self, row: OutboxMessage, error: str) -> None:
        self.given_up += 1
        self._count(self.given_up_by_channel, row.channel)
        log.error(
            "notification %s on channel %s to %s failed after %d attempts: %s",
            row.message_id, row.channel, row.recipient, row.attempts + 1, error,
        )  # fmt: skip
        await asyncio.to_thread(self.repo.mark_failed, row.message_id, error, retry_at=None)
