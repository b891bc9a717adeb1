"""Benchmark (a script that prints figures, not a test): the alert engine's throughput, and the
latency from the reading that completes a rule's delay to a webhook receiver getting the body.

    .venv/bin/python bench/alerts_eval.py                       # both parts
    .venv/bin/python bench/alerts_eval.py --part engine [--devices 5000 --rules 10000 --runs 7]
    .venv/bin/python bench/alerts_eval.py --part latency [--alerts 300 --rate 20]
    .venv/bin/python bench/alerts_eval.py --part latency --postgres postgresql://user@host/db

**engine**: one ``AlertEngine`` (alerts/engine.py) over a synthetic site of N Modbus devices of
four kinds (medication refrigerators, vaccine freezers, room environment monitors, oxygen
pipeline monitors; two or three metrics each, one of them watched by no rule) and R rules of
every kind in alerts/rules.py: threshold, range, cumulative_excursion, rate_of_change, stuck,
state and sensor_failure. Almost all rules name their devices (``devices:``, lists of 1-3
devices of one kind, several rules per device); a few name a ``device_kind``. Readings come as
the bus hands them to the engine (``on_readings``, lists of ``--batch`` readings, each device's
readings of a poll together), one poll of every device per simulated minute. Mostly in range:
each device goes through a 30-minute excursion once every 25 simulated hours (so ~2 % of the
devices are in one at any time: too warm, pressure low …), its door stays open 7 minutes every
400, its temperature reads "sensor failure" 8 minutes every 1,500 and a freezer's value freezes
90 minutes every 2,000 — enough to raise and resolve alerts of every kind in every run. The
readings of a run are built before it is timed; the timed part is ``on_readings`` alone (with
the engine's alert copies to a counting ``on_change``). As with Modbus polling in production
(collectors/scheduler.py), the objects built before the run are frozen out of the cyclic GC.
Runs follow one another on the same engine (simulated time goes on); the median is printed.

**latency**: the production path of a notification, in one process: a ``Service``
(eqmon_app/service.py; built, not started: no collectors, no API) whose state database is SQLite
in a temp dir (or ``--postgres``), migrated by ``eqmon.db.upgrade`` as at start-up; its bus, its
engine, its ``_on_alert`` (``AlertStore.save`` with the outbox rows of the ``NotificationPlanner``
in the same transaction, then ``Dispatcher.wake``), its dispatcher running on the event loop, and
the webhook channel (signed, ``urllib`` in a worker thread) posting to a real HTTP server on
loopback (simulators/harness.py ``http_server``). Each alert: a reading beyond a threshold rule's
limit, then — ``--gap`` later — the reading that completes the rule's ``for`` (its timestamp
``for`` after the first), published on the bus in a batch of ``--batch`` readings like any other;
the latency is from just before that publish to the receiver having read the body (one clock:
``perf_counter`` in this process). Alerts start at ``--rate`` a second and resolve a little later
(their resolved notices are sent too, and not measured). Printed: p50/p90/p99/max of the latency,
and of its two parts — the engine and the alert's save on the event loop (publish → return), and
the rest (dispatcher → HTTP POST → receiver).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerts.engine import AlertEngine  # noqa: E402
from eqmon.config import Site  # noqa: E402
from eqmon.domain import Alert, Quality, Reading  # noqa: E402
from simulators.harness import http_server  # noqa: E402

T0 = 1_800_000_000.0
MINUTE = 60.0
EXCURSION_EVERY, EXCURSION_LEN = 1500, 30  # polls (simulated minutes)

# kind: (share of the devices, registers)
KINDS: dict[str, tuple[float, list[dict[str, Any]]]] = {
    "medication_refrigerator": (0.55, [
        {"name": "temperature_c", "address": 0, "data_type": "int16", "scale": 0.1, "unit": "°C"},
        {"name": "door_open", "address": 1, "data_type": "bool"},
        {"name": "compressor_run_hours", "address": 2, "data_type": "uint32", "unit": "h"},
    ]),
    "vaccine_freezer": (0.20, [
        {"name": "temperature_c", "address": 0, "data_type": "int16", "scale": 0.1, "unit": "°C"},
        {"name": "door_open", "address": 1, "data_type": "bool"},
        {"name": "alarm_state", "address": 2, "enum": {0: "ok", 1: "fault", 2: "power_fail"}},
    ]),
    "room_environment": (0.15, [
        {"name": "temperature_c", "address": 0, "data_type": "int16", "scale": 0.1, "unit": "°C"},
        {"name": "humidity_pct", "address": 1, "scale": 0.1, "unit": "%"},
        {"name": "pressure_pa", "address": 2, "data_type": "int16", "scale": 0.1, "unit": "Pa"},
    ]),
    "oxygen_pipeline": (0.10, [
        {"name": "pressure_kpa", "address": 0, "scale": 0.1, "unit": "kPa"},
        {"name": "flow_lpm", "address": 1, "scale": 0.1, "unit": "L/min"},
    ]),
}

# Rules naming their devices, by device kind, used in turn.
DEVICE_RULES: dict[str, list[dict[str, Any]]] = {
    "medication_refrigerator": [
        {"kind": "range", "metric": "temperature_c", "low": 2, "high": 8, "low_for": "10m", "high_for": "15m",
         "hysteresis": 0.5, "action": "move the medication to a working fridge"},
        {"kind": "cumulative_excursion", "metric": "temperature_c", "low": 2, "high": 8, "window": "24h",
         "limit": "60m", "severity": "critical"},
        {"kind": "rate_of_change", "metric": "temperature_c", "max_change": 3, "per": "10m", "direction": "rise"},
        {"kind": "state", "metric": "door_open", "equals": True, "for": "5m", "severity": "info"},
        {"kind": "threshold", "metric": "temperature_c", "above": 10, "for": "5m", "hysteresis": 1,
         "severity": "critical"},
    ],
    "vaccine_freezer": [
        {"kind": "range", "metric": "temperature_c", "low": -35, "high": -15, "high_for": "10m", "low_for": "30m"},
        {"kind": "state", "metric": "alarm_state", "in": ["fault", "power_fail"], "severity": "critical"},
        {"kind": "threshold", "metric": "temperature_c", "above": -10, "for": "2m", "severity": "critical"},
        {"kind": "stuck", "metric": "temperature_c", "for": "1h", "tolerance": 0.01},
    ],
    "room_environment": [
        {"kind": "threshold", "metric": "pressure_pa", "below": 2.5, "for": "5m", "hysteresis": 0.5},
        {"kind": "range", "metric": "humidity_pct", "low": 30, "high": 60, "low_for": "30m", "high_for": "30m"},
        {"kind": "range", "metric": "temperature_c", "low": 18, "high": 26, "low_for": "30m", "high_for": "30m"},
    ],
    "oxygen_pipeline": [
        {"kind": "threshold", "metric": "pressure_kpa", "below": 345, "for": "1m", "hysteresis": 5,
         "severity": "critical", "action": "call Facilities (medical gas)"},
        {"kind": "threshold", "metric": "pressure_kpa", "above": 380, "for": "1m"},
        {"kind": "rate_of_change", "metric": "pressure_kpa", "max_change": 20, "per": "5m", "direction": "fall"},
    ],
}

# Rules naming a device kind (every device of that kind).
KIND_RULES: list[dict[str, Any]] = [
    {"kind": "sensor_failure", "metric": "temperature_c", "device_kind": "medication_refrigerator", "for": "5m"},
    {"kind": "sensor_failure", "metric": "temperature_c", "device_kind": "vaccine_freezer", "for": "5m"},
    {"kind": "sensor_failure", "metric": "temperature_c", "device_kind": "room_environment", "for": "15m"},
    {"kind": "sensor_failure", "metric": "pressure_kpa", "device_kind": "oxygen_pipeline", "severity": "critical"},
    {"kind": "stuck", "metric": "temperature_c", "device_kind": "medication_refrigerator", "for": "2h",
     "tolerance": 0.01},
    {"kind": "state", "metric": "door_open", "device_kind": "medication_refrigerator", "equals": True, "for": "30m",
     "severity": "critical"},
    {"kind": "state", "metric": "door_open", "device_kind": "vaccine_freezer", "equals": True, "for": "3m"},
    {"kind": "threshold", "metric": "humidity_pct", "device_kind": "room_environment", "above": 80, "for": "1h"},
]


def device_kinds(n: int) -> list[str]:
    """The kind of each of ``n`` devices, interleaved in the kinds' proportions."""
    out: list[str] = []
    acc = dict.fromkeys(KINDS, 0.0)
    for _ in range(n):
        for k, (share, _) in KINDS.items():
            acc[k] += share
        k = max(acc, key=lambda x: acc[x])
        acc[k] -= 1.0
        out.append(k)
    return out


