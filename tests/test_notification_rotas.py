"""Notification rotas (docs/alerts-notifications.md, "Rotas"): who is on shift in the site's
time zone gets the raise and the escalations, on a fake clock (the planner is given every
instant); DST nights; site-file errors and the uncovered-hours warning."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from alerts.notify import NotificationPlanner
from alerts.notify.rota import OnShift
from eqmon.config import ConfigError, ConfigIssue, parse_site
from eqmon.domain import Alert, AlertState, Severity

TZ = "Europe/London"
DOC = Path(__file__).resolve().parent.parent / "docs" / "alerts-notifications.md"

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


# -- who is on shift ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (local(2026, 3, 2, 10), {"Ann"}),  # Monday day shift
        (local(2026, 3, 2, 6, 59), {"Wes"}),  # Monday before 07:00: Sunday's 24-hour weekend shift
        (local(2026, 3, 2, 7), {"Ann"}),
        (local(2026, 3, 2, 18, 59), {"Ann"}),
        (local(2026, 3, 2, 19), {"Nia"}),  # Monday night
        (local(2026, 3, 3, 2), {"Nia"}),  # Tuesday 02:00: still Monday's night shift
        (local(2026, 3, 6, 23), {"Nia"}),  # Friday night
        # Saturday 06:30: Friday's night shift, which began on a weekday
        (local(2026, 3, 7, 6, 30), {"Nia"}),
        (local(2026, 3, 7, 7), {"Wes"}),  # Saturday 07:00: the weekend shift
        (local(2026, 3, 8, 3), {"Wes"}),
    ],
)
def test_the_raise_goes_to_the_first_contact_on_shift_by_time_and_day(
    at: float, expected: set[str]
) -> None:
    assert raised_to(_planner(), at) == expected


def test_a_shift_belongs_to_the_day_it_starts_on() -> None:
    rotas = """\
  rotas:
    - id: fri-night
      shifts: [{name: friday night, days: [fri], from: "22:00", to: "06:00", contacts: [Nia]}]
      default: [Desk]
  routes:
    - {rota: fri-night}
"""
    p = _planner(rotas)
    assert raised_to(p, local(2026, 3, 6, 23)) == {"Nia"}  # Friday 23:00
    assert raised_to(p, local(2026, 3, 7, 5, 59)) == {"Nia"}  # Saturday 05:59: Friday's shift
    assert raised_to(p, local(2026, 3, 7, 6)) == {"Desk"}  # it ends at 06:00
    # Friday 03:00 is in Thursday night: no shift
    assert raised_to(p, local(2026, 3, 6, 3)) == {"Desk"}


def test_without_escalation_the_whole_shift_is_called_and_default_covers_the_rest() -> None:
    rotas = """\
  rotas:
    - id: pharmacy
      shifts: [{name: office hours, days: [mon, tue, wed, thu, fri], from: "08:00", to: "17:30", contacts: [Ann, Bob]}]
      default: [Desk]
  routes:
    - {rota: pharmacy, channels: [log]}
"""
    p = _planner(rotas)
    rows = p.on_change(_alert(), "raised", local(2026, 3, 2, 9))
    assert who(rows) == {"Ann", "Bob", None}  # None: the log channel
    assert raised_to(p, local(2026, 3, 2, 17, 30)) == {"Desk", None}
    assert raised_to(p, local(2026, 3, 7, 9)) == {"Desk", None}  # Saturday


def test_uncovered_hours_without_default_reach_only_the_route_s_own_contacts_and_channels() -> None:
    rotas = """\
  rotas:
    - id: days
      shifts: [{name: day, from: "07:00", to: "19:00", contacts: [Ann]}]
  routes:
    - {rota: days, contacts: [Facilities], channels: [log], escalate_after: 5m}
