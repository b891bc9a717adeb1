"""Reports over the alert history in the state database (issue 9): the shift summary, the
excursion report per device and the alert volume per rule (to find noisy rules).

The report functions are pure reads: given an ``Engine`` and a period ``[since, until)`` in
Unix seconds they return plain dataclasses; ``render_text``, ``csv_rows`` and ``as_json`` turn
those into what ``eqmon report`` prints. Times are shown in the site's time zone.

**Shifts** are local wall-clock times in the site's time zone: the day shift runs 07:00–19:00,
the night shift 19:00–07:00 the next morning (11 or 13 hours on the nights the clocks change).

What each figure means (all from ``alerts`` and ``alert_events``):

* *raised*: ``raised`` (and ``reopened``) events in the period; *acknowledged*, *resolved*:
  those events in the period. *Open at the end*: alerts whose last raise/reopen before ``until``
  was not followed by a resolution before ``until``.
* *Time to acknowledge*: from the alert's raise (its ``raised`` event: when eqmon told the
  coordinator, not when the excursion began, which for a threshold rule is its ``for`` earlier)
  to its acknowledgement, for acknowledgements in the period.
* Severity, message and rule are the alert's as stored now.
* *Excursions*: alerts with a metric (threshold and range rules; not "device offline", nor
  eqmon's own link warnings) whose excursion ``[started_at, resolved_at)`` overlaps the period.
  Its end is the resolution as known now (possibly after ``until``); an open one's duration
  runs to ``now``. ``value`` is the worst value of the excursion as the engine keeps it
  (``extra["worst"]``, saved with every change of the alert); for an alert without it, the
  value stored with the row (the last one saved beyond the limit). The entries of an
  ``extra["excursions"]`` list (``start``, ``duration``, ``min``, ``max``), when the rule keeps
  one, are listed under their alert.
* *Alert volume*: alerts raised in the period (``raised`` events), per rule and per rule and
  device, per local day of their raise; the median duration (``resolved_at - started_at``) is
  over those already resolved (``open`` counts the others). Sorted by volume, most first.
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, and_, or_, select

from eqmon.db.schema import alert_events, alerts

DAY_SHIFT_START = 7  # local hour
NIGHT_SHIFT_START = 19
SEVERITY_ORDER = ("critical", "warning", "info")
REPORTS = ("shift", "excursions", "alert-volume")


# -- periods -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    since: float  # Unix seconds, inclusive
    until: float  # Unix seconds, exclusive
    timezone: str  # IANA name: how times are shown and days and shifts cut

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def describe(self) -> str:
        """``2026-03-02 07:00 – 19:00 Europe/Paris (day shift)``."""
        start = datetime.fromtimestamp(self.since, self.tz)
        end = datetime.fromtimestamp(self.until, self.tz)
        end_fmt = "%H:%M" if end.date() == start.date() else "%Y-%m-%d %H:%M"
        text = f"{start:%Y-%m-%d %H:%M} – {end.strftime(end_fmt)} {self.timezone}"
        shift = shift_name(self)
        return f"{text} ({shift})" if shift else text


def _local(d: date, hour: int, tz: ZoneInfo) -> float:
    return datetime(d.year, d.month, d.day, hour, tzinfo=tz).timestamp()


def shift_at(ts: float, timezone: str) -> Period:
    """The shift that ``ts`` falls in: day 07:00–19:00 or night 19:00–07:00, local time."""
    tz = ZoneInfo(timezone)
    local = datetime.fromtimestamp(ts, tz)
    today = local.date()
    if DAY_SHIFT_START <= local.hour < NIGHT_SHIFT_START:
        return Period(_local(today, DAY_SHIFT_START, tz), _local(today, NIGHT_SHIFT_START, tz), timezone)
    start_day = today if local.hour >= NIGHT_SHIFT_START else today - timedelta(days=1)
    return Period(
        _local(start_day, NIGHT_SHIFT_START, tz),
        _local(start_day + timedelta(days=1), DAY_SHIFT_START, tz),
        timezone,
    )


def shift_name(p: Period) -> str:
    """"day shift" or "night shift" when ``p`` is exactly one shift, else ""."""
    s = shift_at(p.since, p.timezone)
    if (s.since, s.until) != (p.since, p.until):
        return ""
    return "day shift" if datetime.fromtimestamp(s.since, s.tz).hour == DAY_SHIFT_START else "night shift"


MAX_TS = 253402300799.0  # 9999-12-31T23:59:59Z
_UNIX_SECONDS = re.compile(r"^\s*\d{1,12}(\.\d{1,9})?\s*$")


def parse_time(text: str, timezone: str) -> float:
    """A time as ``eqmon report`` and the API take it: Unix seconds (``1772431200``, a plain
    number: digits and an optional fraction) or ISO 8601 (see ``parse_local_time``: without an
    offset, local to ``timezone``), between 1970 and 9999. ``ValueError`` otherwise."""
    if _UNIX_SECONDS.match(text):
        ts = float(text)
    else:
        try:
            ts = parse_local_time(text, timezone)
        except OverflowError:  # a date and offset past what a timestamp holds
            ts = -1.0
        except ValueError:
            raise ValueError(
                f"{text[:40]!r} is not an ISO 8601 date and time (e.g. 2026-03-02T07:00) nor Unix seconds"
            ) from None
    if not 0 <= ts <= MAX_TS:
        raise ValueError(f"{text.strip()[:40]!r} is before 1970 or after 9999")
    return ts


def parse_local_time(text: str, timezone: str) -> float:
    """An ISO 8601 date or date and time (``2026-03-02``, ``2026-03-02T07:00``, ``2026-03-02
    07:00:00+01:00``, ``…Z``) as Unix seconds; without an offset it is local to ``timezone``
    (a time the clocks skip or repeat is taken as the first reading). ``ValueError`` otherwise."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date and time (e.g. 2026-03-02T07:00)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(timezone))
    return dt.timestamp()


