"""The InfluxDB sink against a real HTTP server of our own that answers 429 with Retry-After,
then 503, then 400 for batches holding one bad point; and the Flux history reader against
annotated-CSV responses in the documented format (InfluxDB 2.x cannot run here)."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from collectors.deadletters import DeadLetterStore
from collectors.influx import InfluxHistory, InfluxSink, parse_retry_after
from collectors.sinks import SinkRunner
from collectors.spool import Spool
from eqmon.config import InfluxDB
from eqmon.domain import Reading
from simulators.harness import http_server

DEVICES = {"fridge-1": ("medication_refrigerator", "Ward 4B"), "fridge-2": ("medication_refrigerator", "")}
BAD_VALUE = 666.5  # the point our server rejects


def test_retry_after_429_then_503_then_bisect_400_to_dead_letters(tmp_path: Path) -> None:
    requests: list[tuple[float, int, list[str]]] = []  # (time, status answered, lines)
    stored: list[str] = []

    def handle(h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert h.path.startswith("/api/v2/write?") and "precision=ms" in h.path
        assert h.headers["Content-Encoding"] == "gzip"
        assert h.headers["Authorization"] == "Token s3cret"
        lines = gzip.decompress(body).decode().split("\n")
        n = len(requests)
        if n == 0:
            status, headers = 429, {"Retry-After": "2"}
        elif n == 1:
            status, headers = 503, {}
        elif any(f"={BAD_VALUE!r} " in line for line in lines):
            status, headers = 400, {"Content-Type": "application/json"}
        else:
            status, headers = 204, {}
            stored.extend(lines)
        requests.append((time.monotonic(), status, lines))
        out = b'{"code":"invalid","message":"bad point"}' if status == 400 else b""
        return status, headers, out

    readings = [Reading("fridge-1" if i % 2 else "fridge-2", "temperature_c", 4.0 + i / 100, 1_700_000_000 + i) for i in range(1000)]
    readings[537] = Reading("fridge-2", "temperature_c", BAD_VALUE, 1_700_000_537)

    async def main(url: str) -> tuple[InfluxSink, SinkRunner, list[dict[str, object]]]:
        import os

        os.environ["EQMON_TEST_TOKEN"] = "s3cret"
        cfg = InfluxDB(url=url, org="hospital", bucket="eqmon", token_env="EQMON_TEST_TOKEN")
        spool = Spool(tmp_path / "spool.sqlite", sinks=["influxdb"])
        dead = DeadLetterStore(tmp_path / "dead.sqlite")
        sink = InfluxSink(cfg, DEVICES, dead_letters=dead)
        runner = SinkRunner(sink, spool, batch_size=5000, flush_interval=0.1, min_backoff=0.5)
        for i in range(0, 1000, 100):
            await spool.put(readings[i : i + 100])
        runner.start()
        deadline = time.monotonic() + 20
        while spool.depth and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await runner.stop()
        letters = dead.list()
        assert spool.depth == 0
        assert spool.prepared == 10  # the prepared line protocol was what went out (and was bisected)
        spool.close()
        dead.close()
        return sink, runner, letters

    with http_server(handle) as url:
        sink, runner, letters = asyncio.run(main(url))

    statuses = [s for _, s, _ in requests]
    assert statuses[:3] == [429, 503, 400]
    # Retry-After: 2 honoured; then backoff (0.5 s ± 20 %) after the 503.
    assert requests[1][0] - requests[0][0] >= 2.0
    assert requests[2][0] - requests[1][0] >= 0.4
    # Bisection: log2(1000) ≈ 10 levels, each with one failing half.
    assert statuses.count(400) == 11
    # The bad point is dead-lettered; every good one was written, exactly once.
    assert len(letters) == 1 and f"={BAD_VALUE!r} 1700000537000" in str(letters[0]["line"])
    assert "rejected by the server" in str(letters[0]["reason"])
    assert sink.dead_lettered == 1 and runner.written == 1000 and sink.written == 999
    expected = {f"medication_refrigerator,device_id={r.device_id}" + (",location=Ward\\ 4B" if r.device_id == "fridge-1" else "")
                + f" temperature_c={float(r.value)!r} {round(r.ts * 1000)}" for r in readings if r.value != BAD_VALUE}  # type: ignore[arg-type]
    assert len(stored) == len(set(stored)) == 999
    assert set(stored) == expected
    # Re-sent points are identical: the whole first batch (429, 503) is the same bytes.
    assert requests[0][2] == requests[1][2] == requests[2][2]


def test_prepared_and_json_paths_post_the_same_bytes(tmp_path: Path) -> None:
    """Entries whose line protocol the spool stored at accept time and entries formatted from
    their JSON at write time (an older spool, a declined entry) give the same request bodies,
    and a mixed batch is formatted from the JSON as a whole."""
    bodies: list[bytes] = []

    def handle(h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        bodies.append(gzip.decompress(body))
        return 204, {}, b""

    readings = [Reading("fridge-1" if i % 3 else "fridge-2", "temperature_c", 4.0 + i / 7, 1_700_000_000 + i / 3) for i in range(300)]
    readings[5] = Reading("fridge-1", "door", True, 1_700_000_005.5)
    readings[7] = Reading("fridge-2", "mode", 'a "b" c', 1_700_000_007)

    async def run(url: str, name: str, prepared: bool, declined: int | None = None) -> tuple[int, int]:
        spool = Spool(tmp_path / f"{name}.sqlite", sinks=["influxdb"])
        dead = DeadLetterStore(tmp_path / f"{name}-dead.sqlite")

        def make() -> SinkRunner:
            return SinkRunner(InfluxSink(InfluxDB(url=url, org="o", bucket="b"), DEVICES, dead_letters=dead), spool,
                              batch_size=10_000, flush_interval=0.05)

        runner = make() if prepared else None
        for i in range(0, 300, 50):
            chunk = readings[i : i + 50]
            if i // 50 == declined:
                chunk = [*chunk, Reading("not-in-site", "temperature_c", 1.0, 1_700_000_000)]
            await spool.put(chunk)
        runner = runner or make()
        runner.start()
        while spool.depth:
            await asyncio.sleep(0.02)
        await runner.stop()
        n_prepared = spool.prepared
        spool.close()
        letters = dead.count()
        dead.close()
        return n_prepared, letters

    with http_server(handle) as url:
        assert asyncio.run(run(url, "prepared", True)) == (6, 0)
        assert asyncio.run(run(url, "json", False)) == (0, 0)
        assert asyncio.run(run(url, "mixed", True, declined=2)) == (5, 1)
    assert len(bodies) == 3
    assert bodies[0] == bodies[1] == bodies[2]
    assert bodies[0].count(b"\n") == 299 and b'mode="a \\"b\\" c" 1700000007000' in bodies[0]


def test_retry_after_forms() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 29 <= parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) <= 31  # type: ignore[operator]


# ---------------------------------------------------------------------------------------------
# Flux reader on annotated CSV (https://docs.influxdata.com/influxdb/v2/reference/syntax/annotated-csv/)

RAW_CSV = """\
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string,string
#group,false,false,true,true,false,false,true,true,true,true
#default,_result,,,,,,,,,
,result,table,_start,_stop,_time,_value,_field,_measurement,device_id,location
,,0,2023-11-14T22:00:00Z,2023-11-14T23:00:00Z,2023-11-14T22:13:20Z,4.5,temperature_c,medication_refrigerator,fridge-1,Ward 4B
,,0,2023-11-14T22:00:00Z,2023-11-14T23:00:00Z,2023-11-14T22:13:22Z,4.75,temperature_c,medication_refrigerator,fridge-1,Ward 4B