"""
    p = _planner(rotas)
    assert raised_to(p, local(2026, 3, 2, 12)) == {"Ann", None}
    assert raised_to(p, local(2026, 3, 2, 22)) == {"Facilities", None}


# -- escalation and shift changes ----------------------------------------------------------


def test_escalation_after_a_shift_change_goes_to_the_new_shift_never_off_shift() -> None:
    p = _planner()
    t0 = local(2026, 3, 2, 18, 45)  # Monday, 15 min before the night shift
    assert who(p.on_change(_alert(), "raised", t0)) == {"Ann"}
    assert p.due(t0 + 9 * 60) == []
    assert who(p.due(t0 + 10 * 60), "escalated") == {"Bob"}  # 18:55: the day shift's next
    # 19:05: the day shift went home; the next escalation is the night shift's first contact
    step2 = [r for r in p.due(t0 + 20 * 60) if r["payload"]["sequence"] == 2]
    assert who(step2) == {"Nia"} and step2[0]["payload"]["event"] == "escalated"
    rows = p.due(t0 + 30 * 60)  # 19:15: escalation 3 and the first repeat
    # Nia's row again (the same message id), Ned's new
    assert who(rows, "escalated") == {"Nia", "Ned"}
    # everyone called so far who is on shift: not Ann, Bob
    assert who(rows, "repeated") == {"Nia", "Ned"}
    # then the route's own contacts
    assert who(p.due(t0 + 40 * 60), "escalated") == {"Nia", "Ned", "Facilities"}
    assert who(p.due(t0 + 60 * 60), "repeated") == {"Nia", "Ned", "Facilities"}
    # everyone on the rota and the route was called: nothing further, however long
    ids = {r["message_id"] for r in p.due(t0 + 40 * 60) if r["payload"]["event"] == "escalated"}
    later = {r["message_id"] for r in p.due(t0 + 9 * 3600) if r["payload"]["event"] == "escalated"}
    assert later == ids


def test_an_acknowledgement_stops_it_and_the_resolved_notice_skips_who_went_home() -> None:
    p = _planner()
    t0 = local(2026, 3, 2, 18, 45)
    p.on_change(_alert(), "raised", t0)
    p.due(t0 + 20 * 60)  # Ann, Bob (day), Nia (night) called
    ack = t0 + 22 * 60
    acked = _alert(AlertState.ACKNOWLEDGED, acknowledged_at=ack, acknowledged_by="Nia")
    assert p.on_change(acked, "acknowledged", ack) == []
    assert p.due(t0 + 3 * 3600) == []  # no escalation to Ned, no repeats
    done = _alert(AlertState.RESOLVED, acknowledged_at=ack, resolved_at=t0 + 3 * 3600)
    rows = p.on_change(done, "resolved", t0 + 3 * 3600)
    assert who(rows, "resolved") == {"Nia"}  # called before the acknowledgement and on shift now


def test_a_restarted_planner_plans_the_same_steps_and_skips_those_whose_shift_ended() -> None:
    live = _planner()
    t0 = local(2026, 3, 2, 18, 45)
    live.on_change(_alert(), "raised", t0)
    planned = {r["message_id"]: r for t in range(60, 50 * 60, 60) for r in live.due(t0 + t)}
    # eqmon was down from 18:50 to 19:30: Bob's step (18:55) came due while Bob was on shift,
    # but is not sent at 19:30 when he has gone home; the night's steps are, under the same ids
    again = _planner()
    again.restore(_alert(), t0)
    rows = [r for r in again.due(local(2026, 3, 2, 19, 30)) if r["payload"]["event"] == "escalated"]
    assert who(rows) == {"Nia", "Ned", "Facilities"}
    assert all(r["message_id"] in planned for r in rows)


def test_a_silence_that_ends_after_a_shift_change_tells_the_shift_on_duty_then() -> None:
    p = _planner()
    quiet = {"id": "s1", "kind": "silence", "owner": "Sam", "reason": "defrost", "until": 0.0}
    t0 = local(2026, 3, 2, 18, 30)
    assert p.on_change(_alert(extra={"silenced": quiet}), "raised", t0) == []
    assert p.due(t0 + 3600) == []
    ends = local(2026, 3, 2, 19, 30)
    assert who(p.on_change(_alert(), "unsilenced", ends)) == {"Nia"}  # not the day shift's Ann
    assert who(p.due(ends + 600), "escalated") == {"Ned"}


def test_overlapping_shifts_each_escalate_their_own_contacts() -> None:
    rotas = """\
  rotas:
    - id: handover
      shifts:
        - {name: day, from: "07:00", to: "19:30", contacts: [Ann, Bob]}
        - {name: night, from: "19:00", to: "07:30", contacts: [Nia, Ned]}
  routes:
    - {rota: handover, escalate_after: 10m}
