"""Smart shelves become counts: ``ShelfFeed`` takes the shelves' readings (metric ``weight_g``
of the devices that the catalog names as a bin's ``shelf_device_id``) and writes their counts
to the ledger (``Ledger.shelf_counts``, one transaction per batch). docs/inventory.md.

Each reading is judged in memory first (``judge``), then the changes are written (``apply``);
``absorb`` does both. A reading is **not applied** when it is

* **unstable**: its message says so (a ``stable`` reading of the same device and time that is
  false or 0), or the weight moved by more than the scale's noise since the shelf's previous
  reading less than ``settle_s`` before it (shelf firmware publishes a change only once it
  held: two different weights that close together are a wobble);
* **negative**: the net weight is below −½ unit (a wrong tare, the bin lifted off);
* **unexplained**: no whole count fits the weight within the pieces' variation and the noise
  (``shelf.weight_to_count``), or — once the shelf has a reading applied — no whole number of
  pieces explains the *change* since it (the tighter test on a big bin, whose absolute weight
  allows several counts: a foreign object on 500 gloves);
* **drift**: the shelf is drifting (below).

Each such reading is counted per reason and per shelf (``anomalies``) and logged once per
episode (until a reading of that shelf is usable again). A usable reading becomes the bin's
count: the previous count plus the whole pieces of the change, kept within what the absolute
weight allows; only a reading that changes the count goes to the ledger (decrease: consumption,
increase: restock), under the key ``shelf:<device>:<ts>`` so that a redelivered message is
applied once. Readings older than the shelf's newest one (``superseded``) and repeats of the
same timestamp are skipped.

**Drift.** A scale whose zero creeps gives readings that move slowly, in one direction, with no
piece taken or added, and that the pieces cannot explain. ``drift_readings`` such readings in a
row (each a step under half a unit from the one before, the remainder growing in the same
direction) mark the shelf **drifting**: a ``recalibrate`` condition is raised (``recalibrate``
events, for the alert engine: key ``shelf-recalibrate``, subject the shelf device) and its
readings are not applied (reason ``drift``) — no phantom stock — until they have been
explained again for ``recal_clear_s`` (the scale was zeroed), when the condition resolves.

Not thread-safe: one caller at a time (the service's single worker).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine, select

from eqmon.db.schema import inventory_bins, inventory_items, inventory_on_hand
from eqmon.domain import Quality, Reading

from .ledger import Ledger, ShelfReading
from .shelf import Tolerance, weight_to_count

log = logging.getLogger("eqmon.inventory.feed")

WEIGHT_METRIC = "weight_g"
STABLE_METRIC = "stable"
RECALIBRATE_KEY = "shelf-recalibrate"
REASONS = ("unstable", "negative", "unexplained", "drift")
# The simulated shelves read ±0.5 g (docs/simulators.md); shelf.py's default (2 g) is for
# scales unknown. A bin whose unit weight is not well above the noise cannot be judged.
FEED_TOLERANCE = Tolerance(noise_g=1.0)


@dataclass(frozen=True, slots=True)
class ShelfBin:
    """What the catalog says of the bin a shelf weighs."""

    device_id: str
    item_id: int
    location_id: int
    unit_weight_g: float
    tare_g: float


@dataclass(frozen=True, slots=True)
class Recalibrate:
    """A shelf's recalibrate condition began (``active``) or ended."""

    device_id: str
    active: bool
    text: str
    ts: float