VOLUME_DAYS = 7  # the alert volume's default period: the last 7 days
SHIFT_HOURS = 12  # the other reports' default length when only --until is given


def report_period(report: str, since: float | None, until: float | None, timezone: str, *, now: float) -> Period:
    """The period of a report as ``eqmon report`` and the API choose it: with neither bound, the
    current shift (shift, excursions) or the last 7 days (alert-volume); a missing ``until`` is
    now, a missing ``since`` 12 hours (7 days) before ``until``. ``EmptyPeriod`` (a ValueError)
    for a period that does not start before it ends, ``ValueError`` for an unknown report."""
    if report not in REPORTS:
        raise ValueError(f"unknown report {report!r}; expected one of {', '.join(REPORTS)}")
    back = VOLUME_DAYS * 86400.0 if report == "alert-volume" else SHIFT_HOURS * 3600.0
    if since is None and until is None and report != "alert-volume":
        period = shift_at(now, timezone)
    else:
        until = now if until is None else until
        period = Period(until - back if since is None else since, until, timezone)
    if period.since >= period.until:
        raise EmptyPeriod(period)
    return period


class EmptyPeriod(ValueError):
    """A period that does not start before it ends."""

    def __init__(self, period: Period) -> None:
        super().__init__(f"since must be before until ({period.describe()})")
        self.period = period


def make_report(engine: Engine, report: str, period: Period, *, now: float | None = None) -> Report:
    """``report`` (one of ``REPORTS``) over ``period``."""
    if report == "shift":
        return shift_summary(engine, period, now=now)
    if report == "excursions":
        return excursions(engine, period, now=now)
    if report == "alert-volume":
        return alert_volume(engine, period)
    raise ValueError(f"unknown report {report!r}; expected one of {', '.join(REPORTS)}")


# -- reading the history -------------------------------------------------------------------


@dataclass(slots=True)
class _Event:
    ts: float
    kind: str
    actor: str
    note: str | None


@dataclass(slots=True)
class _History:
    row: dict[str, Any]
    events: list[_Event] = field(default_factory=list)


