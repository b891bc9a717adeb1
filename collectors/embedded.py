"""The embedded telemetry store: readings in one SQLite file, for sites without InfluxDB.

WAL mode, one writer connection on a dedicated thread (SQLite is blocking), each batch in one
transaction. Readers open their own connection.

Rollups: ``rollup_1m`` and ``rollup_1h`` keep min, max, sum and count of the good numeric
readings per device, metric and window start, maintained incrementally in the same transaction
as the raw rows. A reading already stored (same device, metric and timestamp: a batch re-sent
after a crash before the spool cursor moved) is filtered out first, so it is neither stored
twice nor counted twice in a rollup. Raw readings are removed after ``retention``, rollups after
``rollup_retention``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .spool import SpoolBatch, TelemetryRow

WINDOWS = {"1m": 60, "1h": 3600}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    device_id TEXT NOT NULL,
    metric    TEXT NOT NULL,
    ts        REAL NOT NULL,
    value_num REAL,
    value_text TEXT,
    quality   TEXT NOT NULL,
    unit      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (device_id, metric, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts);
"""
for _w in WINDOWS:
    _SCHEMA += f"""
CREATE TABLE IF NOT EXISTS rollup_{_w} (
    device_id TEXT NOT NULL,
    metric    TEXT NOT NULL,
    ts        INTEGER NOT NULL,
    min REAL NOT NULL, max REAL NOT NULL, sum REAL NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (device_id, metric, ts)
) WITHOUT ROWID;
"""

_INCOMING = """
CREATE TEMP TABLE IF NOT EXISTS incoming (
    device_id TEXT NOT NULL, metric TEXT NOT NULL, ts REAL NOT NULL,
    value_num REAL, value_text TEXT, quality TEXT NOT NULL, unit TEXT NOT NULL,
    PRIMARY KEY (device_id, metric, ts)
) WITHOUT ROWID;
"""


def _db_row(r: TelemetryRow) -> tuple[object, ...]:
    dev, metric, v, ts, q, unit = r
    t = type(v)
    if t is float or t is int or t is bool:
        return (dev, metric, ts, float(v), None, q, unit)  # type: ignore[arg-type]
    if v is None:
        return (dev, metric, ts, None, None, q, unit)
    return (dev, metric, ts, None, str(v), q, unit)


class EmbeddedStore:
    """Telemetry sink and history source backed by SQLite."""

    name = "embedded"

    def __init__(self, path: Path, *, retention: float, rollup_retention: float = 2 * 365 * 86400.0) -> None:
        self.path = path
        self.retention = retention
        self.rollup_retention = rollup_retention
        path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eqmon-sqlite")
        self._local = threading.local()
        self.written = 0
        self.duplicates = 0
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _writer(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
            db.executescript(_INCOMING)
        return db

    def _write_sync(self, batch: SpoolBatch) -> None:
        rows = [_db_row(r) for r in batch.rows]  # (the JSON is decoded here, off the event loop)
        db = self._writer()
        with db:
            db.execute("DELETE FROM incoming")
            db.executemany("INSERT OR IGNORE INTO incoming VALUES (?,?,?,?,?,?,?)", rows)
            db.execute(
                "DELETE FROM incoming WHERE EXISTS (SELECT 1 FROM readings r WHERE r.device_id=incoming.device_id "
                "AND r.metric=incoming.metric AND r.ts=incoming.ts)"
            )
            n = db.execute("INSERT INTO readings SELECT * FROM incoming").rowcount
            for w, secs in WINDOWS.items():
                db.execute(
                    f"INSERT INTO rollup_{w} (device_id, metric, ts, min, max, sum, count) "
                    f"SELECT device_id, metric, CAST(ts / {secs} AS INTEGER) * {secs}, "
                    "min(value_num), max(value_num), sum(value_num), count(*) FROM incoming "
                    "WHERE quality='good' AND value_num IS NOT NULL GROUP BY 1, 2, 3 "
                    "ON CONFLICT (device_id, metric, ts) DO UPDATE SET min=min(min, excluded.min), "
                    "max=max(max, excluded.max), sum=sum + excluded.sum, count=count + excluded.count"
                )
            db.execute("DELETE FROM incoming")
        self.written += n
        self.duplicates += len(rows) - n

    async def write(self, batch: SpoolBatch) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._write_sync, batch)

    def _prune_sync(self, now: float) -> int:
        db = self._writer()
        with db:
            n = db.execute("DELETE FROM readings WHERE ts < ?", (now - self.retention,)).rowcount
            for w in WINDOWS:
                db.execute(f"DELETE FROM rollup_{w} WHERE ts < ?", (now - self.rollup_retention,))
        return n

    async def prune(self, now: float) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._prune_sync, now)

    def history(
        self, device_id: str, metric: str, since: float, until: float, limit: int = 10000
    ) -> list[tuple[float, float | str | None, str]]:
        """Raw readings of one metric of one device, oldest first: (ts, value, quality)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT ts, COALESCE(value_num, value_text), quality FROM readings "
                "WHERE device_id=? AND metric=? AND ts>=? AND ts<=? ORDER BY ts LIMIT ?",
                (device_id, metric, since, until, limit),
            ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def aggregate(self, device_id: str, metric: str, since: float, until: float, window: str) -> list[dict[str, Any]]:
        """Per window (``ts`` = window start) of good numeric readings: min, mean, max, count,
        oldest first, from the rollup tables. Windows that start in [since, until]; the first
        one may include readings from before ``since`` (whole windows)."""
        secs = WINDOWS[window]
        start = int(since // secs) * secs
        with self._connect() as db:
            rows = db.execute(
                f"SELECT ts, min, sum / count, max, count FROM rollup_{window} "
                "WHERE device_id=? AND metric=? AND ts>=? AND ts<=? ORDER BY ts",
                (device_id, metric, start, until),
            ).fetchall()
        return [{"ts": float(t), "min": mn, "mean": mean, "max": mx, "count": c} for t, mn, mean, mx, c in rows]

    def count(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT count(*) FROM readings").fetchone()[0])

    def close(self) -> None:
        def _close() -> None:
            db = getattr(self._local, "db", None)
            if db is not None:
                db.close()
                self._local.db = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)
