"""Site-file validation: every error names the file, the path inside it and what was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eqmon.config import ConfigError, load_site, parse_duration, parse_site

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).parent / "cases" / "config"
EXAMPLE = ROOT / "examples" / "site.yaml"


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eqmon_app.cli", "check-config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_example_site_is_valid() -> None:
    site = load_site(EXAMPLE)
    assert len(site.modbus_devices()) == 4 and len(site.mqtt_devices()) == 3
    r = check_config(EXAMPLE)
    assert (r.returncode, r.stdout.splitlines()) == (0, [
        "inventory: 3 items (2 critical), 8 locations (2 supply rooms), 3 bins (3 on smart shelves)", "ok",
    ]), r.stderr  # fmt: skip


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown_key.yaml", "devices[0].colour: unknown key (line 7)"),
        ("wrong_type.yaml", "devices[1].registers[1].data_type: expected one of 'int16', 'uint16'"),
        ("duplicate_device.yaml", "devices[2].id: duplicate device id 'fridge-1' (first at devices[0]) (line 14)"),
    ],
)
def test_bad_site_file_exits_2_naming_file_and_path(case: str, expected: str) -> None:
    path = CASES / case
    r = check_config(path)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}: {expected}"), lines[0]


def test_every_error_is_reported_not_just_the_first() -> None:
    text = """
site: {name: x}
devices:
  - {id: a, kind: k, protocol: modbus, host: h, port: 70000, registers: [{name: t, address: -1}]}
  - {id: b, kind: k, protocol: carrier-pigeon}
"""
    with pytest.raises(ConfigError) as exc:
        parse_site(text, "site.yaml")
    paths = [i.path for i in exc.value.issues]
    assert paths == ["devices[0].port", "devices[0].registers[0].address", "devices[1].protocol"]
    assert "expected one of 'modbus', 'mqtt'" in str(exc.value)


def test_rules_must_name_existing_devices() -> None:
    text = EXAMPLE.read_text().replace("device_kind: blanket_warmer", "devices: [warmer-9]")
    with pytest.raises(ConfigError) as exc:
        parse_site(text, "site.yaml")
    assert [i.path for i in exc.value.issues] == ["alerts.rules[3].devices[0]"]
    assert "no device with id 'warmer-9'" in exc.value.issues[0].message


@pytest.mark.parametrize("tz", ["Mars/Base", "Europe", "europe/london", "../etc/localtime", ""])
def test_unknown_time_zone_is_a_site_file_error(tz: str) -> None:
    # Alert times, shift reports and notification rotas are in the site's time zone.
    text = "site:\n  name: x\n  timezone: '{}'\ndevices: [{{id: a, kind: k, protocol: modbus, host: h, registers: [{{name: t, address: 0}}]}}]\n"
    with pytest.raises(ConfigError) as exc:
        parse_site(text.format(tz), "s.yaml")
    assert str(exc.value) == f"s.yaml: site.timezone: unknown time zone {tz!r}: expected an IANA name such as Europe/London or UTC (line 3)"
    assert parse_site(text.format("America/Chicago")).site.timezone == "America/Chicago"


def test_invalid_yaml_gives_line_and_column() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_site("site: {name: x\ndevices: [", "s.yaml")
    assert str(exc.value).startswith("s.yaml: line ")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("2d", 172800.0), ("250ms", 0.25), (15, 15.0), ("1.5h", 5400.0)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "-1s", True, "", None])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("model: vaccine_freezer", "model: ice_cream_van", "devices[2].simulator.model: expected one of 'medication_refrigerator', "),
        ("unit_weight_g: 3.2", "unit_weight_g: heavy", "devices[5].simulator.params.unit_weight_g: expected a number, got 'heavy' (line "),
        ("fault: drift", "fault: melt", "scenario[0].fault: expected one of 'stuck', "),
        ("fault: drift, params: {metric: temperature_c, target: 12.0, rate_per_min: 60}", "fault: lastwill",
         "scenario[0].fault: fridge-1 (medication_refrigerator) does not take fault 'lastwill'"),
        ("model: vaccine_freezer", "model: smart_shelf", "devices[2].simulator.model: expected one of 'medication_refrigerator', "),
    ],
)
def test_bad_simulator_sections_are_site_file_errors(tmp_path: Path, old: str, new: str, expected: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(EXAMPLE.read_text().replace(old, new, 1))  # the first: the devices come before the inventory
    r = check_config(path)
    assert r.returncode == 2
    assert r.stderr.startswith(f"{path}: {expected}"), r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1