def _histories(engine: Engine, since: float, until: float) -> list[_History]:
    """Alerts whose excursion overlaps the period or with an event in it, each with its events
    before ``until`` (oldest first)."""
    in_period = select(alert_events.c.alert_id).where(
        alert_events.c.ts >= since, alert_events.c.ts < until
    )
    relevant = or_(
        and_(alerts.c.started_at < until, or_(alerts.c.resolved_at.is_(None), alerts.c.resolved_at >= since)),
        alerts.c.id.in_(in_period),
    )
    with engine.connect() as conn:
        found = {r["id"]: _History(dict(r)) for r in conn.execute(select(alerts).where(relevant)).mappings()}
        q = (
            select(alert_events.c.alert_id, alert_events.c.ts, alert_events.c.kind, alert_events.c.actor, alert_events.c.note)
            .where(alert_events.c.alert_id.in_(select(alerts.c.id).where(relevant)), alert_events.c.ts < until)
            .order_by(alert_events.c.alert_id, alert_events.c.ts, alert_events.c.id)
        )
        for e in conn.execute(q).mappings():
            h = found.get(e["alert_id"])
            if h is not None:
                h.events.append(_Event(e["ts"], e["kind"], e["actor"], e["note"]))
    return sorted(found.values(), key=lambda h: (h.row["started_at"], h.row["id"]))


def _severity_key(s: str) -> tuple[int, str]:
    return (SEVERITY_ORDER.index(s) if s in SEVERITY_ORDER else len(SEVERITY_ORDER), s)


def _median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


# -- shift summary -------------------------------------------------------------------------


@dataclass(slots=True)
class SeverityFigures:
    severity: str  # "total" for the sum
    raised: int = 0
    acknowledged: int = 0
    resolved: int = 0
    open_at_end: int = 0
    median_ack_s: float | None = None
    max_ack_s: float | None = None


@dataclass(slots=True)
class OpenAlert:
    id: str
    severity: str
    rule_id: str
    device_id: str
    started_at: float
    raised_at: float
    acknowledged_at: float | None
    acknowledged_by: str | None
    message: str


@dataclass(slots=True)
class ShiftSummary:
    period: Period
    by_severity: list[SeverityFigures]  # the severities seen, most severe first
    total: SeverityFigures
    still_open: list[OpenAlert]  # open at the end of the period, oldest first
    as_of: float  # the end of the period, or now for a period not over yet (the current shift)


def shift_summary(engine: Engine, period: Period, *, now: float | None = None) -> ShiftSummary:
    since, until = period.since, period.until
    figures: dict[str, SeverityFigures] = {}
    ack_times: dict[str, list[float]] = {}
    still_open: list[OpenAlert] = []
    for h in _histories(engine, since, until):
        sev = h.row["severity"]
        fig = figures.setdefault(sev, SeverityFigures(sev))
        times = ack_times.setdefault(sev, [])
        is_open, raised_at = False, None
        acked: _Event | None = None
        for e in h.events:
            inside = e.ts >= since
            if e.kind in ("raised", "reopened"):
                is_open, raised_at, acked = True, e.ts, None
                fig.raised += int(inside)
            elif e.kind == "acknowledged":
                acked = e
                if inside:
                    fig.acknowledged += 1
                    if raised_at is not None:
                        times.append(e.ts - raised_at)
            elif e.kind == "resolved":
                is_open = False
                fig.resolved += int(inside)
        if is_open and raised_at is not None:
            fig.open_at_end += 1
            r = h.row
            still_open.append(
                OpenAlert(
                    r["id"], sev, r["rule_id"], r["device_id"], r["started_at"], raised_at,
                    acked.ts if acked else None, acked.actor if acked else None, r["message"],
                )
            )  # fmt: skip
    rows = []
    for sev in sorted(figures, key=_severity_key):
        fig = figures[sev]
        if not (fig.raised or fig.acknowledged or fig.resolved or fig.open_at_end):
            continue  # an alert of that severity overlapped the period but nothing happened to it in it
        fig.median_ack_s, fig.max_ack_s = _median(ack_times[sev]), max(ack_times[sev], default=None)
        rows.append(fig)
    all_times = [t for ts in ack_times.values() for t in ts]
    total = SeverityFigures(
        "total",
        raised=sum(f.raised for f in rows),
        acknowledged=sum(f.acknowledged for f in rows),
        resolved=sum(f.resolved for f in rows),
        open_at_end=sum(f.open_at_end for f in rows),
        median_ack_s=_median(all_times),
        max_ack_s=max(all_times, default=None),
    )
    still_open.sort(key=lambda a: (a.started_at, a.id))
    as_of = min(period.until, time.time() if now is None else now)
    return ShiftSummary(period, rows, total, still_open, as_of)


