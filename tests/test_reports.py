"""Reports over the alert history (alerts/reports.py, `eqmon report`), on SQLite and PostgreSQL
(``state_db``): alerts raised, acknowledged with a note and resolved through ``AlertStore.save``
on a fake clock, as the engine would, then each report's figures checked exactly, the CSV parsed
back, and the CLI run as a subprocess against a SQLite state database built by the migrations."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import Engine

from alerts import reports
from alerts.reports import Period
from alerts.store import AlertStore
from eqmon import db
from eqmon.db.engine import create
from eqmon.domain import Alert, AlertState, Severity
from tests.sitefiles import example_dict

ROOT = Path(__file__).resolve().parent.parent
TZ = "Europe/Paris"  # UTC+1 on 2026-03-02 (summer time starts on 2026-03-29)
MIN, HOUR = 60.0, 3600.0


def local(day: int, hh: int, mm: int = 0, month: int = 3) -> float:
    return datetime(2026, month, day, hh, mm, tzinfo=ZoneInfo(TZ)).timestamp()


T0 = local(2, 7)  # the day shift of Monday 2026-03-02: 07:00–19:00 Paris time
SHIFT = Period(T0, local(2, 19), TZ)
NOW = local(2, 20)  # when the reports are run


class Timeline:
    """Saves alerts as the engine would, each change at its own (fake) time."""

    def __init__(self, engine: Engine) -> None:
        self.now = 0.0
        self.store = AlertStore(engine, clock=lambda: self.now)
        self.alerts: dict[str, Alert] = {}

    def raise_(self, id_: str, at: float, *, rule: str, device: str, started: float, metric: str = "temperature_c",
               severity: Severity = Severity.CRITICAL, value: float | None = 9.1, **extra: object) -> None:  # fmt: skip
        self.now = at
        a = Alert(
            id=id_, rule_id=rule, device_id=device, metric=metric, severity=severity,
            state=AlertState.ACTIVE, message=f"{severity.upper()} {device}: {rule} since {started:.0f}",
            started_at=started, value=value, extra=dict(extra),
        )  # fmt: skip
        self.alerts[id_] = a
        self.store.save(a)

    def ack(self, id_: str, at: float, by: str, note: str = "") -> None:
        a = self.alerts[id_]
        self.now = at + 0.5  # the store's clock is not the acknowledgement's time
        a.state, a.acknowledged_at, a.acknowledged_by = AlertState.ACKNOWLEDGED, at, by
        if note:
            a.extra["ack_note"] = note
        self.store.save(a)

    def change(self, id_: str, at: float, message: str) -> None:
        a = self.alerts[id_]
        self.now = at
        a.message = message
        self.store.save(a)

    def resolve(self, id_: str, at: float, value: float | None = None) -> None:
        a = self.alerts[id_]
        self.now = at
        a.state, a.resolved_at = AlertState.RESOLVED, at
        if value is not None:
            a.value = value
        self.store.save(a)


EXCURSION_ENTRIES = [
    {"start": local(2, 13), "duration": 600, "min": -12.0, "max": -9.5},
    {"start": local(2, 13, 20), "duration": 300, "min": -11.0, "max": -8.9},
]


def fill(engine: Engine) -> None:
    """Two days of a small ward, Paris time (the shift under test is 2026-03-02 07:00–19:00)."""
    t = Timeline(engine)
    # The day before: a freezer excursion (only in the alert volume).
    t.raise_("d1", local(1, 22), rule="freezer-range", device="freezer-1", started=local(1, 21, 50),
             severity=Severity.WARNING, value=-9.0)  # fmt: skip
    t.resolve("d1", local(1, 22, 30))
    # The night before the shift: raised 05:00, acknowledged 07:30 (2 h 30 after its raise),
    # resolved 07:50.
    t.raise_("a0", local(2, 5), rule="fridge-high", device="fridge-3", started=local(2, 4), value=8.6)
    t.ack("a0", local(2, 7, 30), "Night Nurse")
    t.resolve("a0", local(2, 7, 50))
    # During the shift.
    t.raise_("a1", local(2, 9), rule="fridge-high", device="fridge-1", started=local(2, 8), value=9.1)
    t.ack("a1", local(2, 9, 12), "Nurse Joy", "moved the vaccines to fridge 2")
    t.resolve("a1", local(2, 10, 30), value=8.4)
    t.raise_("a2", local(2, 12), rule="fridge-high", device="fridge-2", started=local(2, 11), value=10.2)
    t.ack("a2", local(2, 12, 30), "Sam O'Neil", 'door left open, "closed" it')
    t.change("a2", local(2, 15), "CRITICAL fridge-2: temperature 10.2 °C — condition now unknown")
    t.raise_("a3", local(2, 13, 5), rule="freezer-range", device="freezer-1", started=local(2, 13),
             severity=Severity.WARNING, value=-8.9, excursions=EXCURSION_ENTRIES)  # fmt: skip
    t.resolve("a3", local(2, 13, 45))
    t.raise_("b1", local(2, 14), rule="device-offline", device="warmer-1", started=local(2, 14), metric="",
             severity=Severity.WARNING, value=None)  # fmt: skip
    # After the shift: raised 20:10, resolved 20:40.
    t.raise_("c1", local(2, 20, 10), rule="fridge-high", device="fridge-1", started=local(2, 19, 10))
    t.resolve("c1", local(2, 20, 40))


@pytest.fixture
def history(state_db: str):
    e = create(state_db)
    try:
        db.upgrade(e)
        fill(e)
        yield e
    finally:
        e.dispose()


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# -- periods -------------------------------------------------------------------------------


def test_shifts_are_local_day_and_night_including_clock_changes() -> None:
    assert reports.shift_at(local(2, 12), TZ) == SHIFT
    assert reports.shift_at(local(2, 7), TZ) == SHIFT
    assert reports.shift_at(local(2, 19), TZ) == Period(local(2, 19), local(3, 7), TZ)
    assert reports.shift_at(local(3, 6, 59), TZ) == Period(local(2, 19), local(3, 7), TZ)
    # The night the clocks go forward (2026-03-29 02:00 -> 03:00) is 11 hours long.
    night = reports.shift_at(local(29, 3), TZ)
    assert night.since == local(28, 19) and night.until - night.since == 11 * HOUR
    assert reports.shift_name(SHIFT) == "day shift" and reports.shift_name(night) == "night shift"
    assert reports.shift_name(Period(T0, T0 + HOUR, TZ)) == ""
    assert SHIFT.describe() == "2026-03-02 07:00 – 19:00 Europe/Paris (day shift)"


def test_times_are_iso_8601_local_to_the_site() -> None:
    assert reports.parse_local_time("2026-03-02T07:00", TZ) == T0
    assert reports.parse_local_time("2026-03-02 07:00:00", TZ) == T0
    assert reports.parse_local_time("2026-03-02T06:00Z", TZ) == T0
    assert reports.parse_local_time("2026-03-02T07:00+01:00", "UTC") == T0
    assert reports.parse_local_time("2026-03-02", TZ) == local(2, 0)
    for bad in ("yesterday", "2026-13-01", "07:00", ""):
        with pytest.raises(ValueError, match="not an ISO 8601"):
            reports.parse_local_time(bad, TZ)


def test_durations_for_people() -> None:
    assert [reports.fmt_duration(s) for s in (None, 45, 720, 750, 9000, 3 * 86400 + 4 * 3600)] == [
        "-", "45 s", "12 min", "12 min 30 s", "2 h 30 min", "3 d 4 h",
    ]  # fmt: skip


# -- shift summary -------------------------------------------------------------------------


def test_shift_summary_figures(history: Engine) -> None:
    r = reports.shift_summary(history, SHIFT, now=NOW)
    got = {f.severity: f for f in r.by_severity}
    assert [f.severity for f in r.by_severity] == ["critical", "warning"]
    crit, warn = got["critical"], got["warning"]
    # a1, a2 raised; a0 (07:30), a1 (12 min), a2 (30 min) acknowledged; a0, a1 resolved; a2 open.
    assert (crit.raised, crit.acknowledged, crit.resolved, crit.open_at_end) == (2, 3, 2, 1)
    assert (crit.median_ack_s, crit.max_ack_s) == (30 * MIN, 150 * MIN)
    # a3, b1 raised, a3 resolved, b1 open; none acknowledged.
    assert (warn.raised, warn.acknowledged, warn.resolved, warn.open_at_end) == (2, 0, 1, 1)
    assert (warn.median_ack_s, warn.max_ack_s) == (None, None)
    t = r.total
    assert (t.raised, t.acknowledged, t.resolved, t.open_at_end) == (4, 3, 3, 2)
    assert (t.median_ack_s, t.max_ack_s) == (30 * MIN, 150 * MIN)
    assert [(a.id, a.acknowledged_by, a.raised_at) for a in r.still_open] == [
        ("a2", "Sam O'Neil", local(2, 12)),
        ("b1", None, local(2, 14)),
    ]
    assert r.still_open[0].message.endswith("condition now unknown")

    # The hour 19:00–20:00 after it: nothing happened, nothing of the day's changes counted,
    # a2 and b1 still open.
    later = reports.shift_summary(history, Period(local(2, 19), local(2, 20), TZ), now=NOW)
    assert (later.total.raised, later.total.acknowledged, later.total.resolved) == (0, 0, 0)
    assert [a.id for a in later.still_open] == ["a2", "b1"]
    # Up to 12:15: a2 raised but not acknowledged yet; a0's and a1's acknowledgements only.
    morning = reports.shift_summary(history, Period(T0, local(2, 12, 15), TZ), now=NOW)
    assert [(a.id, a.acknowledged_by) for a in morning.still_open] == [("a2", None)]
    assert morning.total.acknowledged == 2 and morning.total.median_ack_s == (12 * MIN + 150 * MIN) / 2
    # The shift while it runs (now 16:00): the same figures, open alerts as of now.
    running = reports.shift_summary(history, SHIFT, now=local(2, 16))
    assert running.as_of == local(2, 16) and running.total == r.total
    assert "Still open at 2026-03-02 16:00: 2" in reports.render_text(running)


def test_shift_summary_text_csv_and_json(history: Engine) -> None:
    r = reports.shift_summary(history, SHIFT, now=NOW)
    text = reports.render_text(r).splitlines()
    assert text[0] == "Shift summary 2026-03-02 07:00 – 19:00 Europe/Paris (day shift)"
    assert text[2].split() == ["severity", "raised", "acknowledged", "resolved", "open", "at", "end",
                               "median", "to", "ack", "max", "to", "ack"]  # fmt: skip
    assert text[3].split() == ["critical", "2", "3", "2", "1", "30", "min", "2", "h", "30", "min"]
    assert text[4].split() == ["warning", "2", "0", "1", "1", "-", "-"]
    assert text[5].split() == ["total", "4", "3", "3", "2", "30", "min", "2", "h", "30", "min"]
    assert len({len(line) for line in text[2:6]}) == 1  # aligned (right-aligned figures)
    assert text[7] == "Still open at 2026-03-02 19:00: 2"
    assert text[9].startswith("critical  fridge-2  2026-03-02 12:00  Sam O'Neil        CRITICAL fridge-2:")
    assert text[10].startswith("warning   warmer-1  2026-03-02 14:00  not acknowledged  WARNING warmer-1:")

    rows = parse_csv(reports.render_csv(r))
    assert list(rows[0]) == list(reports.SHIFT_CSV)
    sev = {row["severity"]: row for row in rows if row["section"] == "severity"}
    assert sev["critical"]["raised"] == "2" and sev["critical"]["median_ack_s"] == "1800"
    assert sev["critical"]["max_ack_s"] == "9000" and sev["warning"]["median_ack_s"] == ""
    assert sev["total"]["open_at_end"] == "2"
    opened = [row for row in rows if row["section"] == "open"]
    assert [row["alert_id"] for row in opened] == ["a2", "b1"]
    assert opened[0]["raised_at"] == "2026-03-02T12:00:00+01:00"
    assert opened[0]["acknowledged_by"] == "Sam O'Neil"
    assert opened[0]["message"] == r.still_open[0].message  # quoted, "—" and "°" intact

    data = json.loads(reports.render_json(r))
    assert data["report"] == "shift" and data["period"]["shift"] == "day shift"
    assert data["period"]["since_local"] == "2026-03-02T07:00:00+01:00"
    assert data["total"]["acknowledged"] == 3 and data["still_open"][1]["id"] == "b1"


# -- excursions ----------------------------------------------------------------------------


def test_excursion_report(history: Engine) -> None:
    r = reports.excursions(history, SHIFT, now=NOW)
    # b1 (device offline) is no excursion; a0 overlaps the shift's start; c1 starts after it.
    assert [(x.device_id, x.alert_id) for x in r.excursions] == [
        ("freezer-1", "a3"), ("fridge-1", "a1"), ("fridge-2", "a2"), ("fridge-3", "a0"),
    ]  # fmt: skip
    a3, a1, a2, a0 = r.excursions
    assert (a1.start, a1.end, a1.duration_s, a1.value) == (local(2, 8), local(2, 10, 30), 150 * MIN, 8.4)
    assert (a1.acknowledged_by, a1.note, a1.acknowledged_at) == ("Nurse Joy", "moved the vaccines to fridge 2", local(2, 9, 12))
    assert (a2.end, a2.duration_s, a2.note) == (None, 9 * HOUR, 'door left open, "closed" it')  # open: to now
    assert (a0.start, a0.end, a0.duration_s, a0.acknowledged_by, a0.note) == (local(2, 4), local(2, 7, 50), 230 * MIN, "Night Nurse", None)
    assert (a3.duration_s, a3.acknowledged_by, a3.metric) == (45 * MIN, None, "temperature_c")
    assert [(e.start, e.duration_s, e.min, e.max) for e in a3.excursions] == [
        (local(2, 13), 600.0, -12.0, -9.5), (local(2, 13, 20), 300.0, -11.0, -8.9),
    ]  # fmt: skip
    assert a1.excursions == []

    text = reports.render_text(r).splitlines()
    assert text[0] == "Excursions 2026-03-02 07:00 – 19:00 Europe/Paris (day shift): 4"
    body = [line.split("  ") for line in text[3:]]
    cells = [[c.strip() for c in line if c.strip()] for line in body]
    assert cells[0] == ["freezer-1", "temperature_c", "warning", "2026-03-02 13:00", "2026-03-02 13:45", "45 min", "-8.9", "-"]
    assert cells[1] == ["excursion", "2026-03-02 13:00", "10 min", "-12..-9.5"]
    assert cells[2] == ["excursion", "2026-03-02 13:20", "5 min", "-11..-8.9"]
    assert cells[3][:8] == ["fridge-1", "temperature_c", "critical", "2026-03-02 08:00", "2026-03-02 10:30", "2 h 30 min", "8.4", "Nurse Joy"]
    assert cells[4][4:7] == ["open", "9 h 00 min so far", "10.2"]

    rows = parse_csv(reports.render_csv(r))
    assert [(row["row"], row["alert_id"]) for row in rows] == [
        ("alert", "a3"), ("excursion", "a3"), ("excursion", "a3"), ("alert", "a1"), ("alert", "a2"), ("alert", "a0"),
    ]  # fmt: skip
    assert rows[1]["start"] == "2026-03-02T13:00:00+01:00" and rows[1]["end"] == "2026-03-02T13:10:00+01:00"
    assert (rows[1]["min"], rows[1]["max"], rows[1]["duration_s"]) == ("-12", "-9.5", "600")
    assert rows[3]["duration_s"] == "9000" and rows[3]["value"] == "8.4" and rows[3]["note"] == "moved the vaccines to fridge 2"
    assert rows[4]["end"] == "" and rows[4]["note"] == 'door left open, "closed" it'

    data = json.loads(reports.render_json(r))
    assert data["excursions"][0]["excursions"][1]["max"] == -8.9 and data["excursions"][2]["end"] is None


# -- alert volume --------------------------------------------------------------------------


def test_alert_volume_per_rule_device_and_day(history: Engine) -> None:
    r = reports.alert_volume(history, Period(local(1, 0), local(3, 0), TZ))
    assert r.days == ["2026-03-01", "2026-03-02"]
    got = [(v.rule_id, v.device_id, v.count, v.open, v.median_duration_s, v.by_day) for v in r.rows]
    assert got == [
        # a0 3 h 50, a1 2 h 30, c1 1 h 30 resolved (median 2 h 30); a2 open
        ("fridge-high", None, 4, 1, 150 * MIN, [0, 4]),
        ("fridge-high", "fridge-1", 2, 0, 120 * MIN, [0, 2]),
        ("fridge-high", "fridge-2", 1, 1, None, [0, 1]),
        ("fridge-high", "fridge-3", 1, 0, 230 * MIN, [0, 1]),
        ("freezer-range", None, 2, 0, 42.5 * MIN, [1, 1]),  # 40 min and 45 min
        ("freezer-range", "freezer-1", 2, 0, 42.5 * MIN, [1, 1]),
        ("device-offline", None, 1, 1, None, [0, 1]),
        ("device-offline", "warmer-1", 1, 1, None, [0, 1]),
    ]
    # Only the shift: a1, a2, a3, b1 raised in it (a0 before it, c1 after it).
    shift = reports.alert_volume(history, SHIFT)
    assert [(v.rule_id, v.device_id, v.count) for v in shift.rows if v.device_id is None] == [
        ("fridge-high", None, 2), ("device-offline", None, 1), ("freezer-range", None, 1),
    ]  # fmt: skip

    text = reports.render_text(r).splitlines()
    assert text[0] == "Alert volume 2026-03-01 00:00 – 2026-03-03 00:00 Europe/Paris: 7 alerts raised"
    assert text[2].split() == ["rule", "device", "alerts", "open", "median", "duration", "03-01", "03-02"]
    assert text[3].split() == ["fridge-high", "(all)", "4", "1", "2", "h", "30", "min", "0", "4"]
    assert text[4].split() == ["fridge-1", "2", "0", "2", "h", "00", "min", "0", "2"]

    rows = parse_csv(reports.render_csv(r))
    assert list(rows[0]) == [*reports.VOLUME_CSV, "2026-03-01", "2026-03-02"]
    assert rows[0] == {"rule_id": "fridge-high", "device_id": "", "alerts": "4", "open": "1",
                       "median_duration_s": "9000", "2026-03-01": "0", "2026-03-02": "4"}  # fmt: skip
    assert rows[4]["rule_id"] == "freezer-range" and rows[4]["median_duration_s"] == "2550"


def test_a_quiet_period_still_shows_what_is_open(history: Engine) -> None:
    p = Period(local(20, 7), local(20, 19), TZ)
    r = reports.shift_summary(history, p, now=local(21, 0))
    assert [(f.severity, f.raised, f.acknowledged, f.resolved, f.open_at_end) for f in r.by_severity] == [
        ("critical", 0, 0, 0, 1), ("warning", 0, 0, 0, 1),
    ]  # fmt: skip
    assert "Still open at 2026-03-20 19:00: 2" in reports.render_text(r)
    assert [x.alert_id for x in reports.excursions(history, p, now=NOW).excursions] == ["a2"]
    assert reports.alert_volume(history, p).rows == []
    assert reports.render_text(reports.alert_volume(history, p)).splitlines()[0].endswith(": no alerts raised")
    assert parse_csv(reports.render_csv(reports.alert_volume(history, p))) == []
    nothing = Period(local(1, 0), local(1, 6), TZ)
    assert reports.render_text(reports.excursions(history, nothing, now=NOW)).splitlines()[0].endswith(": none")
    assert "Still open at 2026-03-01 06:00: none" in reports.render_text(reports.shift_summary(history, nothing, now=NOW))


# -- the command ---------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eqmon_app.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory whose state.sqlite was built by the migrations and holds the timeline."""
    d = tmp_path / "data"
    e = create(f"sqlite:///{d / 'state.sqlite'}")
    try:
        db.upgrade(e)
        fill(e)
    finally:
        e.dispose()
    return d


