"""The pick list: what to bring to which room to reach par, in whole packs, most urgent first
(docs/inventory.md, "Pick list"). Pure: made from ``status.bin_statuses``.

Which bins: those below their reorder point (the refills the stock alerts ask for); with
``top_up=True`` every bin below par (a full restocking round). Each line brings
``ceil((par − on-hand) / pack_size)`` packs: par is reached, overshooting by less than a pack.

Urgency, most urgent first:

1. ``out``        — nothing left (critical items first)
2. ``stockout``   — predicted out within the bin's lead time at the current use, soonest first
3. ``below_min``
4. ``below_reorder``
5. ``top_up``     — at or above the reorder point, below par (``top_up`` only)

within each: critical items first, then the predicted stock-out (soonest first; no use: last),
then the room and item.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .status import BinStatus

Urgency = Literal["out", "stockout", "below_min", "below_reorder", "top_up"]
URGENCIES: tuple[Urgency, ...] = ("out", "stockout", "below_min", "below_reorder", "top_up")


@dataclass(frozen=True, slots=True)
class PickLine:
    urgency: Urgency
    room: str
    path: str
    location_id: int
    sku: str
    name: str
    unit: str
    pack_size: int
    critical: bool
    on_hand: int
    min_qty: int
    reorder_point: int
    par: int
    packs: int  # packs to bring
    quantity: int  # units: packs × pack_size
    use_per_day: float
    days_of_supply: float | None
    stockout_at: float | None


def packs_to_par(s: BinStatus) -> int:
    """Whole packs that bring the bin to par (0 at or above it)."""
    return max(0, math.ceil((s.par - s.on_hand) / s.pack_size))


def urgency(s: BinStatus, now: float) -> Urgency | None:
    """The bin's place on the pick list (None: at or above par)."""
    if s.level == "out":
        return "out"
    if s.on_hand >= s.par:
        return None
    if s.below_reorder_point and predicted_out_within_lead_time(s, now):
        return "stockout"
    if s.level == "below_min":
        return "below_min"
    if s.level == "below_reorder":
        return "below_reorder"
    return "top_up"


def predicted_out_within_lead_time(s: BinStatus, now: float) -> bool:
    """Out, or out at the current use before a refill ordered now could arrive."""
    return s.stockout_at is not None and s.stockout_at - now <= s.lead_time_s


def pick_list(statuses: Iterable[BinStatus], *, now: float, top_up: bool = False) -> list[PickLine]:
    lines = []
    for s in statuses:
        u = urgency(s, now)
        if u is None or (u == "top_up" and not top_up):
            continue
        packs = packs_to_par(s)
        lines.append(
            PickLine(
                urgency=u, room=s.room, path=s.path, location_id=s.location_id, sku=s.sku, name=s.name,
                unit=s.unit, pack_size=s.pack_size, critical=s.critical, on_hand=s.on_hand, min_qty=s.min_qty,
                reorder_point=s.reorder_point, par=s.par, packs=packs, quantity=packs * s.pack_size,
                use_per_day=s.use_per_day, days_of_supply=s.days_of_supply, stockout_at=s.stockout_at,
            )  # fmt: skip
        )
    lines.sort(key=_order)
    return lines


def _order(p: PickLine) -> tuple[Any, ...]:
    return (URGENCIES.index(p.urgency), not p.critical, p.stockout_at is None, p.stockout_at or 0.0,
            p.path, p.name, p.sku)  # fmt: skip


CSV_COLUMNS = tuple(PickLine.__dataclass_fields__)


def render_json(lines: Iterable[PickLine], *, now: float) -> str:
    data = {"generated_at": now, "lines": [asdict(p) for p in lines]}
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def render_csv(lines: Iterable[PickLine]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for p in lines:
        w.writerow(["" if v is None else v for v in (getattr(p, c) for c in CSV_COLUMNS)])
    return buf.getvalue()


__all__ = [
    "CSV_COLUMNS", "URGENCIES", "PickLine", "Urgency", "packs_to_par", "pick_list",
    "predicted_out_within_lead_time", "render_csv", "render_json", "urgency",
]  # fmt: skip
