"""Consumption rate: an exponentially weighted sum of a bin's use, kept on its on-hand row.

What counts as use: an ``issue`` and a ``shelf`` reading that went down (the stock left the bin
to be used). Receipts, counts and adjustments (corrections, damage) and transfers (the stock
moved, it was not used) do not.

Each use ``q`` at time ``t`` adds ``q · 2^(-(now − t)/HALF_LIFE_S)`` to a decayed sum ``S``;
``inventory_on_hand`` keeps ``S`` valued at ``use_at`` (``use_decayed``), so it is updated by the
ledger's own write of the row (no extra statement) and read without touching the ledger.

For a steady use of ``r`` units a second, ``S`` tends to ``r / λ`` (``λ = ln 2 / half-life``),
so ``r ≈ λ·S``. A bin watched for less than a few half-lives has not filled its sum yet: the
weights of its observed window ``T`` (since its first ledger row, at least ``MIN_WINDOW_S``) add
up to ``(1 − e^{−λT}) / λ``, and dividing by that gives the weighted mean use over what was
seen (the plain mean for ``T`` ≪ half-life). The half-life is part of the stored sums: change it
and the sums must be rebuilt from the ledger (``rebuild`` in migration 0004 shows how).

Why a half-life of one day: use follows the shifts (more by day), so a rate over hours would
swing between day and night and jump at each big issue; one day averages a whole day of shifts
while a change of use (an outbreak, a ward reopened) still counts half after a day and 90 % after
about 3.3 days; use older than two weeks weighs under 0.01 %.
"""

from __future__ import annotations

import math

HALF_LIFE_S = 86_400.0
LAMBDA = math.log(2) / HALF_LIFE_S  # per second
MIN_WINDOW_S = 3_600.0
USE_KINDS = ("issue", "shelf")  # with a negative delta


def is_use(kind: str, delta: int) -> bool:
    """Whether a ledger row is consumption."""
    return delta < 0 and kind in USE_KINDS


def add_use(decayed: float, at: float | None, quantity: float, ts: float) -> tuple[float, float]:
    """The decayed sum (and the time it is valued at) after a use of ``quantity`` at ``ts``; a
    use older than ``at`` (a back-dated row) is added with its weight at ``at``."""
    if at is None:
        return float(quantity), ts
    if ts >= at:
        return decayed * math.exp(-LAMBDA * (ts - at)) + quantity, ts
    return decayed + quantity * math.exp(-LAMBDA * (at - ts)), at


def rate_per_day(decayed: float, at: float | None, first_at: float, now: float) -> float:
    """Weighted recent use, units per day, at ``now`` (0.0: no use seen)."""
    if at is None or decayed <= 0:
        return 0.0
    s = decayed * math.exp(-LAMBDA * max(0.0, now - at))
    window = max(MIN_WINDOW_S, now - first_at)
    return s * LAMBDA / -math.expm1(-LAMBDA * window) * 86_400.0


__all__ = ["HALF_LIFE_S", "LAMBDA", "MIN_WINDOW_S", "USE_KINDS", "add_use", "is_use", "rate_per_day"]
