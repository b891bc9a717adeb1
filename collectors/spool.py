"""The durable telemetry spool: the write-ahead log between collectors and sinks.

Format: one SQLite file in WAL mode with ``synchronous=FULL`` (every commit fsyncs the WAL).
Why SQLite rather than hand-written segment files: crash recovery (a torn write at SIGKILL or
power loss), atomic cursor updates, and deletion of confirmed entries come for free and are
well tested; the cost of a transaction is one fsync, which group commit spreads over every
``accept()`` waiting at that moment. Each ``put()`` becomes one row (an *entry*): the readings of
one call, encoded as a compact JSON array of ``[device_id, metric, value, ts, quality, unit]``
(JSON keeps bool, int, float, str and None apart and round-trips floats exactly, so a re-sent
reading is bit-identical); sinks get them back as :class:`TelemetryRow` in a :class:`SpoolBatch`.
Rows are numbered by ``seq`` (INTEGER PRIMARY KEY: the append order).

Group commit: ``put()`` hands its readings to one writer thread and waits; the writer takes
everything queued, inserts it in one transaction, commits (fsync) and only then wakes the
waiting callers. Many small concurrent calls cost one fsync together.

Sinks: every sink has a cursor (the last ``seq`` it confirmed), stored in the same file.
``read()`` returns entries after a cursor, in order; ``confirm()`` moves the cursor; an entry is
deleted once every registered sink has confirmed it. A confirm commits with ``synchronous=NORMAL``
(no fsync of its own): SIGKILL cannot lose it (the WAL is in the OS page cache), and a power loss
can only take back confirms made after the last fsync'd put, which rolls the cursor back and
makes the sink send those entries again: sinks are idempotent (same points, same bytes), and a
later put's fsync covers every confirm before it in the WAL, so the order is never broken and
nothing accepted is lost.

Prepared form: a sink may register a *preparer* (``add_preparer``, done by ``SinkRunner`` for a
``PreparedSink``, see collectors/sinks.py: e.g. the InfluxDB sink's line protocol). The writer thread
then stores, beside the JSON, the entry's text in that sink's form (column ``prep``, tagged with
``prep_key``, the preparer's identity: formatter version and device map). The sink reads that
text (``SpoolBatch.prepared``) and sends it as it is: no JSON decode and no per-reading Python
work on the drain path.
The preparer is the sink's own formatter run on exactly the rows that are JSON-encoded, and it
declines (NULL) anything it cannot format identically from the decoded JSON, so a prepared entry
and the same entry formatted from its JSON are the same bytes. Entries without a prepared text
(written before the preparer was registered, by an older eqmon, under another device map, or
declined) are formatted from the JSON as before. The JSON stays the record: the embedded store
and dead letters read it. One preparer per spool (the first registered key); other sinks read
the JSON.

Bound and full policy: the spool holds at most ``max_readings`` readings. When a put would
exceed it, the policy decides (both count and log, nothing vanishes silently):

* ``reject`` (default): ``put()`` raises :class:`SpoolFull` and nothing of that call is stored.
  The MQTT collector then does not acknowledge the message, so the broker keeps it; a Modbus poll
  counts its readings as lost (``Service``). The oldest data, which sinks still need, is kept.
* ``drop_oldest``: the oldest entries are deleted (counted in ``dropped_oldest``, logged once per
  episode) to make room; newest data wins.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from eqmon.domain import Quality, Reading, Value

from .errors import SpoolFull

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    accepted_at REAL NOT NULL,
    n INTEGER NOT NULL,
    body TEXT NOT NULL,
    prep_key TEXT,
    prep TEXT
);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
"""

_QUALITY = {str(q): q for q in Quality}


class TelemetryRow(NamedTuple):
    """One reading as the spool stores it and sinks receive it: a ``Reading`` whose quality is
    the plain string (``good``, ``bad``, ``stale``). A named tuple: it unpacks and indexes like
    the JSON array it is stored as (``[device_id, metric, value, ts, quality, unit]``), and
    building one costs about as little as a list."""

    device_id: str
    metric: str
    value: Value | None  # None only when quality is not good
    ts: float  # Unix epoch seconds, UTC
    quality: str
    unit: str


Row = TelemetryRow  # the former name

# A row as the spool encodes it when accepting readings (and hands it to a sink's preparer): a
# plain tuple in TelemetryRow's order (a TelemetryRow is one too). Plain, because the JSON
# encoder copies a tuple subclass into a list first (+0.15 µs a reading on the accept path).
StoredRow = tuple[str, str, Value | None, float, str, str]

_new_row = partial(tuple.__new__, TelemetryRow)  # TelemetryRow from a sequence, at C speed