#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,string,string,string,string,string
#group,false,false,true,true,false,false,true,true,true,true
#default,_result,,,,,,,,,
,result,table,_start,_stop,_time,_value,_field,_measurement,device_id,location
,,1,2023-11-14T22:00:00Z,2023-11-14T23:00:00Z,2023-11-14T22:13:21Z,bad,temperature_c_quality,medication_refrigerator,fridge-1,Ward 4B

"""


def _agg_table(table: int, agg: str, dtype: str, values: list[str]) -> str:
    head = (
        f"#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,{dtype},string,string,string,string\n"
        "#group,false,false,true,true,false,false,true,true,true,false\n"
        "#default,_result,,,,,,,,,\n"
        ",result,table,_start,_stop,_time,_value,_field,_measurement,device_id,agg\n"
    )
    times = ["2023-11-14T22:13:00Z", "2023-11-14T22:14:00Z"]
    rows = "".join(
        f",,{table},2023-11-14T22:00:00Z,2023-11-14T23:00:00Z,{t},{v},temperature_c,medication_refrigerator,fridge-1,{agg}\n"
        for t, v in zip(times, values, strict=True)
    )
    return head + rows + "\n"


AGG_CSV = (
    _agg_table(0, "min", "double", ["4.5", "4"])
    + _agg_table(1, "mean", "double", ["4.625", "4.5"])
    + _agg_table(2, "max", "double", ["4.75", "5"])
    + _agg_table(3, "count", "long", ["2", "3"])
)


def test_flux_history_reader_on_annotated_csv() -> None:
    queries: list[dict[str, object]] = []

    def handle(h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert h.path.startswith("/api/v2/query")
        assert "org=hospital" in h.path
        q = json.loads(body)
        queries.append(q)
        csv = AGG_CSV if "aggregateWindow" in str(q["query"]) else RAW_CSV
        return 200, {"Content-Type": "text/csv; charset=utf-8"}, csv.encode()

    with http_server(handle) as url:
        reader = InfluxHistory(InfluxDB(url=url, org="hospital", bucket="eqmon"), DEVICES)
        try:
            raw = reader.history("fridge-1", "temperature_c", 1_700_000_000, 1_700_003_600)
            agg = reader.aggregate("fridge-1", "temperature_c", 1_700_000_000, 1_700_003_600, "1m")
        finally:
            reader.close()

    assert raw == [(1_700_000_000.0, 4.5, "good"), (1_700_000_001.0, None, "bad"), (1_700_000_002.0, 4.75, "good")]
    assert agg == [
        {"ts": 1_699_999_980.0, "min": 4.5, "mean": 4.625, "max": 4.75, "count": 2},
        {"ts": 1_700_000_040.0, "min": 4.0, "mean": 4.5, "max": 5.0, "count": 3},
    ]
    raw_q, agg_q = str(queries[0]["query"]), str(queries[1]["query"])
    assert 'from(bucket: "eqmon")' in raw_q
    assert "range(start: 2023-11-14T22:13:20Z, stop: 2023-11-14T23:13:20Z)" in raw_q
    assert 'r._measurement == "medication_refrigerator"' in raw_q and 'r.device_id == "fridge-1"' in raw_q
    for fn in ("min", "mean", "max", "count"):
        assert f'aggregateWindow(every: 1m, fn: {fn}, createEmpty: false, timeSrc: "_start")' in agg_q
