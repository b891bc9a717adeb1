"""The smart shelves' readings into the inventory, wired for the service (docs/inventory.md,
"Wiring").

``ShelfConsumer.on_readings`` is a bus subscriber: on the event loop it only keeps the readings
of the shelves that weigh a bin of the catalog (``weight_g`` and ``stable``) and wakes its task.
The task hands each batch to a worker thread, where ``ShelfFeed`` judges it (in memory) and
writes the changes (one transaction); back on the loop, the recalibrate conditions and the stock
conditions of the bins that changed go to the alert engine (``on_condition``): the loop owns the
engine, the database is only touched in the worker.

**No reading lost while the database is away.** The spool holds every reading durably, but the
bus does not replay it; so the changes a batch could not write stay in memory, in order, and are
written first the next time (backing off 1 s, doubling up to 30 s), together with what arrived
meanwhile. The memory is bounded (``max_pending`` readings waiting plus changes not written):
beyond it the oldest are dropped, counted (``dropped``) and logged once per outage. A change is
one per shelf per count change, so the bound holds hours of a site's changes.

**Stock conditions.** The bins that changed get their status (``inventory/status.py``
``bin_statuses``) and stock condition (``inventory/stock_alerts.py`` ``stock_conditions``)
through ``StockConditions``, the one place that names them: raised below the reorder point,
updated as the stock falls, resolved by a restock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine, select

from alerts.engine import AlertEngine
from eqmon.db.schema import inventory_bins, inventory_on_hand
from eqmon.domain import Reading, Severity
from inventory.feed import RECALIBRATE_KEY, STABLE_METRIC, WEIGHT_METRIC, Recalibrate, ShelfFeed
from inventory.ledger import ShelfReading
from inventory.status import BinStatus, bin_statuses
from inventory.stock_alerts import stock_conditions

log = logging.getLogger("eqmon.inventory")

REFRESH_S = 60.0  # the catalog read again this often (bins, their shelves, a person's counts)
BACKOFF_MAX_S = 30.0


def has_shelf_bins(db: Engine) -> bool:
    """Whether any bin of the catalog is weighed by a shelf."""
    with db.connect() as conn:
        return conn.execute(select(inventory_bins.c.id).where(inventory_bins.c.shelf_device_id.is_not(None)).limit(1)).first() is not None


@dataclass(frozen=True, slots=True)
class Condition:
    """One call of ``AlertEngine.on_condition``."""

    subject: str
    key: str
    active: bool
    text: str
    severity: Severity


class StockConditions:
    """The stock conditions of some bins (inventory/status.py, inventory/stock_alerts.py)."""

    def __init__(self, db: Engine, tz: str) -> None:
        self.db, self.tz = db, tz

    def every_bin(self, now: float) -> list[Condition]:
        """The conditions of every bin of the catalog: the periodic review (a stock-out
        predicted within the lead time comes nearer with time alone; a receipt or a count made
        with `eqmon inventory` changes a bin no shelf weighs)."""
        return self.review(now)[1]

    def review(self, now: float, part: tuple[int, int] | None = None) -> tuple[list[BinStatus], list[Condition]]:
        """Every counted bin's status (for the live updates) and the conditions of every_bin;
        ``part`` ``(k, n)``: only the bins of slice ``k`` of ``n`` (by location id)."""
        with self.db.connect() as conn:  # bins never counted: their stock is unknown, not 0
            known = set(conn.execute(select(inventory_on_hand.c.item_id, inventory_on_hand.c.location_id)).tuples())
        statuses = [st for st in bin_statuses(self.db, now=now, part=part) if (st.item_id, st.location_id) in known]
        return statuses, [
            Condition(c.subject, c.key, c.active, c.text, Severity(c.severity))
            for c in stock_conditions(statuses, now=now, tz=self.tz)
        ]

    def __call__(self, bins: Iterable[tuple[int, int]], now: float) -> list[Condition]:
        """The conditions of ``bins`` ((item, location) pairs), read location by location."""
        return self.of(bins, now)[1]

    def of(self, bins: Iterable[tuple[int, int]], now: float) -> tuple[list[BinStatus], list[Condition]]:
        """The statuses (for the live updates) and the conditions of ``bins``."""
        wanted = set(bins)
        statuses: list[BinStatus] = []
        for loc in sorted({loc for _, loc in wanted}):
            statuses += [st for st in bin_statuses(self.db, now=now, location_id=loc) if (st.item_id, st.location_id) in wanted]
        return statuses, [
            Condition(c.subject, c.key, c.active, c.text, Severity(c.severity))
            for c in stock_conditions(statuses, now=now, tz=self.tz)
        ]


@dataclass(slots=True)
class _Done:
    conditions: list[Condition] = field(default_factory=list)
    statuses: list[BinStatus] = field(default_factory=list)  # of the bins whose count changed
    error: BaseException | None = None


class ShelfConsumer:
    def __init__(
        self,
        db: Engine,
        engine: AlertEngine,
        *,
        tz: str = "UTC",
        names: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        max_pending: int = 200_000,
        refresh_s: float = REFRESH_S,
        on_stock: Callable[[list[BinStatus]], None] | None = None,
    ) -> None:
        """``on_stock``: called on the loop with the statuses of the bins whose count a batch
        changed (the service: the supply rooms' cached status and the live updates)."""
        self.db = db
        self.on_stock = on_stock
        self.engine = engine
        self.clock = clock
        self.feed = ShelfFeed(db, names=names, clock=clock)
        self.stock = StockConditions(db, tz)
        self.max_pending = max_pending
        self.refresh_s = refresh_s
        self._devices: frozenset[str] = frozenset()
        self._queue: list[Reading] = []  # on the loop: readings waiting for the worker
        self._retry: list[ShelfReading] = []  # in the worker: changes not yet written
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._refreshed = 0.0
        self._failing_logged = False
        self._drop_logged = False
        # self-metrics
        self.batches = 0
        self.db_failures = 0
        self.dropped = 0

    # -- on the loop -----------------------------------------------------------------------------

    def on_readings(self, readings: Sequence[Reading]) -> None:
        """Bus subscriber: keep the shelves' readings, wake the task. No I/O."""
        devices = self._devices
        if not devices:
            return
        picked = [r for r in readings if r.device_id in devices and r.metric in (WEIGHT_METRIC, STABLE_METRIC)]
        if not picked:
            return
        self._queue.extend(picked)
        over = len(self._queue) + len(self._retry) - self.max_pending
        if over > 0:
            del self._queue[: min(over, len(self._queue))]
            self._dropped(over)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._retry)

    async def start(self) -> None:
        await asyncio.to_thread(self._refresh)
        self._task = asyncio.create_task(self._run(), name="inventory-shelves")

    async def stop(self, timeout: float = 5.0) -> None:
        """Write what is waiting (within ``timeout``), then stop."""
        if self._task is None:
            return
        if self._queue or self._retry:
            self._wake.set()
            deadline = time.monotonic() + timeout
            while (self._queue or self._retry) and time.monotonic() < deadline and not self._task.done():
                await asyncio.sleep(0.05)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        backoff = 1.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.refresh_s)
            self._wake.clear()
            batch, self._queue = self._queue, []
            done = await asyncio.to_thread(self._work, batch)
            self._raise(done.conditions)
            if done.statuses and self.on_stock is not None:
                try:
                    self.on_stock(done.statuses)
                except Exception:
                    log.exception("inventory: cannot hand on the changed bins' stock")
            if done.error is not None:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                self._wake.set()  # try again with what is waiting
            else:
                backoff = 1.0
                if self._queue:
                    self._wake.set()

    def _raise(self, conditions: Sequence[Condition]) -> None:
        ts = self.clock()
        for c in conditions:
            try:
                self.engine.on_condition(c.subject, c.key, c.active, c.text, severity=c.severity, ts=ts)
            except Exception:
                log.exception("inventory: the alert engine refused condition %s of %s", c.key, c.subject)

    def _dropped(self, n: int) -> None:
        self.dropped += n
        if not self._drop_logged:
            self._drop_logged = True
            log.error("inventory: shelf readings dropped (%d waiting at most; counted, logged once)", self.max_pending)

    # -- in the worker thread --------------------------------------------------------------------

    def _refresh(self) -> None:
        self.feed.refresh()
        self._devices = self.feed.devices
        self._refreshed = time.monotonic()

    def _work(self, batch: list[Reading]) -> _Done:
        done = _Done()
        try:
            if time.monotonic() - self._refreshed >= self.refresh_s:
                self._refresh()
        except Exception as exc:  # the database is away: the catalog known so far stays
            done.error = exc
        changes = self._retry + self.feed.judge(batch)
        done.conditions += [_recalibrate(r) for r in self.feed.take_recalibrate()]
        if done.error is None and changes:
            try:
                applied = self.feed.apply(changes)
            except Exception as exc:
                done.error = exc
            else:
                self._retry = []
                self.batches += 1
                if self._failing_logged:
                    log.warning("inventory: shelf counts written again (%d changes had waited)", len(changes))
                self._failing_logged = self._drop_logged = False
                try:
                    statuses, conditions = self.stock.of(applied.changed, self.clock())
                    done.conditions += conditions
                    done.statuses = statuses
                except Exception:
                    log.exception("inventory: cannot compute the stock conditions (next change tries again)")
        if done.error is not None:
            self._retry = changes
            over = len(self._retry) - self.max_pending
            if over > 0:
                del self._retry[:over]
                self._dropped(over)
            self.db_failures += 1
            if not self._failing_logged:
                self._failing_logged = True
                log.error("inventory: cannot write shelf counts (%s); %d changes wait in memory, retried",
                          done.error, len(self._retry))  # fmt: skip
        return done


def _recalibrate(r: Recalibrate) -> Condition:
    return Condition(r.device_id, RECALIBRATE_KEY, r.active, r.text, Severity.WARNING)


__all__ = ["Condition", "ShelfConsumer", "StockConditions", "has_shelf_bins"]
