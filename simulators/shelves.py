"""Smart shelf (weighing bin) model and its MQTT publisher.

The model holds a bin of one item. Staff take items (more by day, 07:00–19:00, than by night),
supply staff restock to par when the count falls below ``restock_at`` × par, and the scale
reads the gross weight with ±0.5 g noise, smoothed like shelf firmware does. Each piece weighs
``unit_weight_g`` ± about 1 %. After a take or a restock the reading wobbles for ``settle_s``
(a damped swing of up to a third of the change, the hand still on the bin): the shelf says
``stable: false`` meanwhile. Faults of the scale: ``drift`` (its zero creeps toward
``target`` g at ``rate_per_min`` g a minute), ``foreign`` (an unrelated object in the bin,
``weight_g``, default 2.5 pieces' weight), ``negative`` (the bin lifted off: the scale reads
about 0 g); ``clear`` ends them (the scale zeroed again, the object or the bin back).

The publisher sends ``{"ts", "weight_g", "count", "item", "stable"}`` JSON to the device's
topic when the count changed and the change held for ``hold_s`` seconds, every
``settle_publish_s`` while the scale settles (``stable: false``), and as a heartbeat every
``heartbeat_s`` seconds; the first message goes out ``first_publish_s`` after start. Every
state message is published with the MQTT retain flag, as real smart shelves commonly do: the
broker keeps the latest one and hands it to a subscriber as soon as it subscribes, so a monitor
started after the shelf sees its state at once instead of at the next heartbeat (the message
keeps its own ``ts``). It publishes ``online`` retained to ``eqmon/status/<device_id>`` and
leaves ``offline`` as its last will (and publishes ``offline`` itself on a clean stop).

``weight_g`` is the gross scale reading (bin + items); ``count`` = round((gross − tare) / unit).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from .mqtt_wire import MqttPublisher, Will

if TYPE_CHECKING:
    from .sensors import SensorModel

log = logging.getLogger(__name__)

# Faults of the MQTT link, for every MQTT device: a truncated (invalid JSON) payload, silence
# (drop-out), every message sent twice, timestamps out of order, a burst of `factor` × the
# normal rate, and a dropped connection that makes the broker publish the last will (offline).
LINK_FAULTS = ("malformed", "silence", "duplicate", "out_of_order", "burst", "lastwill", "clear")
SHELF_MODEL_FAULTS = ("restock", "take", "set_count", "drift", "foreign", "negative")
SHELF_FAULTS = LINK_FAULTS + SHELF_MODEL_FAULTS

# param name → (type, default); None default = required
_PARAMS: dict[str, tuple[type, Any]] = {
    "item": (str, None),
    "unit_weight_g": (float, None),
    "tare_g": (float, 0.0),
    "capacity": (int, None),
    "par": (int, None),
    "use_per_hour": (float, 0.0),
    "initial": (int, -1),  # -1: a random count between restock level and par
    "restock_at": (float, 0.3),  # restock when count < restock_at × par …
    "restock_delay_min": (float, 30.0),  # … this many simulated minutes later
    "noise_g": (float, 0.5),
    "piece_sd": (float, 0.01),  # relative standard deviation of piece weight
    "smoothing": (float, 0.5),  # EMA weight of the newest raw sample (1 = no smoothing)
    "hold_s": (float, 2.0),  # a changed count must hold this long before it is published
    "settle_s": (float, 3.0),  # after a take or restock the scale wobbles this long (0: never)
    "settle_publish_s": (float, 1.0),  # … and publishes unstable readings this often (0: never)
    "heartbeat_s": (float, 30.0),
    "first_publish_s": (float, 0.5),
    "qos": (int, 1),
}


def shelf_params(params: dict[str, Any]) -> dict[str, Any]:
    """Validated shelf params with defaults; ValueError says what is missing or wrong."""
    unknown = sorted(set(params) - set(_PARAMS))
    if unknown:
        raise ValueError(f"unknown smart_shelf params {unknown}; expected some of {sorted(_PARAMS)}")
    out: dict[str, Any] = {}
    for key, (typ, default) in _PARAMS.items():
        if key not in params:
            if default is None:
                raise ValueError(f"smart_shelf needs param {key} ({typ.__name__})")
            out[key] = default
            continue
        v = params[key]
        if typ is str:
            if not isinstance(v, str) or not v:
                raise ValueError(f"{key} must be a non-empty string, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"{key} must be a number, got {v!r}")
        elif typ is int:
            if v != int(v):
                raise ValueError(f"{key} must be a whole number, got {v!r}")
            v = int(v)
        else:
            v = float(v)
            if not math.isfinite(v):
                raise ValueError(f"{key} must be finite")
        out[key] = v
    if out["unit_weight_g"] <= 0:
        raise ValueError("unit_weight_g must be > 0")
    if out["capacity"] < 1 or not 0 <= out["par"] <= out["capacity"]:
        raise ValueError("need capacity >= 1 and 0 <= par <= capacity")
    if out["use_per_hour"] < 0 or out["tare_g"] < 0 or out["noise_g"] < 0:
        raise ValueError("use_per_hour, tare_g and noise_g must be >= 0")
    if not 0 < out["smoothing"] <= 1:
        raise ValueError("smoothing must be in (0, 1]")
    if out["qos"] not in (0, 1):
        raise ValueError("qos must be 0 or 1")
    if out["heartbeat_s"] <= 0 or out["hold_s"] < 0 or out["first_publish_s"] < 0:
        raise ValueError("heartbeat_s must be > 0; hold_s and first_publish_s >= 0")
    if out["settle_s"] < 0 or out["settle_publish_s"] < 0:
        raise ValueError("settle_s and settle_publish_s must be >= 0")
    return out


class ShelfModel:
    """One weighing bin. ``step(now, hour)`` advances it to ``now`` simulated seconds."""

    def __init__(self, rng: random.Random, params: dict[str, Any]) -> None:
        p = shelf_params(params)
        self.p = p
        self.rng = rng
        self.item: str = p["item"]
        self.unit_weight: float = p["unit_weight_g"]
        self.tare: float = p["tare_g"]
        self.capacity: int = p["capacity"]
        self.par: int = p["par"]
        initial = p["initial"]
        if initial < 0:
            initial = rng.randint(min(self.par, math.ceil(p["restock_at"] * self.par) + 1), self.par)
        self.pieces: list[float] = [self._piece() for _ in range(min(initial, self.capacity))]
        self.now = 0.0
        self.restock_due: float | None = None
        self.restocks = 0
        self.taken = 0
        self.zero_offset = 0.0  # the scale's zero (g): the drift fault moves it
        self.drift: tuple[float, float] | None = None  # (target g, g per second)
        self.foreign_g = 0.0  # an unrelated object in the bin
        self.lifted = False  # the bin off the scale
        self.settle_from: float | None = None  # when the last take or restock happened …
        self.settle_swing = 0.0  # … and how far the reading swings (g) at first
        self.smoothed = self.gross_true
        self.raw = self.smoothed

    def _piece(self) -> float:
        return self.unit_weight * (1.0 + self.rng.gauss(0.0, self.p["piece_sd"]))

    @property
    def count_true(self) -> int:
        return len(self.pieces)

    @property
    def gross_true(self) -> float:
        return self.tare + sum(self.pieces)

    @property
    def scale_true(self) -> float:
        """What the scale weighs without noise or wobble: the bin and its pieces, an object in
        it, its zero's drift; a lifted bin: nothing."""
        return self.zero_offset + (0.0 if self.lifted else self.gross_true + self.foreign_g)

    @property
    def stable(self) -> bool:
        """False while the scale still settles after a take or a restock."""
        return self.settle_from is None or self.now - self.settle_from >= self.p["settle_s"]

    def _disturb(self, change_g: float) -> None:
        """A take or restock of ``change_g``: the reading swings, then settles."""
        if self.p["settle_s"] > 0 and change_g:
            self.settle_from = self.now
            self.settle_swing = max(abs(change_g) / 3, 2 * self.p["noise_g"]) * (1 if change_g > 0 else -1)

    @property
    def weight_g(self) -> float:
        """Smoothed scale reading, 0.1 g resolution."""
        return round(self.smoothed, 1)

    @property
    def count(self) -> int:
        """Count as shelf firmware computes it from the smoothed reading."""
        return round((self.smoothed - self.tare) / self.unit_weight)

    def use_rate(self, hour: float) -> float:
        """Items per hour at local ``hour``: 1.6× by day (07–19h), 0.4× by night."""
        return self.p["use_per_hour"] * (1.6 if 7 <= hour < 19 else 0.4)

    def take(self, n: int) -> int:
        n = max(0, min(n, len(self.pieces)))
        before = self.gross_true
        for _ in range(n):
            self.pieces.pop()
        self.taken += n
        self._disturb(self.gross_true - before)
        return n

    def restock(self, to: int | None = None) -> None:
        target = self.par if to is None else to
        target = max(0, min(self.capacity, target))
        before = self.gross_true
        while len(self.pieces) < target:
            self.pieces.append(self._piece())
        while len(self.pieces) > target:
            self.pieces.pop()
        self.restock_due = None
        self.restocks += 1
        self._disturb(self.gross_true - before)

    def step(self, now: float, hour: float = 12.0) -> None:
        dt = now - self.now
        if dt <= 0:
            return
        self.now = now
        rate = self.use_rate(hour) / 3600.0  # items per second
        mean_batch = max(1.0, min(5.0, self.p["use_per_hour"] / 10.0))
        if rate > 0:
            events = self._poisson(rate / mean_batch * dt)
            for _ in range(events):
                self.take(self.rng.randint(1, max(1, round(2 * mean_batch - 1))))
        if self.restock_due is None and self.count_true < self.p["restock_at"] * self.par:
            self.restock_due = now + self.p["restock_delay_min"] * 60.0
        if self.restock_due is not None and now >= self.restock_due:
            self.restock()
        if self.drift is not None:
            target, per_s = self.drift
            gap = target - self.zero_offset
            self.zero_offset += max(-per_s * dt, min(per_s * dt, gap))
        wobble = 0.0
        if not self.stable:
            assert self.settle_from is not None
            t = now - self.settle_from
            # a damped swing of about 0.8 s, down to a few percent by settle_s
            wobble = self.settle_swing * math.exp(-3.0 * t / self.p["settle_s"]) * math.cos(2 * math.pi * t / 0.8)
        self.raw = self.scale_true + wobble + self.rng.uniform(-self.p["noise_g"], self.p["noise_g"])
        a = 1.0 if not self.stable else self.p["smoothing"]  # firmware shows the swing as it is
        self.smoothed = a * self.raw + (1.0 - a) * self.smoothed

    def doc(self) -> dict[str, Any]:
        return {"weight_g": self.weight_g, "count": self.count, "item": self.item, "stable": self.stable}

    def change_key(self) -> Any:
        return self.count

    def inject(self, fault: str, params: dict[str, Any]) -> None:
        check_shelf_fault(fault, params)
        if fault == "restock":
            self.restock(params.get("count"))
        elif fault == "take":
            self.take(params["count"])
        elif fault == "set_count":
            self.restock(params["count"])
        elif fault == "drift":
            self.drift = (float(params["target"]), abs(float(params.get("rate_per_min", 1.0))) / 60.0)
        elif fault == "foreign":
            self.foreign_g = float(params.get("weight_g", 2.5 * self.unit_weight))
        elif fault == "negative":
            self.lifted = True
        elif fault == "clear":
            # the scale zeroed, the object taken out, the bin back on the scale
            self.drift, self.zero_offset, self.foreign_g, self.lifted = None, 0.0, 0.0, False

    @property
    def active_faults(self) -> list[str]:
        flags = (("drift", self.drift is not None or self.zero_offset != 0), ("foreign", self.foreign_g != 0),
                 ("negative", self.lifted))  # fmt: skip
        return [n for n, on in flags if on]

    def _poisson(self, lam: float) -> int:
        if lam <= 0:
            return 0
        if lam > 30:
            return max(0, round(self.rng.gauss(lam, math.sqrt(lam))))
        limit, k, prod = math.exp(-lam), 0, self.rng.random()
        while prod > limit:
            k += 1
            prod *= self.rng.random()
        return k


