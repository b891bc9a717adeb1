"""Rule evaluators: one class per rule kind of the site file, behind one small protocol.

An evaluator watches one rule's metric on the devices the rule names. It is fed the readings of
that metric (``on_reading``), the clock (``tick(now)``) and device outages (``on_outage``), and
answers with *conditions*: :class:`Raise` (the condition holds: open an alert, or keep the open
one), :class:`Update` (an open alert's latest value) and :class:`Resolve` (the condition is gone).
The alert's lifecycle — ids, messages, acknowledgement, resolution summaries, the "condition now
unknown" note of a silent device — is the engine's (alerts/engine.py).

Evaluators answer :class:`Resolve` and :class:`Update` only while the rule's alert on that
device is open (``ctx.open_alert``): the engine has nothing to do with them otherwise, and most
readings are in range (the engine's throughput, bench/alerts_eval.py).

Time comes only from the readings' timestamps and from ``tick(now)``, so every rule runs on a
fake clock in the tests. Value rules never take a reading of quality ``bad`` or ``stale`` as in
range or out of range; only the sensor-failure rule counts ``bad`` ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Literal, Protocol

from eqmon.config import (
    AnyRule,
    CumulativeExcursionRule,
    RangeRule,
    RateOfChangeRule,
    SensorFailureRule,
    StateRule,
    StateValue,
    StuckRule,
    ThresholdRule,
)
from eqmon.domain import Alert, Quality, Reading, Value


@dataclass(slots=True)
class Raise:
    """The rule's condition holds on ``device_id`` since ``since``: open an alert (or keep the
    open one). ``text`` says what, how bad, since when and how long, without the device (the
    engine puts the device, the severity and the rule's action around it)."""

    device_id: str
    since: float
    text: str
    value: Value | None = None
    # The value to report as "worst" when the alert resolves, and which way is worse.
    worst: float | None = None
    worse: Literal["high", "low"] | None = None
    worst_label: str = "worst"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Update:
    """An open alert's latest value (and a candidate for its worst value); no event."""

    device_id: str
    value: Value | None
    worst: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Resolve:
    """The condition is gone at ``ts``: resolve the open alert, if any."""

    device_id: str
    ts: float
    extra: dict[str, Any] = field(default_factory=dict)


Condition = Raise | Update | Resolve


@dataclass(frozen=True, slots=True)
class Pending:
    """A condition that holds on ``device_id`` since ``since`` and raises an alert at ``due``
    if it still holds then (the ``for`` delay running): what the dashboard shows as pending."""

    device_id: str
    since: float
    due: float


class RuleContext(Protocol):
    """What an evaluator asks of the engine."""

    def clock_time(self, ts: float) -> str: ...  # HH:MM in the site's time zone

    def unit(self, device_id: str, metric: str) -> str: ...  # " °C", or ""

    def delay(self, seconds: float) -> float: ...  # a `for` delay, as the engine scales it

    def open_alert(self, rule_id: str, device_id: str) -> Alert | None: ...


class Evaluator(Protocol):
    @property
    def rule(self) -> AnyRule: ...  # the site file's rule it evaluates

    def on_reading(self, reading: Reading) -> list[Condition]: ...

    def tick(self, now: float) -> list[Condition]: ...

    def on_outage(self, device_id: str, ts: float) -> list[Condition]:
        """The device stopped answering: what was pending stops (a reading that does not come
        is neither in nor out of range); open alerts stay open."""
        ...


def _waiting(ev: ThresholdEvaluator | StateEvaluator | SensorFailureEvaluator, since: Iterable[tuple[str, float]]) -> list[Pending]:
    """The devices whose condition holds ``since`` and whose rule's ``for`` delay is running."""
    delay = ev.ctx.delay(ev.rule.for_)
    if delay <= 0:
        return []
    return [Pending(dev, t, t + delay) for dev, t in since if ev.ctx.open_alert(ev.rule.id, dev) is None]


def pending_of(ev: Evaluator) -> list[Pending]:
    """The evaluator's conditions waiting for their delay (kinds without a delay: none)."""
    fn = getattr(ev, "pending", None)
    return list(fn()) if fn is not None else []


def fmt_duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return f"{int(seconds)} s"
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def since_text(ctx: RuleContext, since: float, now: float) -> str:
    """"since 14:02 (25 min)": when the condition began and how long it has held; "since 14:02"
    alone when it is raised the moment it began (a rule without delay: "(0 s)" says nothing)."""
    lasted = f" ({fmt_duration(now - since)})" if now - since >= 1 else ""
    return f"since {ctx.clock_time(since)}{lasted}"


def metric_label(metric: str) -> str:
    """``temperature_c`` → ``temperature``, ``door_open`` → ``door open``."""
    for suffix in ("_c", "_f", "_pa", "_psig", "_v", "_pct", "_g", "_kg"):
        if metric.endswith(suffix):
            metric = metric.removesuffix(suffix)
            break
    return metric.replace("_", " ")


def _is_temperature(metric: str) -> bool:
    return "temp" in metric


def _number(r: Reading) -> float | None:
    """The reading's value when it may count as in or out of range: good and numeric."""
    v = r.value
    if type(v) is float:  # the common case first
        return v if r.quality is Quality.GOOD else None
    if r.quality is not Quality.GOOD or v is None or isinstance(v, bool | str):
        return None
    return float(v)


@dataclass(slots=True)
class _Pending:
    since: float  # when the value first went beyond the limit
    worst: float
    last: float
    side: str = ""  # range rules: "low" or "high"


class ThresholdEvaluator:
    """``kind: threshold``: beyond ``above``/``below`` for ``for``; back inside by
    ``hysteresis`` to resolve (the timer restarts as soon as the value is within the limit)."""

    def __init__(self, rule: ThresholdRule, ctx: RuleContext) -> None:
        self.rule, self.ctx = rule, ctx
        self._pending: dict[str, _Pending] = {}

    def on_reading(self, r: Reading) -> list[Condition]:
        value = _number(r)
        if value is None:
            return []
        rule, dev = self.rule, r.device_id
        high = rule.above is not None and value > rule.above
        beyond = high or (rule.below is not None and value < rule.below)
        if beyond:
            p = self._pending.get(dev)
            if p is None:
                p = self._pending[dev] = _Pending(r.ts, value, value)
            else:
                p.last = value
                p.worst = max(p.worst, value) if high else min(p.worst, value)
            if self.ctx.open_alert(rule.id, dev) is not None:
                return [Update(dev, value, value)]
            if r.ts - p.since >= self.ctx.delay(rule.for_):
                return [self._raise(dev, p, r.ts)]
            return []
        self._pending.pop(dev, None)
        if self.ctx.open_alert(rule.id, dev) is None:
            return []
        back_inside = (rule.above is None or value <= rule.above - rule.hysteresis) and (
            rule.below is None or value >= rule.below + rule.hysteresis
        )
        return [Resolve(dev, r.ts)] if back_inside else []

    def tick(self, now: float) -> list[Condition]:
        return [
            self._raise(dev, p, now)
            for dev, p in self._pending.items()
            if now - p.since >= self.ctx.delay(self.rule.for_) and self.ctx.open_alert(self.rule.id, dev) is None
        ]

    def on_outage(self, device_id: str, ts: float) -> list[Condition]:
        self._pending.pop(device_id, None)
        return []

    def pending(self) -> list[Pending]:
        return _waiting(self, ((dev, p.since) for dev, p in self._pending.items()))

    def _raise(self, dev: str, p: _Pending, ts: float) -> Raise:
        rule = self.rule
        unit = self.ctx.unit(dev, rule.metric)
        high = rule.above is not None and p.last > rule.above
        how = f"{p.last:.1f}{unit} above {rule.above:g}{unit}" if high else f"{p.last:.1f}{unit} below {rule.below:g}{unit}"
        text = f"{metric_label(rule.metric)} {how} {since_text(self.ctx, p.since, ts)}"
        return Raise(dev, p.since, text, p.last, p.worst, "high" if high else "low")


def _side(rule: RangeRule | CumulativeExcursionRule, value: float) -> str:
    """Which limit ``value`` is beyond: "high", "low" or "" (in range)."""
    if rule.high is not None and value > rule.high:
        return "high"
    if rule.low is not None and value < rule.low:
        return "low"
    return ""


class RangeEvaluator:
    """``kind: range``: too cold below ``low`` for ``low_for``, too warm above ``high`` for
    ``high_for``; one alert per device, resolved back inside by ``hysteresis`` on the side it
    left (and inside the other limit)."""

    def __init__(self, rule: RangeRule, ctx: RuleContext) -> None:
        self.rule, self.ctx = rule, ctx
        self._pending: dict[str, _Pending] = {}

    def _side(self, value: float) -> str:
        return _side(self.rule, value)

    def _delay(self, side: str) -> float:
        return self.ctx.delay(self.rule.high_for if side == "high" else self.rule.low_for)

    def on_reading(self, r: Reading) -> list[Condition]:
        value = _number(r)
        if value is None:
            return []
        rule, dev = self.rule, r.device_id
        side = self._side(value)
        alert = self.ctx.open_alert(rule.id, dev)
        open_side = alert.extra.get("side") if alert is not None else None
        out: list[Condition] = []
        if not side:
            self._pending.pop(dev, None)
            if alert is not None:
                h = rule.hysteresis
                if (open_side != "high" or rule.high is None or value <= rule.high - h) and (
                    open_side != "low" or rule.low is None or value >= rule.low + h
                ):
                    out.append(Resolve(dev, r.ts))
                else:
                    out.append(Update(dev, value))
            return out
        p = self._pending.get(dev)
        if p is None or p.side != side:
            p = self._pending[dev] = _Pending(r.ts, value, value, side)
        else:
            p.last = value
            p.worst = max(p.worst, value) if side == "high" else min(p.worst, value)
        if alert is not None and open_side == side:
            return [Update(dev, value, value)]
        if r.ts - p.since >= self._delay(side):
            if alert is not None:  # from too warm straight to too cold (or back): a new alert
                out.append(Resolve(dev, r.ts))
            out.append(self._raise(dev, p, r.ts))
        return out

    def tick(self, now: float) -> list[Condition]:
        out: list[Condition] = []
        for dev, p in self._pending.items():
            alert = self.ctx.open_alert(self.rule.id, dev)
            if now - p.since >= self._delay(p.side) and (alert is None or alert.extra.get("side") != p.side):
                if alert is not None:
                    out.append(Resolve(dev, now))
                out.append(self._raise(dev, p, now))
        return out

    def on_outage(self, device_id: str, ts: float) -> list[Condition]:
        self._pending.pop(device_id, None)
        return []

    def pending(self) -> list[Pending]:
        out = []
        for dev, p in self._pending.items():
            alert = self.ctx.open_alert(self.rule.id, dev)
            delay = self._delay(p.side)
            if delay > 0 and (alert is None or alert.extra.get("side") != p.side):
                out.append(Pending(dev, p.since, p.since + delay))
        return out

    def _raise(self, dev: str, p: _Pending, ts: float) -> Raise:
        rule = self.rule
        unit = self.ctx.unit(dev, rule.metric)
        temp = _is_temperature(rule.metric)
        if p.side == "high":
            what = "too warm" if temp else "too high"
            how = f"{p.last:.1f}{unit} above {rule.high:g}{unit}"
        else:
            what = "too cold" if temp else "too low"
            how = f"{p.last:.1f}{unit} below {rule.low:g}{unit}"
        text = f"{what}: {metric_label(rule.metric)} {how} {since_text(self.ctx, p.since, ts)}"
        worse: Literal["high", "low"] = "high" if p.side == "high" else "low"
        return Raise(dev, p.since, text, p.last, p.worst, worse, extra={"side": p.side})


@dataclass(slots=True)
class _Excursion:
    start: float
    end: float  # the last instant known out of range (grows while it goes on)
    min: float
    max: float
    side: str
    ongoing: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start, "duration_s": self.end - self.start, "min": self.min, "max": self.max,
            "side": self.side, "ongoing": self.ongoing,
        }  # fmt: skip