def to_rows(readings: Sequence[Reading]) -> list[StoredRow]:
    return [(d, m, v, t, str(q), u) for d, m, v, t, q, u in readings]


def encode_rows(rows: Sequence[StoredRow]) -> str:
    return json.dumps(rows, separators=(",", ":"), ensure_ascii=False)


def encode(readings: Sequence[Reading]) -> str:
    return encode_rows(to_rows(readings))


def decode_rows(body: str) -> list[TelemetryRow]:
    """The rows of one entry's JSON."""
    return list(map(_new_row, json.loads(body)))


def to_reading(row: TelemetryRow) -> Reading:
    return Reading(row[0], row[1], row[2], row[3], _QUALITY[row[4]], row[5])


class SpoolBatch:
    """What a sink is given to write: consecutive spool entries, in spool order.

    * ``first_seq``, ``last_seq``: the entries' sequence numbers (the runner confirms
      ``last_seq`` once the sink has written the batch);
    * ``rows``: the readings as :class:`TelemetryRow`, decoded from the entries' JSON once, when
      first asked for (a sink that sends prepared texts never decodes them);
    * ``counts``: readings per entry; ``entry_rows(i)``: the rows of entry ``i``;
    * ``prepared``: for the sink whose preparer the spool runs (collectors/sinks.py
      ``PreparedSink``), each entry's prepared text, or None where the entry has none; None
      for every other sink.

    ``SpoolBatch(first, last, rows)`` makes a one-entry batch from rows (any sequences of the six
    values: they are turned into ``TelemetryRow``)."""

    __slots__ = ("first_seq", "last_seq", "counts", "prepared", "_bodies", "_rows")

    first_seq: int
    last_seq: int
    counts: list[int]
    prepared: list[str | None] | None

    def __init__(
        self,
        first_seq: int,
        last_seq: int,
        rows: Iterable[Sequence[Any]] | None = None,
        *,
        counts: list[int] | None = None,
        bodies: list[str] | None = None,
        prepared: list[str | None] | None = None,
    ) -> None:
        self.first_seq = first_seq
        self.last_seq = last_seq
        self._rows: list[TelemetryRow] | None = None if rows is None else list(map(_new_row, rows))
        self._bodies = bodies
        self.counts = counts if counts is not None else [len(self._rows or ())]
        self.prepared = prepared

    def __len__(self) -> int:
        return sum(self.counts)

    def __repr__(self) -> str:
        return f"SpoolBatch(seq {self.first_seq}..{self.last_seq}, {len(self)} readings)"

    def entry_rows(self, i: int) -> list[TelemetryRow]:
        """The rows of entry ``i``."""
        if self._bodies is None:
            return self._rows or []
        return decode_rows(self._bodies[i])

    @property
    def rows(self) -> list[TelemetryRow]:
        if self._rows is None:
            rows: list[TelemetryRow] = []
            for body in self._bodies or ():
                rows.extend(decode_rows(body))
            self._rows = rows
        return self._rows

    def readings(self) -> list[Reading]:
        return [to_reading(r) for r in self.rows]


TelemetryBatch = SpoolBatch


