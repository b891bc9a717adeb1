"""Capped exponential backoff with jitter: one helper for every retry loop in eqmon (Modbus
retries, MQTT reconnects, sink writes, the simulators' publisher).

Jitter spreads many retrying clients apart so that they do not hit a recovering server
together; the cap keeps a long outage from turning into hour-long silences."""

from __future__ import annotations

import random


class Backoff:
    """Delays ``initial × factor^n`` (capped at ``maximum``), each multiplied by a uniform
    jitter factor in ``[jitter_low, jitter_high]``.

    ``next()`` returns the delay to wait now and advances; ``reset()`` after a success starts
    over; ``delay(attempt)`` is the stateless form for a numbered retry."""

    __slots__ = ("initial", "maximum", "factor", "jitter_low", "jitter_high", "_rng", "_current")

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        factor: float = 2.0,
        jitter: tuple[float, float] = (0.8, 1.2),
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter_low, self.jitter_high = jitter
        self._rng = rng or random.Random()
        self._current = initial

    @property
    def current(self) -> float:
        """The un-jittered delay that ``next()`` will use."""
        return self._current

    @property
    def at_cap(self) -> bool:
        return self._current >= self.maximum

    def next(self) -> float:
        """The jittered delay to wait now; the following one grows by ``factor`` up to the cap."""
        d = min(self._current, self.maximum) * self._rng.uniform(self.jitter_low, self.jitter_high)
        self._current = min(self._current * self.factor, self.maximum)
        return d

    def reset(self) -> None:
        self._current = self.initial

    def delay(self, attempt: int) -> float:
        """The jittered delay before retry number ``attempt`` (0-based), without state."""
        try:
            base = min(self.initial * self.factor**attempt, self.maximum)
        except OverflowError:  # factor**attempt beyond a float (attempt ≥ ~1024): long past the cap
            base = self.maximum
        return base * self._rng.uniform(self.jitter_low, self.jitter_high)
