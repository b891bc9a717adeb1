"""`eqmon simulate` and `eqmon run` as two processes, as a tester runs them: the production
service polls the simulators over real TCP and takes shelf messages through a real Mosquitto.

Each test runs its own broker: the simulated shelves publish their state retained, and a shared
broker would hand one test's retained states to the next."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from simulators.servers import MosquittoServer, free_port, tcp_connectable
from tests.sitefiles import example_on_free_ports

CLI = [sys.executable, "-m", "eqmon_app.cli"]


def get(url: str, token: str = "") -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=3) as r:
        return json.load(r)


def viewer_token(site_file: Path, data_dir: str) -> str:
    """An API token for a viewer, made with ``eqmon user add`` and ``eqmon user token`` in the
    state database the service will use (as an operator would before starting it)."""
    common = ["--config", str(site_file), "--data-dir", data_dir]
    added = subprocess.run(
        [*CLI, "user", "add", "tester", "--role", "viewer", *common], capture_output=True, text=True
    )
    assert added.returncode == 0 and "user tester (viewer) added; password: " in added.stdout, added
    made = subprocess.run(
        [*CLI, "user", "token", "tester", "--label", "test", *common],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made
    return made.stdout.strip().rsplit(" ", 1)[-1]


def start(*args: str, log: Path) -> subprocess.Popen[bytes]:
    """An eqmon command in its own process, its output into ``log`` (a pipe nobody reads
    during the test could fill up and block it)."""
    with open(log, "wb") as out:
        return subprocess.Popen([*CLI, *args], stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes], log: Path) -> str:
    """SIGTERM, wait, and return the output; asserts a clean exit."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    out = log.read_text(errors="replace")
    assert proc.returncode == 0, out
    return out


