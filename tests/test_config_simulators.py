"""Simulator sections (devices[].simulator) and scenario steps are validated by the site-file
models of eqmon/config.py, with their path like any other error; simulators/ takes the values.
The declarations in config.py are checked here against simulators/ itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from eqmon import config
from eqmon.config import ConfigError, Site, parse_site
from simulators import MODEL_NAMES, SimulatedSite
from simulators import models as sim_models
from simulators import sensors as sim_sensors
from simulators import shelves as sim_shelves

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "site.yaml"
SHELF = {"item": "gloves", "unit_weight_g": 5.6, "capacity": 600, "par": 500}


def site(devices: list[dict[str, Any]], scenario: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"site": {"name": "x"}, "devices": devices, "scenario": scenario or []}


def modbus(model: str = "medication_refrigerator", **params: Any) -> dict[str, Any]:
    return {"id": "fridge-1", "kind": "k", "protocol": "modbus", "host": "127.0.0.1", "port": 15021,
            "registers": [{"name": "t", "address": 0}], "simulator": {"model": model, "seed": 1, "params": params}}  # fmt: skip


def mqtt(model: str = "smart_shelf", topic: str = "t/shelf-1", **params: Any) -> dict[str, Any]:
    return {"id": "shelf-1", "kind": "k", "protocol": "mqtt", "topic": topic,
            "fields": [{"metric": "count"}], "simulator": {"model": model, "params": params}}  # fmt: skip


def errors(data: dict[str, Any]) -> list[str]:
    import yaml

    with pytest.raises(ConfigError) as exc:
        parse_site(yaml.safe_dump(data), "s.yaml")
    return [f"{i.path}: {i.message}" for i in exc.value.issues]


# -- the declarations follow simulators/ ------------------------------------------------------


def test_models_faults_and_params_match_the_simulators() -> None:
    assert set(config.SIMULATOR_MODELS) == set(MODEL_NAMES)
    assert set(config.EQUIPMENT_SIMULATORS) == set(sim_models.EQUIPMENT_MODELS)
    assert set(config.SENSOR_SIMULATORS) == set(sim_sensors.SENSOR_KINDS)
    assert set(config.EQUIPMENT_FAULTS) == set(sim_models.MODEL_FAULTS + sim_models.PROTOCOL_FAULTS)
    assert set(config.SIMULATOR_FAULTS["smart_shelf"]) == set(sim_shelves.SHELF_FAULTS)
    assert set(config.SIMULATOR_FAULTS["room_environment"]) == set(sim_shelves.LINK_FAULTS + sim_sensors.SENSOR_FAULTS)
    assert set(config.SCENARIO_FAULTS) == {f for faults in config.SIMULATOR_FAULTS.values() for f in faults}
    assert set(config.ThermalParams.model_fields) == set(sim_models._PARAMS)
    assert set(config.SmartShelfParams.model_fields) == set(sim_shelves._PARAMS)
    for kind, metrics in sim_sensors.SENSOR_KINDS.items():
        params = config.RoomEnvironmentParams if kind == "room_environment" else config.DifferentialPressureParams
        assert set(params.model_fields) == set(sim_sensors._PARAMS) | {f"{m}_aim" for m in metrics}
        assert set(config.DRIFT_METRICS[kind]) == set(metrics)
    assert config.MODBUS_EXCEPTION_CODES == tuple(sorted(sim_models.EXCEPTION_CODES))


def test_every_model_builds_in_the_simulators() -> None:
    devices = [dict(modbus(m), id=f"d{i}", port=15100 + i) for i, m in enumerate(config.EQUIPMENT_SIMULATORS)]
    devices += [dict(mqtt(m, topic=f"t/s{i}", **(SHELF if m == "smart_shelf" else {})), id=f"s{i}")
                for i, m in enumerate(config.MQTT_SIMULATORS)]  # fmt: skip
    sim = SimulatedSite(Site.model_validate(site(devices)), mqtt_host="127.0.0.1", mqtt_port=1883)
    assert len(sim.device_ids) == len(config.SIMULATOR_MODELS)


def test_params_given_are_handed_over_validated() -> None:
    s = Site.model_validate(site(
        [modbus(setpoint=4, reject_addresses="input:10-11,holding:0"), mqtt(**SHELF | {"capacity": 600.0})],
        [{"at": "20s", "device": "fridge-1", "fault": "exception", "params": {"code": "0x0A"}},
         {"at": 1, "device": "fridge-1", "fault": "stuck"},
         {"at": "2m", "device": "fridge-1", "fault": "door_open", "params": {"minutes": 30}}],
    ))  # fmt: skip
    assert s.devices[0].simulator is not None and s.devices[1].simulator is not None
    assert s.devices[0].simulator.param_values() == {"setpoint": 4.0, "reject_addresses": "input:10-11,holding:0"}
    assert s.devices[1].simulator.param_values() == {**SHELF, "capacity": 600}
    assert [step.param_values() for step in s.scenario] == [{"code": 10}, {}, {"minutes": 30.0}]
    sim = SimulatedSite(s, mqtt_host="127.0.0.1", mqtt_port=1883)
    assert sim.bank("fridge-1").missing == {("input", 10), ("input", 11), ("holding", 0)}


# -- errors with their path -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (site([modbus("ice_cream_van")]), "devices[0].simulator.model: expected one of 'medication_refrigerator', 'vaccine_freezer', "),
        (site([modbus("smart_shelf")]), "devices[0].simulator.model: expected one of 'medication_refrigerator', "),
        (site([mqtt("generator")]), "devices[0].simulator.model: expected one of 'smart_shelf', 'room_environment', 'differential_pressure', got 'generator'"),
        (site([modbus(colour=1)]), "devices[0].simulator.params.colour: unknown key"),
        (site([modbus(hysteresis=0)]), "devices[0].simulator.params.hysteresis: expected greater than 0, got 0"),
        (site([modbus(setpoint=True)]), "devices[0].simulator.params.setpoint: expected a number, got True"),
        (site([modbus(setpoint="4")]), "devices[0].simulator.params.setpoint: expected a number, got '4'"),
        (site([modbus("generator", fuel_pct=120)]), "devices[0].simulator.params.fuel_pct: expected less than or equal to 100, got 120"),
        (site([modbus(reject_addresses="input:1-x")]), "devices[0].simulator.params.reject_addresses: 'input:1-x' is not an input register number"),
        (site([modbus(reject_addresses="memory:1")]), "devices[0].simulator.params.reject_addresses: unknown table 'memory'"),
        (site([modbus(reject_addresses=[70000])]), "devices[0].simulator.params.reject_addresses: 70000 is not an address or range within 0..65535"),
        (site([modbus(reject_addresses=[])]), "devices[0].simulator.params.reject_addresses: names no address"),
        (site([mqtt(item="gloves", capacity=1, par=1)]), "devices[0].simulator.params.unit_weight_g: required key is missing"),
        (site([mqtt(**SHELF | {"par": 700})]), "devices[0].simulator.params: par (700) is more than capacity (600)"),
        (site([mqtt(**SHELF | {"capacity": 2.5})]), "devices[0].simulator.params.capacity: expected a whole number, got 2.5"),
        (site([mqtt("room_environment", pressure_pa_aim=1)]), "devices[0].simulator.params.pressure_pa_aim: unknown key"),
        (site([mqtt(topic="t/+/x", **SHELF)]), "devices[0].simulator: a simulated MQTT device needs a plain topic of its own"),
        (site([modbus()], [{"at": "1s", "device": "fridge-1", "fault": "melt"}]), "scenario[0].fault: expected one of 'stuck', "),
        (site([modbus()], [{"at": "1s", "device": "fridge-1", "fault": "take", "params": {"count": 1}}]),
         "scenario[0].fault: fridge-1 (medication_refrigerator) does not take fault 'take'; expected one of ('drift', "),
        (site([modbus()], [{"at": "1s", "device": "fridge-1", "fault": "drift", "params": {"metric": "humidity_pct", "target": 1}}]),
         "scenario[0].params.metric: drift on medication_refrigerator moves temperature_c, not 'humidity_pct'"),
        (site([modbus()], [{"at": "1s", "device": "fridge-1", "fault": "drift", "params": {"rate_per_min": 1}}]),
         "scenario[0].params.target: required key is missing"),
        (site([modbus()], [{"at": "1s", "device": "fridge-1", "fault": "exception", "params": {"code": 7}}]),
         "scenario[0].params.code: expected an exception code, one of [1, 2, 3, 4, 5, 6, 8, 10, 11], got 7"),
        (site([modbus()], [{"at": "1s", "device": "fridge-1", "fault": "stuck", "params": {"for": 3}}]),
         "scenario[0].params.for: unknown key"),
        (site([modbus()], [{"at": "1s", "device": "fridge-1", "fault": "reject", "params": {}}]),
         "scenario[0].params.addresses: required key is missing"),
        (site([modbus()], [{"at": "1s", "device": "fridge-1", "fault": "fault_bit", "params": {"bit": 16}}]),
         "scenario[0].params.bit: expected less than or equal to 15, got 16"),
        (site([modbus()], [{"at": "1s", "device": "fridge-1", "fault": "door_open", "params": {"minutes": 0}}]),
         "scenario[0].params.minutes: expected greater than 0, got 0"),
        (site([modbus("oxygen_pipeline_monitor")], [{"at": "1s", "device": "fridge-1", "fault": "door_open"}]),
         "scenario[0].fault: fridge-1 (oxygen_pipeline_monitor) does not take fault 'door_open'"),
        (site([mqtt(**SHELF)], [{"at": "1s", "device": "shelf-1", "fault": "burst", "params": {"factor": 0.5}}]),
         "scenario[0].params.factor: expected greater than or equal to 1, got 0.5"),
        (site([mqtt(**SHELF)], [{"at": "1s", "device": "shelf-1", "fault": "take"}]), "scenario[0].params: required key is missing"),
        (site([dict(modbus(), simulator=None)], [{"at": "1s", "device": "fridge-1", "fault": "stuck"}]),
         "scenario[0].device: device 'fridge-1' has no simulator section, so it is not simulated"),
    ],
)
def test_bad_simulator_sections(data: dict[str, Any], expected: str) -> None:
    found = errors(data)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_lines_of_simulator_errors() -> None:
    text = EXAMPLE.read_text(encoding="utf-8").replace("use_per_hour: 25", "use_per_hour: -25")
    with pytest.raises(ConfigError) as exc:
        parse_site(text, "s.yaml")
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "use_per_hour: -25" in t)
    assert str(exc.value) == f"s.yaml: devices[5].simulator.params.use_per_hour: expected greater than or equal to 0, got -25 (line {line})"
