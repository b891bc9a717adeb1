"""Site files for tests: the shipped example, moved onto free loopback ports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from eqmon.config import Site
from simulators.servers import free_port

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "site.yaml"


def example_dict() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


def example_on_free_ports(
    *, mqtt_port: int | None = None, influx_url: str | None = None, interval: str = "1s"
) -> dict[str, Any]:
    """The example site with every Modbus device on its own free port, optionally a broker and
    an InfluxDB sink, and no scenario (tests inject their own faults)."""
    data = example_dict()
    for d in data["devices"]:
        if d["protocol"] == "modbus":
            d["port"] = free_port()
            d["interval"] = interval
    if mqtt_port is not None:
        data["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port, "client_id": f"eqmon-test-{free_port()}"}
    if influx_url is not None:
        data.setdefault("telemetry", {})["influxdb"] = {
            "url": influx_url, "org": "hospital", "bucket": "eqmon", "flush_interval": "200ms"
        }
    data["api"] = {"host": "127.0.0.1", "port": 0}
    data["scenario"] = []
    return data


def site(data: dict[str, Any]) -> Site:
    return Site.model_validate(data)


def modbus_site_file(tmp_path: Path, url: str) -> Path:
    """The example's Modbus devices only (no inventory: its bins name the smart shelves dropped
    here) on the state database ``url``, written to ``tmp_path/site.yaml`` for the CLI."""
    data = example_on_free_ports()
    data["devices"] = [d for d in data["devices"] if d["protocol"] == "modbus"]
    data.pop("inventory")
    data["database"] = {"url": url}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