@dataclass(slots=True)
class _Track:
    excursions: list[_Excursion] = field(default_factory=list)
    in_range: bool = True  # the last good reading was in range


class CumulativeExcursionEvaluator:
    """``kind: cumulative_excursion``: the time out of range (below ``low``, above ``high``)
    within the sliding ``window`` adds up; the alert opens when it reaches ``limit`` and
    resolves when it is below the limit again and the value is back in range.

    An excursion runs from its first out-of-range reading to the first in-range one (or, while
    it goes on, to the latest reading or tick). A reading of quality bad or stale, or the device
    going silent, ends it at the last reading known out of range: unknown time is not counted.
    Every excursion in the window is kept (start, duration, min, max) in the alert's ``extra``
    under ``excursions``, for the excursion report. ``limit`` and ``window`` are not delays:
    the demo's delay compression leaves them as they are."""

    def __init__(self, rule: CumulativeExcursionRule, ctx: RuleContext) -> None:
        self.rule, self.ctx = rule, ctx
        self._tracks: dict[str, _Track] = {}

    def _side(self, value: float) -> str:
        return _side(self.rule, value)

    def total(self, device_id: str, now: float) -> float:
        """Seconds out of range within the window ending at ``now``."""
        t = self._tracks.get(device_id)
        if t is None:
            return 0.0
        start = now - self.rule.window
        return sum(max(0.0, min(e.end, now) - max(e.start, start)) for e in t.excursions)

    def on_reading(self, r: Reading) -> list[Condition]:
        dev = r.device_id
        t = self._tracks.setdefault(dev, _Track())
        value = _number(r)
        if value is None:
            if r.quality is not Quality.GOOD:
                self._interrupt(t)
            return []
        side = self._side(value)
        cur = t.excursions[-1] if t.excursions and t.excursions[-1].ongoing else None
        if side:
            if cur is not None and cur.side == side:
                cur.end = r.ts
                cur.min, cur.max = min(cur.min, value), max(cur.max, value)
            else:
                if cur is not None:  # straight from one side to the other
                    cur.end, cur.ongoing = r.ts, False
                t.excursions.append(_Excursion(r.ts, r.ts, value, value, side))
        elif cur is not None:
            cur.end, cur.ongoing = r.ts, False
        t.in_range = not side
        return self._evaluate(dev, t, r.ts, value)

    def tick(self, now: float) -> list[Condition]:
        out: list[Condition] = []
        for dev, t in self._tracks.items():
            if t.excursions and t.excursions[-1].ongoing:
                t.excursions[-1].end = max(t.excursions[-1].end, now)
            out += self._evaluate(dev, t, now, None)
        return out

    def on_outage(self, device_id: str, ts: float) -> list[Condition]:
        t = self._tracks.get(device_id)
        if t is not None:
            self._interrupt(t)
        return []

    @staticmethod
    def _interrupt(t: _Track) -> None:
        if t.excursions and t.excursions[-1].ongoing:
            t.excursions[-1].ongoing = False
        t.in_range = False  # not known to be in range: an open alert waits for a good reading

    def _evaluate(self, dev: str, t: _Track, now: float, value: float | None) -> list[Condition]:
        rule = self.rule
        alert = self.ctx.open_alert(rule.id, dev)
        if not t.excursions and alert is None:
            return []  # nothing out of range in the window, nothing open: the usual reading
        t.excursions = [e for e in t.excursions if e.ongoing or e.end > now - rule.window]
        total = self.total(dev, now)
        if alert is None:
            if total >= rule.limit and t.excursions:
                return [self._raise(dev, t, total, value)]
            return []
        extra = {"excursions": [e.as_dict() for e in t.excursions], "out_of_range_s": total}
        if total < rule.limit and t.in_range:
            return [Resolve(dev, now, extra)]
        return [Update(dev, value if value is not None else alert.value, extra=extra)]

    def _raise(self, dev: str, t: _Track, total: float, value: float | None) -> Raise:
        rule = self.rule
        unit = self.ctx.unit(dev, rule.metric)
        if rule.low is not None and rule.high is not None:
            bounds = f"{rule.low:g}–{rule.high:g}{unit}"
        elif rule.high is not None:
            bounds = f"at most {rule.high:g}{unit}"
        else:
            bounds = f"at least {rule.low:g}{unit}"
        lo = min(e.min for e in t.excursions)
        hi = max(e.max for e in t.excursions)
        worst_high = rule.high is not None and hi > rule.high
        worst = hi if worst_high else lo
        n = len(t.excursions)
        text = (
            f"{metric_label(rule.metric)} out of range ({bounds}) for {fmt_duration(total)} in the last "
            f"{fmt_duration(rule.window)} ({n} excursion{'s' if n != 1 else ''} since "
            f"{self.ctx.clock_time(t.excursions[0].start)}, worst {worst:.1f}{unit}): a reportable excursion"
        )
        extra = {"excursions": [e.as_dict() for e in t.excursions], "out_of_range_s": total}
        return Raise(
            dev, t.excursions[0].start, text, value if value is not None else worst, worst,
            "high" if worst_high else "low", extra=extra,
        )  # fmt: skip


