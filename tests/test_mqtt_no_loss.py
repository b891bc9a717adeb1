"""MQTT delivery without loss (issue 4's acceptance), against a real Mosquitto of the test's own,
eqmon's full service (durable spool, embedded store) and a QoS 1 publisher:

1. the broker is restarted while devices publish: every message the broker acknowledged to the
   publisher is stored once;
2. eqmon is away for 30 s while devices publish: the backlog arrives when it is back;
3. eqmon is killed with SIGKILL mid-stream and started again: nothing it acknowledged is lost;
4. a flood of malformed payloads mixed with good ones: every good one is stored, every bad one
   counted by reason.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from eqmon.config import Site
from eqmon_app.service import Service
from simulators.harness import create_mqtt_session, wait_until
from simulators.servers import MosquittoServer, free_port
from tests.test_api_support import api_client

pytestmark = pytest.mark.integration

TOPIC = "ward/env/env-1/state"
T0 = float(int(time.time()))  # recent: the embedded store prunes readings older than its retention


def site_dict(port: int, client_id: str) -> dict:  # type: ignore[type-arg]
    return {
        "site": {"name": "no-loss"},
        "mqtt": {"host": "127.0.0.1", "port": port, "client_id": client_id},
        "devices": [{"id": "env-1", "kind": "room_environment", "protocol": "mqtt", "topic": TOPIC,
                     "fields": [{"metric": "seq"}]}],
        "api": {"host": "127.0.0.1", "port": 0},
    }  # fmt: skip


class Feeder:
    """Publishes {"ts", "seq"} at QoS 1 from a thread; remembers which the broker acknowledged."""

    def __init__(self, port: int, rate: float, *, bad_every: int = 0) -> None:
        self.port, self.rate, self.bad_every = port, rate, bad_every
        self.acked: set[int] = set()
        self.sent_good = 0
        self.sent_bad = 0
        self._mids: dict[int, int] = {}
        self._early: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"feeder-{free_port()}")
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_publish = self._on_publish
        self._thread = threading.Thread(target=self._run, name="feeder")

    def _on_publish(self, client, userdata, mid, rc, props) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            seq = self._mids.pop(mid, None)
            if seq is None:
                self._early.add(mid)  # acknowledged before _run recorded it
            elif seq >= 0:
                self.acked.add(seq)

    def _record(self, mid: int, seq: int) -> None:
        # Never hold our lock while calling into paho: its network thread holds paho's own
        # lock while it calls _on_publish, which takes ours.
        with self._lock:
            if mid in self._early:
                self._early.discard(mid)
                if seq >= 0:
                    self.acked.add(seq)
            else:
                self._mids[mid] = seq

    def start(self) -> Feeder:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        self._thread.start()
        return self

    def _run(self) -> None:
        seq = 0
        n = 0
        next_t = time.monotonic()
        while not self._stop.is_set():
            n += 1
            if self.bad_every and n % self.bad_every == 0:
                bad = [b"{truncated", b'{"ts": "noon", "seq": 1}', b'{"ts": 1}', b"[]"][n // self.bad_every % 4]
                info = self.client.publish(TOPIC, bad, qos=1)
                self._record(info.mid, -1)
                self.sent_bad += 1
            else:
                payload = json.dumps({"ts": T0 + seq * 0.01, "seq": seq})
                info = self.client.publish(TOPIC, payload, qos=1)
                self._record(info.mid, seq)
                self.sent_good += 1
                seq += 1
            next_t += 1.0 / self.rate
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        deadline = time.monotonic() + 20
        while self._mids and time.monotonic() < deadline:
            time.sleep(0.05)  # outstanding acknowledgements
        self.client.disconnect()
        self.client.loop_stop()


def stored(data_dir: Path) -> list[float]:
    db = sqlite3.connect(data_dir / "telemetry.sqlite")
    try:
        return [r[0] for r in db.execute("SELECT value_num FROM readings WHERE device_id='env-1' AND metric='seq'")]
    finally:
        db.close()


def check_all_once(acked: set[int], values: list[float]) -> None:
    got = [int(v) for v in values]
    assert len(got) == len(set(got)), "a message was stored twice"
    missing = sorted(acked - set(got))
    assert not missing, f"{len(missing)} acknowledged messages never stored, e.g. {missing[:10]}"


def test_broker_restart_while_devices_publish(tmp_path: Path) -> None:
    broker = MosquittoServer().start()
    try:
        site = Site.model_validate(site_dict(broker.port, "eqmon-noloss-1"))

        async def main() -> Feeder:
            service = Service(site, data_dir=tmp_path)
            await service.start()
            feeder = Feeder(broker.port, rate=200).start()
            try:
                await asyncio.sleep(2)
                broker.restart()  # SIGTERM: mosquitto saves its sessions, then starts again
                await asyncio.sleep(3)
                feeder.stop()
                assert service.mqtt is not None
                await wait_until(lambda: service.mqtt.connected, 30, "eqmon reconnected")  # type: ignore[union-attr]
                await wait_until(lambda: len(stored(tmp_path)) >= len(feeder.acked), 30, "every message stored")
            finally:
                await service.stop()
            return feeder

        feeder = asyncio.run(main())
    finally:
        broker.close()
    assert len(feeder.acked) > 500
    check_all_once(feeder.acked, stored(tmp_path))


def test_backlog_published_while_eqmon_was_away_arrives(tmp_path: Path) -> None:
    broker = MosquittoServer().start()
    try:
        site = Site.model_validate(site_dict(broker.port, "eqmon-noloss-2"))

        async def run_for(seconds: float, until_count: int | None = None) -> None:
            service = Service(site, data_dir=tmp_path)
            await service.start()
            try:
                await asyncio.sleep(seconds)
                if until_count is not None:
                    await wait_until(lambda: len(stored(tmp_path)) >= until_count, 60, "backlog stored")
            finally:
                await service.stop()

        create_mqtt_session(broker.port, "eqmon-noloss-2", TOPIC)
        feeder = Feeder(broker.port, rate=100).start()
        asyncio.run(run_for(2))  # the session exists; eqmon then goes away …
        n_before = len(stored(tmp_path))
        time.sleep(30)  # … for 30 s while the device keeps publishing
        feeder.stop()
        assert len(feeder.acked) - n_before > 2500
        asyncio.run(run_for(0, until_count=len(feeder.acked)))
    finally:
        broker.close()
    check_all_once(feeder.acked, stored(tmp_path))


def test_sigkill_mid_stream_loses_nothing_acknowledged(tmp_path: Path) -> None:
    broker = MosquittoServer().start()
    data = site_dict(broker.port, "eqmon-noloss-3")
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(data))
    data_dir = tmp_path / "data"
    cmd = [sys.executable, "-m", "eqmon_app.cli", "run", "--config", str(site_file), "--data-dir", str(data_dir)]
    procs: list[subprocess.Popen[str]] = []
    try:
        create_mqtt_session(broker.port, "eqmon-noloss-3", TOPIC)
        feeder = Feeder(broker.port, rate=400).start()
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        time.sleep(4)
        procs[0].send_signal(signal.SIGKILL)  # mid-stream: no flush, no goodbye
        procs[0].communicate(timeout=10)
        time.sleep(1)
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        time.sleep(3)
        feeder.stop()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if len(stored(data_dir)) >= len(feeder.acked):
                    break
            except sqlite3.Error:
                pass
            time.sleep(0.3)
        procs[1].send_signal(signal.SIGTERM)
        out, _ = procs[1].communicate(timeout=30)
        assert procs[1].returncode == 0, out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        broker.close()
    assert len(feeder.acked) > 2000
    check_all_once(feeder.acked, stored(data_dir))


def test_flood_of_malformed_payloads_among_good_ones(tmp_path: Path) -> None:
    broker = MosquittoServer().start()
    try:
        site = Site.model_validate(site_dict(broker.port, "eqmon-noloss-4"))

        async def main() -> tuple[Feeder, dict[str, int], list[dict]]:  # type: ignore[type-arg]
            service = Service(site, data_dir=tmp_path)
            await service.start()
            feeder = Feeder(broker.port, rate=2000, bad_every=2).start()  # every other one is bad
            try:
                await asyncio.sleep(3)
                feeder.stop()
                await wait_until(lambda: len(stored(tmp_path)) >= len(feeder.acked), 30, "good ones stored")
                assert service.mqtt is not None
                await wait_until(lambda: sum(service.mqtt.bad_payloads.values()) >= feeder.sent_bad, 10, "bad ones counted")  # type: ignore[union-attr]
                counts = dict(service.mqtt.bad_payloads)
                async with api_client(service) as api:
                    body = (await api.get("/api/v1/mqtt/dead-letters", params={"limit": 5})).json()
                    metrics = (await api.get("/metrics")).text
                assert body["counts"] == counts
                letters = body["items"]
                assert len(letters) == 5
                for reason, n in counts.items():
                    assert f'eqmon_mqtt_bad_messages_total{{reason="{reason}"}} {float(n)!r}' in metrics
            finally:
                await service.stop()
            return feeder, counts, letters

        feeder, counts, letters = asyncio.run(main())
    finally:
        broker.close()
    check_all_once(feeder.acked, stored(tmp_path))
    assert len(feeder.acked) == feeder.sent_good
    assert sum(counts.values()) == feeder.sent_bad
    # four kinds of bad message, in turn: truncated JSON, a text timestamp, a missing field, an array
    assert set(counts) == {"invalid_json", "wrong_type", "missing_field"}
    assert counts["wrong_type"] == pytest.approx(feeder.sent_bad / 2, abs=1)
    assert all(d["topic"] == TOPIC and d["reason"] in counts and d["payload"] for d in letters)