# -- excursions ------------------------------------------------------------------------------


@dataclass(slots=True)
class ExcursionEntry:
    """One entry of an alert's ``extra["excursions"]`` (cumulative excursion rules)."""

    start: float | None
    duration_s: float | None
    min: float | None
    max: float | None


@dataclass(slots=True)
class Excursion:
    alert_id: str
    device_id: str
    metric: str
    rule_id: str
    severity: str
    start: float
    end: float | None  # None: still open
    duration_s: float  # to the end, or to ``now`` while open
    value: float | None  # the value stored with the alert (see the module's docstring)
    acknowledged_at: float | None
    acknowledged_by: str | None
    note: str | None
    excursions: list[ExcursionEntry] = field(default_factory=list)


@dataclass(slots=True)
class ExcursionReport:
    period: Period
    excursions: list[Excursion]  # by device, then start


def _number(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x)


def _worst(extra: dict[str, Any], stored: float | None) -> float | None:
    worst = extra.get("worst")
    return float(worst) if isinstance(worst, int | float) and not isinstance(worst, bool) else stored


def _entries(extra: object) -> list[ExcursionEntry]:
    raw = extra.get("excursions") if isinstance(extra, dict) else None
    if not isinstance(raw, list):
        return []
    return [
        ExcursionEntry(_number(e.get("start")), _number(e.get("duration")), _number(e.get("min")), _number(e.get("max")))
        for e in raw
        if isinstance(e, dict)
    ]


def excursions(engine: Engine, period: Period, *, now: float | None = None) -> ExcursionReport:
    now = time.time() if now is None else now
    out = []
    for h in _histories(engine, period.since, period.until):
        r = h.row
        if not r["metric"]:
            continue  # device offline, misconfigured, eqmon's own warnings: no excursion
        if not (r["started_at"] < period.until and (r["resolved_at"] is None or r["resolved_at"] >= period.since)):
            continue  # only an event in the period (e.g. an acknowledgement long after its end)
        ack = next((e for e in reversed(h.events) if e.kind == "acknowledged"), None)
        extra = r["extra"] or {}
        end = r["resolved_at"]
        out.append(
            Excursion(
                alert_id=r["id"], device_id=r["device_id"], metric=r["metric"], rule_id=r["rule_id"],
                severity=r["severity"], start=r["started_at"], end=end,
                duration_s=max(0.0, (now if end is None else end) - r["started_at"]),
                value=_worst(extra, r["value"]), acknowledged_at=r["acknowledged_at"],
                acknowledged_by=r["acknowledged_by"] or (ack.actor if ack else None),
                note=extra.get("ack_note") or (ack.note if ack else None),
                excursions=_entries(extra),
            )
        )  # fmt: skip
    out.sort(key=lambda x: (x.device_id, x.start, x.alert_id))
    return ExcursionReport(period, out)


# -- alert volume ----------------------------------------------------------------------------


@dataclass(slots=True)
class VolumeRow:
    rule_id: str
    device_id: str | None  # None: the rule over all its devices
    count: int
    open: int  # not resolved yet
    median_duration_s: float | None  # over the resolved ones
    by_day: list[int]  # aligned with AlertVolume.days


@dataclass(slots=True)
class AlertVolume:
    period: Period
    days: list[str]  # local dates (ISO) the period covers
    rows: list[VolumeRow]  # each rule (device None), then its devices; by volume, most first