def wait_for_devices(
    api: str, pred: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str, token: str
) -> list[dict[str, Any]]:
    """Poll ``GET /api/v1/devices`` until ``pred`` holds for the list (the API may not be up
    yet); AssertionError naming ``what`` with the last answer after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    devices: list[dict[str, Any]] = []
    while True:
        try:
            devices = get(f"{api}/api/v1/devices", token)["items"]
        except OSError:
            devices = []
        if devices and pred(devices):
            return devices
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}: {devices}")
        time.sleep(0.2)


def all_online(devices: list[dict[str, Any]]) -> bool:
    return all(d["status"] == "online" and d["readings"] for d in devices)


def write_site(data: dict[str, Any], tmp_path: Path) -> tuple[Path, str]:
    api_port = free_port()
    data["api"]["port"] = api_port
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return site_file, f"http://127.0.0.1:{api_port}"


@pytest.mark.integration
def test_run_against_simulate(tmp_path: Path) -> None:
    with MosquittoServer() as broker:
        data = example_on_free_ports(mqtt_port=broker.port)
        data["alerts"]["incident_wait"] = "3s"
        site_file, api = write_site(data, tmp_path)
        sim_log, run_log = tmp_path / "simulate.log", tmp_path / "run.log"
        sim = start("simulate", "--config", str(site_file), log=sim_log)
        data_dir = str(tmp_path / "data")
        token = viewer_token(site_file, data_dir)
        run = start("run", "--config", str(site_file), "--data-dir", data_dir, log=run_log)
        try:
            # Whichever subscribes first, eqmon or the shelves' first message, the broker hands
            # eqmon each shelf's retained state: every device is online within seconds, not at
            # the shelves' next heartbeat (30 s). The bound only stops a broken run.
            devices = wait_for_devices(
                api, all_online, 60, "every device online with readings", token
            )
            assert [d["status"] for d in devices] == ["online"] * 7, devices
            health = get(f"{api}/healthz")
            assert health["devices"] == {"online": 7}
            # No bad MQTT message (counted as mqtt_bad_payloads, or per reason as
            # mqtt_bad_messages_<reason>, which is absent while zero).
            counters = health["counters"]
            assert any(k.startswith("mqtt_") for k in counters), counters
            assert not {k: v for k, v in counters.items() if k.startswith("mqtt_bad_") and v}, counters

            # The simulators stop: the Modbus devices go offline. The clean utility room has
            # nothing else (fridge-1, freezer-1): one incident for the room; fridge-2 shares
            # nothing and warmer-1 shares its linen bay with a shelf that still reports: their
            # own "device offline" alerts.
            stop(sim, sim_log)
            expected = [
                ("device-offline", "fridge-2"), ("device-offline", "warmer-1"),
                ("incident-location", "location:Ward 4B clean utility room"),
            ]  # fmt: skip
            deadline = time.monotonic() + 30
            offline: list[tuple[str, str]] = []
            while offline != expected:
                assert time.monotonic() < deadline, f"device-offline alerts: {offline}"
                time.sleep(0.2)
                alerts = get(f"{api}/api/v1/alerts?open_only=true", token)["items"]
                offline = sorted(
                    (a["rule_id"], a["device_id"]) for a in alerts
                    if a["rule_id"] == "device-offline" or a["rule_id"].startswith("incident-")
                )  # fmt: skip
            run_out = stop(run, run_log)
            assert "Traceback" not in run_out, run_out
            # One log line per device going offline, not one per failed poll.
            assert run_out.count("device fridge-1 is offline") == 1, run_out
        finally:
            for p in (sim, run):
                if p.poll() is None:
                    p.kill()
                    p.wait()


@pytest.mark.integration
def test_eqmon_started_after_the_shelves_published_sees_every_shelf_at_once(tmp_path: Path) -> None:
    """The shelves publish once, and not again for an hour; eqmon starts only then, and still
    shows every shelf within 5 s, with the shelf's own timestamp: from the retained message."""
    data = example_on_free_ports()
    data["devices"] = [d for d in data["devices"] if d["protocol"] == "mqtt"]
    data.pop("alerts", None)  # its rules are for the Modbus equipment
    for d in data["devices"]:
        # one message at start, then silence: no heartbeat, and no use that changes the count
        d["simulator"]["params"].update(heartbeat_s=3600, use_per_hour=0, first_publish_s=0.1)
    topics = {d["topic"]: d["id"] for d in data["devices"]}
    assert len(topics) == 3

    with MosquittoServer() as broker:
        data["mqtt"] = {"host": "127.0.0.1", "port": broker.port, "client_id": "eqmon-late"}
        site_file, api = write_site(data, tmp_path)
        # A witness subscribed before the shelves start sees what they publish, as it happens.
        got: queue.Queue[paho.MQTTMessage] = queue.Queue()
        witness = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="witness")
        witness.on_message = lambda c, u, m: got.put(m)
        subscribed = threading.Event()
        witness.on_subscribe = lambda *a: subscribed.set()
        witness.connect("127.0.0.1", broker.port)
        witness.loop_start()
        sim_log, run_log = tmp_path / "simulate.log", tmp_path / "run.log"
        sim = run = None
        try:
            witness.subscribe([(t, 1) for t in topics])
            assert subscribed.wait(10), "the broker never confirmed the witness's subscription"
            sim = start("simulate", "--config", str(site_file), log=sim_log)
            published: dict[str, dict[str, Any]] = {}
            deadline = time.monotonic() + 30
            while len(published) < len(topics):
                assert sim.poll() is None, sim_log.read_text(errors="replace")
                assert time.monotonic() < deadline, f"shelves published only {sorted(published)}"
                try:
                    m = got.get(timeout=0.5)
                except queue.Empty:
                    continue
                assert not m.retain  # a live message to a subscriber that was there before
                published[topics[m.topic]] = json.loads(m.payload)

            data_dir = str(tmp_path / "data")
            token = viewer_token(site_file, data_dir)
            run = start("run", "--config", str(site_file), "--data-dir", data_dir, log=run_log)
            deadline = time.monotonic() + 60  # eqmon starting (slow when the machine is busy)
            while not tcp_connectable("127.0.0.1", int(api.rsplit(":", 1)[1])):
                assert run.poll() is None, run_log.read_text(errors="replace")
                assert time.monotonic() < deadline, "eqmon's API never came up"
                time.sleep(0.05)
            t_up = time.monotonic()
            devices = wait_for_devices(
                api, all_online, 5, "every shelf online with readings", token
            )
            waited = time.monotonic() - t_up
            assert got.empty(), "a shelf published again: eqmon may have seen it live"
            assert {d["id"] for d in devices} == set(published), devices
            for d in devices:
                count = d["readings"]["count"]
                assert count["value"] == published[d["id"]]["count"]
                assert count["ts"] == pytest.approx(published[d["id"]]["ts"], abs=0.002)
            assert waited <= 5
            run_out = stop(run, run_log)
            assert "Traceback" not in run_out, run_out
            stop(sim, sim_log)
        finally:
            witness.loop_stop()
            witness.disconnect()
            for p in (sim, run):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()


def test_run_refuses_mqtt_devices_without_a_broker(tmp_path: Path) -> None:
    from tests.sitefiles import EXAMPLE

    r = subprocess.run(
        [sys.executable, "-m", "eqmon_app.cli", "run", "--config", str(EXAMPLE), "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert f"{EXAMPLE}: the site has MQTT devices but no `mqtt:` broker section" in r.stderr


def test_a_port_in_use_stops_start_up_with_a_clear_message(tmp_path: Path) -> None:
    import socket

    from tests.sitefiles import example_on_free_ports

    data = example_on_free_ports()
    data["mqtt"] = {"host": "127.0.0.1", "port": free_port()}
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    data["api"]["port"] = taken.getsockname()[1]
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(data))
    try:
        r = subprocess.run(
            [sys.executable, "-m", "eqmon_app.cli", "run", "--config", str(site_file), "--data-dir", str(tmp_path / "d")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        taken.close()
    assert r.returncode == 1
    assert f"eqmon run: cannot start: cannot listen on 127.0.0.1:{data['api']['port']} for the API" in r.stderr
    assert "Traceback" not in r.stderr
