"""The one fan-out point: readings and device-status events go from the collectors to every
subscriber (latest values, the alert engine, and next the inventory) through here.

The durable stage comes first and is not a subscriber: ``Service.accept`` puts readings into the
spool, and only what the spool took (or what a source cannot send again) is published here. A
subscriber that raises is counted and logged once per kind of failure; the others still get the
readings, and the collector that produced them never sees the error."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from .domain import DeviceStatusEvent, Reading

log = logging.getLogger("eqmon.bus")

ReadingsSubscriber = Callable[[Sequence[Reading]], None]
StatusSubscriber = Callable[[DeviceStatusEvent], None]


class Bus:
    """Synchronous fan-out on the service's event loop: subscribers must be quick (no I/O)."""

    def __init__(self) -> None:
        self._readings: list[tuple[str, ReadingsSubscriber]] = []
        self._status: list[tuple[str, StatusSubscriber]] = []
        self.failures: dict[str, int] = {}  # subscriber name -> calls that raised

    def subscribe_readings(self, name: str, fn: ReadingsSubscriber) -> None:
        self._readings.append((name, fn))

    def subscribe_status(self, name: str, fn: StatusSubscriber) -> None:
        self._status.append((name, fn))

    @property
    def subscribers(self) -> list[str]:
        return [n for n, _ in self._readings] + [f"{n} (status)" for n, _ in self._status]

    def publish_readings(self, readings: Sequence[Reading]) -> None:
        for name, fn in self._readings:
            try:
                fn(readings)
            except Exception:
                self._failed(name)

    def publish_status(self, event: DeviceStatusEvent) -> None:
        for name, fn in self._status:
            try:
                fn(event)
            except Exception:
                self._failed(name)

    def _failed(self, name: str) -> None:
        n = self.failures.get(name, 0)
        self.failures[name] = n + 1
        if n == 0:  # once per subscriber; the count is in the self-metrics
            log.exception("subscriber %s failed (counted; later failures are not logged)", name)
