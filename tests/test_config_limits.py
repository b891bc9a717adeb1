"""Bad site files never give a traceback: every one exits 2 naming the file, with a bounded
message, within the limits of eqmon/config.py (size, nesting, alias expansion, issues shown)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from eqmon import config
from eqmon.config import (
    MAX_DEPTH,
    MAX_ISSUES,
    MAX_NODES,
    MAX_SITE_BYTES,
    ConfigError,
    load_site,
    parse_site,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "site.yaml"
DEVICE = "{id: a, kind: k, protocol: modbus, host: h, registers: [{name: t, address: 0}]}"


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eqmon_app.cli", "check-config", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def rejected(path: Path) -> str:
    """stderr of check-config on a file it must refuse: exit 2, no traceback, file named."""
    r = check_config(path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr[-2000:])
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith(f"{path}: "), r.stderr[:500]
    return r.stderr


def billion_laughs(levels: int) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"[: levels - 1], strict=False):
        lines.append(f"{name}: &{name} [" + ", ".join(["*" + prev] * 9) + "]")
    last = "abcdefghi"[levels - 1]
    return "\n".join(lines) + f"\nsite: {{name: x}}\ndevices: *{last}\n"


# -- the file ---------------------------------------------------------------------------------


def test_not_utf8_names_the_byte_and_where(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    lines = EXAMPLE.read_bytes().split(b"\n")
    lines[2] = b"  name: Ward \xff4B"
    path.write_bytes(b"\n".join(lines))
    assert rejected(path) == f"{path}: not UTF-8 text: invalid byte 0xff at line 3, column 14\n"


def test_utf16_file_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(EXAMPLE.read_text(encoding="utf-8").encode("utf-16"))
    assert "not UTF-8 text: invalid byte 0xff at line 1, column 1" in rejected(path)


def test_a_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.read_bytes())
    assert load_site(path).site.name == "Ward 4B"


def test_file_larger_than_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(b"# " + b"x" * MAX_SITE_BYTES + b"\n")
    err = rejected(path)
    assert "larger than 8 MiB" in err and len(err) < 300


def test_unreadable_file(tmp_path: Path) -> None:
    assert "cannot read" in rejected(tmp_path / "missing.yaml")
    assert "cannot read" in rejected(tmp_path)  # a directory


# -- nesting and aliases ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "devices:\n  " + "- " * 20_000 + "x\n",  # block sequences
        "devices: " + "[" * 20_000 + "]" * 20_000 + "\n",  # flow sequences
        "".join(" " * i + f"k{i}:\n" for i in range(150)),  # block mappings
    ],
    ids=["block", "flow", "mappings"],
)
def test_deep_nesting(tmp_path: Path, body: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("site: {name: x}\n" + body)
    err = rejected(path)
    assert err.startswith(f"{path}: nested deeper than {MAX_DEPTH} levels (line "), err[:300]
    assert len(err.splitlines()) == 1


def test_nesting_up_to_the_limit_is_parsed() -> None:
    deep = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    with pytest.raises(ConfigError) as exc:
        parse_site(f"site: {{name: x}}\ndevices: {deep}\n", "s.yaml")
    assert exc.value.issues[0].path.startswith("devices[0]")  # a validation error, not a limit


@pytest.mark.parametrize("levels", [6, 9])
def test_billion_laughs(tmp_path: Path, levels: int) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(billion_laughs(levels))
    assert path.stat().st_size < 500
    err = rejected(path)
    assert f"too many alias expansions: aliases repeat more than {MAX_NODES:,} nodes (line " in err
    assert len(err) < 300


def test_aliases_within_the_limit_give_bounded_messages() -> None:
    # 5 levels: 9^5 leaves, about 66,000 nodes each time it is named. Each of the 9 "devices"
    # is a list of lists: its message shows a little of it, not all of it.
    with pytest.raises(ConfigError) as exc:
        parse_site(billion_laughs(5), "s.yaml")
    lines = str(exc.value).splitlines()
    assert len(lines) == 9 + 5  # 9 devices that are not mappings, 5 unknown keys a..e
    assert lines[0].startswith("s.yaml: devices[0]: expected a valid dictionary or object to extract fields from, got [[[")
    assert all(len(line) < 300 for line in lines)


def test_more_nodes_than_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("site: {name: x}\ndevices: [" + "0," * MAX_NODES + "0]\n")
    assert f"more than {MAX_NODES:,} YAML nodes (line 2)" in rejected(path)


def test_recursive_alias_and_duplicate_anchor() -> None:
    with pytest.raises(ConfigError, match=r"s.yaml: line 1, column 27: not valid YAML: alias \*s is inside"):
        parse_site("site: &s {name: x, again: *s}\ndevices: []\n", "s.yaml")
    with pytest.raises(ConfigError, match=r"line 3, column 4: not valid YAML: anchor &x is defined twice \(first on line 2\)"):
        parse_site("site: {name: x}\na: &x 1\nb: &x 2\n", "s.yaml")
    with pytest.raises(ConfigError, match="undefined alias"):
        parse_site("site: *nowhere\n", "s.yaml")


# -- values PyYAML cannot build, characters YAML refuses --------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-13-01", "line 1, column 14: not valid YAML: cannot read this value: month must be in 1..12"),
        ("!!int x", "line 1, column 14: not valid YAML: cannot read this value: invalid literal"),
        ("!!float x", "line 1, column 14: not valid YAML: cannot read this value: could not convert"),
        ('"\x01"', "line 1, column 15: not valid YAML: character #x0001: control characters are not allowed"),
    ],
)
def test_values_yaml_cannot_read(value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_site(f"site: {{name: {value}}}\ndevices: [{DEVICE}]\n", "s.yaml")
    assert str(exc.value).startswith(f"s.yaml: {expected}"), str(exc.value)


def test_one_document_only() -> None:
    with pytest.raises(ConfigError, match="line 2, column 1: not valid YAML: a second document"):
        parse_site("site: {name: x}\n---\nb: 1\n", "s.yaml")


def test_empty_file() -> None:
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        parse_site("", "s.yaml")


# -- bounded messages -------------------------------------------------------------------------


def test_thousands_of_problems_show_the_first_and_count_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(f"site: {{name: x}}\ndevices: [{DEVICE}]\ncontacts: [" + ",".join(["0"] * 30_000) + "]\n")
    lines = rejected(path).splitlines()
    assert len(lines) == MAX_ISSUES + 1
    assert lines[0] == f"{path}: contacts[0]: expected a valid dictionary or instance of Contact, got 0 (line 3)"
    assert lines[-1] == f"{path}: … and {30_000 - MAX_ISSUES:,} more problems"


def test_huge_values_and_keys_are_cut_short() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_site(f"site: {{name: x, {'k' * 900}: 1}}\ndevices: [{DEVICE}]\napi: {{port: '{'9' * 100_000}'}}\n", "s.yaml")
    lines = str(exc.value).splitlines()
    assert len(lines) == 2
    assert all(len(line) < 600 for line in lines), [len(line) for line in lines]
    assert lines[0].endswith("…: unknown key (line 1)") and lines[1].startswith("s.yaml: api.port: ")


def test_control_characters_in_keys_stay_on_one_line() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_site(f'site: {{name: x, "a\\nb": 1}}\ndevices: [{DEVICE}]\n', "s.yaml")
    assert str(exc.value) == "s.yaml: site.a\\nb: unknown key (line 1)"


# -- speed: one parse, by libyaml --------------------------------------------------------------


def large_site(contacts: int) -> str:
    head = EXAMPLE.read_text(encoding="utf-8").split("contacts:")[0]
    rows = "".join(
        f"  - {{name: Contact number {i}, role: escalation, email: c{i}@example.org, phone: ext {i % 10000}}}\n"
        for i in range(contacts)
    )
    return head + "contacts:\n" + rows + "api: {host: 127.0.0.1, port: 8080}\n"


def test_a_large_file_checks_ok(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(large_site(40_000), encoding="utf-8")
    r = check_config(path)
    assert (r.returncode, r.stdout.splitlines()[-1:]) == (0, ["ok"]), r.stderr[-2000:]  # after the inventory summary
    assert len(load_site(path).contacts) == 40_000


def test_a_large_file_still_gives_line_numbers() -> None:
    text = large_site(40_000).replace("role: escalation, email: c39999@", "role: escalation, mail: c39999@")
    with pytest.raises(ConfigError) as exc:
        parse_site(text, "s.yaml")
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "mail: c39999@" in t)
    assert str(exc.value) == f"s.yaml: contacts[39999].mail: unknown key (line {line})"


def test_pyyaml_without_libyaml_gives_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    assert getattr(yaml, "__with_libyaml__", False), "libyaml is expected on these machines"
    texts = [
        EXAMPLE.read_text(encoding="utf-8").replace("data_type: int16", "data_type: int17", 1),
        billion_laughs(9),
        "site: {name: x}\ndevices:\n  " + "- " * 500 + "x\n",
        'site: {name: "\x01"}\n',
    ]
    found = []
    for loader in (config._Loader, config._loader_class(yaml.SafeLoader)):
        monkeypatch.setattr(config, "_Loader", loader)
        for text in texts:
            with pytest.raises(ConfigError) as exc:
                parse_site(text, "s.yaml")
            found.append(str(exc.value).split(": control characters")[0].split(": special characters")[0])
    assert found[: len(texts)] == found[len(texts) :]
    assert "(line 21)" in found[0] and "too many alias" in found[1] and "nested deeper" in found[2]
