"""MQTT ingest benchmark (a script, not a test): messages/s from the broker into eqmon's
telemetry store, beside paho-mqtt's bare receive rate measured in the same run.

Method: a private Mosquitto (simulators/servers.py) holds a backlog of N messages for a persistent
session (published while the subscriber is away); the subscriber then connects and drains it.
Each round runs, in turn:

- ``paho-bare``: a paho client with its default background thread, counting messages in
  on_message (auto-acknowledged) — "paho's bare receive rate";
- ``eqmon``: eqmon's MqttCollector inside the full Service — decoding, the durable spool,
  the alert engine and latest values — until every reading is written to the embedded store
  (SQLite), acknowledgements sent after the hand-off.

Rounds alternate (A B A B …) so that drift of the machine's speed hits both; the medians and the
per-round ratio are printed. CPU is this process's CPU time (all threads) over the drain.

    .venv/bin/python bench/mqtt_ingest.py [--messages 50000] [--rounds 3] [--qos 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eqmon.config import Site  # noqa: E402
from eqmon_app.service import Service  # noqa: E402
from simulators.harness import create_mqtt_session  # noqa: E402
from simulators.servers import MosquittoServer, free_port  # noqa: E402

TOPIC = "bench/ward/env-1/state"


def publish_backlog(port: int, n: int, qos: int, t0: float) -> None:
    c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{free_port()}")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = []
    for i in range(n):
        payload = json.dumps({"ts": t0 + i * 0.001, "temperature_c": 20.0 + (i % 100) / 10})
        infos.append(c.publish(TOPIC, payload, qos=qos))
    for info in infos:
        info.wait_for_publish(60)
    time.sleep(0.5)  # let the broker queue the last ones for the absent session
    c.disconnect()
    c.loop_stop()


def run_bare(port: int, n: int, qos: int, client_id: str) -> tuple[float, float]:
    got = 0
    done = threading.Event()

    def on_message(client, userdata, msg):  # type: ignore[no-untyped-def]
        nonlocal got
        got += 1
        if got >= n:
            done.set()

    c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    c.on_message = on_message
    cpu0, t0 = time.process_time(), time.perf_counter()
    c.connect("127.0.0.1", port)
    c.loop_start()
    if not done.wait(300):
        raise RuntimeError(f"bare paho received {got} of {n}")
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    c.disconnect()
    c.loop_stop()
    return wall, cpu


def eqmon_site(port: int, client_id: str, qos: int, data_dir: Path) -> Site:
    return Site.model_validate({
        "site": {"name": "bench"},
        "mqtt": {"host": "127.0.0.1", "port": port, "client_id": client_id, "qos": qos},
        "devices": [{"id": "env-1", "kind": "room_environment", "protocol": "mqtt", "topic": TOPIC,
                     "fields": [{"metric": "temperature_c", "unit": "°C"}]}],
        "api": {"port": 0},
    })  # fmt: skip


async def run_eqmon_async(site: Site, n: int, data_dir: Path) -> tuple[float, float]:
    service = Service(site, data_dir=data_dir)
    assert service.embedded is not None
    cpu0, t0 = time.process_time(), time.perf_counter()
    await service.start()
    try:
        while service.embedded.written < n:
            if time.perf_counter() - t0 > 300:
                raise RuntimeError(f"eqmon stored {service.embedded.written} of {n}")
            await asyncio.sleep(0.005)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await service.stop()
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--qos", type=int, choices=(0, 1), default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    n, qos = args.messages, args.qos
    results: dict[str, list[tuple[float, float]]] = {"paho-bare": [], "eqmon": []}
    # queue_qos0_messages: the broker keeps QoS 0 messages for the absent session too, so both
    # QoS levels are measured the same way (draining a backlog).
    with MosquittoServer(extra_config=["queue_qos0_messages true"]) as broker, tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in ("paho-bare", "eqmon"):
                cid = f"bench-{name}-{r}"
                create_mqtt_session(broker.port, cid, TOPIC, qos)
                publish_backlog(broker.port, n, qos, t0=1_700_000_000 + r * 10_000)
                if name == "paho-bare":
                    wall, cpu = run_bare(broker.port, n, qos, cid)
                else:
                    data_dir = Path(tmp) / f"round{r}"
                    site = eqmon_site(broker.port, cid, qos, data_dir)
                    wall, cpu = asyncio.run(run_eqmon_async(site, n, data_dir))
                results[name].append((wall, cpu))
                print(f"round {r + 1} {name:<9} {n / wall:>9,.0f} msg/s  {cpu / n * 1e6:6.1f} µs CPU/msg", flush=True)
    print()
    print(f"QoS {qos}, {n:,} messages a round, {args.rounds} rounds (medians):")
    for name, rows in results.items():
        rate = statistics.median(n / w for w, _ in rows)
        cpu = statistics.median(c / n * 1e6 for _, c in rows)
        print(f"  {name:<9} {rate:>9,.0f} msg/s  {cpu:6.1f} µs CPU/msg")
    ratios = [(n / e[0]) / (n / b[0]) for b, e in zip(results["paho-bare"], results["eqmon"], strict=True)]
    print(f"  eqmon / paho-bare rate: median {statistics.median(ratios):.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()