def site_dict(n_devices: int, n_rules: int) -> dict[str, Any]:
    kinds = device_kinds(n_devices)
    devices = [
        {"id": f"dev-{i:05d}", "name": f"{k.replace('_', ' ')} {i}", "kind": k, "location": f"Ward {i % 97}",
         "protocol": "modbus", "host": f"10.{i // 250}.{i % 250}.10", "registers": KINDS[k][1]}
        for i, k in enumerate(kinds)
    ]  # fmt: skip
    by_kind: dict[str, list[str]] = {k: [] for k in KINDS}
    for d in devices:
        by_kind[d["kind"]].append(d["id"])
    rules: list[dict[str, Any]] = [{"id": f"kind-{j}", **r} for j, r in enumerate(KIND_RULES)]
    # Device rules: each kind gets its share of the rules; each rule names 1, 1, 2 or 3 devices
    # (taken in turn), its template in turn among the kind's.
    next_dev = dict.fromkeys(KINDS, 0)
    next_tpl = dict.fromkeys(KINDS, 0)
    kind_cycle = device_kinds(n_rules - len(rules))
    for j, k in enumerate(kind_cycle):
        size = (1, 1, 2, 3)[j % 4]
        ids = by_kind[k]
        group = [ids[(next_dev[k] + x) % len(ids)] for x in range(size)]
        next_dev[k] += size
        tpl = DEVICE_RULES[k][next_tpl[k] % len(DEVICE_RULES[k])]
        next_tpl[k] += 1
        rules.append({"id": f"rule-{j:05d}", "devices": list(dict.fromkeys(group)), **tpl})
    return {"site": {"name": "bench hospital", "timezone": "Europe/Berlin"}, "devices": devices,
            "alerts": {"rules": rules}}  # fmt: skip


