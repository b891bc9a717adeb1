"""MQTT delivery features against real Mosquitto: device status and last will, shared
subscriptions, TLS with a password."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collectors.health import DeviceHealth
from collectors.mqtt import MqttCollector
from eqmon.config import MqttBroker, Site
from eqmon.domain import DeviceState, Reading
from simulators import SimulatedSite
from simulators.harness import wait_until as wait_for
from simulators.servers import MosquittoServer, free_port

pytestmark = pytest.mark.integration


def shelf_site(port: int, **broker: object) -> Site:
    return Site.model_validate({
        "site": {"name": "t"},
        "mqtt": {"host": "127.0.0.1", "port": port, "client_id": f"eqmon-{free_port()}",
                 "status_topic": "eqmon/status/{device_id}", **broker},
        "devices": [{
            "id": "shelf-1", "kind": "smart_shelf", "protocol": "mqtt", "topic": "t/shelf-1/state",
            "fields": [{"metric": "count"}, {"metric": "weight_g"}],
            "simulator": {"model": "smart_shelf", "params": {
                "item": "gloves", "unit_weight_g": 5.6, "capacity": 600, "par": 500, "initial": 300,
                "heartbeat_s": 0.3, "first_publish_s": 0.1}},
        }],
    })  # fmt: skip


class Harness:
    def __init__(self, site: Site, broker: MqttBroker | None = None) -> None:
        self.got: list[Reading] = []
        self.events: list[tuple[str, str]] = []
        dev = site.mqtt_devices()[0]
        self.health = DeviceHealth(dev.id, emit=lambda e: self.events.append((e.device_id, e.state)))
        assert site.mqtt is not None
        self.collector = MqttCollector(broker or site.mqtt, site.mqtt_devices(), lambda _: self.health,
                                       self.accept, clock=time.time)  # fmt: skip

    async def accept(self, readings: list[Reading]) -> None:
        self.got.extend(readings)


def test_last_will_marks_the_device_offline_and_back(mosquitto) -> None:  # type: ignore[no-untyped-def]
    site = shelf_site(mosquitto.port)

    async def main() -> None:
        h = Harness(site)
        sim = SimulatedSite(site, mqtt_host="127.0.0.1", mqtt_port=mosquitto.port)
        await h.collector.start()
        await sim.start()
        try:
            await wait_for(lambda: h.health.state == DeviceState.ONLINE and h.got, 10, "shelf online")
            sim.inject("shelf-1", "lastwill")  # the TCP connection drops without DISCONNECT
            await wait_for(lambda: h.health.state == DeviceState.OFFLINE, 10, "last will")
            n = len(h.got)
            await asyncio.sleep(0.5)
            assert len(h.got) == n  # silent while "dead"
            sim.inject("shelf-1", "clear")
            await wait_for(lambda: h.health.state == DeviceState.ONLINE, 10, "back online")
        finally:
            await sim.stop()
            await h.collector.stop()
        # online, offline (its last will), online again; then offline as the simulator stops
        assert [e for _, e in h.events][:3] == ["online", "offline", "online"]

    asyncio.run(main())


def test_shared_subscription_splits_one_stream_between_instances(mosquitto) -> None:  # type: ignore[no-untyped-def]
    site = shelf_site(mosquitto.port, protocol="5", shared_group="eqmon")
    assert site.mqtt is not None

    async def main() -> tuple[list[Reading], list[Reading]]:
        a = Harness(site, site.mqtt.model_copy(update={"client_id": "eqmon-a"}))  # type: ignore[union-attr]
        b = Harness(site, site.mqtt.model_copy(update={"client_id": "eqmon-b"}))  # type: ignore[union-attr]
        await a.collector.start()
        await b.collector.start()
        pub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="pub-shared")
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        try:
            await wait_for(lambda: a.collector.connected and b.collector.connected, 10, "connected")
            await asyncio.sleep(0.5)
            for i in range(200):
                pub.publish("t/shelf-1/state", json.dumps({"ts": 1000 + i, "count": i, "weight_g": 1}), qos=1)
            await wait_for(lambda: len(a.got) + len(b.got) >= 400, 20, "all messages")
            await asyncio.sleep(0.3)
        finally:
            pub.loop_stop()
            pub.disconnect()
            await a.collector.stop()
            await b.collector.stop()
        return a.got, b.got

    got_a, got_b = asyncio.run(main())
    counts_a = {r.value for r in got_a if r.metric == "count"}
    counts_b = {r.value for r in got_b if r.metric == "count"}
    assert counts_a and counts_b, "both instances take a share"
    assert counts_a.isdisjoint(counts_b)
    assert counts_a | counts_b == set(range(200))


def make_certs(d: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=eqmon test CA",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
        "-out", "server.csr")
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "server.crt")  # fmt: skip


def test_tls_with_username_and_password_from_the_environment(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    make_certs(tmp_path)
    tls_port = free_port()
    server = MosquittoServer(users={"eqmon": "s3cret"}, extra_config=[
        f"listener {tls_port} 127.0.0.1", f"cafile {tmp_path / 'ca.crt'}",
        f"certfile {tmp_path / 'server.crt'}", f"keyfile {tmp_path / 'server.key'}",
    ])  # fmt: skip
    server.start()
    monkeypatch.setenv("EQMON_TEST_MQTT_PASSWORD", "s3cret")
    try:
        base = shelf_site(tls_port)
        good = MqttBroker.model_validate({
            "host": "127.0.0.1", "port": tls_port, "client_id": "eqmon-tls", "username": "eqmon",
            "password_env": "EQMON_TEST_MQTT_PASSWORD", "tls": {"ca_file": str(tmp_path / "ca.crt")},
        })  # fmt: skip

        async def main() -> tuple[Harness, Harness]:
            ok = Harness(base, good)
            wrong = Harness(base, good.model_copy(update={"client_id": "eqmon-tls-2", "password_env": "NOPE_UNSET"}))
            await ok.collector.start()
            await wrong.collector.start()
            pub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="pub-tls")
            pub.username_pw_set("eqmon", "s3cret")
            pub.tls_set(ca_certs=str(tmp_path / "ca.crt"))
            pub.connect("127.0.0.1", tls_port)
            pub.loop_start()
            try:
                await wait_for(lambda: ok.collector.connected, 10, "TLS connection")
                await asyncio.sleep(0.3)
                pub.publish("t/shelf-1/state", json.dumps({"count": 3, "weight_g": 1}), qos=1).wait_for_publish(5)
                await wait_for(lambda: len(ok.got) == 2, 10, "message over TLS")
                await asyncio.sleep(1.0)
            finally:
                pub.loop_stop()
                pub.disconnect()
                await ok.collector.stop()
                await wrong.collector.stop()
            return ok, wrong

        ok, wrong = asyncio.run(main())
    finally:
        server.close()
    assert [r.value for r in ok.got if r.metric == "count"] == [3]
    assert not wrong.collector.connected and wrong.got == []
    assert wrong.collector.refusals >= 1 and ok.collector.refusals == 0
