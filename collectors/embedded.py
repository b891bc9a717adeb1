"""The embedded telemetry store: readings in one SQLite file, for sites without InfluxDB.

WAL mode, one writer connection on a dedicated thread (SQLite is blocking), batched inserts in
one transaction. Readers open their own connection. Old readings are removed after
``retention`` seconds.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from eqmon.domain import Reading

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


def _row(r: Reading) -> tuple[object, ...]:
    v = r.value
    if isinstance(v, bool):
        num, text = float(v), None
    elif isinstance(v, int | float):
        num, text = float(v), None
    elif v is None:
        num, text = None, None
    else:
        num, text = None, str(v)
    return (r.device_id, r.metric, r.ts, num, text, str(r.quality), r.unit)


class EmbeddedStore:
    """Telemetry sink and history source backed by SQLite."""

    name = "embedded"

    def __init__(self, path: Path, *, retention: float) -> None:
        self.path = path
        self.retention = retention
        path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eqmon-sqlite")
        self._local = threading.local()
        self.written = 0
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
        return db

    def _write_sync(self, rows: list[tuple[object, ...]]) -> None:
        db = self._writer()
        with db:
            # Same device, metric and timestamp is one reading: a re-sent one replaces itself.
            db.executemany("INSERT OR REPLACE INTO readings VALUES (?,?,?,?,?,?,?)", rows)
        self.written += len(rows)

    async def write(self, batch: Sequence[Reading]) -> None:
        rows = [_row(r) for r in batch]
        await asyncio.get_running_loop().run_in_executor(self._executor, self._write_sync, rows)

    def _prune_sync(self, before: float) -> int:
        db = self._writer()
        with db:
            return db.execute("DELETE FROM readings WHERE ts < ?", (before,)).rowcount

    async def prune(self, now: float) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._prune_sync, now - self.retention)

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
