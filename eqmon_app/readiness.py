"""Readiness of a running service, component by component (``GET /readyz``).

Each component is ``ok``, ``degraded`` (working around a fault; nothing lost yet) or ``down``
(not doing its job); the service is ready while none is down. What counts:

* **collectors**: down until the service has started them and again once it is stopping.
* **mqtt-broker** (only with MQTT devices): ok while connected; degraded while disconnected for
  less than ``broker_grace`` (60 s, the grace of the "cannot reach the MQTT broker" warning:
  a broker restart is not an outage, and messages wait at the broker); down after that.
* **sink:embedded**, **sink:influxdb**: ok while writing; degraded while failing with the spool
  absorbing what it cannot write (retried until it succeeds); down when its runner has stopped
  or when it is failing and the spool is full.
* **spool**: ok below the site's ``warn_at`` fill; degraded from there; down when full
  (``FULL_AT`` of ``max_readings``: new readings are refused or the oldest dropped).
* **state-database**: a ``SELECT 1`` in a worker thread, bounded by ``db_timeout`` (2 s): ok
  when answered, down when it fails or does not answer in time. At most one probe is in flight
  (a hung connection does not pile up threads) and an answer is reused for ``DB_CACHE_S`` (an
  open probe cannot make the database work harder than once a second).

Details name states and durations, never addresses, credentials or error texts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sqlalchemy import Engine, text

from alerts.links import BROKER_GRACE

if TYPE_CHECKING:
    from collectors.registry import Collector
    from collectors.sinks import SinkRunner
    from collectors.spool import Spool
    from eqmon.config import Site


class Checked(Protocol):
    """What the checks read of the service (eqmon_app/service.py ``Service``, which makes them):
    named here rather than imported, so that the service and its checks import one way."""

    site: Site
    db: Engine
    clock: Callable[[], float]
    collectors: list[Collector]
    sinks: list[SinkRunner]
    spool: Spool
    @property
    def mqtt(self) -> Any: ...  # the MQTT collector (connected, disconnected_since, connects), or None
    collecting: bool
    stopping: bool

State = Literal["ok", "degraded", "down"]

FULL_AT = 0.99  # spool fill at which it counts as full
DB_TIMEOUT_S = 2.0
DB_CACHE_S = 1.0


def _component(name: str, state: State, detail: str) -> dict[str, Any]:
    return {"name": name, "state": state, "detail": detail}


def _for(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _retrieve(f: asyncio.Future[float]) -> None:
    if not f.cancelled():
        f.exception()


class DatabaseProbe:
    """``SELECT 1`` on an engine in a worker thread: bounded, one at a time, briefly cached."""

    def __init__(self, engine: Engine, *, timeout: float = DB_TIMEOUT_S, cache_s: float = DB_CACHE_S) -> None:
        self.engine = engine
        self.timeout = timeout
        self.cache_s = cache_s
        self._probe: asyncio.Future[float] | None = None
        self._started = 0.0
        self._last: tuple[float, dict[str, Any]] | None = None  # (monotonic time, component)

    def _select_one(self) -> float:
        t0 = time.perf_counter()
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1")).scalar_one()
        return time.perf_counter() - t0

    async def check(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < self.cache_s:
            return self._last[1]
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(asyncio.to_thread(self._select_one))
            self._probe.add_done_callback(_retrieve)  # a probe that failed after its timeout: no warning
            self._started = now
        try:
            took = await asyncio.wait_for(asyncio.shield(self._probe), self.timeout)
        except TimeoutError:
            result = _component(
                "state-database", "down", f"no answer to SELECT 1 for {_for(time.monotonic() - self._started)}"
            )
        except Exception as exc:
            result = _component("state-database", "down", f"SELECT 1 failed ({type(exc).__name__})")
        else:
            result = _component("state-database", "ok", f"SELECT 1 answered in {took * 1000:.0f} ms")
        self._last = (time.monotonic(), result)
        return result

    async def close(self) -> None:
        """Wait (bounded) for a probe still in its thread."""
        if self._probe is not None and not self._probe.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._probe), self.timeout)


class Readiness:
    """The checks of ``GET /readyz`` for one service (see the module's docstring)."""

    def __init__(
        self,
        service: Checked,
        *,
        broker_grace: float = BROKER_GRACE,
        db_timeout: float = DB_TIMEOUT_S,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.broker_grace = broker_grace
        self.database = DatabaseProbe(service.db, timeout=db_timeout)
        self.wall = wall  # the sink runners' failing_since is wall-clock time

    async def check(self) -> dict[str, Any]:
        s = self.service
        now = s.clock()
        components = [self._collectors(), *self._broker(now), *self._sinks(), self._spool()]
        components.append(await self.database.check())
        return {
            "ready": all(c["state"] != "down" for c in components),
            "checked_at": now,
            "components": components,
        }

    def _collectors(self) -> dict[str, Any]:
        s = self.service
        names = ", ".join(c.protocol for c in s.collectors) or "none"
        if s.stopping:
            return _component("collectors", "down", "the service is stopping")
        if not s.collecting:
            return _component("collectors", "down", f"not started ({names})")
        return _component("collectors", "ok", f"started: {names}")

    def _broker(self, now: float) -> list[dict[str, Any]]:
        m = self.service.mqtt
        if m is None:
            return []
        if m.connected:
            return [_component("mqtt-broker", "ok", "connected")]
        since = m.disconnected_since
        down_for = 0.0 if since is None else max(0.0, now - since)
        what = "not connected yet" if m.connects == 0 else "disconnected"
        if down_for < self.broker_grace:
            return [_component("mqtt-broker", "degraded", f"{what} for {_for(down_for)}; reconnecting")]
        return [_component("mqtt-broker", "down", f"{what} for {_for(down_for)} (grace {_for(self.broker_grace)}); reconnecting")]

    def _spool_full(self) -> bool:
        return self.service.spool.fill >= FULL_AT

    def _sinks(self) -> list[dict[str, Any]]:
        s = self.service
        out = []
        for r in s.sinks:
            name = f"sink:{r.name}"
            if s.collecting and not s.stopping and not r.running:
                out.append(_component(name, "down", "its writer has stopped (see the service log)"))
            elif r.failing_since is None:
                out.append(_component(name, "ok", f"writing; {r.depth} readings to write"))
            else:
                since = f"failing since {_utc(r.failing_since)} ({_for(self.wall() - r.failing_since)})"
                if self._spool_full():
                    out.append(_component(name, "down", f"{since}; the spool is full: readings are being lost"))
                else:
                    out.append(_component(name, "degraded", f"{since}; {r.depth} readings wait in the spool"))
        return out

    def _spool(self) -> dict[str, Any]:
        spool = self.service.spool
        fill = spool.fill
        detail = f"{fill:.0%} full ({spool.depth} of {spool.max_readings} readings)"
        if fill >= FULL_AT:
            lost = "new readings are refused" if spool.full_policy == "reject" else "the oldest readings are dropped"
            return _component("spool", "down", f"{detail}: {lost}")
        if fill >= self.service.site.telemetry.spool.warn_at:
            return _component("spool", "degraded", f"{detail}: sinks are behind")
        return _component("spool", "ok", detail)
