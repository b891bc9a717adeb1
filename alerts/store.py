"""Alert history in SQLite: every raise, acknowledgement and resolution is kept, so open alerts
survive a restart and the history can be reviewed (alarm volumes, response times)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from eqmon.domain import Alert, AlertState, Severity

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    rule_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL,
    started_at REAL NOT NULL,
    value REAL,
    resolved_at REAL,
    acknowledged_at REAL,
    acknowledged_by TEXT,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (state, started_at);
"""

_COLUMNS = (
    "id, rule_id, device_id, metric, severity, state, message, started_at, value, "
    "resolved_at, acknowledged_at, acknowledged_by, extra"
)


class AlertStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def save(self, a: Alert) -> None:
        value = a.value if isinstance(a.value, int | float) and not isinstance(a.value, bool) else None
        with self._db:
            self._db.execute(
                f"INSERT OR REPLACE INTO alerts ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    a.id, a.rule_id, a.device_id, a.metric, str(a.severity), str(a.state), a.message,
                    a.started_at, value, a.resolved_at, a.acknowledged_at, a.acknowledged_by,
                    json.dumps(a.extra),
                ),
            )  # fmt: skip

    def _rows(self, where: str, args: tuple[object, ...]) -> list[Alert]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM alerts {where}", args).fetchall()
        return [
            Alert(
                id=r[0], rule_id=r[1], device_id=r[2], metric=r[3], severity=Severity(r[4]),
                state=AlertState(r[5]), message=r[6], started_at=r[7], value=r[8],
                resolved_at=r[9], acknowledged_at=r[10], acknowledged_by=r[11],
                extra=json.loads(r[12]),
            )  # fmt: skip
            for r in rows
        ]

    def open_alerts(self) -> list[Alert]:
        return self._rows("WHERE state != 'resolved' ORDER BY started_at", ())

    def recent(self, limit: int = 200) -> list[Alert]:
        return self._rows("ORDER BY started_at DESC LIMIT ?", (limit,))

    def close(self) -> None:
        self._db.close()