class Readings:
    """Each device's poll at simulated minute ``c``: mostly in range, with the excursions and
    faults described in the module docstring, deterministic."""

    def __init__(self, site: Site, seed: int = 1) -> None:
        rnd = random.Random(seed)
        self.noise = [rnd.uniform(-0.15, 0.15) for _ in range(1009)]
        self.devices = [(i, d.id, d.kind) for i, d in enumerate(site.devices)]

    def poll(self, c: int) -> list[Reading]:
        out: list[Reading] = []
        noise = self.noise
        for i, dev, kind in self.devices:
            ts = T0 + c * MINUTE + (i % 600) * 0.1
            nz = noise[(c * 31 + i) % 1009]
            e = (c + 7 * i) % EXCURSION_EVERY  # the excursion runs while e < EXCURSION_LEN
            up = 0.0 if e >= EXCURSION_LEN else min(e, 5) / 5 if e < 26 else 0.0  # 0 → 1, held, back
            door = (c + 13 * i) % 400 < 7
            failed = (c + 17 * i) % 1500 < 8
            if kind == "medication_refrigerator":
                temp = 5.0 + nz + 6.5 * up
                out.append(Reading(dev, "temperature_c", None, ts, Quality.BAD) if failed else
                           Reading(dev, "temperature_c", round(temp, 2), ts))
                out.append(Reading(dev, "door_open", door, ts))
                out.append(Reading(dev, "compressor_run_hours", 1000 + c / 60 + i, ts))
            elif kind == "vaccine_freezer":
                frozen = (c + 19 * i) % 2000 < 90
                temp = -22.0 if frozen else -22.0 + nz + 14 * up
                out.append(Reading(dev, "temperature_c", None, ts, Quality.BAD) if failed else
                           Reading(dev, "temperature_c", round(temp, 2), ts))
                out.append(Reading(dev, "door_open", door, ts))
                out.append(Reading(dev, "alarm_state", "fault" if up == 1.0 else "ok", ts))
            elif kind == "room_environment":
                out.append(Reading(dev, "temperature_c", round(21.0 + nz + 7 * up, 2), ts))
                out.append(Reading(dev, "humidity_pct", round(45.0 + 10 * nz + 25 * up, 1), ts))
                out.append(Reading(dev, "pressure_pa", round(8.0 + nz - 7 * up, 2), ts))
            else:
                out.append(Reading(dev, "pressure_kpa", round(360.0 + 10 * nz - 30 * up, 1), ts))
                out.append(Reading(dev, "flow_lpm", round(120 + 50 * nz, 1), ts))
        return out