"""
    p = _planner(rotas)
    t0 = local(2026, 3, 2, 19, 5)
    assert who(p.on_change(_alert(), "raised", t0)) == {"Ann", "Nia"}  # both shifts' first contacts
    assert who(p.due(t0 + 10 * 60), "escalated") == {"Bob", "Ned"}
    assert raised_to(_planner(rotas), local(2026, 3, 2, 19, 30)) == {"Nia"}


def test_repeats_without_escalation_reach_whoever_is_on_shift_then() -> None:
    rotas = """\
  rotas:
    - id: ward
      shifts:
        - {name: day, from: "07:00", to: "19:00", contacts: [Ann, Bob]}
        - {name: night, from: "19:00", to: "07:00", contacts: [Nia, Ned]}
  routes:
    - {rota: ward}
  repeat: {critical: 30m}
"""
    p = _planner(rotas)
    t0 = local(2026, 3, 2, 18, 40)
    assert who(p.on_change(_alert(), "raised", t0)) == {"Ann", "Bob"}
    assert who(p.due(t0 + 30 * 60), "repeated") == {"Nia", "Ned"}  # 19:10
    ack = t0 + 35 * 60
    p.on_change(_alert(AlertState.ACKNOWLEDGED, acknowledged_at=ack), "acknowledged", ack)
    done = _alert(AlertState.RESOLVED, acknowledged_at=ack, resolved_at=ack + 60)
    assert who(p.on_change(done, "resolved", ack + 60), "resolved") == {"Nia", "Ned"}


# -- summer time ---------------------------------------------------------------------------

EVERY_DAY = """\
  rotas:
    - id: ward
      shifts:
        - {name: day, from: "07:00", to: "19:00", contacts: [Ann]}
        - {name: night, from: "19:00", to: "07:00", contacts: [Nia]}
  routes:
    - {rota: ward, escalate_after: 10m}
