"""Site-file warnings: valid but probably wrong. check-config prints them (exit 0); run, simulate
and demo log them once at start-up."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from eqmon.config import ConfigIssue, load_site, parse_site
from eqmon_app import cli

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "site.yaml"


def site_text(registers: list[str], timing: str = "interval: 10s") -> str:
    regs = "".join(f"      - {r}\n" for r in registers)
    return f"site: {{name: x}}\ndevices:\n  - id: a\n    kind: k\n    protocol: modbus\n    host: h\n    {timing}\n    registers:\n{regs}"


def warnings_of(registers: list[str], timing: str = "interval: 10s") -> list[str]:
    found: list[ConfigIssue] = []
    parse_site(site_text(registers, timing), "s.yaml", warnings=found)
    return [w.render("s.yaml", warning=True) for w in found]


def test_float32_overlapping_a_uint16_is_a_warning(tmp_path: Path) -> None:
    regs = ["{name: flow, address: 1, data_type: float32}", "{name: mode, address: 2}"]
    assert warnings_of(regs) == [
        "s.yaml: warning: devices[0].registers[1]: overlaps devices[0].registers[0] (holding 1–2): both read holding 2 (line 10)"
    ]
    # check-config prints it on stdout and exits 0
    path = tmp_path / "site.yaml"
    path.write_text(site_text(regs))
    r = subprocess.run([sys.executable, "-m", "eqmon_app.cli", "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.splitlines() == [
        f"{path}: warning: devices[0].registers[1]: overlaps devices[0].registers[0] (holding 1–2): both read holding 2 (line 10)",
        "ok",
    ]


@pytest.mark.parametrize(
    ("registers", "expected"),
    [
        # bools on different bits of one register: not an overlap; on the same bit: one
        (["{name: a, address: 2, data_type: bool, bit: 0}", "{name: b, address: 2, data_type: bool, bit: 1}"], []),
        (["{name: a, address: 2, data_type: bool, bit: 3}", "{name: b, address: 2, data_type: bool, bit: 3}"],
         ["devices[0].registers[1]: overlaps devices[0].registers[0] (holding 2 bit 3): both read holding 2 bit 3"]),
        # a bool without bit reads bit 0
        (["{name: a, address: 2, data_type: bool}", "{name: b, address: 2, data_type: bool, bit: 0}"],
         ["devices[0].registers[1]: overlaps devices[0].registers[0] (holding 2 bit 0): both read holding 2 bit 0"]),
        # named bits are part of their register
        (["{name: s, address: 2, bits: {0: door, 1: fan}}", "{name: t, address: 3}"], []),
        # a whole register and a bit of it
        (["{name: s, address: 2}", "{name: door, address: 2, data_type: bool, bit: 0}"],
         ["devices[0].registers[1]: overlaps devices[0].registers[0] (holding 2): both read holding 2 bit 0"]),
        # other tables, adjacent ranges
        (["{name: a, address: 0, type: input}", "{name: b, address: 0, type: holding}",
          "{name: c, address: 0, type: coil, data_type: bool}", "{name: d, address: 0, type: discrete_input, data_type: bool}",
          "{name: e, address: 1, type: holding, data_type: float64}", "{name: f, address: 5, type: holding, data_type: int32}"], []),
        (["{name: c, address: 7, type: coil, data_type: bool}", "{name: d, address: 7, type: coil, data_type: bool}"],
         ["devices[0].registers[1]: overlaps devices[0].registers[0] (coil 7): both read coil 7"]),
        # one warning per register, pointing at an earlier one; order in the file does not matter
        (["{name: s, address: 10, data_type: string, length: 4}", "{name: a, address: 12}", "{name: b, address: 8, data_type: uint64}"],
         ["devices[0].registers[1]: overlaps devices[0].registers[0] (holding 10–13): both read holding 12",
          "devices[0].registers[2]: overlaps devices[0].registers[0] (holding 10–13): both read holding 10–11"]),
    ],
)
def test_register_overlaps(registers: list[str], expected: list[str]) -> None:
    found = [w.split(" (line ")[0].removeprefix("s.yaml: warning: ") for w in warnings_of(registers)]
    assert found == expected


def test_many_overlapping_registers_are_quick() -> None:
    regs = [{"name": f"r{i}", "address": 0} for i in range(5000)]
    site = parse_site(f"site: {{name: x}}\ndevices: [{{id: a, kind: k, protocol: modbus, host: h, registers: {regs}}}]\n".replace("'", ""))
    warnings = site.warnings()
    assert len(warnings) == 4999 and warnings[-1].path == "devices[0].registers[4999]"


@pytest.mark.parametrize(
    ("timing", "expected"),
    [
        ("interval: 2s", ["devices[0].timeout: timeout 3 s (the default) is longer than the poll interval (2 s): a request that times out runs into the next poll (line 3)"]),
        ("{interval: 2s, timeout: 2s}", []),
        ("{interval: 1s, timeout: 500ms, connect_timeout: 5s}",
         ["devices[0].connect_timeout: connect_timeout 5 s is longer than the poll interval (1 s): a request that times out runs into the next poll (line 9)"]),
    ],
)
def test_timeout_longer_than_the_interval(timing: str, expected: list[str]) -> None:
    if timing.startswith("{"):
        timing = "\n    ".join(timing.strip("{}").split(", "))
    found = [w.removeprefix("s.yaml: warning: ") for w in warnings_of(["{name: t, address: 0}"], timing)]
    assert found == expected


def test_site_warnings_without_line_numbers_and_example_has_none() -> None:
    site = parse_site(site_text(["{name: t, address: 0}"], "interval: 1s"))
    assert site.warnings() == [ConfigIssue("devices[0].timeout", site.warnings()[0].message)]
    assert site.warnings()[0].line is None
    found: list[ConfigIssue] = []
    assert load_site(EXAMPLE, warnings=found).warnings() == [] and found == []


def test_run_and_demo_log_warnings_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(site_text(["{name: t, address: 0}"], "interval: 1s"))
    with caplog.at_level(logging.WARNING, logger="eqmon"):
        cli._load(str(path))
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: devices[0].timeout: timeout 3 s (the default) is longer than the poll interval (1 s): a request that times out runs into the next poll (line 3)"
    ]
