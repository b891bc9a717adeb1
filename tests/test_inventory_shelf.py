"""Smart-shelf weight -> count (inventory/shelf.py): DOMAIN.md's examples, and hypothesis
properties for any unit weight, tare, count and noise within tolerance (a piece's weight off by
up to 1.5 %, the scale by up to its noise): the true count is always allowed and never flagged,
and is the count itself while the tolerance leaves less than half a unit of doubt; weight no
whole count explains, and negative counts, are flagged."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from inventory.shelf import NOISE_G, PIECE_VARIATION, Tolerance, weight_to_count

TOL = Tolerance()
unit_weights = st.floats(min_value=0.5, max_value=5000.0)
tares = st.floats(min_value=0.0, max_value=20_000.0)
counts = st.integers(min_value=0, max_value=2000)
unit_fraction = st.floats(min_value=-1.0, max_value=1.0)  # of the tolerance


def _doubt(n: int, w: float, tol: Tolerance = TOL) -> float:
    """How far (in units) the tolerance lets n pieces' weight stray."""
    return n * tol.piece_variation + tol.noise_g / w


def test_domain_examples() -> None:
    # 38 exam gloves of 5.2 g in a 412 g bin, a glove or two a bit light
    r = weight_to_count(412.0 + 38 * 5.2 - 1.1, unit_weight_g=5.2, tare_g=412.0)
    assert (r.count, r.flags, r.usable) == (38, (), True)
    # three reams of paper (~2.27 kg each) on a 1.5 kg tray
    assert weight_to_count(1500 + 3 * 2270 + 9.0, unit_weight_g=2270, tare_g=1500).count == 3
    # an empty bin reading a gram under its tare: 0, not a negative count
    assert weight_to_count(411.0, unit_weight_g=5.2, tare_g=412.0).count == 0
    # a 23 g battery's bin holding a 12 g foreign object: half a battery unexplained
    odd = weight_to_count(200 + 4 * 23 + 12, unit_weight_g=23, tare_g=200)
    assert odd.unexplained and not odd.usable and odd.flags == ("unexplained",)
    # the bin lifted off the shelf: negative
    neg = weight_to_count(50.0, unit_weight_g=23, tare_g=200)
    assert neg.negative and neg.count < 0 and not neg.usable
    # settling
    assert weight_to_count(292.0, unit_weight_g=23, tare_g=200, stable=False).flags == ("unstable",)
    # 500 gloves, all 1.5 % heavy: the weight allows ±7-8 gloves; it is not an anomaly
    full = weight_to_count(412 + 500 * 5.2 * 1.015, unit_weight_g=5.2, tare_g=412)
    assert full.usable and full.min_count <= 500 <= full.max_count and abs(full.count - 500) <= 8
    with pytest.raises(ValueError):
        weight_to_count(100.0, unit_weight_g=0.0, tare_g=0.0)
    with pytest.raises(ValueError):
        weight_to_count(float("nan"), unit_weight_g=1.0, tare_g=0.0)
    assert (PIECE_VARIATION, NOISE_G) == (0.015, 2.0)


@given(n=counts, w=unit_weights, tare=tares, piece=unit_fraction, scale=unit_fraction)
def test_any_count_within_tolerance_is_allowed_and_not_flagged(
    n: int, w: float, tare: float, piece: float, scale: float
) -> None:
    # The pieces' total weight is off by at most n·w·1.5 % (all of them light or heavy is the
    # worst case; any mix lies in between), the scale by at most its noise.
    gross = tare + n * w * (1 + piece * TOL.piece_variation) + scale * TOL.noise_g
    r = weight_to_count(gross, unit_weight_g=w, tare_g=tare)
    assert r.usable, r
    assert r.min_count <= n <= r.max_count and r.min_count <= r.count <= r.max_count
    assert abs(r.count - n) <= 2 * _doubt(n, w) + 1
    if _doubt(n, w) < 0.5:  # less than half a unit of doubt: the count is exact
        assert r.count == n and r.max_count - r.min_count <= 1


@given(n=st.integers(min_value=0, max_value=20), w=unit_weights, tare=tares, extra=st.floats(min_value=0.25, max_value=0.75))
def test_weight_no_whole_count_explains_is_flagged(n: int, w: float, tare: float, extra: float) -> None:
    assume(_doubt(n + 1, w) < 0.15)
    r = weight_to_count(tare + (n + extra) * w, unit_weight_g=w, tare_g=tare)
    assert r.unexplained and not r.usable and r.min_count > r.max_count
    assert abs(r.remainder) <= 0.5 and r.count in (n, n + 1)


@given(w=unit_weights, tare=tares, under=st.floats(min_value=0.6, max_value=50.0))
def test_a_negative_count_is_flagged(w: float, tare: float, under: float) -> None:
    assume(TOL.noise_g / w < 0.1)
    r = weight_to_count(tare - under * w, unit_weight_g=w, tare_g=tare)
    assert r.negative and r.count < 0 and not r.usable


@given(n=counts, w=unit_weights, tare=tares, stable=st.booleans())
def test_unstable_is_what_the_caller_says(n: int, w: float, tare: float, stable: bool) -> None:
    r = weight_to_count(tare + n * w, unit_weight_g=w, tare_g=tare, stable=stable)
    assert r.unstable is not stable and ("unstable" in r.flags) is not stable
    assert r.min_count <= n <= r.max_count and not r.unexplained and not r.negative