"""


def test_the_night_the_clocks_go_forward_is_eleven_hours() -> None:
    # Europe/London, Sunday 29 March 2026: 01:00 GMT becomes 02:00 BST
    shifts = OnShift(_site(EVERY_DAY).notifications.rota("ward"), TZ)
    night = shifts.segment(utc(2026, 3, 29, 1, 30))  # 02:30 BST
    assert [s.name for s in night.shifts] == ["night"]
    # 19:00 GMT – 07:00 BST
    assert (night.start, night.end) == (utc(2026, 3, 28, 19), utc(2026, 3, 29, 6))
    p = _planner(EVERY_DAY)
    assert raised_to(p, utc(2026, 3, 29, 5, 59)) == {"Nia"}  # 06:59 BST
    assert raised_to(p, utc(2026, 3, 29, 6)) == {"Ann"}  # 07:00 BST, not 12 hours after 19:00 GMT
    # raised at 06:50 BST: the escalation at 07:00 BST goes to the day shift
    t0 = utc(2026, 3, 29, 5, 50)
    assert who(p.on_change(_alert(), "raised", t0)) == {"Nia"}
    assert who(p.due(t0 + 10 * 60), "escalated") == {"Ann"}


def test_the_night_the_clocks_go_back_is_thirteen_hours() -> None:
    # Sunday 25 October 2026: 02:00 BST becomes 01:00 GMT, 01:00–02:00 happens twice
    shifts = OnShift(_site(EVERY_DAY).notifications.rota("ward"), TZ)
    for at in (local(2026, 10, 25, 1, 30), local(2026, 10, 25, 1, 30, fold=1)):
        assert [s.name for s in shifts.segment(at).shifts] == ["night"]
    night = shifts.segment(local(2026, 10, 25, 6, 30))
    # 19:00 BST – 07:00 GMT
    assert (night.start, night.end) == (utc(2026, 10, 24, 18), utc(2026, 10, 25, 7))
    p = _planner(EVERY_DAY)
    assert raised_to(p, local(2026, 10, 25, 6, 30)) == {"Nia"}  # 06:30 GMT: still night
    assert raised_to(p, local(2026, 10, 25, 7)) == {"Ann"}


def test_a_boundary_in_an_hour_the_clocks_skip_or_repeat_is_taken_at_its_first_reading() -> None:
    rotas = """\
  rotas:
    - id: split
      shifts:
        - {name: evening, from: "19:00", to: "01:30", contacts: [Nia]}
        - {name: late, from: "01:30", to: "19:00", contacts: [Ned]}
  routes:
    - {rota: split}
"""
    p = _planner(rotas)
    # back: the first 01:30 (BST) hands over; the second 01:00–01:30 (GMT) does not hand back
    assert raised_to(p, local(2026, 10, 25, 1, 15)) == {"Nia"}
    assert raised_to(p, local(2026, 10, 25, 1, 45)) == {"Ned"}
    assert raised_to(p, local(2026, 10, 25, 1, 15, fold=1)) == {"Ned"}
    # forward: 01:30 does not exist; read with the offset before the change, it is 02:30 BST
    assert raised_to(p, utc(2026, 3, 29, 1, 15)) == {"Nia"}  # 02:15 BST
    assert raised_to(p, utc(2026, 3, 29, 1, 30)) == {"Ned"}  # 02:30 BST


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


# -- the example in docs/alerts-notifications.md -------------------------------------------


def test_the_documented_example_does_what_the_docs_say() -> None:
    block = re.search(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert block is not None
    head = f"""\
site: {{name: St Example, timezone: {TZ}}}
mqtt: {{host: 127.0.0.1}}
devices:
  - {{id: fridge-1, kind: k, location: Ward 4B, protocol: modbus, host: 127.0.0.1, registers: [{{name: t, address: 0}}]}}
"""
    found: list[ConfigIssue] = []
    site = parse_site(head + block.group(1), "site.yaml", warnings=found)
    assert found == []
    p = NotificationPlanner(site, site.notifications, clock=lambda: 0.0)
    t0 = local(2026, 3, 2, 18, 45)  # a Monday
    # the Ward 4B route's first contact; the other routes: Pharmacy's pager, the channels (None)
    assert who(p.on_change(_alert(), "raised", t0)) == {"Ward 4B coordinator", "Pharmacy", None}
    steps = ["Duty nurse manager", "Ward 4B night coordinator", "Pharmacy", "Facilities"]
    for k, name in enumerate(steps, start=1):
        rows = p.due(t0 + k * 600)
        assert who([r for r in rows if r["payload"]["sequence"] == k], "escalated") == {name}
        if k == 3:
            on_duty = {"Ward 4B night coordinator", "Duty nurse manager", "Pharmacy", None}
            assert who(rows, "repeated") == on_duty
    # without its default, the warning the docs quote
    found = []
    parse_site(
        head + block.group(1).replace("      default: [Duty nurse manager]", ""),
        "s.yaml",
        warnings=found,
    )
    (warning,) = found
    assert f"warning: {warning.path}: {warning.message}" in " ".join(
        DOC.read_text(encoding="utf-8").split()
    )
