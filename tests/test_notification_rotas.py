"""Notification rotas in the site file: errors with their path and line, and the warning for
hours no shift covers."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from alerts.notify import NotificationPlanner
from eqmon.config import ConfigError, ConfigIssue, parse_site
from eqmon.domain import Alert, AlertState, Severity

TZ = "Europe/London"

HEAD = f"""\
site: {{name: St Test, timezone: {TZ}}}
devices:
  - {{id: fridge-1, kind: medication_fridge, name: Fridge 1, location: Ward 4B, protocol: modbus,
     host: 127.0.0.1, port: 15999, registers: [{{name: temperature_c, address: 0}}]}}
contacts:
  - {{name: Ann, email: ann@example.org}}
  - {{name: Bob, email: bob@example.org}}
  - {{name: Nia, email: nia@example.org}}
  - {{name: Ned, email: ned@example.org}}
  - {{name: Wes, email: wes@example.org}}
  - {{name: Facilities, email: facilities@example.org}}
  - {{name: Desk, email: desk@example.org}}
notifications:
  channels:
    - {{id: mail, type: email, host: 127.0.0.1, port: 2525, starttls: false, from: eqmon@example.org}}
    - {{id: log, type: log}}
"""

# Weekdays: a day and a night shift (written unquoted: YAML would read 19:00 as a number);
# weekends: one 24-hour shift from Saturday 07:00.
WARD = """\
  rotas:
    - id: ward-4b
      shifts:
        - {name: day, days: [mon, tue, wed, thu, fri], from: "07:00", to: 19:00, contacts: [Ann, Bob]}
        - {name: night, days: [mon, tue, wed, thu, fri], from: 19:00, to: 07:00, contacts: [Nia, Ned]}
        - {name: weekend, days: [sat, sun], from: 7:00, to: 7:00, contacts: [Wes]}
  routes:
    - {severity: [critical], rota: ward-4b, contacts: [Facilities], escalate_after: 10m}
  repeat: {critical: 30m}
"""


def _site(notifications: str = WARD) -> Any:
    return parse_site(HEAD + notifications, "site.yaml")


def _planner(notifications: str = WARD) -> NotificationPlanner:
    site = _site(notifications)
    return NotificationPlanner(site, site.notifications, clock=lambda: 0.0)


def local(y: int, mo: int, d: int, h: int, mi: int = 0, fold: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(TZ), fold=fold).timestamp()


def utc(y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=UTC).timestamp()


def _alert(state: AlertState = AlertState.ACTIVE, **kw: Any) -> Alert:
    base: dict[str, Any] = dict(
        id="a1", rule_id="fridge-high", device_id="fridge-1", metric="temperature_c", severity=Severity.CRITICAL,
        state=state, message="CRITICAL Fridge 1 (Ward 4B): 9.1 °C above 8 °C", started_at=0.0, value=9.1,
    )  # fmt: skip
    base.update(kw)
    return Alert(**base)


def who(rows: list[dict[str, Any]], event: str | None = None) -> set[str]:
    """The contacts (names) that the rows go to."""
    docs = [r["payload"] for r in rows]
    return {d["recipient"]["contact"] for d in docs if event is None or d["event"] == event}


def raised_to(p: NotificationPlanner, at: float) -> set[str]:
    return who(p.on_change(_alert(), "raised", at))


# -- rotas used below ---------------------------------------------------------------------------

EVERY_DAY = """\
  rotas:
    - id: ward
      shifts:
        - {name: day, from: "07:00", to: "19:00", contacts: [Ann]}
        - {name: night, from: "19:00", to: "07:00", contacts: [Nia]}
  routes:
    - {rota: ward, escalate_after: 10m}