def check_link_fault(fault: str, params: dict[str, Any]) -> None:
    if fault == "burst":
        f = params.get("factor", 10)
        if isinstance(f, bool) or not isinstance(f, int | float) or f < 1:
            raise ValueError(f"burst needs factor >= 1, got {f!r}")


def check_shelf_fault(fault: str, params: dict[str, Any]) -> None:
    """ValueError unless ``fault`` with ``params`` is a valid smart shelf fault."""
    if fault not in SHELF_FAULTS:
        raise ValueError(f"unknown smart_shelf fault {fault!r}; expected one of {SHELF_FAULTS}")
    check_link_fault(fault, params)
    if fault == "drift":
        target, rate = params.get("target"), params.get("rate_per_min", 1.0)
        for name, v in (("target", target), ("rate_per_min", rate)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"drift needs {name}, a number of grams (a minute), got {v!r}")
        if params.get("metric", "weight_g") != "weight_g":
            raise ValueError(f"drift on a smart shelf moves weight_g, not {params['metric']!r}")
    if fault == "foreign" and "weight_g" in params:
        v = params["weight_g"]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"foreign needs weight_g > 0, got {v!r}")
    if fault in ("restock", "take", "set_count"):
        n = params.get("count")
        if n is None and fault == "restock":
            return
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{fault} needs count, a whole number >= 0, got {n!r}")