def batches(readings: list[Reading], size: int) -> list[list[Reading]]:
    return [readings[i : i + size] for i in range(0, len(readings), size)]


def run_engine(args: argparse.Namespace) -> None:
    t = time.perf_counter()
    site = Site.model_validate(site_dict(args.devices, args.rules))
    t_site = time.perf_counter() - t
    kinds = Counter(r.kind for r in site.alerts.rules)
    per_device = sum(1 for r in site.alerts.rules if r.devices)
    changes: Counter[str] = Counter()

    def on_change(a: Alert) -> None:
        changes[str(a.state) if a.state != "active" or a.id in seen else "raised"] += 1
        seen.add(a.id)

    seen: set[str] = set()
    t = time.perf_counter()
    engine = AlertEngine(site, on_change=on_change)
    t_engine = time.perf_counter() - t
    watched = {key: len(evs) for key, evs in engine._rules.items()}
    n_rules = len(site.alerts.rules)
    by_kind = ", ".join(f"{k} {v:,}" for k, v in Counter(d.kind for d in site.devices).items())
    print(f"site: {len(site.devices):,} devices ({by_kind}); {n_rules:,} rules ({per_device:,} with devices:, "
          f"{n_rules - per_device} with device_kind:): {', '.join(f'{k} {v:,}' for k, v in sorted(kinds.items()))}")
    print(f"validating the site took {t_site:.1f} s; AlertEngine(site) took {t_engine:.1f} s")
    gen = Readings(site)
    c = 0
    for _ in range(args.warmup):  # evaluators' state fills, alerts open and resolve
        for b in batches(gen.poll(c), args.batch):
            engine.on_readings(b)
        c += 1
    print(f"warm-up: {args.warmup} polls of every device; open alerts now {len(engine.active()):,}")
    rates, cpus = [], []
    for run in range(args.runs):
        polls = [gen.poll(c + k) for k in range(args.polls)]
        c += args.polls
        work = [b for p in polls for b in batches(p, args.batch)]
        n = sum(len(p) for p in polls)
        evaluations = sum(watched.get((r.device_id, r.metric), 0) for p in polls for r in p)
        del polls
        before = changes.copy()
        gc.collect()
        gc.freeze()
        c0, t0 = time.process_time(), time.perf_counter()
        for b in work:
            engine.on_readings(b)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        gc.unfreeze()
        del work
        rates.append(n / wall)
        cpus.append(cpu / n * 1e6)
        d = changes - before
        print(f"run {run + 1}: {n:,} readings in batches of {args.batch} "
              f"({evaluations / n:.2f} rule evaluations a reading) "
              f"in {wall:.3f} s: {n / wall:,.0f} readings/s, {cpu / n * 1e6:.2f} CPU µs/reading; "
              f"raised {d['raised']}, resolved {d['resolved']}, other changes {d['active'] + d['acknowledged']}; "
              f"open {len(engine.active()):,}", flush=True)
    print(f"\nengine: median of {args.runs} runs: {statistics.median(rates):,.0f} readings/s "
          f"({statistics.median(cpus):.2f} CPU µs/reading); lowest {min(rates):,.0f}, highest {max(rates):,.0f}; "
          f"target ≥ 200,000 readings/s: {'met' if statistics.median(rates) >= 200_000 else 'NOT met'}")