def _days(period: Period) -> list[date]:
    first = datetime.fromtimestamp(period.since, period.tz).date()
    last = datetime.fromtimestamp(max(period.since, period.until - 1e-6), period.tz).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def alert_volume(engine: Engine, period: Period) -> AlertVolume:
    days = _days(period)
    index = {d: i for i, d in enumerate(days)}
    tz = period.tz
    # (rule, device) -> [(day index, duration or None)]
    seen: dict[tuple[str, str], list[tuple[int, float | None]]] = {}
    for h in _histories(engine, period.since, period.until):
        r = h.row
        for e in h.events:
            if e.kind == "raised" and e.ts >= period.since:
                duration = None if r["resolved_at"] is None else r["resolved_at"] - r["started_at"]
                day = index[datetime.fromtimestamp(e.ts, tz).date()]
                seen.setdefault((r["rule_id"], r["device_id"]), []).append((day, duration))

    def row(rule_id: str, device_id: str | None, items: list[tuple[int, float | None]]) -> VolumeRow:
        by_day = [0] * len(days)
        for day, _ in items:
            by_day[day] += 1
        durations = [d for _, d in items if d is not None]
        return VolumeRow(rule_id, device_id, len(items), len(items) - len(durations), _median(durations), by_day)

    per_rule: dict[str, list[tuple[int, float | None]]] = {}
    for (rule_id, _), items in seen.items():
        per_rule.setdefault(rule_id, []).extend(items)
    rows: list[VolumeRow] = []
    for rule_id in sorted(per_rule, key=lambda k: (-len(per_rule[k]), k)):
        rows.append(row(rule_id, None, per_rule[rule_id]))
        devices = sorted((d for rid, d in seen if rid == rule_id), key=lambda d: (-len(seen[(rule_id, d)]), d))
        rows.extend(row(rule_id, d, seen[(rule_id, d)]) for d in devices)
    return AlertVolume(period, [d.isoformat() for d in days], rows)


# -- output ----------------------------------------------------------------------------------

Report = ShiftSummary | ExcursionReport | AlertVolume


def fmt_duration(seconds: float | None) -> str:
    """``45 s``, ``12 min``, ``12 min 30 s``, ``2 h 05 min``, ``3 d 4 h``; ``-`` for none."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min" + (f" {s % 60} s" if s % 60 else "")
    if s < 2 * 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _fmt_number(x: float | None) -> str:
    return "" if x is None else f"{x:g}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool]) -> list[str]:
    rows = [list(r) for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if right[i] else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(out).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def render_text(report: Report) -> str:
    """Aligned plain text, one line per row, times in the period's time zone."""
    p = report.period
    tz = p.tz

    def at(ts: float | None) -> str:
        return "open" if ts is None else f"{datetime.fromtimestamp(ts, tz):%Y-%m-%d %H:%M}"

    lines: list[str] = []
    if isinstance(report, ShiftSummary):
        lines.append(f"Shift summary {p.describe()}")
        lines.append("")
        lines += _table(
            ["severity", "raised", "acknowledged", "resolved", "open at end", "median to ack", "max to ack"],
            (
                [f.severity, str(f.raised), str(f.acknowledged), str(f.resolved), str(f.open_at_end),
                 fmt_duration(f.median_ack_s), fmt_duration(f.max_ack_s)]
                for f in [*report.by_severity, report.total]
            ),  # fmt: skip
            [False, True, True, True, True, True, True],
        )
        lines.append("")
        lines.append(f"Still open at {at(report.as_of)}: {len(report.still_open) or 'none'}")
        if report.still_open:
            lines += _table(
                ["severity", "device", "raised", "acknowledged by", "alert"],
                (
                    [a.severity, a.device_id, at(a.raised_at), a.acknowledged_by or "not acknowledged", a.message]
                    for a in report.still_open
                ),
                [False] * 5,
            )
    elif isinstance(report, ExcursionReport):
        lines.append(f"Excursions {p.describe()}: {len(report.excursions) or 'none'}")
        if report.excursions:
            lines.append("")
            rows: list[list[str]] = []
            for x in report.excursions:
                rows.append([
                    x.device_id, x.metric, x.severity, at(x.start), at(x.end),
                    fmt_duration(x.duration_s) + (" so far" if x.end is None else ""),
                    _fmt_number(x.value) or "-", x.acknowledged_by or "-", x.note or "",
                ])  # fmt: skip
                for e in x.excursions:
                    span = "-" if e.min is None and e.max is None else f"{_fmt_number(e.min)}..{_fmt_number(e.max)}"
                    rows.append(["", "  excursion", "", at(e.start) if e.start is not None else "-", "",
                                 fmt_duration(e.duration_s), span, "", ""])  # fmt: skip
            lines += _table(
                ["device", "metric", "severity", "start", "end", "duration", "value", "acknowledged by", "note"],
                rows,
                [False, False, False, False, False, True, True, False, False],
            )
    else:
        total = sum(r.count for r in report.rows if r.device_id is None)
        lines.append(f"Alert volume {p.describe()}: {total or 'no'} alerts raised")
        if report.rows:
            lines.append("")
            lines += _table(
                ["rule", "device", "alerts", "open", "median duration", *(d[5:] for d in report.days)],
                (
                    [r.rule_id if r.device_id is None else "", r.device_id or "(all)", str(r.count), str(r.open),
                     fmt_duration(r.median_duration_s), *(str(n) for n in r.by_day)]
                    for r in report.rows
                ),  # fmt: skip
                [False, False, True, True, True, *([True] * len(report.days))],
            )
    return "\n".join(lines) + "\n"


