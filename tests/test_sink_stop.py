"""SinkRunner.stop() while the sink waits in retry back-off (or after a Retry-After): the wait
ends at once, what the sink takes now is written (one attempt), stop() returns within one
request timeout, and what could not be written stays in the spool for the next start.

Against a real HTTP server of our own speaking the InfluxDB write API (503, Retry-After, a hang)."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from collectors.influx import InfluxSink
from collectors.sinks import SinkRunner
from collectors.spool import Spool
from eqmon.config import InfluxDB
from eqmon.domain import Reading
from simulators.harness import http_server

DEVICES = {"fridge-1": ("medication_refrigerator", "Ward 4B")}
N = 1000


class Server:
    """Answers ``status`` (with ``headers``) to every write; stores the lines of a 204; hangs
    ``hang`` seconds before answering when set."""

    def __init__(self) -> None:
        self.status = 503
        self.headers: dict[str, str] = {}
        self.hang = 0.0
        self.requests: list[tuple[float, int]] = []  # (monotonic time, status answered)
        self.stored: list[str] = []
        self.lock = threading.Lock()


def serve(state: Server) -> AbstractContextManager[str]:
    def handle(h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        with state.lock:
            status, headers, hang = state.status, dict(state.headers), state.hang
            state.requests.append((time.monotonic(), status))
            if status == 204:
                state.stored.extend(gzip.decompress(body).decode().split("\n"))
        if hang:
            time.sleep(hang)
        return status, headers, b""

    return http_server(handle)


def readings() -> list[Reading]:
    return [Reading("fridge-1", "temperature_c", 4.0 + i / 1000, 1_700_000_000 + i) for i in range(N)]


def expected_lines() -> set[str]:
    return {f"medication_refrigerator,device_id=fridge-1,location=Ward\\ 4B temperature_c={4.0 + i / 1000!r} "
            f"{(1_700_000_000 + i) * 1000}" for i in range(N)}


def make_runner(url: str, spool: Spool, *, timeout: float = 5.0, min_backoff: float = 20.0) -> SinkRunner:
    sink = InfluxSink(InfluxDB(url=url, org="o", bucket="b", timeout=timeout), DEVICES)
    return SinkRunner(sink, spool, batch_size=5000, flush_interval=0.05, min_backoff=min_backoff, max_backoff=30.0)


async def fill_and_fail(spool: Spool, runner: SinkRunner, state: Server) -> None:
    """Readings in the spool, the runner started, the first write refused: now in back-off."""
    rs = readings()
    for i in range(0, N, 100):
        await spool.put(rs[i : i + 100])
    runner.start()
    deadline = time.monotonic() + 10
    while runner.failures == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert runner.failures == 1
    await asyncio.sleep(0.3)  # well inside the back-off (≥ 16 s) or the Retry-After


def test_stop_wakes_the_backoff_and_flushes_what_the_server_takes_now(tmp_path: Path) -> None:
    state = Server()

    async def main(url: str) -> float:
        spool = Spool(tmp_path / "spool.sqlite", sinks=["influxdb"])
        runner = make_runner(url, spool)
        await fill_and_fail(spool, runner, state)
        state.status = 204  # the server is back; the runner sleeps for another ~16-24 s
        t0 = time.monotonic()
        await runner.stop()
        took = time.monotonic() - t0
        assert spool.depth == 0 and runner.written == N
        spool.close()
        return took

    with serve(state) as url:
        took = asyncio.run(main(url))
    # the back-off was 16-24 s and the old stop() waited its 10 s flush timeout: 8 s is a bound
    # a busy machine meets while the old code could not
    assert took < 8.0, f"stop() took {took:.1f} s"
    assert [s for _, s in state.requests] == [503, 204]  # one attempt after stop(), which succeeded
    assert len(state.stored) == N and set(state.stored) == expected_lines()


def test_stop_during_retry_after_with_the_server_still_failing_loses_nothing(tmp_path: Path) -> None:
    state = Server()
    state.headers = {"Retry-After": "300"}

    async def first_run(url: str) -> float:
        spool = Spool(tmp_path / "spool.sqlite", sinks=["influxdb"])
        runner = make_runner(url, spool)
        await fill_and_fail(spool, runner, state)
        t0 = time.monotonic()
        await runner.stop()
        took = time.monotonic() - t0
        assert spool.depth == N  # nothing confirmed: all of it waits for the next start
        spool.close()
        return took

    async def next_start(url: str) -> None:
        spool = Spool(tmp_path / "spool.sqlite", sinks=["influxdb"])
        assert spool.depth == N
        runner = make_runner(url, spool)
        runner.start()
        deadline = time.monotonic() + 10
        while spool.depth and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await runner.stop()
        assert spool.depth == 0
        spool.close()

    with serve(state) as url:
        took = asyncio.run(first_run(url))
        assert took < 8.0, f"stop() took {took:.1f} s"  # not the 300 s Retry-After, nor 10 s
        assert [s for _, s in state.requests] == [503, 503]  # the Retry-After wait ended: one attempt
        state.status, state.headers = 204, {}
        asyncio.run(next_start(url))
    assert len(state.stored) == N and set(state.stored) == expected_lines()


def test_stop_is_bounded_by_one_request_timeout_when_the_server_hangs(tmp_path: Path) -> None:
    state = Server()

    async def main(url: str) -> float:
        spool = Spool(tmp_path / "spool.sqlite", sinks=["influxdb"])
        runner = make_runner(url, spool, timeout=1.0)
        await fill_and_fail(spool, runner, state)
        state.hang = 30.0  # the next request is not answered within the 1 s timeout
        t0 = time.monotonic()
        await runner.stop()
        took = time.monotonic() - t0
        assert spool.depth == N
        spool.close()
        return took

    with serve(state) as url:
        took = asyncio.run(main(url))
    assert 0.9 <= took < 8.0, f"stop() took {took:.1f} s"  # one 1 s timeout, not the 30 s hang
    assert len(state.requests) == 2