# -- latency ------------------------------------------------------------------------------------


def latency_site(n_devices: int, receiver_url: str, delay: str, database: str | None) -> Site:
    data: dict[str, Any] = {
        "site": {"name": "bench hospital"},
        "devices": [
            {"id": f"fridge-{i:04d}", "name": f"Fridge {i}", "kind": "medication_refrigerator",
             "location": f"Ward {i % 40}", "protocol": "modbus", "host": "127.0.0.1", "port": 15020,
             "registers": [{"name": "temperature_c", "address": 0, "data_type": "int16", "scale": 0.1, "unit": "°C"}]}
            for i in range(n_devices)
        ],
        "alerts": {"rules": [
            {"id": "fridge-too-warm", "kind": "threshold", "metric": "temperature_c",
             "device_kind": "medication_refrigerator", "above": 8, "for": delay, "hysteresis": 0.5,
             "severity": "critical", "action": "move the medication to a working fridge"},
        ]},
        "notifications": {
            "channels": [{"id": "hook", "type": "webhook", "url": f"{receiver_url}/hook",
                          "secret_env": "EQMON_BENCH_HOOK_SECRET", "timeout": "5s"}],
            "routes": [{"severity": ["critical", "warning"], "channels": ["hook"]}],
        },
        "api": {"host": "127.0.0.1", "port": 0},
    }  # fmt: skip
    if database is not None:
        data["database"] = {"url": database}
    return Site.model_validate(data)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


async def latency_async(args: argparse.Namespace, url: str, got: dict[str, float], tmp: Path) -> dict[str, list[float]]:
    from eqmon_app.service import Service

    n_dev = args.alerts + args.filler_devices  # one device an alert; the others stay in range
    site = latency_site(n_dev, url, f"{args.delay:g}s", args.postgres)
    service = Service(site, data_dir=tmp)  # built as `eqmon run` builds it; not started
    service.dispatcher.start()
    devs = [f"fridge-{i:04d}" for i in range(n_dev)]
    alerting, fill = devs[: args.alerts], devs[args.alerts :]
    sent: dict[str, tuple[float, float]] = {}  # device@raise -> (publish start, publish returned)
    try:
        interval = 1.0 / args.rate
        start = time.perf_counter()
        beyond: dict[int, float] = {}  # alert k -> timestamp of its first reading beyond the limit

        def batch(extra: list[Reading], now: float, k: int) -> list[Reading]:
            # in-range readings of other devices around the ones that matter, as the bus delivers
            n = len(fill)
            others = [Reading(fill[(k * 7 + j) % n], "temperature_c", 5.0, now) for j in range(args.batch - len(extra))]
            return others + extra

        for k in range(args.alerts + args.resolve_after + 1):
            target = start + k * interval
            await asyncio.sleep(max(0.0, target - time.perf_counter()))
            now = time.time()
            extra: list[Reading] = []
            if k < args.alerts:  # alert k: first reading beyond the limit
                dev = alerting[k]
                beyond[k] = now - args.delay
                extra.append(Reading(dev, "temperature_c", 9.5, beyond[k]))
            b = batch(extra, now, k)
            service.bus.publish_readings(b)
            await asyncio.sleep(args.gap)
            j = k  # alert k: the reading that completes the delay
            extra = []
            if j < args.alerts:
                dev = alerting[j]
                extra.append(Reading(dev, "temperature_c", 9.6, beyond[j] + args.delay))
            r = k - args.resolve_after  # an earlier alert resolves
            if 0 <= r < args.alerts:
                extra.append(Reading(alerting[r], "temperature_c", 5.0, time.time()))
            b = batch(extra, time.time(), k + 1)
            t0 = time.perf_counter()
            service.bus.publish_readings(b)
            t1 = time.perf_counter()
            if j < args.alerts:
                sent[f"{alerting[j]}@{beyond[j]!r}"] = (t0, t1)
        deadline = time.monotonic() + 30
        while len(got) < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
    finally:
        await service.dispatcher.stop()
        service.spool.close()
        service.dead_letters.close()
        service.db.dispose()
    starts = sorted(t0 for t0, _ in sent.values())
    achieved = (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) > 1 else 0.0
    missing = [key for key in sent if key not in got]
    if missing:
        print(f"WARNING: {len(missing)} of {len(sent)} alerts never reached the receiver")
    total = [(got[key] - t0) * 1000 for key, (t0, _) in sent.items() if key in got]
    loop = [(t1 - t0) * 1000 for key, (t0, t1) in sent.items() if key in got]
    rest = [(got[key] - t1) * 1000 for key, (_, t1) in sent.items() if key in got]
    return {"total": total, "engine + save": loop, "dispatch → receiver": rest, "rate": [achieved]}