_VALUE = itemgetter(1)


class RateOfChangeEvaluator:
    """``kind: rate_of_change``: over the readings of the last ``per``, the value rose (or
    fell) by more than ``max_change``; resolves when the readings of the last ``per`` are all
    within ``max_change`` of one another in the watched direction."""

    def __init__(self, rule: RateOfChangeRule, ctx: RuleContext) -> None:
        self.rule, self.ctx = rule, ctx
        self._windows: dict[str, deque[tuple[float, float]]] = {}

    def _change(self, w: deque[tuple[float, float]]) -> tuple[float, float, float, float, float] | None:
        """The largest move in the watched direction: (change, from, to, from ts, to ts)."""
        best: tuple[float, float, float, float, float] | None = None
        direction = self.rule.direction
        items = list(w)
        low = high = items[0]
        for ts, v in items[1:]:
            if direction in ("rise", "either") and v - low[1] > (best[0] if best else 0.0):
                best = (v - low[1], low[1], v, low[0], ts)
            if direction in ("fall", "either") and high[1] - v > (best[0] if best else 0.0):
                best = (high[1] - v, high[1], v, high[0], ts)
            if v < low[1]:
                low = (ts, v)
            if v > high[1]:
                high = (ts, v)
        return best

    def on_reading(self, r: Reading) -> list[Condition]:
        value = _number(r)
        if value is None:
            return []
        rule, dev = self.rule, r.device_id
        w = self._windows.setdefault(dev, deque())
        if w and r.ts < w[-1][0]:
            return []  # out of order: older than what the window holds
        w.append((r.ts, value))
        while w and w[0][0] < r.ts - rule.per:
            w.popleft()
        alert = self.ctx.open_alert(rule.id, dev)
        # No move in the window is larger than its spread: within max_change, nothing to find.
        if max(w, key=_VALUE)[1] - min(w, key=_VALUE)[1] <= rule.max_change:
            return [Resolve(dev, r.ts)] if alert is not None else []
        change = self._change(w)
        if change is not None and change[0] > rule.max_change:
            if alert is None:
                return [self._raise(dev, change)]
            return [Update(dev, value, change[0])]
        # Every reading of the last `per` within max_change of one another: the move is over.
        return [Resolve(dev, r.ts)] if alert is not None else []

    def tick(self, now: float) -> list[Condition]:
        return []  # a change is seen only in readings

    def on_outage(self, device_id: str, ts: float) -> list[Condition]:
        self._windows.pop(device_id, None)
        return []

    def _raise(self, dev: str, change: tuple[float, float, float, float, float]) -> Raise:
        rule = self.rule
        unit = self.ctx.unit(dev, rule.metric)
        amount, v0, v1, t0, t1 = change
        verb = "rose" if v1 > v0 else "fell"
        text = (
            f"{metric_label(rule.metric)} {verb} {amount:.1f}{unit} in {fmt_duration(t1 - t0)} "
            f"(from {v0:.1f} to {v1:.1f}{unit} since {self.ctx.clock_time(t0)}; "
            f"limit {rule.max_change:g}{unit} per {fmt_duration(rule.per)})"
        )
        return Raise(dev, t0, text, v1, amount, "high", "largest change", extra={"change": amount})