class Spool:
    """See the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        max_readings: int = 10_000_000,
        full_policy: str = "reject",
        sinks: Iterable[str] = (),
    ) -> None:
        if full_policy not in ("reject", "drop_oldest"):
            raise ValueError(f"unknown full policy {full_policy!r}")
        self.path = path
        self.max_readings = max_readings
        self.full_policy = full_policy
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._connect()
        self._db.executescript(_SCHEMA)
        columns = {c[1] for c in self._db.execute("PRAGMA table_info(entries)")}
        for col in ("prep_key", "prep"):  # a spool file of an older eqmon
            if col not in columns:
                self._db.execute(f"ALTER TABLE entries ADD COLUMN {col} TEXT")
        self._prep_key: str | None = None
        self._prepare: Callable[[Sequence[StoredRow]], str | None] | None = None
        self._prep_sinks: set[str] = set()
        self._sinks = list(sinks)
        with self._db:
            known = {s for (s,) in self._db.execute("SELECT sink FROM cursors")}
            first = self._db.execute("SELECT MIN(seq) - 1 FROM entries").fetchone()[0]
            if first is None:  # empty: start after the highest seq ever confirmed
                first = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM cursors").fetchone()[0]
            for s in self._sinks:
                if s not in known:
                    self._db.execute("INSERT INTO cursors VALUES (?, ?)", (s, first))
            for s in known - set(self._sinks):
                log.warning("spool: sink %r is no longer configured; forgetting its cursor", s)
                self._db.execute("DELETE FROM cursors WHERE sink=?", (s,))
        self._cursors: dict[str, int] = dict(self._db.execute("SELECT sink, seq FROM cursors").fetchall())
        self.depth = 0  # readings in the spool
        self._last_seq = 0
        self._reload_locked()
        self._trim_locked()
        # counters
        self.accepted = 0
        self.rejected_full = 0
        self.dropped_oldest = 0
        self.commits = 0
        self.commit_seconds = 0.0
        self.prepared = 0  # entries stored with a prepared text
        self._full_logged = False
        # group commit
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._queue: list[tuple[list[Reading], Future[int]]] = []
        self._closed = False
        self._readers = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._writer = threading.Thread(target=self._write_loop, name="eqmon-spool-writer", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def add_preparer(self, sink: str, key: str, prepare: Callable[[Sequence[StoredRow]], str | None]) -> bool:
        """From now on, store each entry's text as ``prepare(rows)`` makes it (None: declined)
        beside its JSON, for ``sink`` and any other sink registering the same ``key``. Returns
        False when another key was registered first (``sink`` then reads only the JSON)."""
        with self._lock:
            if self._prep_key is None:
                self._prep_key, self._prepare = key, prepare
            elif self._prep_key != key:
                log.info("spool: sink %r formats differently from the prepared form; it reads the JSON", sink)
                return False
            self._prep_sinks.add(sink)
            return True

    def _prepared(self, rows: list[StoredRow]) -> str | None:
        prepare = self._prepare
        if prepare is None:
            return None
        try:
            return prepare(rows)
        except Exception:  # never a reason to refuse a reading: the JSON path formats it later
            log.exception("spool: preparing an entry failed; it will be formatted from its JSON")
            return None

    # -- writing ----------------------------------------------------------------------------

    def put_nowait(self, readings: Sequence[Reading]) -> Future[int]:
        """Queue readings for the next group commit; the future resolves (to the entry's seq)
        once they are fsync'd, or fails with SpoolFull."""
        fut: Future[int] = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("spool is closed")
            self._queue.append((list(readings), fut))
            self._cv.notify()
        return fut

    async def put(self, readings: Sequence[Reading]) -> int:
        """Durably store readings; returns once they are on disk. Raises SpoolFull."""
        return await asyncio.wrap_future(self.put_nowait(readings))

    def put_sync(self, readings: Sequence[Reading]) -> int:
        return self.put_nowait(readings).result()

    def _write_loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue and self._closed:
                    return
                work, self._queue = self._queue, []
            try:
                self._commit(work)
            except Exception as exc:  # disk full, I/O error: every waiting caller learns it
                log.exception("spool commit failed")
                for _, fut in work:
                    if not fut.done():
                        fut.set_exception(exc)

    def _commit(self, work: list[tuple[list[Reading], Future[int]]]) -> None:
        t0 = time.perf_counter()
        now = time.time()
        rows = []
        results: list[tuple[Future[int], int | BaseException]] = []
        db = self._db
        # Encoding (and preparing) outside the lock: confirm() does not wait for it.
        key = self._prep_key
        encoded: list[tuple[str, str | None]] = []
        for readings, _ in work:
            r = to_rows(readings)
            encoded.append((encode_rows(r), self._prepared(r) if key is not None else None))
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                for (readings, fut), (body, prep) in zip(work, encoded, strict=True):
                    n = len(readings)
                    if n == 0:
                        results.append((fut, self._last_seq))
                        continue
                    if self.depth + n > self.max_readings:
                        if self.full_policy == "drop_oldest" and n <= self.max_readings:
                            self._drop_oldest_locked(self.depth + n - self.max_readings)
                        else:
                            self.rejected_full += n
                            if not self._full_logged:
                                self._full_logged = True
                                log.error(
                                    "telemetry spool full (%d of %d readings): rejecting new readings "
                                    "(counted in rejected_full) until sinks catch up",
                                    self.depth, self.max_readings,
                                )
                            results.append((fut, SpoolFull(f"telemetry spool full ({self.depth} readings)")))
                            continue
                    self._last_seq += 1
                    rows.append((self._last_seq, now, n, body, key if prep is not None else None, prep))
                    self.prepared += prep is not None
                    self.depth += n
                    self.accepted += n
                    results.append((fut, self._last_seq))
                if rows:
                    db.executemany("INSERT INTO entries VALUES (?,?,?,?,?,?)", rows)
                db.execute("COMMIT")  # synchronous=FULL: the WAL is fsync'd here
            except BaseException:
                db.execute("ROLLBACK")
                self._reload_locked()
                raise
        self.commits += 1
        self.commit_seconds += time.perf_counter() - t0
        for fut, res in results:
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)

    def _reload_locked(self) -> None:
        row = self._db.execute("SELECT COALESCE(SUM(n), 0), COALESCE(MAX(seq), 0) FROM entries").fetchone()
        # seq never goes back, even when every entry was deleted: cursors remember the highest.
        self.depth, self._last_seq = int(row[0]), max(int(row[1]), *self._cursors.values(), 0)

    def _drop_oldest_locked(self, need: int) -> None:
        dropped = 0
        last = 0
        for seq, n in self._db.execute("SELECT seq, n FROM entries ORDER BY seq"):
            if dropped >= need:
                break
            dropped += n
            last = seq
        if last:
            self._db.execute("DELETE FROM entries WHERE seq <= ?", (last,))
            self.depth -= dropped
            if self.dropped_oldest == 0 or not self._full_logged:
                log.error(
                    "telemetry spool full: dropped the oldest %d readings (policy drop_oldest, counted)",
                    dropped,
                )
                self._full_logged = True
            self.dropped_oldest += dropped

    # -- reading ----------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        db = getattr(self._readers, "db", None)
        if db is None:
            db = self._readers.db = self._connect()
            with self._lock:
                self._reader_conns.append(db)
        return db

    def cursor(self, sink: str) -> int:
        return self._cursors[sink]

    def read(self, sink: str, max_readings: int, after: int | None = None) -> SpoolBatch | None:
        """Entries after ``sink``'s cursor (or after seq ``after``, to read ahead), whole
        entries, up to about ``max_readings`` readings (at least one entry). None when there
        is nothing more. Nothing is decoded here (see SpoolBatch)."""
        if after is None:
            after = self._cursors[sink]
        db = self._reader()
        counts: list[int] = []
        bodies: list[str] = []
        total = 0
        first = last = 0
        if sink in self._prep_sinks:
            preps: list[str | None] | None = []
            cur = db.execute(
                "SELECT seq, n, body, CASE WHEN prep_key = ? THEN prep END FROM entries WHERE seq > ? ORDER BY seq",
                (self._prep_key, after),
            )
        else:
            preps = None
            cur = db.execute("SELECT seq, n, body, NULL FROM entries WHERE seq > ? ORDER BY seq", (after,))
        try:
            for seq, n, body, prep in cur:
                if not first:
                    first = seq
                counts.append(n)
                bodies.append(body)
                if preps is not None:
                    preps.append(prep)
                last = seq
                total += n
                if total >= max_readings:
                    break
        finally:
            cur.close()
        if not first:
            return None
        return SpoolBatch(first, last, counts=counts, bodies=bodies, prepared=preps)

    def pending(self, sink: str) -> int:
        """Readings not yet confirmed by ``sink``."""
        db = self._reader()
        return int(
            db.execute("SELECT COALESCE(SUM(n), 0) FROM entries WHERE seq > ?", (self._cursors[sink],)).fetchone()[0]
        )

    def confirm(self, sink: str, seq: int) -> None:
        """``sink`` has written everything up to ``seq``: move its cursor (durably) and delete
        the entries that every sink has confirmed."""
        with self._lock:
            db = self._db
            db.execute("PRAGMA synchronous=NORMAL")  # no fsync of its own: see the module docstring
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute("UPDATE cursors SET seq=? WHERE sink=? AND seq < ?", (seq, sink, seq))
                    self._cursors[sink] = max(self._cursors[sink], seq)
                    self._trim_locked()
                    db.execute("COMMIT")
                    if self._full_logged and self.depth < 0.9 * self.max_readings:
                        log.info("telemetry spool has room again (%d readings)", self.depth)
                        self._full_logged = False
                except BaseException:
                    db.execute("ROLLBACK")
                    self._cursors[sink] = int(
                        db.execute("SELECT seq FROM cursors WHERE sink=?", (sink,)).fetchone()[0]
                    )
                    self._reload_locked()
                    raise
            finally:
                db.execute("PRAGMA synchronous=FULL")

    def _trim_locked(self) -> None:
        upto = min(self._cursors.values()) if self._cursors else self._last_seq
        row = self._db.execute("SELECT COALESCE(SUM(n), 0) FROM entries WHERE seq <= ?", (upto,)).fetchone()
        if row[0]:
            self._db.execute("DELETE FROM entries WHERE seq <= ?", (upto,))
            self.depth -= int(row[0])

    def oldest_age(self, now: float | None = None) -> float:
        """Seconds since the oldest entry still in the spool was accepted (0 when empty)."""
        row = self._reader().execute("SELECT accepted_at FROM entries ORDER BY seq LIMIT 1").fetchone()
        if row is None:
            return 0.0
        return max(0.0, (now if now is not None else time.time()) - float(row[0]))

    @property
    def fill(self) -> float:
        return self.depth / self.max_readings if self.max_readings else 0.0

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._writer.join()
        with self._lock:
            for c in self._reader_conns:
                c.close()
            self._reader_conns.clear()
            self._db.close()

