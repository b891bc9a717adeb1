"""The sink dead-letter store: points a sink could never write (the server rejects them as
malformed, or their device is no longer in the site file), kept for people to inspect in a
SQLite table in the data directory (``dead_letters.sqlite``) and listed by the API
(``GET /api/v1/telemetry/dead-letters``). Never read back into the data path.

(MQTT messages that could not become readings are another list, in memory: collectors/mqtt.py.)
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .spool import StoredRow

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    sink TEXT NOT NULL,
    reason TEXT NOT NULL,
    line TEXT,
    reading TEXT
);
"""


class DeadLetterStore:
    """Points a sink could never write, with the reason: either the sink's own form of the
    point (``line``, e.g. line protocol the server rejected) or the reading itself (``reading``:
    ``[device_id, metric, value, ts, quality, unit]``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def add(
        self, sink: str, lines: Sequence[str], reason: str, rows: Sequence[StoredRow] | None = None
    ) -> None:
        """Keep ``rows`` (the readings) when given, else ``lines`` (the sink's form)."""
        now = time.time()
        items: list[tuple[float, str, str, str | None, str | None]]
        if rows is not None:
            items = [(now, sink, reason, None, json.dumps(list(r))) for r in rows]
        else:
            items = [(now, sink, reason, line, None) for line in lines]
        with self._lock, self._db:
            self._db.executemany("INSERT INTO dead_letters (at, sink, reason, line, reading) VALUES (?,?,?,?,?)", items)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    def list(self, limit: int = 1000) -> list[dict[str, object]]:
        """The newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, at, sink, reason, line, reading FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [
            {"id": i, "at": at, "sink": s, "reason": r, "line": line, "reading": json.loads(rd) if rd else None}
            for i, at, s, r, line, rd in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._db.close()