@dataclass(slots=True)
class _Held:
    value: float
    since: float


class StuckEvaluator:
    """``kind: stuck``: readings keep coming and the value has not moved by more than
    ``tolerance`` for ``for``: the sensor may be frozen. Resolves on the first change. Only
    readings count (ticks do not: no reading is no evidence of a frozen value), and an outage
    starts the watch over."""

    def __init__(self, rule: StuckRule, ctx: RuleContext) -> None:
        self.rule, self.ctx = rule, ctx
        self._held: dict[str, _Held] = {}

    def on_reading(self, r: Reading) -> list[Condition]:
        value = _number(r)
        if value is None:
            return []
        rule, dev = self.rule, r.device_id
        h = self._held.get(dev)
        if h is None or abs(value - h.value) > rule.tolerance:
            if h is None:
                self._held[dev] = _Held(value, r.ts)
                return []
            h.value, h.since = value, r.ts
            return [Resolve(dev, r.ts)] if self.ctx.open_alert(rule.id, dev) is not None else []
        if r.ts - h.since >= self.ctx.delay(rule.for_) and self.ctx.open_alert(rule.id, dev) is None:
            unit = self.ctx.unit(dev, rule.metric)
            text = (
                f"{metric_label(rule.metric)} sensor may be stuck at {h.value:.1f}{unit} since "
                f"{self.ctx.clock_time(h.since)} (no change for {fmt_duration(r.ts - h.since)})"
            )
            return [Raise(dev, h.since, text, value)]
        return []

    def tick(self, now: float) -> list[Condition]:
        return []

    def on_outage(self, device_id: str, ts: float) -> list[Condition]:
        self._held.pop(device_id, None)
        return []


