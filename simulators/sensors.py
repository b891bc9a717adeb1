"""Environmental sensors that publish over MQTT: room temperature/humidity and the differential
pressure of an isolation room (negative pressure: at least 2.5 Pa below the corridor).

Each model follows the publisher interface of :mod:`simulators.shelves`: ``step(now, hour)``,
``doc()`` (the JSON fields of a message, without ``ts``), ``change_key()`` (a change of it is
published once it held ``hold_s``), ``p`` (publishing params) and ``inject(fault, params)`` for
its own faults (``drift``, ``stuck``). They are published by the shelves' ``DevicePublisher``,
so their state messages are retained like the shelves' (docs/simulators.md).
"""

from __future__ import annotations

import math
import random
from typing import Any

# model → metric → (aim, noise sd, publish resolution)
SENSOR_KINDS: dict[str, dict[str, tuple[float, float, float]]] = {
    "room_environment": {"temperature_c": (21.5, 0.15, 0.1), "humidity_pct": (42.0, 0.8, 1.0)},
    "differential_pressure": {"pressure_pa": (-6.0, 0.4, 0.1)},
}
SENSOR_FAULTS = ("drift", "stuck")

_PARAMS: dict[str, tuple[type, Any]] = {
    "hold_s": (float, 2.0),
    "heartbeat_s": (float, 30.0),
    "first_publish_s": (float, 0.5),
    "qos": (int, 1),
}


def sensor_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    aims = SENSOR_KINDS[kind]
    allowed = set(_PARAMS) | {f"{m}_aim" for m in aims}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"unknown {kind} params {unknown}; expected some of {sorted(allowed)}")
    out: dict[str, Any] = {}
    for name, (typ, default) in _PARAMS.items():
        v = params.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"{name} must be a number, got {v!r}")
        out[name] = typ(v)
    for m, (aim, _, _) in aims.items():
        v = params.get(f"{m}_aim", aim)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"{m}_aim must be a number, got {v!r}")
        out[f"{m}_aim"] = float(v)
    return out


class SensorModel:
    """A slowly wandering value per metric (mean-reverting noise), with drift and stuck faults."""

    def __init__(self, kind: str, rng: random.Random, params: dict[str, Any]) -> None:
        if kind not in SENSOR_KINDS:
            raise ValueError(f"unknown sensor kind {kind!r}; expected one of {sorted(SENSOR_KINDS)}")
        self.kind = kind
        self.rng = rng
        self.p = sensor_params(kind, params)
        self.spec = SENSOR_KINDS[kind]
        self.values = {m: self.p[f"{m}_aim"] for m in self.spec}
        self.now = 0.0
        self.drift: dict[str, tuple[float, float]] = {}  # metric → (target, per second)
        self.stuck = False

    def step(self, now: float, hour: float = 12.0) -> None:
        dt = now - self.now
        if dt <= 0:
            return
        self.now = now
        if self.stuck:
            return
        for m, (_aim, sd, _) in self.spec.items():
            v = self.values[m]
            if m in self.drift:
                target, rate = self.drift[m]
                step = rate * dt
                v = target if abs(target - v) <= step else v + math.copysign(step, target - v)
            else:
                k = min(1.0, dt / 120.0)  # returns to its aim over a couple of minutes
                v += (self.p[f"{m}_aim"] - v) * k + self.rng.gauss(0.0, sd * math.sqrt(min(dt, 10.0) / 10.0))
            self.values[m] = v

    def doc(self) -> dict[str, Any]:
        return {m: round(round(self.values[m] / res) * res, 3) for m, (_, _, res) in self.spec.items()}

    def change_key(self) -> Any:
        return tuple(sorted(self.doc().items()))

    def inject(self, fault: str, params: dict[str, Any]) -> None:
        if fault == "drift":
            metric = params.get("metric", next(iter(self.spec)))
            if metric not in self.spec:
                raise ValueError(f"drift: metric must be one of {sorted(self.spec)}, got {metric!r}")
            target, per_min = params.get("target"), params.get("rate_per_min", 1.0)
            if isinstance(target, bool) or not isinstance(target, int | float):
                raise ValueError(f"drift needs target, a number, got {target!r}")
            self.drift[metric] = (float(target), abs(float(per_min)) / 60.0)
        elif fault == "stuck":
            self.stuck = True
        elif fault == "clear":
            self.drift.clear()
            self.stuck = False
        else:
            raise ValueError(f"unknown {self.kind} fault {fault!r}; expected one of {SENSOR_FAULTS}")