def _site(tmp_path: Path) -> Path:
    data = example_dict()
    data["site"]["timezone"] = TZ
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_cli_reports(data_dir: Path, tmp_path: Path) -> None:
    common = ["--since", "2026-03-02T07:00", "--until", "2026-03-02T19:00", "--config", str(_site(tmp_path)),
              "--data-dir", str(data_dir)]  # fmt: skip
    r = _cli("report", "shift", *common)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "Shift summary 2026-03-02 07:00 – 19:00 Europe/Paris (day shift)"
    assert lines[3].split() == ["critical", "2", "3", "2", "1", "30", "min", "2", "h", "30", "min"]
    assert lines[5].split()[:5] == ["total", "4", "3", "3", "2"]
    assert "Still open at 2026-03-02 19:00: 2" in lines
    assert any(line.startswith("critical  fridge-2  2026-03-02 12:00  Sam O'Neil") for line in lines)

    r = _cli("report", "excursions", "--csv", *common)
    assert r.returncode == 0, r.stderr
    assert [row["alert_id"] for row in parse_csv(r.stdout) if row["row"] == "alert"] == ["a3", "a1", "a2", "a0"]

    r = _cli("report", "alert-volume", "--json", *common)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows"][0] == {
        "rule_id": "fridge-high", "device_id": None, "count": 2, "open": 1, "median_duration_s": 9000.0, "by_day": [2],
    }  # fmt: skip

    # Without a site file: UTC, the same instants.
    r = _cli("report", "shift", "--since", "2026-03-02T06:00", "--until", "2026-03-02T18:00", "--data-dir", str(data_dir))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "Shift summary 2026-03-02 06:00 – 18:00 UTC"
    assert r.stdout.splitlines()[5].split()[:5] == ["total", "4", "3", "3", "2"]