def _same(a: object, b: object) -> bool:
    """Equality that does not take True for 1 (a bool state is not a number)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


class StateEvaluator:
    """``kind: state``: a boolean or enum metric equals ``equals`` (or one of ``in``) for
    ``for`` (0: at once); resolves on a good reading of another state."""

    def __init__(self, rule: StateRule, ctx: RuleContext) -> None:
        self.rule, self.ctx = rule, ctx
        self._since: dict[str, tuple[float, StateValue]] = {}
        self._values = tuple(rule.values)

    def _matches(self, value: object) -> bool:
        for v in self._values:
            if _same(value, v):
                return True
        return False

    def on_reading(self, r: Reading) -> list[Condition]:
        if r.quality is not Quality.GOOD or r.value is None:
            return []
        dev = r.device_id
        if not self._matches(r.value):
            self._since.pop(dev, None)
            return [Resolve(dev, r.ts)] if self.ctx.open_alert(self.rule.id, dev) is not None else []
        if dev not in self._since or not _same(self._since[dev][1], r.value):
            self._since[dev] = (r.ts, r.value)
        return self._check(dev, r.ts)

    def tick(self, now: float) -> list[Condition]:
        out: list[Condition] = []
        for dev in list(self._since):
            out += self._check(dev, now)
        return out

    def _check(self, dev: str, now: float) -> list[Condition]:
        since, value = self._since[dev]
        if now - since < self.ctx.delay(self.rule.for_) or self.ctx.open_alert(self.rule.id, dev) is not None:
            return []
        text = f"{self.state_name(value)} {since_text(self.ctx, since, now)}"
        return [Raise(dev, since, text, value)]

    def state_name(self, value: StateValue) -> str:
        label = metric_label(self.rule.metric)
        if value is True:
            return label
        if value is False:
            return f"not {label}"
        return f"{label} {str(value).replace('_', ' ')}"

    def on_outage(self, device_id: str, ts: float) -> list[Condition]:
        self._since.pop(device_id, None)
        return []

    def pending(self) -> list[Pending]:
        return _waiting(self, ((dev, since) for dev, (since, _) in self._since.items()))


class SensorFailureEvaluator:
    """``kind: sensor_failure``: the device reports the metric as invalid (quality bad: a
    sentinel such as 0x7FFF) for ``for``; resolved by a good reading. It says "sensor failed",
    never too warm or too cold: the value is not known."""

    def __init__(self, rule: SensorFailureRule, ctx: RuleContext) -> None:
        self.rule, self.ctx = rule, ctx
        self._since: dict[str, float] = {}

    def on_reading(self, r: Reading) -> list[Condition]:
        dev = r.device_id
        if r.quality is Quality.GOOD:
            self._since.pop(dev, None)
            return [Resolve(dev, r.ts)] if self.ctx.open_alert(self.rule.id, dev) is not None else []
        if r.quality is not Quality.BAD:
            return []  # stale: says nothing about the sensor
        self._since.setdefault(dev, r.ts)
        return self._check(dev, r.ts)

    def tick(self, now: float) -> list[Condition]:
        out: list[Condition] = []
        for dev in list(self._since):
            out += self._check(dev, now)
        return out

    def _check(self, dev: str, now: float) -> list[Condition]:
        since = self._since[dev]
        if now - since < self.ctx.delay(self.rule.for_) or self.ctx.open_alert(self.rule.id, dev) is not None:
            return []
        text = (
            f"{metric_label(self.rule.metric)} sensor failed (the device reports no valid reading) "
            f"{since_text(self.ctx, since, now)}"
        )
        return [Raise(dev, since, text)]

    def on_outage(self, device_id: str, ts: float) -> list[Condition]:
        self._since.pop(device_id, None)
        return []

    def pending(self) -> list[Pending]:
        return _waiting(self, self._since.items())


def make_evaluator(rule: AnyRule, ctx: RuleContext) -> Evaluator:
    """The evaluator of ``rule``'s kind."""
    if isinstance(rule, ThresholdRule):
        return ThresholdEvaluator(rule, ctx)
    if isinstance(rule, RangeRule):
        return RangeEvaluator(rule, ctx)
    if isinstance(rule, CumulativeExcursionRule):
        return CumulativeExcursionEvaluator(rule, ctx)
    if isinstance(rule, RateOfChangeRule):
        return RateOfChangeEvaluator(rule, ctx)
    if isinstance(rule, StuckRule):
        return StuckEvaluator(rule, ctx)
    if isinstance(rule, StateRule):
        return StateEvaluator(rule, ctx)
    return SensorFailureEvaluator(rule, ctx)
