"""Device availability: online, degraded, offline, stale — with the cause kept, not lost.

Every collector reports each poll (or message) to the device's ``DeviceHealth``. A change of
state is logged once and emitted once as a ``DeviceStatusEvent``; repeated failures are counted,
not logged again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from eqmon.domain import DeviceState, DeviceStatusEvent

log = logging.getLogger("eqmon.devices")


@dataclass(slots=True)
class HealthSnapshot:
    state: DeviceState
    last_success: float | None
    last_error: str | None
    last_error_at: float | None
    consecutive_failures: int
    since: float | None


class DeviceHealth:
    """Availability of one device: online after a success; degraded after a failure; offline
    after ``offline_after`` consecutive failures (at once when a gateway says the device is
    unreachable); misconfigured when the device rejects the request itself; stale when nothing
    arrived for ``stale_after``."""

    def __init__(
        self,
        device_id: str,
        *,
        offline_after: int = 3,
        stale_after: float | None = None,
        emit: Callable[[DeviceStatusEvent], None] = lambda e: None,
    ) -> None:
        self.device_id = device_id
        self.offline_after = offline_after
        self.stale_after = stale_after
        self._emit = emit
        self.state = DeviceState.UNKNOWN
        self.since: float | None = None
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.consecutive_failures = 0

    def success(self, ts: float) -> None:
        self.last_success = ts
        self.consecutive_failures = 0
        self._set(DeviceState.ONLINE, ts, "")

    def failure(self, ts: float, error: str) -> None:
        self.last_error, self.last_error_at = error, ts
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.offline_after:
            self._set(DeviceState.OFFLINE, ts, error)
        elif self.state not in (DeviceState.OFFLINE, DeviceState.MISCONFIGURED):
            self._set(DeviceState.DEGRADED, ts, error)

    def unreachable(self, ts: float, error: str) -> None:
        """A failure that means the device cannot be reached at all (a gateway's 0x0A/0x0B):
        offline at once, without waiting for ``offline_after`` missed polls."""
        self.last_error, self.last_error_at = error, ts
        self.consecutive_failures += 1
        self._set(DeviceState.OFFLINE, ts, error)

    def misconfigured(self, ts: float, error: str) -> None:
        """The device rejects what we ask of it (Modbus 0x01/0x02/0x03): a site-file problem,
        not an outage. Logged once, like every change of state."""
        self.last_error, self.last_error_at = error, ts
        self.consecutive_failures += 1
        self._set(DeviceState.MISCONFIGURED, ts, error)

    def reported(self, ts: float, state: DeviceState, reason: str = "") -> None:
        """The device told us its state itself (an MQTT status topic or last will)."""
        if state == DeviceState.ONLINE:
            self.last_success = ts
        self._set(state, ts, reason)

    def check_stale(self, now: float) -> None:
        if self.stale_after is None or self.state in (DeviceState.OFFLINE, DeviceState.STALE):
            return
        last = self.last_success
        if last is not None and now - last > self.stale_after:
            self._set(DeviceState.STALE, now, f"nothing received for {now - last:.0f} s")

    def _set(self, state: DeviceState, ts: float, reason: str) -> None:
        if state == self.state:
            return
        old, self.state, self.since = self.state, state, ts
        if state == DeviceState.ONLINE:
            if old != DeviceState.UNKNOWN:
                log.info("device %s is back online (was %s)", self.device_id, old)
        else:
            log.warning("device %s is %s: %s", self.device_id, state, reason)
        self._emit(DeviceStatusEvent(self.device_id, state, ts, reason))

    def snapshot(self) -> HealthSnapshot:
        return HealthSnapshot(
            self.state,
            self.last_success,
            self.last_error,
            self.last_error_at,
            self.consecutive_failures,
            self.since,
        )
