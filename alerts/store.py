"""Alert history in the state database (eqmon/db/): every alert as it is now (open alerts
survive a restart), and one ``alert_events`` row per raise, change, acknowledgement and
resolution, so the history can be reviewed (alarm volumes, response times, who acknowledged).

``save`` is one transaction: it reads the alert's stored state, writes the new one and the
event derived from the transition. Alerts kept by earlier versions in ``alerts.sqlite`` are
imported once by ``import_legacy_alerts``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, insert, or_, select, text, update

from eqmon.db import StateDatabaseError, writing
from eqmon.db.schema import OPEN, alert_events, alerts, meta, notification_outbox
from eqmon.domain import Alert, AlertState, Severity

log = logging.getLogger(__name__)

ENGINE_ACTOR = "eqmon"
LEGACY_FILE = "alerts.sqlite"
_LEGACY_MARKER = "imported:alerts.sqlite"

# The columns compared to decide whether a save changed anything.
_FIELDS = (
    "rule_id", "device_id", "metric", "severity", "state", "message", "started_at", "value",
    "resolved_at", "acknowledged_at", "acknowledged_by", "extra",
)  # fmt: skip


def _row(a: Alert) -> dict[str, Any]:
    value = a.value if isinstance(a.value, int | float) and not isinstance(a.value, bool) else None
    return {
        "rule_id": a.rule_id, "device_id": a.device_id, "metric": a.metric,
        "severity": str(a.severity), "state": str(a.state), "message": a.message,
        "started_at": a.started_at, "value": None if value is None else float(value),
        "resolved_at": a.resolved_at, "acknowledged_at": a.acknowledged_at,
        "acknowledged_by": a.acknowledged_by, "extra": dict(a.extra),
    }  # fmt: skip


def _alert(r: RowMapping) -> Alert:
    return Alert(
        id=r["id"], rule_id=r["rule_id"], device_id=r["device_id"], metric=r["metric"],
        severity=Severity(r["severity"]), state=AlertState(r["state"]), message=r["message"],
        started_at=r["started_at"], value=r["value"], resolved_at=r["resolved_at"],
        acknowledged_at=r["acknowledged_at"], acknowledged_by=r["acknowledged_by"],
        extra=dict(r["extra"] or {}),
    )  # fmt: skip


def event_for(
    prev: Mapping[str, Any] | None, new: Mapping[str, Any], now: float
) -> tuple[str, float, str, str | None] | None:
    """The event of one change of an alert, as (kind, ts, actor, note), or None when nothing
    changed: raised (first seen), acknowledged (active -> acknowledged: by whom, its note),
    resolved (by the engine, or by hand: by whom, the note), reopened (resolved -> open again),
    silenced / unsilenced (a silence or maintenance window began or ended while it is open: by
    its owner, its reason), changed (message, severity, value …)."""
    state = new["state"]
    if prev is None:
        return "raised", now, ENGINE_ACTOR, new["message"]
    if prev["state"] != AlertState.RESOLVED and state == AlertState.RESOLVED:
        by = new["extra"].get("resolved_by")
        return "resolved", new["resolved_at"] or now, by or ENGINE_ACTOR, new["extra"].get("resolve_note")
    if prev["state"] == AlertState.RESOLVED and state != AlertState.RESOLVED:
        return "reopened", now, ENGINE_ACTOR, new["message"]
    if prev["state"] == AlertState.ACTIVE and state == AlertState.ACKNOWLEDGED:
        note = new["extra"].get("ack_note")
        return "acknowledged", new["acknowledged_at"] or now, new["acknowledged_by"] or "", note
    silenced, was = new["extra"].get("silenced"), (prev["extra"] or {}).get("silenced")
    if silenced and not was:
        return "silenced", now, silenced.get("owner") or ENGINE_ACTOR, silenced.get("reason")
    if was and not silenced:
        return "unsilenced", now, ENGINE_ACTOR, new["message"]
    if any(prev[f] != new[f] for f in _FIELDS):
        return "changed", now, ENGINE_ACTOR, new["message"]
    return None


class AlertStore:
    """Alerts in the state database; the engine is the service's (migrated before this)."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    def save(self, a: Alert, *, also: Callable[[Connection, str, float], None] | None = None) -> str | None:
        """Store the alert as it is now and the event of this change, in one transaction;
        ``also(conn, kind, ts)`` writes more in that transaction (the notification outbox).
        Returns the event's kind (raised, changed, acknowledged, resolved, reopened), or None
        when nothing changed."""
        new = _row(a)
        with writing(self._engine) as conn:
            found = conn.execute(select(alerts).where(alerts.c.id == a.id).with_for_update()).mappings().first()
            prev = None if found is None else dict(found)
            event = event_for(prev, new, self._clock())
            if event is None:
                return None
            if prev is None:
                conn.execute(insert(alerts).values(id=a.id, **new))
            else:
                conn.execute(update(alerts).where(alerts.c.id == a.id).values(**new))
            kind, ts, actor, note = event
            conn.execute(insert(alert_events).values(alert_id=a.id, ts=ts, kind=kind, actor=actor, note=note))
            if also is not None:
                also(conn, kind, ts)
            return kind

    def open_alerts(self) -> list[Alert]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(alerts).where(text(OPEN)).order_by(alerts.c.started_at)).mappings()
            return [_alert(r) for r in rows]

    def recent(self, limit: int = 200) -> list[Alert]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(alerts).order_by(alerts.c.started_at.desc()).limit(limit)).mappings()
            return [_alert(r) for r in rows]

    def get(self, alert_id: str) -> Alert | None:
        with self._engine.connect() as conn:
            r = conn.execute(select(alerts).where(alerts.c.id == alert_id)).mappings().first()
            return None if r is None else _alert(r)

    def resolved_page(
        self,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        since: float | None = None,
        until: float | None = None,
        resolved_since: float | None = None,
        severities: Collection[str] | None = None,
        device_id: str | None = None,
        device_ids: Collection[str] | None = None,
        rule_id: str | None = None,
        rule_prefix: str | None = None,
        location: str | None = None,
    ) -> list[Alert]:
        """Resolved alerts, newest first (``started_at`` then ``id``, descending): at most
        ``limit`` of those after the keyset ``before`` (``(started_at, id)`` of the last one
        served). One bounded query on the ``started_at`` index, whatever the history's size.

        Filters: started at or after ``since`` and at or before ``until``; resolved at or after
        ``resolved_since``; ``severities``; ``device_id``; ``device_ids`` (an empty collection
        matches nothing);
        ``rule_id`` or a ``rule_prefix``; with ``location``, the alerts whose device is one of
        ``device_ids`` *or* whose ``extra["location"]`` is ``location``."""
        c = alerts.c
        q = select(alerts).where(c.state == str(AlertState.RESOLVED))
        if since is not None:
            q = q.where(c.started_at >= since)
        if until is not None:
            q = q.where(c.started_at <= until)
        if resolved_since is not None:
            q = q.where(c.resolved_at >= resolved_since)
        if severities is not None:
            q = q.where(c.severity.in_(sorted(severities)))
        if device_id is not None:
            q = q.where(c.device_id == device_id)
        if rule_id is not None:
            q = q.where(c.rule_id == rule_id)
        if rule_prefix is not None:
            q = q.where(c.rule_id.startswith(rule_prefix, autoescape=True))
        by_device = None if device_ids is None else c.device_id.in_(sorted(device_ids))
        if location is not None:
            at = c.extra["location"].as_string() == location
            q = q.where(at if by_device is None else or_(by_device, at))
        elif by_device is not None:
            q = q.where(by_device)
        if before is not None:
            ts, last = before
            # ``started_at <= ts`` first: a range on the index, not an OR the planner cannot use
            q = q.where(c.started_at <= ts, or_(c.started_at < ts, c.id < last))
        q = q.order_by(c.started_at.desc(), c.id.desc()).limit(limit)
        with self._engine.connect() as conn:
            return [_alert(r) for r in conn.execute(q).mappings()]

    def notifications(self, alert_id: str) -> list[dict[str, Any]]:
        """The messages about one alert in the notification outbox, oldest first: ``channel``,
        ``state`` (pending, sent, failed), ``attempts``, ``created_at``, ``sent_at``, ``event``
        (raised, reminder, escalation …) and ``contact`` (the person's name from the rota, or
        None for a channel). Never the recipient's address: it may hold a webhook's secret."""
        o = notification_outbox.c
        q = (
            select(o.channel, o.state, o.attempts, o.created_at, o.sent_at, o.payload)
            .where(o.alert_id == alert_id)
            .order_by(o.id)
        )
        out = []
        with self._engine.connect() as conn:
            for r in conn.execute(q).mappings():
                doc = r["payload"] if isinstance(r["payload"], dict) else {}
                recipient = doc.get("recipient")
                if not isinstance(recipient, dict):
                    recipient = {}
                out.append({
                    "channel": r["channel"], "state": r["state"], "attempts": r["attempts"],
                    "created_at": r["created_at"], "sent_at": r["sent_at"],
                    "event": str(doc.get("event") or "notification"), "contact": recipient.get("contact"),
                })  # fmt: skip
        return out

    def events(self, alert_id: str) -> list[dict[str, Any]]:
        """The alert's history, oldest first: ``ts``, ``kind``, ``actor``, ``note``."""
        with self._engine.connect() as conn:
            q = (
                select(alert_events.c.ts, alert_events.c.kind, alert_events.c.actor, alert_events.c.note)
                .where(alert_events.c.alert_id == alert_id)
                .order_by(alert_events.c.ts, alert_events.c.id)
            )
            return [dict(r) for r in conn.execute(q).mappings()]

    def close(self) -> None:
        """Nothing of its own to close: the engine is the service's (``Service.stop`` disposes it)."""