def test_cli_refuses_bad_times_and_a_missing_database(data_dir: Path, tmp_path: Path) -> None:
    for args, needle in (
        (["--since", "yesterday"], "--since: 'yesterday' is not an ISO 8601"),
        (["--since", "2026-03-02T07:00", "--until", "2026-02-30"], "--until: '2026-02-30' is not an ISO 8601"),
        (["--since", "2026-03-02T19:00", "--until", "2026-03-02T07:00"], "--since must be before --until"),
    ):
        r = _cli("report", "shift", *args, "--data-dir", str(data_dir))
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.strip().splitlines() == [r.stderr.strip()] and needle in r.stderr, r.stderr
        assert r.stdout == ""
    missing = tmp_path / "nowhere"
    r = _cli("report", "excursions", "--data-dir", str(missing))
    assert r.returncode == 1 and "no state database at" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not missing.exists()  # a report creates nothing


def test_excursion_report_gives_the_worst_value_the_engine_kept(state_db: str) -> None:
    """The engine keeps an excursion's worst value in ``extra["worst"]`` (alerts/engine.py); the
    report shows it rather than the last value saved with the row."""
    engine = create(state_db)
    try:
        db.upgrade(engine)
        t = Timeline(engine)
        t.raise_("w1", T0 + 2 * HOUR, rule="fridge-too-warm", device="fridge-1", started=T0 + HOUR,
                 value=8.4, worst=8.4)  # fmt: skip
        t.alerts["w1"].extra["worst"] = 11.7  # hotter meanwhile; saved with the resolution
        t.resolve("w1", T0 + 4 * HOUR, value=8.2)
        (x,) = reports.excursions(engine, SHIFT, now=NOW).excursions
        assert x.value == 11.7
    finally:
        engine.dispose()
