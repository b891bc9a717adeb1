"""Stock conditions for the alert engine: one per bin, pure (docs/inventory.md, "Stock alerts").

``stock_conditions(statuses, now=…, tz=…)`` gives one ``StockCondition`` per bin, meant for
``AlertEngine.on_condition(c.subject, c.key, c.active, c.text, severity=c.severity, ts=now)``:
the engine raises one alert per bin, updates its text and severity as they change and resolves
it when the condition goes inactive.

* active while the bin is below its reorder point; inactive (resolved) at or above it (a restock)
* severity: below the reorder point ``info``; below the minimum ``warning``; out of stock, or
  predicted out within the bin's lead time at the current use, ``critical`` for an item the site
  marks critical and ``warning`` otherwise

Below the reorder point is info, not a warning: it is the normal moment to plan a refill (the
reorder point holds the use during the lead time plus a safety stock), nothing is at risk yet;
the warning comes at the minimum or when the forecast says the refill would come too late.

Text: ``WARNING Ward 4B supply room: exam gloves M 38 left (min 50, par 500), out in ~1 h
(about 15:10) at the current use — bring 5 packs of 100``; the packs are the pick list's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

from eqmon.domain import Severity

from .picklist import packs_to_par, predicted_out_within_lead_time
from .status import BinStatus

KEY = "stock-level"


@dataclass(frozen=True, slots=True)
class StockCondition:
    subject: str  # bin:<sku>@<location id>
    key: str
    active: bool
    text: str
    severity: Severity


def stock_conditions(statuses: Iterable[BinStatus], *, now: float, tz: str | tzinfo) -> list[StockCondition]:
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    return [stock_condition(s, now=now, tz=zone) for s in statuses]


def stock_condition(s: BinStatus, *, now: float, tz: tzinfo) -> StockCondition:
    if not s.below_reorder_point:
        text = f"{s.path}: {s.name} back to {s.on_hand} (reorder point {s.reorder_point}, par {s.par})"
        return StockCondition(s.subject, KEY, False, text, Severity.INFO)
    soon = predicted_out_within_lead_time(s, now)
    if s.level == "out" or soon:
        severity = Severity.CRITICAL if s.critical else Severity.WARNING
    elif s.level == "below_min":
        severity = Severity.WARNING
    else:
        severity = Severity.INFO
    levels = f"(min {s.min_qty}, par {s.par})" if s.min_qty else f"(reorder point {s.reorder_point}, par {s.par})"
    if s.level == "out":
        what = f"OUT of stock {levels}"
    else:
        what = f"{s.on_hand} left {levels}"
        if s.stockout_at is not None:
            left = s.stockout_at - now
            what += f", out in {duration(left)}"
            if left < 86_400:
                what += f" (about {datetime.fromtimestamp(s.stockout_at, tz):%H:%M})"
            what += " at the current use"
            if soon and s.lead_time_s > 0:
                what += f", within the {duration(s.lead_time_s).lstrip('~')} lead time"
    text = f"{severity.upper()} {s.path}: {s.name} {what} — {bring(s)}"
    return StockCondition(s.subject, KEY, True, text, severity)


def bring(s: BinStatus) -> str:
    packs = packs_to_par(s)
    if s.pack_size == 1:
        return f"bring {packs}" + ("" if s.unit == "each" else f" × {s.unit}")
    return f"bring {packs} pack{'s' if packs != 1 else ''} of {s.pack_size}"


def duration(seconds: float) -> str:
    """``~1 min``, ``~25 min``, ``~3 h``, ``~4 days``."""
    minutes = seconds / 60
    if minutes < 55:
        return f"~{max(1, round(minutes))} min"
    if minutes < 48 * 60:
        return f"~{round(minutes / 60)} h"
    return f"~{round(minutes / 1440)} days"


__all__ = ["KEY", "StockCondition", "bring", "duration", "stock_condition", "stock_conditions"]