# ---------------------------------------------------------------------------------------------
# alerts.sqlite, from before the state database


def import_legacy_alerts(engine: Engine, data_dir: Path) -> int:
    """Import ``data_dir/alerts.sqlite`` (the alert store of earlier versions) once: its rows
    and the events their columns tell (raised, acknowledged, resolved), in one transaction with
    a marker, then rename the file to ``alerts.sqlite.imported``. An alert already in the state
    database is kept as it is. Returns how many alerts were imported (0: nothing to do)."""
    path = data_dir / LEGACY_FILE
    if not path.exists():
        return 0
    try:
        old = sqlite3.connect(path)  # read-write: closing it checkpoints a WAL left behind
        try:
            old.row_factory = sqlite3.Row
            has_table = old.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alerts'").fetchone()
            rows = [dict(r) for r in old.execute("SELECT * FROM alerts ORDER BY started_at")] if has_table else []
        finally:
            old.close()
    except sqlite3.DatabaseError as exc:
        raise StateDatabaseError(
            f"cannot import the alerts of {path}: {exc}; move the file away to start without them"
        ) from None
    imported = 0
    with writing(engine) as conn:
        if conn.execute(select(meta.c.value).where(meta.c.key == _LEGACY_MARKER)).first() is None:
            imported = _import_rows(conn, rows)
            conn.execute(
                insert(meta).values(key=_LEGACY_MARKER, value=f"{imported} alerts at {time.time():.0f}")
            )
    target = path.with_name(LEGACY_FILE + ".imported")
    path.replace(target)
    for suffix in ("-wal", "-shm"):
        leftover = path.with_name(LEGACY_FILE + suffix)
        if leftover.exists():
            leftover.replace(target.with_name(target.name + suffix))
    log.info("imported %d alerts from %s (now %s)", imported, path, target.name)
    return imported