def _iso(ts: float | None, tz: ZoneInfo) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


def _cell(x: float | int | None) -> str | int | float:
    if x is None:
        return ""
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x


SHIFT_CSV = (
    "section", "severity", "raised", "acknowledged", "resolved", "open_at_end", "median_ack_s",
    "max_ack_s", "alert_id", "rule_id", "device_id", "raised_at", "acknowledged_at",
    "acknowledged_by", "message",
)  # fmt: skip
EXCURSIONS_CSV = (
    "row", "alert_id", "device_id", "metric", "rule_id", "severity", "start", "end",
    "duration_s", "value", "min", "max", "acknowledged_at", "acknowledged_by", "note",
)  # fmt: skip
VOLUME_CSV = ("rule_id", "device_id", "alerts", "open", "median_duration_s")


def csv_rows(report: Report) -> Iterator[list[Any]]:
    """The report as CSV rows, the header first. Times ISO 8601 with the site's offset,
    durations in seconds. Shift: ``section`` is ``severity`` (one row per severity, and
    ``total``) or ``open`` (an alert open at the end). Excursions: ``row`` is ``alert`` or
    ``excursion`` (an entry of that alert's ``extra["excursions"]``). Volume: an empty
    ``device_id`` is the rule over all its devices; one column per local day."""
    tz = report.period.tz
    if isinstance(report, ShiftSummary):
        yield list(SHIFT_CSV)
        for f in [*report.by_severity, report.total]:
            yield ["severity", f.severity, f.raised, f.acknowledged, f.resolved, f.open_at_end,
                   _cell(f.median_ack_s), _cell(f.max_ack_s), "", "", "", "", "", "", ""]  # fmt: skip
        for a in report.still_open:
            yield ["open", a.severity, "", "", "", "", "", "", a.id, a.rule_id, a.device_id,
                   _iso(a.raised_at, tz), _iso(a.acknowledged_at, tz), a.acknowledged_by or "", a.message]  # fmt: skip
    elif isinstance(report, ExcursionReport):
        yield list(EXCURSIONS_CSV)
        for x in report.excursions:
            yield ["alert", x.alert_id, x.device_id, x.metric, x.rule_id, x.severity, _iso(x.start, tz),
                   _iso(x.end, tz), _cell(x.duration_s), _cell(x.value), "", "", _iso(x.acknowledged_at, tz),
                   x.acknowledged_by or "", x.note or ""]  # fmt: skip
            for e in x.excursions:
                end = None if e.start is None or e.duration_s is None else e.start + e.duration_s
                yield ["excursion", x.alert_id, x.device_id, x.metric, x.rule_id, x.severity, _iso(e.start, tz),
                       _iso(end, tz), _cell(e.duration_s), "", _cell(e.min), _cell(e.max), "", "", ""]  # fmt: skip
    else:
        yield [*VOLUME_CSV, *report.days]
        for r in report.rows:
            yield [r.rule_id, r.device_id or "", r.count, r.open, _cell(r.median_duration_s), *r.by_day]


def render_csv(report: Report) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(csv_rows(report))
    return buf.getvalue()


def as_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data: times in Unix seconds (as everywhere in eqmon), the
    period also as local ISO 8601 times."""
    data = asdict(report)
    p = report.period
    data["report"] = (
        "shift" if isinstance(report, ShiftSummary) else "excursions" if isinstance(report, ExcursionReport)
        else "alert-volume"
    )  # fmt: skip
    data["period"] = {
        "since": p.since, "until": p.until, "timezone": p.timezone,
        "since_local": _iso(p.since, p.tz), "until_local": _iso(p.until, p.tz), "shift": shift_name(p) or None,
    }  # fmt: skip
    return data


def render_json(report: Report) -> str:
    return json.dumps(as_json(report), indent=2, ensure_ascii=False) + "\n"
