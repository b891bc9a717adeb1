"""InfluxDB v2: the telemetry sink (writes) and the history reader (Flux). The only module of
eqmon that imports influxdb_client.

Writes: readings are formatted as line protocol here (about 1 µs a line, against about 12 µs
for influxdb-client's ``Point``) and POSTed gzip-compressed to ``/api/v2/write`` over one
keep-alive connection with the standard library's http.client: the write API is one documented
HTTP call, and doing it ourselves gives direct control of status codes, Retry-After and the
split-on-400 logic at a fraction of the client's per-batch cost. influxdb-client is used where
it earns its place: Flux queries and their annotated-CSV parsing.

Schema (docs/telemetry-schema.md): measurement = equipment kind; tags device_id and location;
one field per metric, named after the metric; numbers always as floats (no integer/float type
conflicts across devices); a reading of bad/stale quality is written as the string field
``<metric>_quality`` instead of a value; timestamps in milliseconds, so a re-sent point is
identical and overwrites itself. eqmon's own metrics go to the measurement ``eqmon_internal``.

Prepared entries: the sink is a ``PreparedSink`` (collectors/sinks.py): SinkRunner registers its
``prepare`` with the spool, so the spool's writer thread stores each entry's line protocol beside
its JSON, made by this same formatter from the same rows; ``write_prepared`` is then joining the
stored texts, gzip and POST. ``prepare``
declines (None) an entry with a device not in the site file or a value, timestamp or name whose
type the JSON round trip could change; such entries, and entries stored under another device map
(``prepare_key``), are formatted from the JSON at write time, to the same bytes.

Errors: 429 and 5xx (and connection failures) raise a retryable SinkError carrying Retry-After;
400/413/422 split the batch in halves until the bad points are isolated: they go to the
dead-letter store, every good point is written.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import http.client
import logging
import time
import urllib.parse
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from eqmon.config import InfluxDB

from .deadletters import DeadLetterStore
from .errors import SinkError
from .spool import SpoolBatch, StoredRow, TelemetryRow

log = logging.getLogger(__name__)

INTERNAL_DEVICE = "_eqmon"  # device id of eqmon's own metrics (not a valid site device id)
INTERNAL_MEASUREMENT = "eqmon_internal"
_SPLIT_STATUS = (400, 413, 422)


def _esc_key(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _esc_measurement(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def _esc_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def series_keys(devices: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """device id -> escaped ``measurement,tags`` prefix (tags sorted, as InfluxDB prefers)."""
    out = {
        dev: f"{_esc_measurement(kind)},device_id={_esc_key(dev)}" + (f",location={_esc_key(loc)}" if loc else "")
        for dev, (kind, loc) in devices.items()
    }
    out[INTERNAL_DEVICE] = f"{INTERNAL_MEASUREMENT},device_id={INTERNAL_DEVICE}"
    return out


class LineFormatter:
    """Spool rows (``TelemetryRow``, or the plain tuples the spool prepares from) -> line protocol, with the ``series field=`` prefix cached per
    device+metric."""

    def __init__(self, devices: Mapping[str, tuple[str, str]]) -> None:
        self._series = series_keys(devices)
        self._prefix: dict[tuple[str, str, bool], str] = {}

    def _make_prefix(self, key: tuple[str, str, bool]) -> str | None:
        dev, metric, good = key
        s = self._series.get(dev)
        if s is None:
            return None
        p = f"{s} {_esc_key(metric if good else metric + '_quality')}="
        self._prefix[key] = p
        return p

    def line(self, row: StoredRow) -> str | None:
        """One line, or None for a device that is not in the site (dead-lettered)."""
        dev, metric, v, ts, q, _ = row
        good = q == "good" and v is not None
        key = (dev, metric, good)
        p = self._prefix.get(key) or self._make_prefix(key)
        if p is None:
            return None
        if not good:
            return f"{p}{_esc_str(q)} {round(ts * 1000)}"
        t = type(v)
        if t is float:
            return f"{p}{v!r} {round(ts * 1000)}"
        if t is bool:
            return f"{p}{'true' if v else 'false'} {round(ts * 1000)}"
        if t is int:
            return f"{p}{float(v)!r} {round(ts * 1000)}"  # type: ignore[arg-type]  # (an int)
        return f"{p}{_esc_str(str(v))} {round(ts * 1000)}"

    def lines(self, rows: Sequence[StoredRow]) -> tuple[list[str], list[StoredRow]]:
        """(lines, rows of unknown devices)."""
        out: list[str] = []
        unknown: list[StoredRow] = []
        prefix = self._prefix
        for row in rows:
            dev, metric, v, ts, q, _ = row
            # fast path: a good float reading of a known series
            if q == "good" and type(v) is float:
                p = prefix.get((dev, metric, True))
                if p is not None:
                    out.append(f"{p}{v!r} {round(ts * 1000)}")
                    continue
            line = self.line(row)
            if line is None:
                unknown.append(row)
            else:
                out.append(line)
        return out, unknown

    def prepare(self, rows: Sequence[StoredRow]) -> str | None:
        """The lines of one spool entry joined by newlines, exactly ``"\\n".join(lines(rows))``
        of the rows decoded from its JSON; None when that cannot be guaranteed (a device not
        in the site file, or a type other than plain float/int/bool/str/None that JSON might
        turn into another) or there is nothing to write."""
        out: list[str] = []
        prefix = self._prefix
        plain, plain_ts = _PLAIN_VALUE, _PLAIN_TS
        for row in rows:
            dev, metric, v, ts, q, _ = row
            if type(ts) not in plain_ts:
                return None
            if q == "good" and type(v) is float:
                p = prefix.get((dev, metric, True))
                if p is not None:
                    out.append(f"{p}{v!r} {round(ts * 1000)}")
                    continue
            if type(v) not in plain or type(dev) is not str or type(metric) is not str or type(q) is not str:
                return None
            line = self.line(row)
            if line is None:
                return None
            out.append(line)
        return "\n".join(out) if out else None


_PLAIN_VALUE = frozenset((float, int, bool, str, type(None)))
_PLAIN_TS = frozenset((float, int))
LINE_FORMAT_VERSION = "1"  # bump whenever LineFormatter's output changes: old prepared texts are not used


def _prepare_key(devices: Mapping[str, tuple[str, str]]) -> str:
    h = hashlib.sha256(LINE_FORMAT_VERSION.encode())
    for dev, prefix in sorted(series_keys(devices).items()):
        h.update(f"{dev}\0{prefix}\0".encode())
    return "lp" + LINE_FORMAT_VERSION + ":" + h.hexdigest()[:32]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


class _BadRequest(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class InfluxWriter:
    """One keep-alive HTTP connection posting gzip'd line protocol to /api/v2/write."""

    def __init__(self, url: str, *, org: str, bucket: str, token: str, timeout: float, gzip_level: int = 1) -> None:
        u = urllib.parse.urlsplit(url)
        self._https = u.scheme == "https"
        self._host = u.hostname or "127.0.0.1"
        self._port = u.port or (443 if self._https else 80)
        base = u.path.rstrip("/")
        self._path = f"{base}/api/v2/write?" + urllib.parse.urlencode(
            {"org": org, "bucket": bucket, "precision": "ms"}
        )
        self._headers = {
            "Content-Type": "text/plain; charset=utf-8",
            "Content-Encoding": "gzip",
            "Accept": "application/json",
        }
        if token:
            self._headers["Authorization"] = f"Token {token}"
        self._timeout = timeout
        self._level = gzip_level
        self._conn: http.client.HTTPConnection | None = None
        self.requests = 0

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn

    def post(self, body: bytes) -> None:
        """POST one batch; raise SinkError (retryable) or _BadRequest (split and retry)."""
        data = zlib.compress(body, self._level, wbits=31)  # gzip
        conn = self._connection()
        self.requests += 1
        try:
            conn.request("POST", self._path, body=data, headers=self._headers)
            resp = conn.getresponse()
            text = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise SinkError(f"InfluxDB unreachable: {exc!r}", retryable=True) from None
        status = resp.status
        if resp.will_close:
            self.close()
        if 200 <= status < 300:
            return
        msg = text[:300].decode("utf-8", "replace")
        if status in _SPLIT_STATUS:
            raise _BadRequest(status, msg)
        retry_after = parse_retry_after(resp.getheader("Retry-After"))
        retryable = status in (408, 429) or status >= 500
        raise SinkError(f"InfluxDB answered {status}: {msg}", retryable=retryable, retry_after=retry_after)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class InfluxSink:
    """Writes spool batches to InfluxDB v2 (or anything that speaks its write API). A
    ``PreparedSink`` (collectors/sinks.py): its line protocol is made when readings are accepted."""

    name = "influxdb"

    def __init__(
        self,
        cfg: InfluxDB,
        devices: Mapping[str, tuple[str, str]],
        *,
        dead_letters: DeadLetterStore | None = None,
        on_dead_letter: Callable[[int], None] | None = None,
    ) -> None:
        """``devices`` maps device id to (kind, location) for the measurement and tags."""
        self.cfg = cfg
        self.formatter = LineFormatter(devices)
        self.prepare_key = _prepare_key(devices)
        # prepare runs in the spool's writer thread: it uses its own formatter (its own cache)
        self._prep_formatter = LineFormatter(devices)
        self.writer = InfluxWriter(cfg.url, org=cfg.org, bucket=cfg.bucket, token=cfg.token(), timeout=cfg.timeout)
        self.dead_letters = dead_letters
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eqmon-influx")
        self.written = 0
        self.dead_lettered = 0

    def prepare(self, rows: Sequence[StoredRow]) -> str | None:
        """One spool entry's line protocol (see ``LineFormatter.prepare``); in the spool's
        writer thread."""
        return self._prep_formatter.prepare(rows)

    def _dead_letter(self, lines: list[str], rows: Sequence[StoredRow] | None, reason: str) -> None:
        self.dead_lettered += len(lines) if rows is None else len(rows)
        if self.dead_letters is not None:
            self.dead_letters.add(self.name, lines, reason, rows)
        log.error("%s: %d point(s) dead-lettered: %s", self.name, len(lines) or len(rows or ()), reason)

    def _write_lines(self, lines: list[str]) -> None:
        """Write ``lines``; bisect on 400 until the bad ones are isolated."""
        try:
            self.writer.post("\n".join(lines).encode())
        except _BadRequest as exc:
            self._split(lines, exc)
            return
        self.written += len(lines)

    def _split(self, lines: list[str], exc: _BadRequest) -> None:
        """``lines`` were rejected as a whole: dead-letter a single line, else write each half."""
        if len(lines) == 1:
            self._dead_letter(lines, None, f"rejected by the server: {exc}")
            return
        mid = len(lines) // 2
        self._write_lines(lines[:mid])
        self._write_lines(lines[mid:])

    def _write_prepared_sync(self, batch: SpoolBatch, texts: Sequence[str]) -> None:
        # The body is the stored texts joined: the same bytes as the lines formatted from the
        # rows joined (each text is its entry's lines joined).
        try:
            self.writer.post("\n".join(texts).encode())
        except _BadRequest as exc:
            lines, _ = self.formatter.lines(batch.rows)  # the same lines, to find the bad ones
            self._split(lines, exc)
            return
        self.written += len(batch)

    def _write_rows(self, rows: list[TelemetryRow]) -> None:
        lines, unknown = self.formatter.lines(rows)
        if unknown:
            self._dead_letter([], unknown, "device not in the site file")
        if lines:
            self._write_lines(lines)

    async def write(self, batch: SpoolBatch) -> None:
        """Format the batch from its rows (entries without a prepared text) and write it."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._write_batch, batch)

    def _write_batch(self, batch: SpoolBatch) -> None:
        self._write_rows(batch.rows)  # (the JSON is decoded here, off the event loop)

    async def write_prepared(self, batch: SpoolBatch, texts: Sequence[str]) -> None:
        """Write a batch whose every entry has its line protocol prepared (``texts``)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._write_prepared_sync, batch, texts)

    def close(self) -> None:
        self._executor.submit(self.writer.close).result()
        self._executor.shutdown(wait=True)


