"""The README's demo, as a newcomer runs it: `eqmon demo` in its own process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from simulators.servers import free_port
from tests.sitefiles import example_dict

ROOT = Path(__file__).resolve().parent.parent


def get(url: str, token: str = "") -> object:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=3) as r:
        return json.load(r)


def items(url: str, token: str) -> list[dict]:  # type: ignore[type-arg]
    """The items of a list route's first page (``{"items": [...], "next_cursor": ...}``)."""
    page = get(url, token)
    assert isinstance(page, dict), page
    return page["items"]  # type: ignore[no-any-return]


class Output:
    """The demo's output, read by a thread as it comes (a pipe nobody reads could fill up)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._thread = threading.Thread(
            target=lambda: self.lines.extend(iter(proc.stdout.readline, "")), daemon=True
        )  # type: ignore[union-attr]
        self._thread.start()

    def login(self, base: str, role: str, timeout: float = 30) -> str:
        """Log in as the demo's user for ``role`` with the password it printed: the token."""
        deadline = time.monotonic() + timeout
        while True:
            found = [
                ln.split() for ln in list(self.lines) if ln.strip().startswith(f"login {role} ")
            ]
            if found:
                break
            assert time.monotonic() < deadline, (
                f"the demo printed no login for {role}: {self.lines}"
            )
            time.sleep(0.2)
        words = found[0]  # "login ROLE user NAME password PASSWORD"
        name, password = words[words.index("user") + 1], words[words.index("password") + 1]
        form = urllib.parse.urlencode({"username": name, "password": password}).encode()
        with urllib.request.urlopen(f"{base}/api/v1/auth/token", data=form, timeout=10) as r:
            body = json.load(r)
        assert body["role"] == role and body["token_type"] == "bearer", body
        return str(body["access_token"])

    def text(self) -> str:
        self._thread.join(timeout=30)
        return "".join(self.lines)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR: closed connections in TIME_WAIT do not count, a listener would.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def start_demo(tmp_path: Path, api_port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "eqmon_app.cli", "demo", "--port", str(api_port), "--data-dir", str(tmp_path / "data"), *extra],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # this checkout's code, not whichever eqmon the interpreter has installed
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
    )  # fmt: skip


@pytest.mark.integration
def test_demo_devices_online_then_fridge_alert_then_clean_exit(tmp_path: Path) -> None:
    api_port = free_port()
    modbus_ports = [d["port"] for d in example_dict()["devices"] if d["protocol"] == "modbus"]
    started = time.monotonic()
    proc = start_demo(tmp_path, api_port, "--duration", "70")
    output = Output(proc)
    base = f"http://127.0.0.1:{api_port}"
    try:
        token = output.login(base, "viewer")
        devices: list[dict] = []  # type: ignore[type-arg]
        while time.monotonic() - started < 30:
            try:
                devices = items(f"{base}/api/v1/devices", token)
            except OSError:
                devices = []
            if len(devices) == 7 and all(d["status"] == "online" and d["readings"] for d in devices):
                break
            time.sleep(0.5)
        assert len(devices) == 7, devices
        assert all(d["status"] == "online" and d["readings"] for d in devices), devices

        alerts: list[dict] = []  # type: ignore[type-arg]
        while time.monotonic() - started < 90 and not alerts:
            alerts = [
                a for a in items(f"{base}/api/v1/alerts", token) if a["device_id"] == "fridge-1"
            ]
            time.sleep(1)
        assert alerts, "no fridge excursion alert within 90 s"
        assert alerts[0]["rule_id"] == "fridge-too-warm" and alerts[0]["severity"] == "critical"
        assert "above 8 °C" in alerts[0]["message"]
        fridge = next(d for d in items(f"{base}/api/v1/devices", token) if d["id"] == "fridge-1")
        assert fridge["open_alerts"] == [
            {"id": alerts[0]["id"], "severity": "critical", "metric": "temperature_c"}
        ]

        # the scenario's busy round leaves 120 gloves (reorder point 150): one low-stock notice
        # from the shelf's weight, resolved by the restock at 50 s
        stock: list[dict] = []  # type: ignore[type-arg]
        while time.monotonic() - started < 90 and not any(a["state"] == "resolved" for a in stock):
            stock = [
                a for a in items(f"{base}/api/v1/alerts", token) if a["rule_id"] == "stock-level"
            ]
            time.sleep(1)
        assert len(stock) == 1, stock
        assert stock[0]["message"].startswith(
            "INFO Ward 4B supply room / Shelf A / A1: exam gloves M 120 left (min 50, par 500)"), stock
        assert "bring 4 packs of 100" in stock[0]["message"] and stock[0]["state"] == "resolved", stock

        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = output.text()
    assert proc.returncode == 0, out
    assert all(f"login {role}" in out for role in ("coordinator", "supply", "viewer", "admin")), out
    # the demo's notifications: a log line and the local webhook receiver's file
    assert "NOTIFY CRITICAL" in out and "webhook.jsonl" in out, out
    docs = [json.loads(line) for line in (tmp_path / "data" / "webhook.jsonl").read_text().splitlines()]
    assert any(d["schema"] == "eqmon.alert.v1" and d["alert"]["device_id"] == "fridge-1" for d in docs), docs
    assert "dashboard" in out and "stopped cleanly" in out
    assert "eqmon inventory status --config" in out, out
    assert "Traceback" not in out, out
    # Nothing is left listening.
    assert all(port_free(p) for p in [api_port, *modbus_ports])


@pytest.mark.integration
def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    api_port = free_port()
    proc = start_demo(tmp_path, api_port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(f"http://127.0.0.1:{api_port}/healthz"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "demo API never came up"
            time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "stopped cleanly" in out and "Traceback" not in out, out
    assert (tmp_path / "data" / "telemetry.sqlite").exists()
