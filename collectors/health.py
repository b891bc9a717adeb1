"""Device availability: online, degraded, offline, stale — with the cause kept, not lost.

Every collector reports each poll (or message) to the device's ``DeviceHealth``. A change of
state is logged once and emitted once as a ``DeviceStatusEvent``; repeated failures are counted,
not logged again.

A device that answers but rejects some of its registers (Modbus 0x02/0x03 on those alone) stays
``online`` — its other readings still arrive — and carries the rejected registers
(``rejected``, shown in the device view). A change of that list is logged once and emitted as a
``DeviceStatusEvent`` of state ``misconfigured`` whose reason names the registers (the alert
engine raises "device misconfigured" from it) while ``state`` stays ``online``; when every
register is read again an ``online`` event resolves the alert. Only a device that rejects every
register is ``misconfigured`` itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eqmon.domain import DeviceState, DeviceStatusEvent

log = logging.getLogger("eqmon.devices")


# Names listed in an event's reason before "… and N more" (alerts are one line).
MAX_NAMED = 5


@dataclass(frozen=True, slots=True)
class RejectedRegister:
    """A register the device rejects on its own (Modbus exception 0x02/0x03 to a read of just
    that register): the site file names something the device does not have."""

    name: str
    table: str  # holding | input | coil | discrete_input
    address: int
    exception: int  # the Modbus exception code

    def describe(self) -> str:
        return f"{self.name} ({self.table} {self.address}, exception 0x{self.exception:02X})"

    def as_dict(self) -> dict[str, str | int]:
        return {"name": self.name, "table": self.table, "address": self.address, "exception": self.exception}


def describe_rejected(rejected: Sequence[RejectedRegister], total: int | None = None) -> str:
    """One line naming the rejected registers (at most ``MAX_NAMED``), e.g. "1 of 4 registers
    rejected: run_hours (input 10, exception 0x02); the other 3 are still read"."""
    names = ", ".join(r.describe() for r in rejected[:MAX_NAMED])
    if len(rejected) > MAX_NAMED:
        names += f" and {len(rejected) - MAX_NAMED} more"
    if total is None:
        return f"{len(rejected)} registers rejected: {names}"
    if len(rejected) >= total:
        return f"every register rejected: {names}"
    rest = total - len(rejected)
    return (
        f"{len(rejected)} of {total} registers rejected: {names}; "
        f"the other {rest} {'is' if rest == 1 else 'are'} still read"
    )


@dataclass(slots=True)
class HealthSnapshot:
    state: DeviceState
    last_success: float | None
    last_error: str | None
    last_error_at: float | None
    consecutive_failures: int
    since: float | None
    rejected: tuple[RejectedRegister, ...] = field(default=())


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
        self._failing_since: float | None = None  # the first of the consecutive failures
        self.rejected: tuple[RejectedRegister, ...] = ()  # registers the device rejects
        self._registers = 0  # how many registers the device has (for the reason text)

    def success(
        self, ts: float, *, rejected: Sequence[RejectedRegister] | None = None, registers: int = 0
    ) -> None:
        """A poll (or message) got through. ``rejected``: the registers the device rejected
        while the others were read (None: not tracked, as for MQTT devices); ``registers``: how
        many the device has in all."""
        self.last_success = ts
        self.consecutive_failures = 0
        self._failing_since = None
        was = self.state
        self._set(DeviceState.ONLINE, ts, "")
        if was == DeviceState.MISCONFIGURED:
            self.rejected = ()  # "back online" said it; what is still rejected is news again
        if rejected is not None and (rejected or self.rejected):  # (cheap when none ever was)
            self._set_rejected(ts, tuple(rejected), registers, announce_again=was != DeviceState.ONLINE)

    def _set_rejected(
        self, ts: float, rejected: tuple[RejectedRegister, ...], registers: int, *, announce_again: bool
    ) -> None:
        """Online with some registers rejected: log and emit a change of the list once. An
        ``online`` event (the device came back from another state) resolves the engine's
        "misconfigured" alert, so a list still there is announced again then, without a log line."""
        changed = rejected != self.rejected
        self.rejected, self._registers = rejected, registers or self._registers
        if not changed and not (announce_again and rejected):
            return
        if rejected:
            reason = describe_rejected(rejected, self._registers or None)
            if changed:
                log.warning("device %s is online but rejects some registers: %s", self.device_id, reason)
            self._emit(DeviceStatusEvent(self.device_id, DeviceState.MISCONFIGURED, ts, reason, partial=True))
        elif changed:
            log.info("device %s: every register is read again", self.device_id)
            self._emit(DeviceStatusEvent(self.device_id, DeviceState.ONLINE, ts, "every register is read again"))

    def failure(self, ts: float, error: str) -> None:
        self.last_error, self.last_error_at = error, ts
        self.consecutive_failures += 1
        self._failing_since = ts if self._failing_since is None else self._failing_since
        if self.consecutive_failures >= self.offline_after:
            self._set(DeviceState.OFFLINE, ts, error, since=self._failing_since)
        elif self.state not in (DeviceState.OFFLINE, DeviceState.MISCONFIGURED):
            self._set(DeviceState.DEGRADED, ts, error)

    def unreachable(self, ts: float, error: str) -> None:
        """A failure that means the device cannot be reached at all (a gateway's 0x0A/0x0B):
        offline at once, without waiting for ``offline_after`` missed polls."""
        self.last_error, self.last_error_at = error, ts
        self.consecutive_failures += 1
        self._failing_since = ts if self._failing_since is None else self._failing_since
        self._set(DeviceState.OFFLINE, ts, error, since=self._failing_since)

    def misconfigured(self, ts: float, error: str, *, rejected: Sequence[RejectedRegister] | None = None) -> None:
        """The device rejects what we ask of it (Modbus 0x01/0x02/0x03): a site-file problem,
        not an outage. Logged once, like every change of state. ``rejected``: the registers it
        rejected (every one of them), kept for the device view."""
        self.last_error, self.last_error_at = error, ts
        self.consecutive_failures += 1
        self.rejected = tuple(rejected or ())
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
            gap = now - last
            quiet = f"{gap:.0f} s" if gap < 120 else f"{gap // 60:.0f} min"
            self._set(DeviceState.STALE, now, f"nothing received for {quiet}", since=last)

    def _set(self, state: DeviceState, ts: float, reason: str, *, since: float | None = None) -> None:
        if state == self.state:
            return
        old, self.state, self.since = self.state, state, ts
        if state == DeviceState.ONLINE:
            if old != DeviceState.UNKNOWN:
                log.info("device %s is back online (was %s)", self.device_id, old)
        else:
            log.warning("device %s is %s: %s", self.device_id, state, reason)
        self._emit(DeviceStatusEvent(self.device_id, state, ts, reason, since=since))

    def snapshot(self) -> HealthSnapshot:
        return HealthSnapshot(
            self.state,
            self.last_success,
            self.last_error,
            self.last_error_at,
            self.consecutive_failures,
            self.since,
            self.rejected,
        )
