"""Benchmark: readings/s and CPU µs per reading from the durable spool to an InfluxDB-protocol
server (VictoriaMetrics from simulators/servers.py), beside a bare HTTP POST of the same line
protocol (formatted, gzip'd and POSTed in the same batches) measured in the same run.

    .venv/bin/python bench/telemetry_write.py [--readings 200000] [--rounds 5] [--batch 5000]

"spool → server" = SinkRunner reading the spool (SQLite WAL), joining the entries' line protocol
(prepared by the spool's writer thread at accept time, see collectors/spool.py) or formatting it
from their JSON, gzip, POST, confirming the cursor and deleting the entries. As in eqmon's
Service, the sink and its runner exist before readings are accepted (the runner registers the
sink's preparer with the spool); ``--unprepared`` creates them only after the fill, so every
entry is formatted from its JSON at drain time (the path of entries from an older spool).
Filling the spool (group-committed accept, which now includes formatting the line protocol) is
measured separately, with its CPU per reading: the end-to-end CPU is fill + drain.
CPU is this process's CPU time (all threads).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collectors.influx import InfluxSink, LineFormatter  # noqa: E402
from collectors.sinks import SinkRunner  # noqa: E402
from collectors.spool import Spool  # noqa: E402
from eqmon.config import InfluxDB  # noqa: E402
from eqmon.domain import Reading  # noqa: E402
from simulators.servers import VictoriaMetricsServer  # noqa: E402

DEVICES = {f"fridge-{i:03d}": ("medication_refrigerator", f"Ward {i % 20} utility room") for i in range(200)}
METRICS = ["temperature_c", "setpoint_c", "door_open_ratio", "compressor_run_hours", "humidity_pct"]


def make_readings(n: int, t0: float) -> list[Reading]:
    devs = list(DEVICES)
    out = []
    for i in range(n):
        d = devs[i % len(devs)]
        m = METRICS[(i // len(devs)) % len(METRICS)]
        out.append(Reading(d, m, 4.0 + (i % 1000) / 997, t0 + i * 0.001))
    return out


def fill_spool(spool: Spool, readings: list[Reading], per_call: int = 50) -> tuple[float, float]:
    async def main() -> None:
        await asyncio.gather(*(spool.put(readings[i : i + per_call]) for i in range(0, len(readings), per_call)))

    c, t = time.process_time(), time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - t, time.process_time() - c


def make_runner(spool: Spool, url: str, batch: int) -> SinkRunner:
    sink = InfluxSink(InfluxDB(url=url, org="o", bucket="b"), DEVICES)
    return SinkRunner(sink, spool, batch_size=batch, flush_interval=0.01)


def drain(spool: Spool, url: str, batch: int, runner: SinkRunner | None = None) -> tuple[float, float]:
    async def main() -> tuple[float, float]:
        nonlocal runner
        if runner is None:
            runner = make_runner(spool, url, batch)
        c0, t0 = time.process_time(), time.perf_counter()
        runner.start()
        while spool.depth:
            await asyncio.sleep(0.002)
        t1, c1 = time.perf_counter(), time.process_time()
        await runner.stop()
        return t1 - t0, c1 - c0

    return asyncio.run(main())


def bare_post(readings: list[Reading], url: str, batch: int) -> tuple[float, float]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    fmt = LineFormatter(DEVICES)
    headers = {"Content-Type": "text/plain; charset=utf-8", "Content-Encoding": "gzip"}
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, len(readings), batch):
        rows = [[r.device_id, r.metric, r.value, r.ts, "good", r.unit] for r in readings[i : i + batch]]
        lines, _ = fmt.lines(rows)
        body = zlib.compress("\n".join(lines).encode(), 1, wbits=31)
        conn.request("POST", "/api/v2/write?org=o&bucket=b&precision=ms", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 204, resp.status
    t1, c1 = time.perf_counter(), time.process_time()
    conn.close()
    return t1 - t0, c1 - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--unprepared", action="store_true", help="sink created after the fill: format from JSON")
    args = ap.parse_args()
    n = args.readings
    keys = ("spool_rate", "spool_cpu", "bare_rate", "bare_cpu", "fill_rate", "fill_cpu", "ratio")
    res: dict[str, list[float]] = {k: [] for k in keys}
    with VictoriaMetricsServer(dedup=True) as vm, tempfile.TemporaryDirectory() as tmp:
        base = time.time() - 30 * 86400
        for rnd in range(args.rounds):
            readings = make_readings(n, base + rnd * 3600)
            bare_readings = make_readings(n, base + rnd * 3600 + 1800)
            spool = Spool(Path(tmp) / f"spool{rnd}.sqlite", sinks=["influxdb"], max_readings=10 * n)
            runner = None if args.unprepared else make_runner(spool, vm.url, args.batch)
            fill, fcpu = fill_spool(spool, readings)
            # alternate which side goes first, against drift on a noisy machine
            if rnd % 2 == 0:
                wall, cpu = drain(spool, vm.url, args.batch, runner)
                bwall, bcpu = bare_post(bare_readings, vm.url, args.batch)
            else:
                bwall, bcpu = bare_post(bare_readings, vm.url, args.batch)
                wall, cpu = drain(spool, vm.url, args.batch, runner)
            spool.close()
            res["fill_rate"].append(n / fill)
            res["fill_cpu"].append(fcpu / n * 1e6)
            res["spool_rate"].append(n / wall)
            res["spool_cpu"].append(cpu / n * 1e6)
            res["bare_rate"].append(n / bwall)
            res["bare_cpu"].append(bcpu / n * 1e6)
            res["ratio"].append(bwall / wall)
            print(
                f"round {rnd + 1} ({'spool' if rnd % 2 == 0 else 'bare'} first): "
                f"spool→server {n / wall:,.0f} readings/s ({cpu / n * 1e6:.2f} CPU µs/reading) | "
                f"bare POST {n / bwall:,.0f} readings/s ({bcpu / n * 1e6:.2f} CPU µs/reading) | "
                f"ratio {bwall / wall:.0%} | spool fill {n / fill:,.0f} readings/s ({fcpu / n * 1e6:.2f} CPU µs/reading)",
                flush=True,
            )
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"\nmedians of {args.rounds} rounds, {n:,} readings each, batches of {args.batch:,}:")
    print(f"  spool → server : {med['spool_rate']:>10,.0f} readings/s  {med['spool_cpu']:.2f} CPU µs/reading")
    print(f"  bare HTTP POST : {med['bare_rate']:>10,.0f} readings/s  {med['bare_cpu']:.2f} CPU µs/reading")
    print(f"  ratio          : {med['spool_rate'] / med['bare_rate']:.0%} of bare POST (ratio of medians); "
          f"median of per-round ratios {med['ratio']:.0%}, lowest {min(res['ratio']):.0%}")
    print(f"  spool fill (accept path, 50 readings a call, group commit): {med['fill_rate']:,.0f} readings/s  "
          f"{med['fill_cpu']:.2f} CPU µs/reading")
    print(f"  end to end CPU (fill + drain): {med['fill_cpu'] + med['spool_cpu']:.2f} µs/reading"
          f"{' (unprepared: formatted from JSON at drain)' if args.unprepared else ''}")


if __name__ == "__main__":
    main()