@dataclass(frozen=True, slots=True)
class Written:
    """What ``Ledger.shelf_counts(…, newer_only=True)`` did with a batch of changes: rows
    ``written``, readings ``replayed`` (their key applied before) and ``skipped`` (older than
    their bin's last change, or finding what was on hand); the bins changed and their on-hand."""

    written: int = 0
    replayed: int = 0
    skipped: int = 0
    changed: frozenset[tuple[int, int]] = frozenset()  # (item, location)
    balances: dict[tuple[int, int], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Absorbed:
    """What one batch did: the bins whose on-hand changed, recalibrate conditions that began
    or ended, and the ledger's account of the changes."""

    changed: frozenset[tuple[int, int]] = frozenset()  # (item, location)
    recalibrate: tuple[Recalibrate, ...] = ()
    applied: Written = field(default_factory=Written)


@dataclass(slots=True)
class _Shelf:
    bin: ShelfBin
    count: int | None = None  # the bin's count as last known (the database's, then applied)
    base_w: float | None = None  # the gross weight at which ``count`` was established
    last_w: float | None = None  # the newest reading judged …
    last_ts: float | None = None  # … and its time
    episode: str | None = None  # the reason of the anomaly episode under way (logged once)
    creep: int = 0  # unexplained readings in a row creeping one way
    creep_rem: float = 0.0  # the last of them: its weight off the base (g) …
    creep_start: float = 0.0  # … and the first's
    stable_w: float | None = None  # the newest reading not unstable
    creep_from: float | None = None  # when the creep began
    drifting_since: float | None = None
    explained_since: float | None = None  # drifting: readings explained again since …
    window_w: float = 0.0  # … holding still near this weight


class ShelfFeed:
    def __init__(
        self,
        engine: Engine,
        *,
        tolerance: Tolerance = FEED_TOLERANCE,
        settle_s: float = 2.0,
        drift_readings: int = 3,
        recal_clear_s: float = 600.0,
        names: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self.ledger = Ledger(engine, clock=clock)
        self.tolerance = tolerance
        # A change is the difference of two readings, each off by up to the noise.
        self._change_tolerance = Tolerance(tolerance.piece_variation, 2 * tolerance.noise_g)
        self.settle_s = settle_s
        self.drift_readings = max(2, drift_readings)
        self.recal_clear_s = recal_clear_s
        self.names = dict(names or {})  # device id -> how to name it in a condition's text
        self._shelves: dict[str, _Shelf] = {}
        self._by_bin: dict[tuple[int, int], _Shelf] = {}  # (item, location) -> its shelf
        self._recal: list[Recalibrate] = []
        # Counters (self-metrics): readings judged, anomalies per (reason, device), …
        self.readings = 0
        self.anomalies: dict[tuple[str, str], int] = {}
        self.superseded = 0
        self.repeated = 0
        self.applied = 0
        self.unknown_shelves: set[str] = set()  # weight readings of devices with no bin

    # -- the catalog ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read which shelf weighs which bin, and the bins' on-hand (the catalog may have
        changed; a count made by a person since restarts the shelf's reckoning from it)."""
        b, i, oh = inventory_bins.c, inventory_items.c, inventory_on_hand.c
        q = (
            select(b.shelf_device_id, b.item_id, b.location_id, b.tare_g, i.unit_weight_g, oh.quantity)
            .join(inventory_items, i.id == b.item_id)
            .outerjoin(inventory_on_hand, (oh.item_id == b.item_id) & (oh.location_id == b.location_id))
            .where(b.shelf_device_id.is_not(None))
            .order_by(b.shelf_device_id, b.item_id, b.location_id)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(q).all()
        found: dict[str, tuple[ShelfBin, int | None]] = {}
        for r in rows:
            if r.unit_weight_g is None:
                log.error("shelf %s weighs a bin of item %s, which has no unit weight: not counted", r.shelf_device_id, r.item_id)
                continue
            if r.shelf_device_id in found:
                log.error("shelf %s is named by more than one bin: only the first is counted", r.shelf_device_id)
                continue
            sb = ShelfBin(r.shelf_device_id, r.item_id, r.location_id, float(r.unit_weight_g), float(r.tare_g or 0.0))
            found[r.shelf_device_id] = (sb, r.quantity)
        shelves: dict[str, _Shelf] = {}
        for dev, (sb, quantity) in found.items():
            old = self._shelves.get(dev)
            if old is not None and old.bin == sb and (quantity is None or quantity == old.count):
                shelves[dev] = old
            else:
                shelves[dev] = _Shelf(sb, count=quantity)
        self._set_shelves(shelves)

    def _set_shelves(self, shelves: dict[str, _Shelf]) -> None:
        self._shelves = shelves
        self._by_bin = {(s.bin.item_id, s.bin.location_id): s for s in shelves.values()}

    def set_bins(self, bins: Iterable[tuple[ShelfBin, int | None]]) -> None:
        """The shelves and their bins' on-hand given directly (tests, benchmarks)."""
        self._set_shelves({sb.device_id: _Shelf(sb, count=q) for sb, q in bins})

    @property
    def devices(self) -> frozenset[str]:
        return frozenset(self._shelves)

    def bin_of(self, device_id: str) -> ShelfBin | None:
        s = self._shelves.get(device_id)
        return None if s is None else s.bin

    def drifting(self) -> dict[str, float]:
        """Shelf device -> since when it is drifting (its recalibrate condition is active)."""
        return {d: s.drifting_since for d, s in self._shelves.items() if s.drifting_since is not None}

    # -- readings ------------------------------------------------------------------------------

    def absorb(self, readings: Sequence[Reading]) -> Absorbed:
        """``judge`` then ``apply``: one transaction for the batch."""
        changes = self.judge(readings)
        recal = self.take_recalibrate()
        applied = self.apply(changes)
        return Absorbed(applied.changed, tuple(recal), applied)

    def judge(self, readings: Sequence[Reading]) -> list[ShelfReading]:
        """The counts of the usable readings among ``readings`` that change their bin, in
        order; anomalies counted, drift followed. Readings of other devices and metrics are
        ignored. No database access."""
        shelves = self._shelves
        unstable: set[tuple[str, float]] = set()
        weights: list[Reading] = []
        for r in readings:
            if r.device_id not in shelves:
                if r.metric == WEIGHT_METRIC and r.device_id not in self.unknown_shelves:
                    self.unknown_shelves.add(r.device_id)
                continue
            if r.metric == WEIGHT_METRIC:
                weights.append(r)
            elif r.metric == STABLE_METRIC and r.quality == Quality.GOOD and not r.value:
                unstable.add((r.device_id, r.ts))
        out: list[ShelfReading] = []
        for r in weights:
            change = self._judge_one(shelves[r.device_id], r, (r.device_id, r.ts) in unstable)
            if change is not None:
                out.append(change)
        return out

    def apply(self, changes: Sequence[ShelfReading]) -> Written:
        """Write the changes (one transaction; ``Ledger.shelf_counts`` with ``newer_only``);
        the shelves' counts follow what was written. Raises what the database raises (the
        caller retries the batch)."""
        if not changes:
            return Written()
        results = self.ledger.shelf_counts(changes, newer_only=True)
        written = replayed = skipped = 0
        balances: dict[tuple[int, int], int] = {}
        changed: set[tuple[int, int]] = set()
        stale: set[tuple[int, int]] = set()
        for change, a in zip(changes, results, strict=True):
            if a.skipped:
                skipped += 1
                stale.add((change.item_id, change.location_id))
                continue
            e = a.entry
            balances[(e.item_id, e.location_id)] = e.balance
            if a.replayed:
                replayed += 1
            else:
                written += 1
                changed.add((e.item_id, e.location_id))
        self.applied += written
        for b in stale - balances.keys():  # rare (a restart, a late message): read what is there
            balances[b] = self.ledger.on_hand(*b)
        for b, quantity in balances.items():
            s = self._by_bin.get(b)
            if s is not None:
                s.count = quantity
                if b in stale and b not in changed:
                    s.base_w = None  # the next reading is judged against the count on record
        return Written(written, replayed, skipped, frozenset(changed), balances)

    def take_recalibrate(self) -> list[Recalibrate]:
        """The recalibrate conditions that began or ended since the last call."""
        out, self._recal = self._recal, []
        return out

    # -- one reading ---------------------------------------------------------------------------

    def _judge_one(self, s: _Shelf, r: Reading, flagged_unstable: bool) -> ShelfReading | None:
        self.readings += 1
        if r.quality != Quality.GOOD or isinstance(r.value, bool) or not isinstance(r.value, int | float):
            return None
        gross = float(r.value)
        if not math.isfinite(gross):
            return None
        if s.last_ts is not None:
            if r.ts < s.last_ts:
                self.superseded += 1  # an older measurement arriving late
                return None
            if r.ts == s.last_ts:
                self.repeated += 1  # the same message again (a duplicate, a retained state)
                return None
        prev_w, prev_ts = s.last_w, s.last_ts
        s.last_w, s.last_ts = gross, r.ts
        sb, tol = s.bin, self.tolerance
        w = sb.unit_weight_g
        moving = prev_w is not None and prev_ts is not None and r.ts - prev_ts < self.settle_s and abs(gross - prev_w) > tol.noise_g
        if flagged_unstable or moving:
            self._anomaly(s, "unstable", gross)
            return None
        step = None if s.stable_w is None else gross - s.stable_w
        s.stable_w = gross
        sc = weight_to_count(gross, unit_weight_g=w, tare_g=sb.tare_g, tolerance=tol)
        if sc.negative:
            self._anomaly(s, "negative", gross)
            return None
        if sc.unexplained:
            self._unexplained(s, r.ts, gross, step)
            return None
        k = 0
        if s.count is None or s.base_w is None:
            # The first reading since start: the count on record stands if the weight allows it.
            count = sc.count if s.count is None or not sc.min_count <= s.count <= sc.max_count else s.count
        else:
            d = gross - s.base_w
            rc = weight_to_count(abs(d), unit_weight_g=w, tare_g=0.0, tolerance=self._change_tolerance)
            if rc.unexplained:
                self._unexplained(s, r.ts, gross, step)
                return None
            k = rc.count if d >= 0 else -rc.count
            if k != 0 and s.drifting_since is None and step is not None and abs(step) < w / 2:
                # A whole piece more or less, but the weight crept there: nothing was put in or
                # taken out at once (a change published after it held is a jump of pieces).
                self._unexplained(s, r.ts, gross, step)
                return None
            count = min(max(s.count + k, sc.min_count), sc.max_count)
        # Explained.
        s.creep, s.creep_from = 0, None
        if s.drifting_since is not None:
            # Explained again; it counts once the weight holds still, within the scale's noise
            # (but for whole pieces put in or taken out), for recal_clear_s: a drift that goes on
            # crosses whole pieces, and must not be taken for them. And it starts only where the
            # weight is back at the count on record or arrived at once (the scale zeroed): a
            # zero that crept by whole pieces and stopped there is no stock.
            jump = step is not None and abs(step) >= w / 2
            if s.explained_since is None or (not jump and abs(gross - s.window_w) > self.tolerance.noise_g):
                s.explained_since, s.window_w = (r.ts, gross) if jump or k == 0 else (None, 0.0)
            elif jump:
                s.window_w = gross
            if s.explained_since is None or r.ts - s.explained_since < self.recal_clear_s:
                self._anomaly(s, "drift", gross, explained=True)
                return None
            s.drifting_since = s.explained_since = None
            self._recal.append(Recalibrate(sb.device_id, False, "", r.ts))
            log.info("shelf %s: its readings are explained again; counted again", sb.device_id)
        if s.episode is not None:
            log.info("shelf %s: readings usable again (after %s readings)", sb.device_id, s.episode)
            s.episode = None
        if s.base_w is None or count != s.count:
            s.base_w = gross
        if count == s.count:
            return None
        why = "first count" if s.count is None else "consumption" if count < s.count else "restock"
        s.count = count
        return ShelfReading(sb.item_id, sb.location_id, count, sb.device_id, f"shelf:{sb.device_id}:{r.ts!r}", why, at=r.ts)

    def _anomaly(self, s: _Shelf, reason: str, gross: float, *, explained: bool = False) -> None:
        dev = s.bin.device_id
        if s.drifting_since is not None and reason != "unstable":
            reason = "drift"
            if not explained:
                s.explained_since = None
        k = (reason, dev)
        self.anomalies[k] = self.anomalies.get(k, 0) + 1
        if s.episode != reason:
            s.episode = reason
            net = gross - s.bin.tare_g
            log.warning(
                "shelf %s: %s reading not applied (%.1f g gross, %.2f units net; counted, not logged again until usable)",
                dev, reason, gross, net / s.bin.unit_weight_g,
            )  # fmt: skip

    def _unexplained(self, s: _Shelf, ts: float, gross: float, step: float | None) -> None:
        """A reading the pieces do not explain: one more step of a creep (the weight moving
        slowly one way off the base with no piece taken or added), or the start of one; enough
        steps, and the shelf is drifting."""
        if s.base_w is not None and s.drifting_since is None:
            w, noise = s.bin.unit_weight_g, self.tolerance.noise_g
            rem = gross - s.base_w
            creeping = (
                s.creep > 0
                and step is not None
                and abs(step) < w / 2
                and rem * s.creep_rem > 0
                and abs(rem) >= abs(s.creep_rem) - noise / 2
            )
            if creeping:
                s.creep += 1
            else:
                s.creep, s.creep_from, s.creep_start = 1, ts, rem
            s.creep_rem = rem
            if s.creep >= self.drift_readings and abs(rem) - abs(s.creep_start) > noise:
                assert s.creep_from is not None
                s.drifting_since, s.explained_since = ts, None
                name = self.names.get(s.bin.device_id, s.bin.device_id)
                minutes = max(1, round((ts - s.creep_from) / 60))
                text = (
                    f"WARNING {name}: the scale drifts ({rem:+.1f} g in {minutes} min with nothing taken "
                    f"or added) — recalibrate the shelf (empty it and zero the scale); its readings "
                    f"are not counted until then"
                )
                self._recal.append(Recalibrate(s.bin.device_id, True, text, ts))
                log.warning("shelf %s: drifting (%+.1f g in %d min): recalibrate; not counted until then",
                            s.bin.device_id, rem, minutes)  # fmt: skip
        self._anomaly(s, "unexplained", gross)


__all__ = [
    "FEED_TOLERANCE", "RECALIBRATE_KEY", "REASONS", "STABLE_METRIC", "WEIGHT_METRIC",
    "Absorbed", "Recalibrate", "ShelfBin", "ShelfFeed", "Written",
]  # fmt: skip
