"""Who is on shift: the shifts of a rota in force at an instant, in the site's time zone.

A shift is in force on each of its ``days`` from ``from`` to ``to``, local wall-clock time, and
an overnight shift (``to`` at or before ``from``) ends on the next day: it belongs to the day it
starts on. Each such instance is turned into Unix seconds (``start <= ts < end``), so a night
shift lasts 11 hours on the night the clocks go forward and 13 on the night they go back. A
wall-clock time the clocks skip or repeat is taken at its first reading (``fold=0``; a skipped
01:30 is read with the offset before the change), the same for the shift that ends there and
the one that starts there: shifts that meet on the wall clock meet on every night of the year.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from eqmon.config import MINUTES_PER_DAY, WEEKDAYS, Rota, Shift

# Days around an instant whose shift instances are looked at: an instance starts at most one
# day before the instant that it covers; the next change is at most a week away.
_BEFORE, _AFTER = 8, 8


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of time in which the same shifts are in force: ``start <= ts < end``."""

    start: float
    end: float
    shifts: tuple[Shift, ...]  # in the order of the rota


class OnShift:
    """The shifts of one rota in force at an instant; the answer for a whole segment is kept,
    so asking again within it costs no date arithmetic."""

    def __init__(self, rota: Rota, timezone: str) -> None:
        self.rota = rota
        self.tz = ZoneInfo(timezone)
        self._last: Segment | None = None

    def _local(self, day: date, minutes: int) -> float:
        d = day + timedelta(days=minutes // MINUTES_PER_DAY)
        m = minutes % MINUTES_PER_DAY
        return datetime(d.year, d.month, d.day, m // 60, m % 60, tzinfo=self.tz).timestamp()

    def _instances(self, around: date) -> list[tuple[float, float, int]]:
        """(start, end, index of the shift) of each shift instance starting within the days
        around ``around``."""
        out = []
        for offset in range(-_BEFORE, _AFTER + 1):
            day = around + timedelta(days=offset)
            weekday = WEEKDAYS[day.weekday()]
            for i, s in enumerate(self.rota.shifts):
                if weekday not in s.days:
                    continue
                start = self._local(day, s.from_)
                end = self._local(day, s.to + (MINUTES_PER_DAY if s.overnight else 0))
                if start < end:  # a shift entirely in an hour the clocks skip is never in force
                    out.append((start, end, i))
        return out

    def segment(self, ts: float) -> Segment:
        """The shifts in force at ``ts`` and how long that stays so."""
        last = self._last
        if last is not None and last.start <= ts < last.end:
            return last
        instances = self._instances(datetime.fromtimestamp(ts, self.tz).date())
        active = sorted(i for start, end, i in instances if start <= ts < end)
        edges = [t for start, end, _ in instances for t in (start, end)]
        before = [t for t in edges if t <= ts]
        after = [t for t in edges if t > ts]
        seg = Segment(
            max(before) if before else ts,
            min(after) if after else ts + 1.0,  # no shift for weeks: look again a second later
            tuple(self.rota.shifts[i] for i in active),
        )
        self._last = seg
        return seg

    def contacts(self, ts: float) -> list[list[str]]:
        """The contacts of each shift in force at ``ts`` (in escalation order), or the rota's
        ``default`` when none is, or nobody."""
        shifts = self.segment(ts).shifts
        if shifts:
            return [list(s.contacts) for s in shifts]
        return [list(self.rota.default)] if self.rota.default else []
