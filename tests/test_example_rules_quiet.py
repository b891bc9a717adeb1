"""The example site's rules stay quiet on the simulators' normal behaviour (door openings,
defrost cycles, thermostat cycling, sensor noise): 24 simulated hours of every simulated Modbus
unit, stepped on its own time parameter (no clock, no server), its registers decoded as the
collector decodes them, through the alert engine (tests/simulated_day.py; every unit polled
every 10 s) — zero alerts. And a fault the rules are for does raise, so the quiet is not that
of a deaf engine. tests/test_ward_day.py runs a larger ward, shelves and faults included."""

from __future__ import annotations

import pytest

from eqmon.config import Site
from tests.simulated_day import SimulatedDay, polled_every
from tests.sitefiles import example_dict


def example_units() -> Site:
    """The example site's Modbus units (its shelves are the ward day's), polled every 10 s."""
    data = polled_every(example_dict(), "10s")
    data["devices"] = [d for d in data["devices"] if d["protocol"] == "modbus"]
    return Site.model_validate(data)


@pytest.mark.parametrize("seed_offset", [0, 100])
def test_a_simulated_day_of_normal_behaviour_raises_no_alert(seed_offset: int) -> None:
    site = example_units()
    kinds = {r.kind for r in site.alerts.rules}
    assert kinds >= {"threshold", "cumulative_excursion", "rate_of_change", "state", "sensor_failure", "stuck"}
    day = SimulatedDay(site, seed_offset=seed_offset)
    day.run(24 * 3600)
    assert [a.message for a in day.changes] == []
    # and the day had what the rules must not mistake for a fault
    assert {("fridge-1", "door"), ("fridge-2", "door"), ("warmer-1", "door"), ("fridge-1", "defrost"),
            ("fridge-2", "defrost"), ("freezer-1", "defrost")} <= day.seen


def test_the_same_day_with_a_failed_probe_raises_sensor_failed() -> None:
    """The harness sees what the rules are for: a sentinel on fridge-2 from the start."""
    day = SimulatedDay(example_units())
    day.inject("fridge-2", "sentinel")
    day.run(0.25 * 3600)
    assert [(a.rule_id, a.device_id) for a in day.changes] == [("probe-failed", "fridge-2")]
    assert "temperature sensor failed" in day.changes[0].message