# ---------------------------------------------------------------------------------------------
# History from InfluxDB with Flux (influxdb-client's query API)


def _flux_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _flux_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class InfluxHistory:
    """History of one device's metric from InfluxDB, raw or per window (min/mean/max/count),
    with the same shapes as the embedded store's queries."""

    def __init__(self, cfg: InfluxDB, devices: Mapping[str, tuple[str, str]]) -> None:
        from influxdb_client import InfluxDBClient

        self.cfg = cfg
        self._kinds = {dev: kind for dev, (kind, _) in devices.items()}
        self._client = InfluxDBClient(url=cfg.url, token=cfg.token(), org=cfg.org, timeout=int(cfg.timeout * 1000))
        self._query = self._client.query_api()

    def _base(self, device_id: str, field: str, since: float, until: float) -> str:
        kind = self._kinds[device_id]
        return (
            f"from(bucket: {_flux_str(self.cfg.bucket)})\n"
            f"  |> range(start: {_flux_time(since)}, stop: {_flux_time(until)})\n"
            f"  |> filter(fn: (r) => r._measurement == {_flux_str(kind)} and "
            f"r.device_id == {_flux_str(device_id)} and "
            f"(r._field == {_flux_str(field)} or r._field == {_flux_str(field + '_quality')}))"
        )

    def raw_flux(self, device_id: str, metric: str, since: float, until: float, limit: int) -> str:
        return self._base(device_id, metric, since, until) + f'\n  |> sort(columns: ["_time"])\n  |> limit(n: {limit})'

    def history(
        self, device_id: str, metric: str, since: float, until: float, limit: int = 10000
    ) -> list[tuple[float, Any, str]]:
        """Raw readings, oldest first: (ts, value, quality)."""
        out: list[tuple[float, Any, str]] = []
        for table in self._query.query(self.raw_flux(device_id, metric, since, until, limit), org=self.cfg.org):
            for rec in table.records:
                ts = rec.get_time().timestamp()
                if rec.get_field() == metric:
                    out.append((ts, rec.get_value(), "good"))
                else:
                    out.append((ts, None, str(rec.get_value())))
        out.sort(key=lambda p: p[0])
        return out[:limit]

    def aggregate_flux(self, device_id: str, metric: str, since: float, until: float, window: str) -> str:
        base = (
            f"from(bucket: {_flux_str(self.cfg.bucket)})\n"
            f"  |> range(start: {_flux_time(since)}, stop: {_flux_time(until)})\n"
            f"  |> filter(fn: (r) => r._measurement == {_flux_str(self._kinds[device_id])} and "
            f"r.device_id == {_flux_str(device_id)} and r._field == {_flux_str(metric)})"
        )
        parts = []
        for fn in ("min", "mean", "max", "count"):
            parts.append(
                f"  data |> aggregateWindow(every: {window}, fn: {fn}, createEmpty: false, timeSrc: \"_start\")"
                f' |> set(key: "agg", value: "{fn}")'
            )
        return f"data = {base}\nunion(tables: [\n" + ",\n".join(parts) + "\n])"

    def aggregate(
        self, device_id: str, metric: str, since: float, until: float, window: str
    ) -> list[dict[str, float]]:
        """Per window (start time ``ts``): min, mean, max, count; oldest first."""
        buckets: dict[float, dict[str, float]] = {}
        for table in self._query.query(self.aggregate_flux(device_id, metric, since, until, window), org=self.cfg.org):
            for rec in table.records:
                ts = rec.get_time().timestamp()
                agg = rec.values.get("agg")
                if agg not in ("min", "mean", "max", "count"):
                    continue
                buckets.setdefault(ts, {"ts": ts})[agg] = float(rec.get_value())
        out = [b for _, b in sorted(buckets.items())]
        for b in out:
            b["count"] = int(b.get("count", 0))
        return out

    def close(self) -> None:
        self._client.close()