"""


# -- the site file -------------------------------------------------------------------------


def test_rota_times_days_and_defaults_parse() -> None:
    rota = _site().notifications.rota("ward-4b")
    day, night, weekend = rota.shifts
    # minutes after midnight
    assert (day.from_, day.to, night.from_, night.to) == (420, 1140, 1140, 420)
    assert night.overnight and not day.overnight and weekend.overnight  # from == to: 24 hours
    assert weekend.days == ["sat", "sun"] and rota.default is None
    every = _site(EVERY_DAY).notifications.rota("ward")
    assert every.shifts[0].days == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    midnight = EVERY_DAY.replace('"19:00"', '"24:00"', 1).replace('from: "19:00"', 'from: "00:00"')
    assert _site(midnight).notifications.rota("ward").shifts[0].to == 1440


ERRORS = [
    (
        "to: 19:00, contacts: [Ann, Bob]",
        "to: 25:00, contacts: [Ann, Bob]",
        'notifications.rotas[0].shifts[0].to: expected a time of day "HH:MM" (00:00–24:00) such as "07:00", got \'25:00\' (line 20)',
    ),
    (
        'from: "07:00", to: 19:00',
        'from: "7.30", to: 19:00',
        'notifications.rotas[0].shifts[0].from: expected a time of day "HH:MM" (00:00–23:59) such as "07:00", got \'7.30\' (line 20)',
    ),
    (
        "from: 19:00, to: 07:00",
        "from: 1900, to: 07:00",
        'notifications.rotas[0].shifts[1].from: expected a time of day "HH:MM" (00:00–23:59) such as "07:00", got 1900 (line 21)',
    ),
    (
        "from: 7:00, to: 7:00",
        'from: "24:00", to: 7:00',
        'notifications.rotas[0].shifts[2].from: expected a time of day "HH:MM" (00:00–23:59) such as "07:00", got \'24:00\' (line 22)',
    ),
    (
        "days: [sat, sun]",
        "days: [sat, sunday]",
        "notifications.rotas[0].shifts[2].days[1]: expected one of 'mon', 'tue', 'wed', 'thu', 'fri', 'sat' or 'sun', got 'sunday' (line 22)",
    ),
    (
        "days: [sat, sun]",
        "days: []",
        "notifications.rotas[0].shifts[2].days: list should have at least 1 item after validation, not 0 (line 22)",
    ),
    (
        "contacts: [Nia, Ned]",
        "contacts: [Nia, Nobody]",
        "notifications.rotas[0].shifts[1].contacts[1]: no contact named 'Nobody' (line 21)",
    ),
    (
        "contacts: [Wes]}",
        "contacts: [Wes]}\n      default: [Desk, Nobody]",
        "notifications.rotas[0].default[1]: no contact named 'Nobody' (line 23)",
    ),
    (
        "rota: ward-4b,",
        "rota: ward-4c,",
        "notifications.routes[0].rota: no rota named 'ward-4c' (line 24)",
    ),
    (
        "{name: night,",
        "{name: day,",
        "notifications.rotas[0].shifts[1].name: duplicate shift name 'day' in rota 'ward-4b' (line 21)",
    ),
    (
        '{name: day, days: [mon, tue, wed, thu, fri], from: "07:00", to: 19:00, contacts: [Ann, Bob]}',
        '{name: day, days: [mon, tue, wed, thu, fri], from: "07:00", contacts: [Ann, Bob]}',
        "notifications.rotas[0].shifts[0].to: required key is missing (line 20)",
    ),
    (
        "contacts: [Wes]}",
        "contacts: [Wes], colour: red}",
        "notifications.rotas[0].shifts[2].colour: unknown key (line 22)",
    ),
    (
        "shifts:\n",
        "shifts: []\n      x:\n",
        "notifications.rotas[0].shifts: list should have at least 1 item after validation, not 0 (line 19)",
    ),
    ("contacts: [Facilities], escalate_after", "escalate_after", None),  # a rota alone is enough
    (
        "rota: ward-4b, contacts: [Facilities], ",
        "",
        "notifications.routes[0]: a route needs contacts, a rota or channels (line 24)",
    ),
    (
        "contacts: [Facilities], escalate_after: 10m",
        "via: [log], escalate_after: 10m",
        "notifications.routes[0].rota: contact 'Ann' of rota 'ward-4b' has no address (email, webhook, mqtt_topic) for the route's channels (line 24)",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), ERRORS)
def test_rota_mistakes_are_site_file_errors(old: str, new: str, expected: str | None) -> None:
    assert old in WARD
    text = WARD.replace(old, new)
    if expected is None:
        _site(text)
        return
    with pytest.raises(ConfigError) as exc:
        _site(text)
    assert str(exc.value).splitlines()[0] == f"site.yaml: {expected}"


def test_duplicate_rota_ids_are_an_error() -> None:
    rota = WARD.split("  routes:")[0].split("  rotas:\n")[1]
    with pytest.raises(ConfigError) as exc:
        _site(WARD.replace("  routes:", rota + "  routes:"))
    expected = "notifications.rotas[1].id: duplicate rota id 'ward-4b' (line 23)"
    assert str(exc.value) == f"site.yaml: {expected}"


# -- hours no shift covers: a warning ------------------------------------------------------


def _warnings(notifications: str) -> list[str]:
    found: list[ConfigIssue] = []
    parse_site(HEAD + notifications, "site.yaml", warnings=found)
    return [w.render("site.yaml", warning=True) for w in found]


def test_hours_no_shift_covers_are_a_warning_unless_there_is_a_default() -> None:
    assert _warnings(WARD) == [] and _warnings(EVERY_DAY) == []
    weekdays = WARD.replace("days: [sat, sun]", "days: [sat]")
    assert _warnings(weekdays) == [  # from Sunday 07:00 to Monday 07:00
        "site.yaml: warning: notifications.rotas[0]: no shift of rota 'ward-4b' covers mon 00:00–07:00; "
        f"sun 07:00–24:00 ({TZ}): alerts routed to it then reach only their route's own contacts and "
        "channels; add shifts, or default: [contacts] (line 18)"
    ]
    office = """\
  rotas:
    - id: office
      shifts: [{name: office hours, days: [mon, tue, wed, thu, fri], from: "08:00", to: "17:30", contacts: [Ann]}]
  routes:
    - {rota: office}
"""
    (warning,) = _warnings(office)
    assert "covers mon–fri 00:00–08:00 and 17:30–24:00; sat, sun all day (Europe/London)" in warning
    with_default = office.replace("contacts: [Ann]}]", "contacts: [Ann]}]\n      default: [Desk]")
    assert _warnings(with_default) == []


def test_check_config_prints_the_uncovered_hours_and_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(HEAD + WARD.replace("days: [sat, sun]", "days: [sat]"))
    r = subprocess.run(
        [sys.executable, "-m", "eqmon_app.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.splitlines()[0].startswith(
        f"{path}: warning: notifications.rotas[0]: no shift of rota 'ward-4b' covers mon 00:00–07:00; sun 07:00–24:00"
    )
    assert r.stdout.splitlines()[-1] == "ok"
