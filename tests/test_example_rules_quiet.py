"""The example site's rules stay quiet on the simulators' normal behaviour (door openings,
defrost cycles, thermostat cycling, sensor noise): 24 simulated hours of every simulated Modbus
unit, stepped on its own time parameter (no clock, no server), its registers decoded as the
collector decodes them, through the alert engine — zero alerts. And a fault the rules are for
does raise, so the quiet is not that of a deaf engine."""

from __future__ import annotations

import random
from typing import Any

import pytest

from alerts.engine import AlertEngine
from collectors.modbus import compile_register
from eqmon.config import ModbusDevice, Site, load_site
from eqmon.domain import Alert, Reading
from simulators.modbus_server import RegisterBank
from simulators.models import EQUIPMENT_MODELS
from tests.sitefiles import EXAMPLE

T0 = 1_780_000_000.0
POLL_S = 10.0
TABLES = {"holding": "holding", "input": "input", "coil": "coils", "discrete_input": "discrete"}


def simulated_units(site: Site, seed_offset: int) -> list[tuple[ModbusDevice, Any, RegisterBank]]:
    units = []
    for dev in site.modbus_devices():
        if dev.simulator is None:
            continue
        model = EQUIPMENT_MODELS[dev.simulator.model](random.Random(dev.simulator.seed + seed_offset), dev.simulator.param_values())
        units.append((dev, model, RegisterBank()))
    return units


def poll(dev: ModbusDevice, bank: RegisterBank, ts: float) -> list[Reading]:
    out: list[Reading] = []
    for reg in dev.registers:
        table = getattr(bank, TABLES[reg.type])
        words = [int(w) for w in table[reg.address : reg.address + (1 if reg.type in ("coil", "discrete_input") else reg.words)]]
        compile_register(dev.id, reg, 0)(words, ts, out)
    return out


def run(
    site: Site, hours: float, *, seed_offset: int = 0, faults: dict[str, tuple[str, dict[str, Any]]] | None = None,
    seen: set[tuple[str, str]] | None = None,
) -> list[Alert]:
    """Alerts raised over ``hours`` simulated; ``seen`` collects (device, what happened)."""
    changes: list[Alert] = []
    engine = AlertEngine(site, on_change=changes.append)
    units = simulated_units(site, seed_offset)
    for dev, model, _ in units:
        if faults and dev.id in faults:
            model.inject(*faults[dev.id])
    t = 0.0
    while t <= hours * 3600:
        for dev, model, bank in units:
            model.step(t)
            model.write(bank)
            engine.on_readings(poll(dev, bank, T0 + t))
            if seen is not None:
                seen.update((dev.id, what) for what, on in (("door", model.door_open), ("defrost", model.defrosting)) if on)
        engine.tick(T0 + t)
        t += POLL_S
    return changes


@pytest.mark.parametrize("seed_offset", [0, 100])
def test_a_simulated_day_of_normal_behaviour_raises_no_alert(seed_offset: int) -> None:
    site = load_site(EXAMPLE)
    kinds = {r.kind for r in site.alerts.rules}
    assert kinds >= {"threshold", "cumulative_excursion", "rate_of_change", "state", "sensor_failure", "stuck"}
    seen: set[tuple[str, str]] = set()
    changes = run(site, 24, seed_offset=seed_offset, seen=seen)
    assert [a.message for a in changes] == []
    # and the day had what the rules must not mistake for a fault
    assert {("fridge-1", "door"), ("fridge-2", "door"), ("warmer-1", "door"), ("fridge-1", "defrost"),
            ("fridge-2", "defrost"), ("freezer-1", "defrost")} <= seen


def test_the_same_day_with_a_failed_probe_raises_sensor_failed() -> None:
    """The harness sees what the rules are for: a sentinel on fridge-2 from the start."""
    changes = run(load_site(EXAMPLE), 0.25, faults={"fridge-2": ("sentinel", {})})
    assert [(a.rule_id, a.device_id) for a in changes] == [("probe-failed", "fridge-2")]
    assert "temperature sensor failed" in changes[0].message