def _import_rows(conn: Connection, rows: list[dict[str, Any]]) -> int:
    import json

    existing = set(conn.execute(select(alerts.c.id)).scalars())
    count = 0
    for r in rows:
        if r["id"] in existing:
            continue
        extra = json.loads(r.get("extra") or "{}")
        conn.execute(
            insert(alerts).values(
                id=r["id"], rule_id=r["rule_id"], device_id=r["device_id"], metric=r["metric"],
                severity=r["severity"], state=r["state"], message=r["message"],
                started_at=r["started_at"], value=r["value"], resolved_at=r["resolved_at"],
                acknowledged_at=r["acknowledged_at"], acknowledged_by=r["acknowledged_by"],
                extra=extra if isinstance(extra, dict) else {},
            )
        )  # fmt: skip
        note = f"imported from {LEGACY_FILE}"
        events = [("raised", r["started_at"], ENGINE_ACTOR, note)]
        if r["acknowledged_at"] is not None:
            events.append(("acknowledged", r["acknowledged_at"], r["acknowledged_by"] or "", note))
        if r["resolved_at"] is not None:
            events.append(("resolved", r["resolved_at"], ENGINE_ACTOR, note))
        conn.execute(
            insert(alert_events),
            [{"alert_id": r["id"], "ts": ts, "kind": k, "actor": who, "note": n} for k, ts, who, n in events],
        )
        count += 1
    return count
