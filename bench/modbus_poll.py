"""Benchmark (not a test): eqmon polling N simulated Modbus devices of 20 registers at 1 Hz.

The simulators run in a child process pinned to CPU 1, the collector in this process on CPU 0.
One run measures, on the same devices, one phase after the other:

1. **stub**: eqmon polling with pymodbus replaced by a stub client that answers at once
   (``ModbusConnection._client``/``_calls`` swapped; eqmon's lock, reply checks, decoding,
   health, scheduling and hand-off all run as usual). CPU per poll here is **eqmon's own
   cost** — scheduling, decoding, hand-off — with no I/O and no pymodbus at all.
2. **merged** / **one read per register**: eqmon polling the simulators with the real pymodbus
   client. Besides the process CPU per poll, the CPU spent *inside* pymodbus is timed in the
   same run: every step of each ``read_*_registers`` coroutine (build, frame, send; resume,
   checks, return) and every ``data_received`` callback (framer, PDU decode, future) is wrapped
   with ``time.perf_counter`` (synchronous code, so wall time = CPU time on a pinned core).
   ``pymodbus µs/req`` is that time per request; ``loop+eqmon µs/poll`` is the rest of the
   process CPU per poll (event loop: epoll, recv, task switches; plus eqmon's own code).

``GC max ms (CPU)`` is the longest pause of CPython's garbage collector in the window (wall, its
CPU in brackets, then the number of full collections). ``preempted (ms)`` counts the involuntary
context switches of the collector process in the window, and in brackets how long in all it
waited for CPU 0 while it had work (Linux schedstat): this machine is shared, and a run where
other processes took CPU 0 shows it there (and in wall-clock figures such as lateness and
``pymodbus µs/req``) — discard such a run rather than believe it. Lateness is each poll's start against its schedule (p50/p99/max). ``sim CPU`` is the simulator
process's CPU load on CPU 1 over the same window (a saturated simulator shows up there, not in
eqmon's lateness).

    .venv/bin/python bench/modbus_poll.py --devices 2000 --duration 10
    .venv/bin/python bench/modbus_poll.py --devices 5000 --loop uvloop --merged-only
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import os
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collectors.health import DeviceHealth  # noqa: E402
from collectors.modbus import ModbusCollector, ModbusConnection  # noqa: E402
from collectors.scheduler import PollScheduler  # noqa: E402
from eqmon.config import ModbusDevice  # noqa: E402
from eqmon.domain import Reading  # noqa: E402

REGISTERS = (
    [{"name": f"t{i}", "address": i, "type": "input", "data_type": "int16", "scale": 0.1} for i in range(14)]
    + [{"name": "status", "address": 14, "type": "input", "data_type": "uint16", "bits": {0: "door_open", 3: "fault"}}]
    + [{"name": f"h{i}", "address": 16 + 2 * i, "type": "input", "data_type": "float32"} for i in range(3)]
    + [{"name": f"sp{i}", "address": i, "type": "holding", "data_type": "int16", "scale": 0.1} for i in range(2)]
)  # 20 registers: 18 input (one read when merged), 2 holding (one read)

perf = time.perf_counter


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(0, {cpu})


def _run_loop(main, loop: str):  # type: ignore[no-untyped-def]
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def _simulators(n: int, conn, loop: str) -> None:  # type: ignore[no-untyped-def]
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

    _run_loop(main(), loop)


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of another process, from /proc (nan elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_delay() -> float:
    """Seconds this process's main thread has waited for a CPU while runnable (Linux schedstat)."""
    try:
        return int(Path(f"/proc/self/task/{os.getpid()}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


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


# -- what pymodbus itself costs, timed inside the polling run ----------------------------------


class PymodbusMeter:
    """Sums the time spent in pymodbus's synchronous code for every request of the run."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def install(self, conn: ModbusConnection) -> None:
        ctx = conn._client.ctx
        received = ctx.data_received

        def data_received(data: bytes) -> None:
            t0 = perf()
            try:
                received(data)
            finally:
                self.seconds += perf() - t0

        ctx.data_received = data_received  # looked up on the instance when connecting
        conn._calls = {table: self._timed(call) for table, call in conn._calls.items()}

    def _timed(self, call):  # type: ignore[no-untyped-def]
        meter = self

        class Timed:
            __slots__ = ("args", "kwargs")

            def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
                self.args, self.kwargs = args, kwargs

            def __await__(self):  # type: ignore[no-untyped-def]
                t0 = perf()
                coro = call(*self.args, **self.kwargs)
                value, exc = None, None
                while True:
                    try:
                        step = coro.send(value) if exc is None else coro.throw(exc)
                    except StopIteration as stop:
                        meter.seconds += perf() - t0
                        return stop.value
                    except BaseException:
                        meter.seconds += perf() - t0
                        raise
                    meter.seconds += perf() - t0
                    try:
                        value, exc = (yield step), None
                    except BaseException as e:  # noqa: BLE001 - handed to pymodbus as is
                        value, exc = None, e
                    t0 = perf()

        return Timed


class GcPauses:
    """The longest pause of CPython's cyclic garbage collector while installed."""

    def __init__(self) -> None:
        self.longest = 0.0  # wall
        self.longest_cpu = 0.0  # CPU of the same pause (less if the process was preempted)
        self.full = 0  # collections of the oldest generation
        self._t0 = self._c0 = 0.0

    def __call__(self, phase: str, info: dict) -> None:  # type: ignore[type-arg]
        if phase == "start":
            self._t0, self._c0 = perf(), time.thread_time()
            return
        wall = perf() - self._t0
        if wall > self.longest:
            self.longest, self.longest_cpu = wall, time.thread_time() - self._c0
        self.full += info["generation"] == 2


class _StubReply:
    __slots__ = ("function_code", "registers", "bits")

    def __init__(self, function_code: int, count: int) -> None:
        self.function_code = function_code
        self.registers = [(a * 7) & 0x7FFF for a in range(count)]
        self.bits = [False] * count

    def isError(self) -> bool:  # noqa: N802 - pymodbus's name
        return False


class _StubClient:
    """Answers every read at once, without I/O: eqmon's own cost is what remains."""

    connected = True

    def __init__(self) -> None:
        self._replies: dict[tuple[int, int], _StubReply] = {}

    def _reply(self, fc: int, count: int) -> _StubReply:
        r = self._replies.get((fc, count))
        if r is None:
            r = self._replies[(fc, count)] = _StubReply(fc, count)
        return r

    async def read_holding_registers(self, address: int, *, count: int, device_id: int) -> _StubReply:
        return self._reply(3, count)

    async def read_input_registers(self, address: int, *, count: int, device_id: int) -> _StubReply:
        return self._reply(4, count)

    async def read_coils(self, address: int, *, count: int, device_id: int) -> _StubReply:
        return self._reply(1, count)

    async def read_discrete_inputs(self, address: int, *, count: int, device_id: int) -> _StubReply:
        return self._reply(2, count)

    def close(self) -> None:
        pass


def _stub(collector: ModbusCollector) -> None:
    for c in collector.connections:
        c._client.close()
        stub = _StubClient()
        c._client = stub  # type: ignore[assignment]
        c._calls = {
            "holding": stub.read_holding_registers,
            "input": stub.read_input_registers,
            "coil": stub.read_coils,
            "discrete_input": stub.read_discrete_inputs,
        }


async def polling(collector: ModbusCollector, seconds: float, sim_pid: int, meter: PymodbusMeter | None) -> dict[str, float]:
    handed = 0

    async def on_readings(readings: list[Reading]) -> None:
        nonlocal handed
        handed += len(readings)

    sched = PollScheduler(collector.pollers, on_readings, rng=random.Random(1), record_lateness=True)
    sched.start()
    await asyncio.sleep(3.0)  # warm-up: connections made, first round of polls, second gc.freeze()
    req1 = sum(c.requests for c in collector.connections)
    polls1, n1 = sched.polls, len(sched.lateness)
    pm1 = meter.seconds if meter else 0.0
    sim1 = _proc_cpu(sim_pid)
    gcp = GcPauses()
    gc.callbacks.append(gcp)
    ivcsw0 = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    delay0 = _run_delay()
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    preempted = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - ivcsw0
    waited = _run_delay() - delay0
    gc.callbacks.remove(gcp)
    sim = _proc_cpu(sim_pid) - sim1
    pm = (meter.seconds if meter else 0.0) - pm1
    polls = sched.polls - polls1
    requests = sum(c.requests for c in collector.connections) - req1
    late = sched.lateness[n1:]
    await sched.stop()
    polls = max(1, polls)
    return {
        "polls_s": polls / wall,
        "p50_ms": _pct(late, 0.5) * 1e3,
        "p99_ms": _pct(late, 0.99) * 1e3,
        "max_ms": max(late, default=float("nan")) * 1e3,
        "cpu_us_poll": cpu / polls * 1e6,
        "req_poll": requests / polls,
        "pymodbus_us_req": pm / max(1, requests) * 1e6 if meter else float("nan"),
        "rest_us_poll": (cpu - pm) / polls * 1e6 if meter else float("nan"),
        "cpu_load": cpu / wall,
        "sim_load": sim / wall,
        "failures": sched.failures,
        "skipped": sched.skipped,
        "readings_poll": handed / max(1, sched.polls),
        "gc_ms": gcp.longest * 1e3,
        "gc_cpu_ms": gcp.longest_cpu * 1e3,
        "preempted": preempted,
        "waited_ms": waited * 1e3,
        "gc_full": gcp.full,
    }


async def run(args: argparse.Namespace, ports: list[int], sim_pid: int) -> None:
    modes = [("stub (eqmon alone)", True, "stub"), ("merged", True, "real")]
    if not args.merged_only:
        modes.append(("one read per register", False, "real"))
    results = {}
    for name, merge, kind in modes:
        health = {f"d{i}": DeviceHealth(f"d{i}") for i in range(len(ports))}
        collector = ModbusCollector(_devices(ports), health.__getitem__, clock=time.time, merge=merge)
        meter = None
        if kind == "stub":
            _stub(collector)
        else:
            meter = PymodbusMeter()
            for c in collector.connections:
                meter.install(c)
        results[name] = await polling(collector, args.duration, sim_pid, meter)
        collector.close()
        del collector, health
        await asyncio.sleep(0.5)
    print(f"{args.devices} devices × {len(REGISTERS)} registers at 1 Hz, {args.duration:g} s measured per mode, "
          f"event loop {args.loop}, collector on CPU 0, simulators on CPU 1")
    print(f"{'mode':<23}{'polls/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'CPU µs/poll':>12}{'req/poll':>9}"
          f"{'pymodbus µs/req':>16}{'loop+eqmon µs/poll':>19}{'CPU':>6}{'sim CPU':>8}{'failed':>7}{'skipped':>8}")
    for mode, r in results.items():
        print(f"{mode:<23}{r['polls_s']:>8.0f}{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}{r['max_ms']:>8.0f}"
              f"{r['cpu_us_poll']:>12.0f}{r['req_poll']:>9.1f}{r['pymodbus_us_req']:>16.0f}{r['rest_us_poll']:>19.0f}"
              f"{r['cpu_load']:>6.0%}{r['sim_load']:>8.0%}{r['failures']:>7}{r['skipped']:>8}"
              f"{r['gc_ms']:>7.0f} ({r['gc_cpu_ms']:.0f}) {r['gc_full']:.0f}x{r['preempted']:>9} ({r['waited_ms']:.0f})")
    own = results["stub (eqmon alone)"]["cpu_us_poll"]
    m = results["merged"]
    print(f"eqmon's own cost (stub run): {own:.0f} µs/poll; pymodbus request (timed inside, merged run): "
          f"{m['pymodbus_us_req']:.0f} µs/req = {m['pymodbus_us_req'] * m['req_poll']:.0f} µs/poll; "
          f"real poll total {m['cpu_us_poll']:.0f} µs/poll")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=2000)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop of both processes")
    p.add_argument("--merged-only", action="store_true", help="skip the one-read-per-register mode")
    args = p.parse_args()
    parent, child = mp.Pipe()
    sim = mp.get_context("fork").Process(target=_simulators, args=(args.devices, child, args.loop), daemon=True)
    sim.start()
    ports = parent.recv()
    _pin(0)
    try:
        _run_loop(run(args, ports, sim.pid), args.loop)
    finally:
        parent.send("stop")
        sim.join(10)


if __name__ == "__main__":
    main()
