"""`eqmon simulate` and `eqmon run` as two processes, as a tester runs them: the production
service polls the simulators over real TCP and takes shelf messages through a real Mosquitto."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.servers import free_port
from tests.sitefiles import example_on_free_ports


def get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=3) as r:
        return json.load(r)


@pytest.mark.integration
def test_run_against_simulate(mosquitto, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = example_on_free_ports(mqtt_port=mosquitto.port)
    api_port = free_port()
    data["api"]["port"] = api_port
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(data, sort_keys=False))

    cmd = [sys.executable, "-m", "eqmon_app.cli"]
    sim = subprocess.Popen([*cmd, "simulate", "--config", str(site_file)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)  # fmt: skip
    run = subprocess.Popen([*cmd, "run", "--config", str(site_file), "--data-dir", str(tmp_path / "data")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        devices: list[dict] = []  # type: ignore[type-arg]
        while time.monotonic() < deadline:
            try:
                devices = get(f"http://127.0.0.1:{api_port}/api/v1/devices")  # type: ignore[assignment]
            except OSError:
                devices = []
            if devices and all(d["status"] == "online" and d["readings"] for d in devices):
                break
            time.sleep(0.5)
        assert [d["status"] for d in devices] == ["online"] * 7, devices
        health = get(f"http://127.0.0.1:{api_port}/healthz")
        assert health["devices"] == {"online": 7}  # type: ignore[index]
        assert health["counters"]["mqtt_bad_payloads"] == 0  # type: ignore[index]

        # The simulators stop: the Modbus devices go offline and raise "device offline".
        sim.send_signal(signal.SIGTERM)
        sim_out, _ = sim.communicate(timeout=30)
        assert sim.returncode == 0, sim_out
        deadline = time.monotonic() + 30
        offline: list[str] = []
        while time.monotonic() < deadline and len(offline) < 4:
            alerts = get(f"http://127.0.0.1:{api_port}/api/v1/alerts?open_only=true")
            offline = sorted(a["device_id"] for a in alerts if a["rule_id"] == "device-offline")  # type: ignore[union-attr]
            time.sleep(0.5)
        assert offline == ["freezer-1", "fridge-1", "fridge-2", "warmer-1"]
        run.send_signal(signal.SIGTERM)
        run_out, _ = run.communicate(timeout=30)
        assert run.returncode == 0, run_out
        assert "Traceback" not in run_out, run_out
        # One log line per device going offline, not one per failed poll.
        assert run_out.count("device fridge-1 is offline") == 1, run_out
    finally:
        for p in (sim, run):
            if p.poll() is None:
                p.kill()
                p.communicate()


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