def status_topic(device_id: str) -> str:
    return f"eqmon/status/{device_id}"


class DevicePublisher:
    """Runs one MQTT device (a shelf or a sensor): advances its model and publishes its JSON
    over its own MQTT connection, on change (once held ``hold_s``) and as a heartbeat, each
    message retained (the broker keeps the device's latest state for new subscribers)."""

    #: publish state messages with the MQTT retain flag
    retain = True

    def __init__(
        self,
        device_id: str,
        topic: str,
        model: ShelfModel | SensorModel,
        *,
        host: str,
        port: int,
        speed: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        tz: str = "UTC",
        tick_s: float = 0.1,
    ) -> None:
        self.device_id = device_id
        self.topic = topic
        self.model = model
        self.speed = speed
        self.clock = clock
        self.wall = wall
        self.tz = ZoneInfo(tz)
        self.tick_s = tick_s
        self.qos: int = model.p["qos"]
        self.client = MqttPublisher(
            host,
            port,
            client_id=f"eqmon-sim-{device_id}",
            will=Will(status_topic(device_id), b"offline", qos=1, retain=True),
        )
        self.malformed = False
        self.silent = False
        self.duplicate = False
        self.out_of_order = False
        self.burst = 1
        self.lastwill = False
        self.published = 0
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0
        self._wall0 = 0.0
        self._last_pub: float | None = None
        self._last_count: Any = None
        self._pending: tuple[Any, float] | None = None  # (change key, since)

    @property
    def sim_now(self) -> float:
        return (self.clock() - self._t0) * self.speed

    def _hour(self, sim_now: float) -> float:
        t = datetime.fromtimestamp(self._wall0 + sim_now, self.tz)
        return t.hour + t.minute / 60.0

    def inject(self, fault: str, params: dict[str, Any] | None = None) -> None:
        params = dict(params or {})
        if fault not in LINK_FAULTS:
            self.model.inject(fault, params)  # the model's own faults; ValueError if unknown
            return
        check_link_fault(fault, params)
        if fault == "malformed":
            self.malformed = True
        elif fault == "silence":
            self.silent = True
        elif fault == "duplicate":
            self.duplicate = True
        elif fault == "out_of_order":
            self.out_of_order = True
        elif fault == "burst":
            self.burst = int(params.get("factor", 10))
        elif fault == "lastwill":
            self.lastwill = True
            self.silent = True
            self.client.drop_connection()  # no DISCONNECT: the broker publishes the will
        elif fault == "clear":
            if self.lastwill and self.client.connected:
                self.client.publish(status_topic(self.device_id), b"online", qos=1, retain=True)
            self.malformed = self.silent = self.duplicate = self.out_of_order = self.lastwill = False
            self.burst = 1
            self.model.inject("clear", params)

    @property
    def active_faults(self) -> list[str]:
        flags = (("malformed", self.malformed), ("silence", self.silent), ("duplicate", self.duplicate),
                 ("out_of_order", self.out_of_order), ("burst", self.burst > 1), ("lastwill", self.lastwill))  # fmt: skip
        return [n for n, on in flags if on] + list(getattr(self.model, "active_faults", []))

    def _key(self) -> Any:
        """What must change (and hold) to be published: the model's change key, and whether
        the scale is stable (a shelf's stable state after a wobble is published once it held)."""
        return (self.model.change_key(), getattr(self.model, "stable", True))

    def payload(self, ts: float | None = None) -> bytes:
        ts = self.wall() if ts is None else ts
        if self.out_of_order:
            ts -= self.model.rng.uniform(1.0, 120.0)  # an older measurement arriving late
        doc = {"ts": round(ts, 3), **self.model.doc()}
        text = json.dumps(doc)
        if self.malformed:
            text = text[: len(text) // 2]  # a truncated frame: not valid JSON
        return text.encode()

    def begin(self) -> None:
        """Start the device's time at ``clock()`` and ``wall()`` (``start`` does; a test that
        drives ``tick`` on a fake clock without a connection calls it instead)."""
        self._t0 = self.clock()
        self._wall0 = self.wall()

    async def start(self) -> None:
        self.begin()
        await self.client.start()
        self.client.publish(status_topic(self.device_id), b"online", qos=1, retain=True)
        self._task = asyncio.create_task(self._loop(), name=f"shelf-{self.device_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.client.connected:
            self.client.publish(status_topic(self.device_id), b"offline", qos=1, retain=True)
        await self.client.stop(flush_timeout=1.0)

    def _publish(self, now: float) -> None:
        self._last_pub = now
        self._last_count = self._key()
        self._pending = None
        if self.silent:
            return
        wall = self.wall()
        for i in range(self.burst):
            # A burst: `burst` distinct measurements (1 ms apart) instead of one.
            payload = self.payload(wall - i * 0.001)
            self.client.publish(self.topic, payload, qos=self.qos, retain=self.retain)
            self.published += 1
            if self.duplicate:
                self.client.publish(self.topic, payload, qos=self.qos, retain=self.retain)
                self.published += 1

    def tick(self, now: float) -> None:
        """Advance the model and publish if due; ``now`` is the real clock."""
        sim = (now - self._t0) * self.speed
        self.model.step(sim, self._hour(sim))
        p = self.model.p
        if self._last_pub is None:
            if now - self._t0 >= p["first_publish_s"]:
                self._publish(now)
            return
        settle_every = p.get("settle_publish_s", 0.0)
        if not getattr(self.model, "stable", True) and settle_every > 0 and now - self._last_pub >= settle_every:
            self._publish(now)  # still settling: an unstable reading (stable: false)
            return
        count = self._key()
        if count != self._last_count:
            if self._pending is None or self._pending[0] != count:
                self._pending = (count, now)
            elif now - self._pending[1] >= p["hold_s"]:
                self._publish(now)
                return
        else:
            self._pending = None
        if now - self._last_pub >= p["heartbeat_s"]:
            self._publish(now)

    async def _loop(self) -> None:
        while True:
            try:
                self.tick(self.clock())
            except Exception:  # a model bug must not kill the simulator silently
                log.exception("shelf %s: tick failed", self.device_id)
            await asyncio.sleep(self.tick_s)


ShelfPublisher = DevicePublisher  # the name the shelves were first published under
