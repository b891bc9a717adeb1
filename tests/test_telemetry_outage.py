"""Zero loss across failures, against real VictoriaMetrics servers (the InfluxDB write API):

* the server is SIGKILLed for 60 s while readings flow, then restarted: every reading the spool
  accepted arrives exactly once (value by value), and a second server without dedup, fed from
  the same spool, tells how many duplicates the retries produced;
* eqmon itself (``python -m eqmon_app.cli run`` against ``eqmon simulate``) is SIGKILLed mid-run and
  restarted: no reading the spool accepted is lost or doubled in the server.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest
import yaml

from collectors.influx import InfluxSink
from collectors.sinks import SinkRunner
from collectors.spool import Spool
from eqmon.config import InfluxDB
from eqmon.domain import Reading
from simulators.servers import VictoriaMetricsServer, http_get
from tests.sitefiles import example_on_free_ports

OUTAGE = float(os.environ.get("EQMON_TEST_OUTAGE_SECONDS", "60"))
DEVICES = {f"dev-{i}": ("test_kind", f"room {i}") for i in range(10)}


def export(vm: VictoriaMetricsServer, match: str) -> list[dict]:  # type: ignore[type-arg]
    """Like VictoriaMetricsServer.export, with an explicit time range: the default end of
    /api/v1/export leaves out samples of the current second."""
    vm.flush()
    q = urllib.parse.urlencode({"match[]": match, "start": "0", "end": str(int(time.time()) + 86400)})
    status, body = http_get(f"{vm.url}/api/v1/export?{q}", timeout=30)
    assert status == 200, body[:300]
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def samples(vm: VictoriaMetricsServer, match: str) -> list[tuple[str, int, float]]:
    out = []
    for s in export(vm, match):
        dev = s["metric"]["device_id"]
        out += [(dev, t, v) for t, v in zip(s["timestamps"], s["values"], strict=True)]
    return out


@pytest.mark.integration
def test_server_sigkilled_for_a_minute_every_reading_arrives_once(tmp_path: Path) -> None:
    # -inmemoryDataFlushInterval=1s (the minimum): VictoriaMetrics persists what it acknowledged
    # within ~1 s, so its own loss at SIGKILL stays small (the default loses ~5 s).
    flush = ["-inmemoryDataFlushInterval=1s"]
    vm = VictoriaMetricsServer(dedup=True, extra_args=flush)
    raw = VictoriaMetricsServer(dedup=False, extra_args=flush)  # same spool, no dedup: counts duplicates
    accepted: list[Reading] = []
    confirms: list[tuple[float, str, int]] = []  # (when, sink, last seq) — to spot VM's own loss
    seq_of: dict[int, int] = {}  # index in accepted -> spool seq
    try:
        vm.start()
        raw.start()

        async def main() -> tuple[SinkRunner, SinkRunner, float, float]:
            spool = Spool(tmp_path / "spool.sqlite", sinks=["influxdb", "influxdb_raw"])
            real_confirm = spool.confirm

            def confirm(sink: str, seq: int) -> None:
                real_confirm(sink, seq)
                confirms.append((time.time(), sink, seq))

            spool.confirm = confirm  # type: ignore[method-assign]
            sink = InfluxSink(InfluxDB(url=vm.url, org="o", bucket="b", timeout=2), DEVICES)
            sink2 = InfluxSink(InfluxDB(url=raw.url, org="o", bucket="b", timeout=2), DEVICES)
            sink2.name = "influxdb_raw"  # type: ignore[misc]
            r1 = SinkRunner(sink, spool, batch_size=500, flush_interval=0.2, max_backoff=4)
            r2 = SinkRunner(sink2, spool, batch_size=500, flush_interval=0.2, max_backoff=4)
            r1.start()
            r2.start()
            stop = asyncio.Event()
            t0 = time.time()

            async def feeder(dev: str, k: int) -> None:
                i = 0
                while not stop.is_set():
                    # distinct millisecond timestamps per device; value encodes device and count
                    r = [Reading(dev, "value", float(k * 1_000_000 + i), t0 + i * 0.01 + k * 0.001)]
                    seq = await spool.put(r)
                    seq_of[len(accepted)] = seq
                    accepted.append(r[0])
                    i += 1
                    await asyncio.sleep(0.01)

            feeders = [asyncio.create_task(feeder(d, k)) for k, d in enumerate(DEVICES)]
            await asyncio.sleep(5)
            killed_at = time.time()
            vm.kill()
            raw.kill()
            await asyncio.sleep(OUTAGE)
            assert spool.depth > 0 and r1.failures > 0
            vm.start()
            raw.start()
            restarted_at = time.time()
            await asyncio.sleep(5)
            stop.set()
            await asyncio.gather(*feeders)
            deadline = time.monotonic() + 60
            while spool.depth and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert spool.depth == 0
            await r1.stop()
            await r2.stop()
            spool.close()
            return r1, r2, killed_at, restarted_at

        r1, r2, killed_at, restarted_at = asyncio.run(main())

        got = samples(vm, '{__name__="test_kind_value"}')
        got_raw = samples(raw, '{__name__="test_kind_value"}')
        expected = {(r.device_id, round(r.ts * 1000), float(r.value)) for r in accepted}  # type: ignore[arg-type]
        assert len(expected) == len(accepted)
        counts = Counter(got)
        doubled = [k for k, n in counts.items() if n > 1]
        assert not doubled, doubled[:5]
        unexpected = set(counts) - expected
        assert not unexpected, sorted(unexpected)[:5]
        missing = expected - set(counts)
        # VictoriaMetrics itself loses what it acknowledged in the last seconds before a SIGKILL
        # (simulators/servers.py). Those readings were confirmed by the sink before the kill; any
        # other missing reading is ours.
        confirmed_before_kill = max((seq for t, s, seq in confirms if s == "influxdb" and t <= killed_at), default=0)
        ours = [k for k in missing if seq_of[accepted_index(accepted, k)] > confirmed_before_kill]
        assert not ours, sorted(ours)[:5]
        # (VictoriaMetrics 1.112 even loses series it had created seconds before the kill, with
        # -inmemoryDataFlushInterval=1s: the ages printed here show it.)
        ages = sorted(killed_at - accepted[accepted_index(accepted, k)].ts for k in missing)
        print(f"\nmissing readings were accepted {ages[:1]}..{ages[-1:]} s before the kill")
        dup_raw = sum(n - 1 for n in Counter(got_raw).values() if n > 1)
        print(
            f"\nreadings accepted {len(accepted)}; in VM (dedup) {len(counts)}, lost by VM's own SIGKILL "
            f"{len(missing)}; writes to the raw VM: {len(got_raw)} samples, {dup_raw} duplicates from retries; "
            f"outage {restarted_at - killed_at:.0f} s; failed writes {r1.failures}/{r2.failures}"
        )
    finally:
        vm.close()
        raw.close()


def accepted_index(accepted: list[Reading], key: tuple[str, int, float]) -> int:
    for i, r in enumerate(accepted):
        if r.device_id == key[0] and round(r.ts * 1000) == key[1]:
            return i
    raise KeyError(key)


@pytest.mark.integration
def test_eqmon_sigkilled_mid_run_loses_and_doubles_nothing(tmp_path: Path) -> None:
    vm = VictoriaMetricsServer(dedup=True)
    data = example_on_free_ports(influx_url="http://127.0.0.1:1", interval="250ms")
    data["devices"] = [d for d in data["devices"] if d["protocol"] == "modbus"]
    data.pop("inventory")  # its bins name the smart shelves dropped here
    data.pop("mqtt", None)
    site_file = tmp_path / "site.yaml"
    cmd = [sys.executable, "-m", "eqmon_app.cli"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen([*cmd, *args], stdout=subprocess.DEVNULL, stderr=open(tmp_path / "log.txt", "ab"), env=env)
        procs.append(p)
        return p

    try:
        vm.start()
        data["telemetry"]["influxdb"]["url"] = vm.url
        data["telemetry"]["self_metrics_interval"] = "1s"
        site_file.write_text(yaml.safe_dump(data, sort_keys=False))
        sim = start("simulate", "--config", str(site_file))
        run = start("run", "--config", str(site_file), "--data-dir", str(tmp_path / "data"))
        time.sleep(6)
        run.send_signal(signal.SIGKILL)
        run.wait(10)
        time.sleep(1)
        run = start("run", "--config", str(site_file), "--data-dir", str(tmp_path / "data"))
        time.sleep(5)
        run.send_signal(signal.SIGTERM)
        assert run.wait(30) == 0
        sim.send_signal(signal.SIGTERM)
        sim.wait(30)

        from collectors.embedded import EmbeddedStore

        store = EmbeddedStore(tmp_path / "data" / "telemetry.sqlite", retention=1e9)
        spool = Spool(tmp_path / "data" / "spool.sqlite", sinks=["embedded", "influxdb"])
        try:
            assert spool.depth == 0  # both sinks caught up before the clean stop
        finally:
            spool.close()
        total = 0
        for d in data["devices"]:
            kind = d["kind"]
            for reg in d["registers"]:
                name = reg["name"]
                want = [(round(t * 1000), float(v)) for t, v, q in store.history(d["id"], name, 0, 2e9, 100000) if q == "good"]
                series = [s for s in export(vm, f'{{__name__="{kind}_{name}",device_id="{d["id"]}"}}')]
                got = [(t, v) for s in series for t, v in zip(s["timestamps"], s["values"], strict=True)]
                # VictoriaMetrics keeps about 12 significant digits
                assert [t for t, _ in sorted(got)] == [t for t, _ in sorted(want)], (d["id"], name)
                assert all(math.isclose(a, b, rel_tol=1e-9) for (_, a), (_, b) in zip(sorted(got), sorted(want), strict=True))
                assert len(set(got)) == len(got)
                total += len(want)
        store.close()
        # both runs contributed: polls every 250 ms over ~11 s for 4 devices
        assert total > 4 * 6 * 20
        internal = export(vm, '{__name__="eqmon_internal_readings_accepted"}')
        assert internal and internal[0]["values"]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        vm.close()