def run_latency(args: argparse.Namespace) -> None:
    import json

    os.environ.setdefault("EQMON_BENCH_HOOK_SECRET", "bench-secret")
    got: dict[str, float] = {}
    lock = threading.Lock()
    events: Counter[str] = Counter()

    def handle(req: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        t = time.perf_counter()
        doc = json.loads(body)
        with lock:
            events[doc["event"]] += 1
            if doc["event"] == "raised":
                a = doc["alert"]
                got.setdefault(f"{a['device_id']}@{a['started_at']!r}", t)
        return 200, {}, b""

    with http_server(handle) as url, tempfile.TemporaryDirectory() as tmp:
        res = asyncio.run(latency_async(args, url, got, Path(tmp)))
    db = "PostgreSQL" if args.postgres else "SQLite"
    (rate,) = res.pop("rate")
    print(f"latency, reading completing the delay → webhook body received ({len(res['total'])} alerts, "
          f"{args.rate:g}/s asked, {rate:.0f}/s done; state database {db}; the receiver got {dict(events)}):")
    for name, xs in res.items():
        if xs:
            print(f"  {name:<20} p50 {pct(xs, 50):7.1f} ms  p90 {pct(xs, 90):7.1f} ms  p99 {pct(xs, 99):7.1f} ms  "
                  f"max {max(xs):7.1f} ms")
    if res["total"]:
        p99 = pct(res["total"], 99)
        print(f"  target p99 < 200 ms beyond the delay: {'met' if p99 < 200 else 'NOT met'} ({p99:.1f} ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("engine", "latency", "both"), default="both")
    ap.add_argument("--devices", type=int, default=5000)
    ap.add_argument("--rules", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=250, help="readings a bus delivery")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--polls", type=int, default=10, help="polls of every device a run")
    ap.add_argument("--warmup", type=int, default=40, help="polls before the first run")
    ap.add_argument("--alerts", type=int, default=300)
    ap.add_argument("--rate", type=float, default=20.0, help="alerts raised a second")
    ap.add_argument("--gap", type=float, default=0.01, help="seconds between an alert's two readings")
    ap.add_argument("--delay", type=float, default=300.0, help="the rule's `for` (simulated: timestamps)")
    ap.add_argument("--resolve-after", type=int, default=10, help="an alert resolves this many alerts later")
    ap.add_argument("--filler-devices", type=int, default=500, help="devices that stay in range (latency)")
    ap.add_argument("--postgres", metavar="URL", help="state database on PostgreSQL instead of SQLite")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.part in ("engine", "both"):
        run_engine(args)
    if args.part in ("latency", "both"):
        if args.part == "both":
            print()
        run_latency(args)


if __name__ == "__main__":
    main()
