"""Smart shelves: a bin's weight becomes a count. Pure functions; ``feed.ShelfFeed`` feeds the
shelves' readings into the ledger with them.

DOMAIN.md: count = (gross − tare) / unit weight; the unit weight comes from a sample of at least
10 pieces and a piece's weight varies by about 0.5–1.5 %; a remainder over half a unit, or a
negative count, means a bad reading or a wrong item in the bin. The shelf's own ``count`` field
is not trusted.

Rounding to the nearest count always leaves at most half a unit, so the remainder is judged
against what the pieces and the scale can explain: ``n`` pieces weigh between
``n · w · (1 − v)`` and ``n · w · (1 + v)`` (``v``: the piece variation), give or take the
scale's noise. A reading is **explained** when some whole count ``n ≥ 0`` fits its net weight
that way; its count is the fitting ``n`` nearest ``net / w``. Otherwise it leaves weight
unexplained and is flagged, as is a **negative** count (the net weight is below −½ unit) and a
reading the shelf reports as **unstable** (still settling: the caller says). A flagged reading
is not to be applied.

While ``n · v + noise / w`` stays under half a unit the count is exact; beyond it (a bin of 500
gloves at 1.5 %: ±7.5) the weight allows several counts, ``min_count``..``max_count``, and only
weight outside that whole range is unexplained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# DOMAIN.md's upper figure: a piece's weight varies by about 0.5–1.5 %.
PIECE_VARIATION = 0.015
# The scale's noise (resolution and settling) in grams, not in DOMAIN.md: an assumption, to be
# set per shelf model; a bin whose unit weight is not well above it cannot be counted by weight.
NOISE_G = 2.0
_EPS = 1e-9  # floating-point slack in the bounds (in units)


@dataclass(frozen=True, slots=True)
class Tolerance:
    piece_variation: float = PIECE_VARIATION  # relative, per piece (0.015 = 1.5 %)
    noise_g: float = NOISE_G  # absolute, of the whole reading

    def __post_init__(self) -> None:
        if not 0 <= self.piece_variation < 1:
            raise ValueError(f"piece_variation must be in [0, 1), not {self.piece_variation}")
        if not self.noise_g >= 0:
            raise ValueError(f"noise_g must not be negative, not {self.noise_g}")


@dataclass(frozen=True, slots=True)
class ShelfCount:
    """One reading of one bin, as a count."""

    count: int  # the best whole count (negative only when flagged ``negative``)
    exact: float  # (gross − tare) / unit weight
    min_count: int  # the whole counts the weight allows within tolerance …
    max_count: int  # … (min_count > max_count: none)
    negative: bool
    unexplained: bool
    unstable: bool

    @property
    def usable(self) -> bool:
        """Nothing flagged: the count may be applied."""
        return not (self.negative or self.unexplained or self.unstable)

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(f for f in ("negative", "unexplained", "unstable") if getattr(self, f))

    @property
    def remainder(self) -> float:
        """``exact − count`` in units (what the count leaves over, signed)."""
        return self.exact - self.count


def weight_to_count(
    gross_g: float,
    *,
    unit_weight_g: float,
    tare_g: float,
    stable: bool = True,
    tolerance: Tolerance = Tolerance(),  # noqa: B008 - frozen, never mutated
) -> ShelfCount:
    """The count of a bin weighing ``gross_g`` (the bin's ``tare_g`` included) of an item whose
    pieces weigh ``unit_weight_g``; ``stable=False``: the shelf says it is still settling."""
    if not (math.isfinite(unit_weight_g) and unit_weight_g > 0):
        raise ValueError(f"unit_weight_g must be above 0, not {unit_weight_g}")
    if not (math.isfinite(gross_g) and math.isfinite(tare_g)):
        raise ValueError(f"weights must be finite numbers, not gross {gross_g} g, tare {tare_g} g")
    w, v, noise = unit_weight_g, tolerance.piece_variation, tolerance.noise_g
    net = gross_g - tare_g
    exact = net / w
    # n pieces fit when n·w·(1−v) − noise <= net <= n·w·(1+v) + noise.
    low = math.ceil((net - noise) / (w * (1 + v)) - _EPS)
    high = math.floor((net + noise) / (w * (1 - v)) + _EPS)
    low = max(low, 0)
    nearest = math.floor(exact + 0.5)
    explained = low <= high
    count = min(max(nearest, low), high) if explained else nearest
    return ShelfCount(
        count=count, exact=exact, min_count=low, max_count=high,
        negative=count < 0, unexplained=not explained, unstable=not stable,
    )  # fmt: skip


__all__ = ["NOISE_G", "PIECE_VARIATION", "ShelfCount", "Tolerance", "weight_to_count"]
