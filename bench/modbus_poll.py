"""Benchmark (not a test): eqmon polling N simulated Modbus devices of 20 registers at 1 Hz.

The simulators run in a child process pinned to CPU 1, the collector in this process on CPU 0.
In one run it measures, side by side:

1. the bare pymodbus request: the CPU cost of one read on the connections eqmon uses, without
   eqmon's scheduling, decoding or hand-off (sequential reads, spread over every connection);
2. eqmon polling, with requests merged by the plan, then with one read per register:
   polls/s, lateness of each poll's start against its schedule (p50/p99), CPU µs per poll,
   requests per poll, and eqmon's own cost per poll = CPU per poll − requests × (1).

    .venv/bin/python bench/modbus_poll.py --devices 2000 --duration 10
    .venv/bin/python bench/modbus_poll.py --devices 5000 --uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collectors.health import DeviceHealth  # noqa: E402
from collectors.modbus import ModbusCollector  # noqa: E402
from collectors.scheduler import PollScheduler  # noqa: E402
from eqmon.config import ModbusDevice  # noqa: E402
from eqmon.domain import Reading  # noqa: E402

REGISTERS = (
    [{"name": f"t{i}", "address": i, "type": "input", "data_type": "int16", "scale": 0.1} for i in range(14)]
    + [{"name": "status", "address": 14, "type": "input", "data_type": "uint16", "bits": {0: "door_open", 3: "fault"}}]
    + [{"name": f"h{i}", "address": 16 + 2 * i, "type": "input", "data_type": "float32"} for i in range(3)]
    + [{"name": f"sp{i}", "address": i, "type": "holding", "data_type": "int16", "scale": 0.1} for i in range(2)]
)  # 20 registers: 18 input (one read when merged), 2 holding (one read)


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(0, {cpu})


def _simulators(n: int, conn, use_uvloop: bool) -> None:  # type: ignore[no-untyped-def]
    _pin(1)
    from simulators.modbus_server import ModbusServer, RegisterBank

    async def main() -> None:
        servers = []
        ports = []
        for i in range(n):
            bank = RegisterBank()
            for a in range(24):
                bank.input[a] = (i + a) & 0x7FFF
            s = ModbusServer({1: bank})
            ports.append(await s.start("127.0.0.1", 0))
            servers.append(s)
        conn.send(ports)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
        for s in servers:
            await s.stop()

    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def _devices(ports: list[int]) -> list[ModbusDevice]:
    return [
        ModbusDevice.model_validate(
            {"id": f"d{i}", "kind": "bench", "protocol": "modbus", "host": "127.0.0.1", "port": p,
             "interval": 1, "timeout": 2, "retries": 0, "registers": REGISTERS}  # fmt: skip
        )
        for i, p in enumerate(ports)
    ]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def bare_requests(collector: ModbusCollector, seconds: float) -> float:
    """CPU µs of one pymodbus read (input 0+18), sequential on each connection, all at once."""
    conns = collector.connections
    for c in conns:  # connect outside the measurement
        await c.read(collector.pollers[0].plan[0], 1)
    count = 0
    stop = time.monotonic() + seconds

    async def worker(c) -> None:  # type: ignore[no-untyped-def]
        nonlocal count
        client = c._client
        while time.monotonic() < stop:
            await client.read_input_registers(0, count=22, device_id=1)
            count += 1
            await asyncio.sleep(random.uniform(0.5, 1.5))  # about 1 Hz per connection, like polling

    cpu0 = time.process_time()
    await asyncio.gather(*(worker(c) for c in conns))
    return (time.process_time() - cpu0) / count * 1e6


async def polling(collector: ModbusCollector, seconds: float) -> dict[str, float]:
    handed = 0

    async def on_readings(readings: list[Reading]) -> None:
        nonlocal handed
        handed += len(readings)

    sched = PollScheduler(collector.pollers, on_readings, rng=random.Random(1), record_lateness=True)
    req0 = sum(c.requests for c in collector.connections)
    sched.start()
    await asyncio.sleep(2.0)  # warm-up: connections made, first round of polls
    req1 = sum(c.requests for c in collector.connections)
    polls1, n1 = sched.polls, len(sched.lateness)
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    polls = sched.polls - polls1
    requests = sum(c.requests for c in collector.connections) - req1
    late = sched.lateness[n1:]
    await sched.stop()
    del req0
    return {
        "polls_s": polls / wall,
        "p50_ms": _pct(late, 0.5) * 1e3,
        "p99_ms": _pct(late, 0.99) * 1e3,
        "cpu_us_poll": cpu / max(1, polls) * 1e6,
        "req_poll": requests / max(1, polls),
        "cpu_load": cpu / wall,
        "failures": sched.failures,
        "skipped": sched.skipped,
    }


async def run(args: argparse.Namespace, ports: list[int]) -> None:
    results = {}
    bare = None
    for merge in (True, False) if not args.merged_only else (True,):
        health = {f"d{i}": DeviceHealth(f"d{i}") for i in range(len(ports))}
        collector = ModbusCollector(_devices(ports), health.__getitem__, clock=time.time, merge=merge)
        if bare is None:
            bare = await bare_requests(collector, args.bare_seconds)
        results["merged" if merge else "one read per register"] = await polling(collector, args.duration)
        collector.close()
        await asyncio.sleep(0.5)
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"{args.devices} devices × {len(REGISTERS)} registers at 1 Hz, {args.duration:g} s measured, "
          f"event loop {loop}, collector on CPU 0, simulators on CPU 1")
    print(f"bare pymodbus read (CPU µs per request): {bare:.0f}")
    print(f"{'mode':<24}{'polls/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'CPU µs/poll':>12}{'req/poll':>9}"
          f"{'eqmon µs/poll':>14}{'CPU load':>9}{'failed':>7}{'skipped':>8}")
    for mode, r in results.items():
        own = r["cpu_us_poll"] - r["req_poll"] * (bare or 0)
        print(f"{mode:<24}{r['polls_s']:>9.0f}{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}{r['cpu_us_poll']:>12.0f}"
              f"{r['req_poll']:>9.1f}{own:>14.0f}{r['cpu_load']:>9.0%}{r['failures']:>7}{r['skipped']:>8}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=2000)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--bare-seconds", type=float, default=5.0)
    p.add_argument("--uvloop", action="store_true", help="run both processes on uvloop (pip install uvloop)")
    p.add_argument("--merged-only", action="store_true")
    args = p.parse_args()
    parent, child = mp.Pipe()
    sim = mp.get_context("fork").Process(target=_simulators, args=(args.devices, child, args.uvloop), daemon=True)
    sim.start()
    ports = parent.recv()
    _pin(0)
    try:
        if args.uvloop:
            import uvloop

            uvloop.run(run(args, ports))
        else:
            asyncio.run(run(args, ports))
    finally:
        parent.send("stop")
        sim.join(10)


if __name__ == "__main__":
    main()
